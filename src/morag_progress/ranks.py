"""Distributed runs: the processes of one run (torchrun, accelerate and DeepSpeed ranks, SLURM
tasks, MPI processes) report as children of one parent job, the run
([ranks](../../docs/ranks.md)).

Pure: which rank this process is, read from the environment its launcher sets; the ids of the
run's job and of each rank's; and the rule that says which ranks straggle. No collective calls:
every rank finds the same run id in its environment, and making the run's job twice makes one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from morag_progress.bounds import MAX_EXPECTED_CHILDREN, MAX_ID
from morag_progress.errors import InvalidInputError

__all__ = ["Rank", "behind"]

# Each launcher's (rank, world size, local rank) variables, in the order they are tried.
_LAUNCHERS: tuple[tuple[str, str, str, str], ...] = (
    ("torch", "RANK", "WORLD_SIZE", "LOCAL_RANK"),  # torchrun, accelerate, DeepSpeed
    ("slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
    ("mpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("mpi", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),  # MPICH, Intel MPI
    ("mpi", "PMIX_RANK", "PMIX_SIZE", "PMIX_LOCAL_RANK"),
)
# Where each launcher keeps an id all of a run's processes share (the first set one wins).
_RUN_IDS: dict[str, tuple[str, ...]] = {
    "torch": ("TORCHELASTIC_RUN_ID",),
    "slurm": ("SLURM_JOB_ID", "SLURM_JOBID"),
    "mpi": ("OMPI_MCA_ess_base_jobid", "PMIX_NAMESPACE", "PMI_JOBID"),
}
# How many times the launcher restarted the run: a restart is a new run (its ranks' jobs of the
# last attempt have ended or gone silent).
_RESTARTS = {"torch": "TORCHELASTIC_RESTART_COUNT", "slurm": "SLURM_RESTART_COUNT"}
_RUN_ID_VARIABLE = "MORAG_PROGRESS_RUN_ID"
_NOT_ID = re.compile(r"[^A-Za-z0-9_.:@-]")
_RANK_SUFFIX = ":rank-"


@dataclass(frozen=True, slots=True)
class Rank:
    """One process of a distributed run: its ``rank`` of ``world_size``, its ``local_rank``
    on its machine (None when the launcher does not say), and the ``run_id`` every process of
    the run shares."""

    rank: int
    world_size: int
    run_id: str
    local_rank: int | None = None
    launcher: str = "given"

    def __post_init__(self) -> None:
        if not 1 <= self.world_size <= MAX_EXPECTED_CHILDREN:
            raise InvalidInputError(
                "world_size", f"must be from 1 to {MAX_EXPECTED_CHILDREN}", self.world_size
            )
        if not 0 <= self.rank < self.world_size:
            raise InvalidInputError(
                "rank", f"must be from 0 to world_size - 1 ({self.world_size - 1})", self.rank
            )
        if not self.run_id:
            raise InvalidInputError("run_id", "must not be empty", self.run_id)

    @property
    def run_job_id(self) -> str:
        """The id of the run's job, the parent of every rank's: the run id, written as a job
        id (characters a job id cannot hold become ``_``; cut to leave room for a rank's)."""
        room = MAX_ID - len(_RANK_SUFFIX) - len(str(MAX_EXPECTED_CHILDREN))
        written = _NOT_ID.sub("_", self.run_id)[:room]
        return "_" if written in (".", "..") else written  # a URL path's own meanings

    @property
    def job_id(self) -> str:
        """The id of this rank's job: ``<run job id>:rank-<rank>``."""
        return f"{self.run_job_id}{_RANK_SUFFIX}{self.rank}"

    @classmethod
    def detect(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        run_id: str | None = None,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> Rank | None:
        """This process's rank from what its launcher set (``environ``, default the process's
        environment), or None when no launcher's variables are set and none are given.

        ``rank`` and ``world_size`` given win over the environment. The run id is ``run_id``,
        else ``MORAG_PROGRESS_RUN_ID``, else the launcher's own (torchrun's
        ``TORCHELASTIC_RUN_ID``, SLURM's job id, MPI's job id or namespace), else, when all
        the run's processes are on this machine, the host and the launcher's process id.
        Raises InvalidInputError naming the variable when a value is not a number or out of
        range, or when a run spread over machines has no id to share."""
        env = os.environ if environ is None else environ
        launcher, found = _launcher(env)
        if rank is None and world_size is None and launcher is None:
            return None
        local: int | None = None
        if launcher is not None:
            rank_var, size_var, local_var = found
            rank = _number(env, rank_var) if rank is None else rank
            world_size = _number(env, size_var) if world_size is None else world_size
            local = _number(env, local_var) if env.get(local_var) else None
        if rank is None or world_size is None:
            raise InvalidInputError(
                "rank" if rank is None else "world_size",
                "must be given with the other when no launcher sets them",
                None,
            )
        chosen = run_id or env.get(_RUN_ID_VARIABLE) or _launcher_run_id(env, launcher)
        if not chosen:
            local_size = _number(env, "LOCAL_WORLD_SIZE") if env.get("LOCAL_WORLD_SIZE") else None
            if world_size > 1 and local_size != world_size:
                raise InvalidInputError(
                    "run_id",
                    f"is needed for a run over several machines: set {_RUN_ID_VARIABLE} to the "
                    "same value in every process (or pass run_id)",
                    None,
                )
            import socket  # here: a worker's import of the client stays light

            # One machine: its processes share the launcher (the parent process).
            chosen = f"{socket.gethostname()}-{os.getppid()}"
        return cls(
            rank=rank,
            world_size=world_size,
            run_id=chosen,
            local_rank=local,
            launcher=launcher or "given",
        )


def _launcher(env: Mapping[str, str]) -> tuple[str | None, tuple[str, str, str]]:
    for name, rank_var, size_var, local_var in _LAUNCHERS:
        if env.get(rank_var) and env.get(size_var):
            return name, (rank_var, size_var, local_var)
    return None, ("", "", "")


def _launcher_run_id(env: Mapping[str, str], launcher: str | None) -> str | None:
    """The run id a launcher set, named by the launcher (``slurm-4242.0``, so that it cannot
    be taken for an id of the user's own) with its restart (``.restart-1``) when it has one.
    The ranks' own launcher first, then the others (torchrun inside a SLURM job: its id)."""
    others = [name for name in _RUN_IDS if name != launcher]
    for name in [launcher, *others] if launcher in _RUN_IDS else others:
        for variable in _RUN_IDS[name]:
            value = env.get(variable, "").strip()
            if not value or value == "none":  # torchrun's default rendezvous id
                continue
            step = env.get("SLURM_STEP_ID", "").strip() if name == "slurm" else ""
            if step:
                value += f".{step}"
            restart = env.get(_RESTARTS.get(name, ""), "").strip()
            if restart not in ("", "0"):
                value += f".restart-{restart}"
            return f"{name}-{value}"
    return None


def _number(env: Mapping[str, str], variable: str) -> int:
    text = env.get(variable, "").strip()
    if not text.isdigit():
        raise InvalidInputError(variable, "must be a whole number of at least 0", text)
    return int(text)


def behind(percentages: Sequence[float], share: float) -> tuple[float, list[bool]]:
    """The median of a run's ranks' percentages, and which ranks are behind: below it by more
    than ``share`` of it (0.1: more than 10% behind), and by at least one point (so ranks a
    rounding apart are never behind). Fewer than two ranks: none is."""
    import statistics  # the server's alone: a worker's import stays light

    if len(percentages) < 2:
        return (percentages[0] if percentages else 0.0), [False] * len(percentages)
    median = statistics.median(percentages)
    floor = median * (1 - share)
    return median, [p < floor and median - p >= 1 for p in percentages]
