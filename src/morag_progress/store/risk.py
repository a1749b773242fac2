"""Jobs at risk in the store: the running jobs the monitor assesses (``deadlines.assess``), and
the mark it leaves when a job's verdict changes.

Marking a job at risk sets ``at_risk`` and its summary (what the verdict says) and appends one
feed row of action ``at_risk`` (a ``job.at_risk`` webhook event); clearing it (the job caught
up, or its kind's history changed) only resets ``at_risk``. Each change is conditional on the
mark the monitor read, so replicas sweeping at once warn once.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, null, select, update

from morag_progress.audit import SERVER, Action
from morag_progress.deadlines import Verdict
from morag_progress.models import Job
from morag_progress.store.engine import job_from_row
from morag_progress.store.lifecycle import JobLifecycle
from morag_progress.store.schema import jobs

__all__ = ["RUNNING_A_SWEEP", "RiskMarks"]

RUNNING_A_SWEEP = 10_000
"""The most running jobs one sweep assesses (the oldest first)."""
_RUNNING = ("PROCESSING", "STALLED")


class RiskMarks(JobLifecycle):
    """The running jobs to assess, and their marks."""

    def running_jobs(self, limit: int = RUNNING_A_SWEEP) -> list[Job]:
        """The running jobs, the oldest first (at most ``limit``), without their checkpoints
        (up to 32 KiB each, which an assessment does not read)."""
        j = jobs.c
        columns = [null().label("checkpoint") if c.name == "checkpoint" else c for c in j]
        stmt = (
            select(*columns).where(j.status.in_(_RUNNING)).order_by(j.created_at, j.id).limit(limit)
        )
        with self._read("read running jobs") as conn:
            return [job_from_row(row) for row in conn.execute(stmt).mappings()]

    def mark_risk(self, job: Job, verdict: Verdict | None, *, now: datetime) -> bool:
        """Set ``job``'s mark to ``verdict`` (None: clear it) if it still has the mark it was
        read with and still runs; whether it did."""
        j = jobs.c
        read = j.at_risk.is_(None) if job.at_risk is None else j.at_risk == job.at_risk
        values: dict[str, object] = {"at_risk": None if verdict is None else verdict.risk.value}
        if verdict is not None:
            values.update(summary=verdict.message, updated_at=now)
        stmt = (
            update(jobs)
            .where(
                j.user_id == (job.user_id or ""),
                j.id == job.id,
                j.status.in_(_RUNNING),
                read,
            )
            .values(values)
            .returning(*jobs.c)
        )
        with self._batch("mark a job at risk") as batch:
            row = batch.conn.execute(stmt).mappings().first()
            if row is None:
                return False
            if verdict is not None:
                self._append_event(
                    batch, row, now=now, timestamp=now, actor=SERVER, action=Action.AT_RISK
                )
        return True

    def count_at_risk(self) -> dict[str, int]:
        """Running jobs marked at risk, by why (the ``jobs_at_risk`` metric)."""
        j = jobs.c
        stmt = (
            select(j.at_risk, func.count())
            .where(j.status.in_(_RUNNING), j.at_risk.is_not(None))
            .group_by(j.at_risk)
        )
        with self._read("count jobs at risk") as conn:
            return {str(why): int(n) for why, n in conn.execute(stmt)}
