"""A process's rank from its launcher's environment, the run's job ids, and the straggler rule."""

from __future__ import annotations

import os
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from morag_progress.bounds import MAX_ID, check_id
from morag_progress.errors import InvalidInputError
from morag_progress.ranks import Rank, behind


def test_torchrun_accelerate_and_deepspeed_set_rank_world_size_and_the_run_id() -> None:
    env = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "TORCHELASTIC_RUN_ID": "job-7"}
    rank = Rank.detect(env)
    assert rank == Rank(rank=3, world_size=8, run_id="torch-job-7", local_rank=1, launcher="torch")
    assert (rank.run_job_id, rank.job_id) == ("torch-job-7", "torch-job-7:rank-3")
    restarted = Rank.detect({**env, "TORCHELASTIC_RESTART_COUNT": "2"})
    assert restarted is not None
    assert restarted.run_id == "torch-job-7.restart-2"  # a new run: the last one's jobs ended
    assert Rank.detect({**env, "TORCHELASTIC_RESTART_COUNT": "0"}) == rank


def test_slurm_tasks_share_the_job_and_step() -> None:
    env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "16", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "42"}
    assert Rank.detect(env) == Rank(5, 16, "slurm-42", 1, "slurm")
    assert Rank.detect({**env, "SLURM_STEP_ID": "0"}) == Rank(5, 16, "slurm-42.0", 1, "slurm")
    requeued = Rank.detect({**env, "SLURM_RESTART_COUNT": "1"})
    assert requeued is not None
    assert requeued.run_id == "slurm-42.restart-1"


def test_torchrun_inside_a_slurm_job_takes_the_slurm_job_as_its_run() -> None:
    env = {"RANK": "9", "WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8", "SLURM_JOB_ID": "77"}
    assert Rank.detect({**env, "TORCHELASTIC_RUN_ID": "none"}) == Rank(
        9, 16, "slurm-77", None, "torch"
    )


def test_open_mpi_mpich_and_pmix_processes() -> None:
    ompi = {
        "OMPI_COMM_WORLD_RANK": "2",
        "OMPI_COMM_WORLD_SIZE": "4",
        "OMPI_COMM_WORLD_LOCAL_RANK": "0",
        "OMPI_MCA_ess_base_jobid": "123456",
    }
    assert Rank.detect(ompi) == Rank(2, 4, "mpi-123456", 0, "mpi")
    mpich = {"PMI_RANK": "1", "PMI_SIZE": "2", "PMI_JOBID": "77"}
    assert Rank.detect(mpich) == Rank(1, 2, "mpi-77", None, "mpi")
    pmix = {"PMIX_RANK": "0", "PMIX_SIZE": "2", "PMIX_NAMESPACE": "prterun-h-1@1"}
    assert Rank.detect(pmix) == Rank(0, 2, "mpi-prterun-h-1@1", None, "mpi")


def test_the_run_id_given_wins_then_the_variable_then_the_launchers() -> None:
    env = {"RANK": "0", "WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "elastic"}
    assert Rank.detect(env).run_id == "torch-elastic"  # type: ignore[union-attr]
    env["MORAG_PROGRESS_RUN_ID"] = "ours"
    assert Rank.detect(env).run_id == "ours"  # type: ignore[union-attr]
    assert Rank.detect(env, run_id="given").run_id == "given"  # type: ignore[union-attr]


def test_one_machine_without_a_run_id_shares_the_launchers_process() -> None:
    """torchrun's default rendezvous id is "none": every process on one machine has the same
    parent (the launcher), so host and parent process id make the run's id."""
    env = {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "4", "TORCHELASTIC_RUN_ID": "none"}
    rank = Rank.detect(env)
    assert rank is not None
    assert rank.run_id == f"{socket.gethostname()}-{os.getppid()}"


def test_several_machines_without_a_run_id_are_refused_naming_what_to_set() -> None:
    env = {"RANK": "1", "WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8"}
    with pytest.raises(InvalidInputError) as e:
        Rank.detect(env)
    assert e.value.field == "run_id"
    assert "MORAG_PROGRESS_RUN_ID" in str(e.value)


def test_no_launcher_and_nothing_given_is_no_rank() -> None:
    assert Rank.detect({}) is None
    assert Rank.detect({"RANK": "1"}) is None  # no world size: not a launcher's
    assert Rank.detect({}, rank=1, world_size=2, run_id="r") == Rank(1, 2, "r")
    with pytest.raises(InvalidInputError) as e:
        Rank.detect({}, rank=1, run_id="r")
    assert e.value.field == "world_size"


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"RANK": "x", "WORLD_SIZE": "2"}, "RANK"),
        ({"RANK": "-1", "WORLD_SIZE": "2"}, "RANK"),
        ({"RANK": "0", "WORLD_SIZE": "2.5"}, "WORLD_SIZE"),
        ({"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "a"}, "LOCAL_RANK"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "rank"),
        ({"RANK": "0", "WORLD_SIZE": "0"}, "world_size"),
        ({"RANK": "0", "WORLD_SIZE": "10001"}, "world_size"),
    ],
)
def test_a_bad_value_is_refused_naming_its_variable(env: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidInputError) as e:
        Rank.detect({**env, "MORAG_PROGRESS_RUN_ID": "r"})
    assert e.value.field == field


def test_the_largest_run_fits() -> None:
    last = Rank.detect({"RANK": "9999", "WORLD_SIZE": "10000", "MORAG_PROGRESS_RUN_ID": "r"})
    assert last is not None
    assert last.job_id == "r:rank-9999"
    with pytest.raises(InvalidInputError):
        Rank(rank=0, world_size=1, run_id="")


@pytest.mark.parametrize("run_id", [".", "..", "a/b c", "é" * 200])
def test_run_ids_a_job_id_cannot_hold_are_written_as_one(run_id: str) -> None:
    r = Rank(rank=0, world_size=1, run_id=run_id)
    check_id("run", r.run_job_id)
    check_id("rank", r.job_id)


@given(st.text(min_size=1, max_size=300), st.integers(0, 9999))
def test_any_run_id_makes_valid_job_ids(run_id: str, rank: int) -> None:
    r = Rank(rank=rank, world_size=10_000, run_id=run_id)
    check_id("run", r.run_job_id)
    check_id("rank", r.job_id)
    assert len(r.job_id) <= MAX_ID
    assert r.job_id.startswith(r.run_job_id + ":rank-")


def test_behind_is_below_the_median_by_more_than_the_share() -> None:
    median, flags = behind([50, 50, 50, 40, 46], 0.1)
    assert median == 50
    assert flags == [False, False, False, True, False]  # 45 is the line: 46 is not behind
    assert behind([50, 50, 44.9], 0.1)[1] == [False, False, True]
    assert behind([50, 50, 45], 0.1)[1] == [False, False, False]  # exactly 10%: not more


def test_ranks_a_rounding_apart_are_never_behind() -> None:
    """Early in a run (median 3%) a rank at 2% is a third behind, but only a point: a rank
    is behind by at least one point, and here that is one point exactly."""
    assert behind([3, 3, 2], 0.1)[1] == [False, False, True]
    assert behind([0.6, 0.6, 0.0], 0.1)[1] == [False, False, False]


def test_one_rank_or_none_is_never_behind() -> None:
    assert behind([], 0.1) == (0.0, [])
    assert behind([7], 0.1) == (7, [False])
    assert behind([0, 100], 0.1) == (50, [True, False])


@given(st.lists(st.integers(0, 100), min_size=0, max_size=64), st.floats(0.01, 0.99))
def test_a_rank_behind_is_always_below_the_median(pcts: list[int], share: float) -> None:
    median, flags = behind([float(p) for p in pcts], share)
    assert len(flags) == len(pcts)
    assert all(
        p < median * (1 - share) and median - p >= 1 for p, f in zip(pcts, flags, strict=True) if f
    )
    assert not any(f for p, f in zip(pcts, flags, strict=True) if p >= median)
