"""Distributed runs' stragglers: the monitor's sweep over parents that expect their children
(a run's ranks, ``ranks.py``), flagging a rank that has been behind its siblings for a while.

A rank behind (``ranks.behind``) is noted with the time it was first seen behind
(``behind_since``); still behind ``hold`` seconds later, it is flagged (``straggler``), and its
run counts it (``stragglers``) and says so in its summary, with one feed row of action
``straggler`` (a ``job.straggler`` webhook event). A rank no longer behind, or ended, is
cleared and its run's count goes down. The ranks are read without the write lock; a write
transaction is taken only for a run with something to change, and each change is conditional
on what the sweep read, so replicas sweeping at once flag a rank once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, select, update

from morag_progress.audit import SERVER, Action
from morag_progress.bounds import MAX_EXPECTED_CHILDREN
from morag_progress.ranks import behind
from morag_progress.store.engine import TERMINAL_VALUES
from morag_progress.store.lifecycle import JobLifecycle
from morag_progress.store.schema import jobs

__all__ = ["RUNS_A_SWEEP", "Straggler", "StragglerSweeps"]

RUNS_A_SWEEP = 1_000
"""The most running runs one sweep looks at (the oldest first)."""
_RUNNING = ("PROCESSING", "STALLED")


@dataclass(frozen=True, slots=True)
class Straggler:
    """A rank the sweep flagged: its run, and where it stood against its siblings' median."""

    user_id: str | None
    run_id: str
    job_id: str
    percentage: int
    median: float
    behind_seconds: float

    def __str__(self) -> str:
        return (
            f"Straggler: {self.job_id} at {self.percentage}% against its siblings' median "
            f"{self.median:g}%, behind for {self.behind_seconds:.0f} s"
        )


@dataclass(frozen=True, slots=True)
class _Rank:
    job_id: str
    percentage: int
    status: str
    behind_since: datetime | None
    straggler: bool


class StragglerSweeps(JobLifecycle):
    """The straggler sweep (``sweep_stragglers``)."""

    def sweep_stragglers(self, *, now: datetime, share: float, hold: float) -> list[Straggler]:
        """One pass over the running runs: note ranks newly behind, flag those behind for
        ``hold`` seconds, clear those caught up or ended. Returns the ranks flagged now."""
        j = jobs.c
        runs_stmt = (
            select(j.user_id, j.id)
            .where(j.expected_children.is_not(None), j.status.in_(_RUNNING))
            .order_by(j.created_at, j.id)
            .limit(RUNS_A_SWEEP)
        )
        ranks_stmt = (
            select(j.id, j.percentage, j.status, j.behind_since, j.straggler)
            .where(
                j.user_id == bindparam("owner"),
                j.parent_id == bindparam("run"),
                j.id != bindparam("run"),
            )
            .order_by(j.id)
            .limit(MAX_EXPECTED_CHILDREN)
        )
        flagged: list[Straggler] = []
        with self._read("find running runs") as conn:
            runs = conn.execute(runs_stmt).all()
        for owner, run_id in runs:
            with self._read("read a run's ranks") as conn:
                ranks = [
                    _Rank(*row) for row in conn.execute(ranks_stmt, {"owner": owner, "run": run_id})
                ]
            flagged += self._judge(owner, run_id, ranks, now, share, hold)
        return flagged

    def count_stragglers(self) -> int:
        """Ranks flagged as stragglers in the runs still running (the ``stragglers`` metric)."""
        j = jobs.c
        stmt = select(func.coalesce(func.sum(j.stragglers), 0)).where(
            j.expected_children.is_not(None), j.status.in_(_RUNNING)
        )
        with self._read("count stragglers") as conn:
            return int(conn.execute(stmt).scalar_one())

    def _judge(
        self,
        owner: str,
        run_id: str,
        ranks: list[_Rank],
        now: datetime,
        share: float,
        hold: float,
    ) -> list[Straggler]:
        median, lagging = behind([float(rank.percentage) for rank in ranks], share)
        cutoff = now - timedelta(seconds=hold)
        decided: list[tuple[_Rank, str]] = []
        for rank, is_behind in zip(ranks, lagging, strict=True):
            if rank.status in TERMINAL_VALUES or not is_behind:
                if rank.behind_since is not None or rank.straggler:
                    decided.append((rank, "clear"))
            elif rank.behind_since is None:
                decided.append((rank, "note"))
            elif not rank.straggler and rank.behind_since <= cutoff:
                decided.append((rank, "flag"))  # once while it stays behind
        if not decided:
            return []
        j = jobs.c
        flagged: list[Straggler] = []
        caught_up = 0
        with self._batch("sweep a run's stragglers") as batch:
            conn = batch.conn
            # Rows in id order, as the writer locks them, and the run after its ranks, as a
            # roll-up does: a sweep and a batch of reports never wait for each other in a ring.
            for rank, what in sorted(decided, key=lambda decision: decision[0].job_id):
                if what == "note":
                    _change(conn, owner, rank, j.behind_since.is_(None), behind_since=now)
                elif what == "clear":
                    unchanged = j.straggler == rank.straggler
                    if _change(conn, owner, rank, unchanged, behind_since=None, straggler=False):
                        caught_up += int(rank.straggler)
                else:
                    read = and_(j.straggler.is_(False), j.behind_since == rank.behind_since)
                    if _change(conn, owner, rank, read, straggler=True):
                        assert rank.behind_since is not None
                        seconds = (now - rank.behind_since).total_seconds()
                        pct = rank.percentage
                        flagged.append(
                            Straggler(owner or None, run_id, rank.job_id, pct, median, seconds)
                        )
            if not flagged and not caught_up:
                return []
            values: dict[str, Any] = {"stragglers": j.stragglers + len(flagged) - caught_up}
            if flagged:
                values["summary"] = str(flagged[-1])
                values["updated_at"] = now
            parent = (
                conn.execute(
                    update(jobs)
                    .where(j.user_id == owner, j.id == run_id, j.status.in_(_RUNNING))
                    .values(values)
                    .returning(*jobs.c)
                )
                .mappings()
                .first()
            )
            if parent is not None and flagged:
                self._append_event(
                    batch, parent, now=now, timestamp=now, actor=SERVER, action=Action.STRAGGLER
                )
        return flagged


def _change(conn: Connection, owner: str, rank: Any, expect: Any, **values: Any) -> bool:
    """Change one rank's straggler columns if it is still as the sweep read it (``expect``):
    whether it was."""
    j = jobs.c
    stmt = update(jobs).where(j.user_id == owner, j.id == rank.job_id, expect).values(values)
    return bool(conn.execute(stmt).rowcount)
