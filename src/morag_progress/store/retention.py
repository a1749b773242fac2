"""Retention: jobs that ended long ago, their change feed and old webhook deliveries are
deleted in small batches, each its own short transaction, so the write lock is never held for
long and several replicas (or the server and ``morag-progress db prune``) may prune at once:
a row deleted twice is deleted once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, tuple_

from morag_progress.store.engine import TERMINAL_VALUES, Database
from morag_progress.store.schema import events, jobs, webhook_deliveries

__all__ = ["Pruned", "Retention"]

JOBS_PER_BATCH = 200
"""Ended jobs one batch looks at."""
ROWS_PER_BATCH = 2000
"""Feed rows (or deliveries) one batch deletes at most: a job with more is finished over
several batches, and deleted with its last feed row."""


@dataclass(frozen=True, slots=True)
class Pruned:
    """What one pass deleted."""

    jobs: int = 0
    events: int = 0
    deliveries: int = 0

    def __add__(self, other: Pruned) -> Pruned:
        return Pruned(
            self.jobs + other.jobs,
            self.events + other.events,
            self.deliveries + other.deliveries,
        )

    @property
    def rows(self) -> int:
        return self.jobs + self.events + self.deliveries


class Retention(Database):
    """Deleting what is older than a retention period."""

    def prune_batch(self, *, before: datetime) -> Pruned:
        """One batch, one transaction: up to ``ROWS_PER_BATCH`` feed rows of jobs that ended
        before ``before`` (finished, failed or cancelled), the jobs whose feed is then gone,
        and up to ``ROWS_PER_BATCH`` webhook deliveries made before it that are no longer
        pending. The oldest first; an empty result means nothing is left to prune."""
        j, e, d = jobs.c, events.c, webhook_deliveries.c
        pick = (
            select(j.user_id, j.id)
            .where(j.end_date < before, j.status.in_(TERMINAL_VALUES))
            .order_by(j.end_date)
            .limit(JOBS_PER_BATCH)
        )
        if self.dialect == "postgresql":  # replicas pruning at once take different jobs
            pick = pick.with_for_update(skip_locked=True)
        with self._write("prune") as conn:
            ended = [tuple(row) for row in conn.execute(pick)]
            pruned_events = pruned_jobs = 0
            if ended:
                # By job id first (the feed's index), then the exact (user, id) pairs.
                ids = sorted({job_id for _, job_id in ended})
                feed = select(e.id).where(e.job_id.in_(ids), tuple_(e.user_id, e.job_id).in_(ended))
                doomed = [row.id for row in conn.execute(feed.limit(ROWS_PER_BATCH))]
                if doomed:
                    pruned_events = conn.execute(delete(events).where(e.id.in_(doomed))).rowcount
                if len(doomed) < ROWS_PER_BATCH:  # every feed row of these jobs is gone
                    gone = delete(jobs).where(j.id.in_(ids), tuple_(j.user_id, j.id).in_(ended))
                    pruned_jobs = conn.execute(gone).rowcount
            old = (
                select(d.id)
                .where(d.created_at < before, d.state != "pending")
                .limit(ROWS_PER_BATCH)
            )
            stale = [row.id for row in conn.execute(old)]
            pruned_deliveries = 0
            if stale:
                done = delete(webhook_deliveries).where(d.id.in_(stale))
                pruned_deliveries = conn.execute(done).rowcount
        return Pruned(pruned_jobs, pruned_events, pruned_deliveries)

    def prune(self, *, before: datetime, max_batches: int | None = None) -> Pruned:
        """Batches until nothing older is left (or ``max_batches`` ran): the total deleted."""
        total = Pruned()
        batches = 0
        while max_batches is None or batches < max_batches:
            pruned = self.prune_batch(before=before)
            total += pruned
            batches += 1
            if not pruned.rows:
                break
        return total
