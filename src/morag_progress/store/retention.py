"""Retention: jobs that ended long ago, their change feed and old webhook deliveries are
deleted in small batches, each its own short transaction, so the write lock is never held for
long and several replicas (or the server and ``morag-progress db prune``) may prune at once:
a row deleted twice is deleted once. A job row goes first; its feed rows follow, batch by
batch, recorded in ``pruning`` until they are all gone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, func, select, tuple_

from morag_progress.store.engine import TERMINAL_VALUES, Database
from morag_progress.store.schema import events, jobs, live_messages, pruning, webhook_deliveries

__all__ = ["Pruned", "Retention"]

JOBS_PER_BATCH = 200
"""Ended jobs one batch looks at."""
ROWS_PER_BATCH = 2000
"""Feed rows (or deliveries) one batch deletes at most: a job with more has them deleted over
several batches."""


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
        """One batch, one transaction, bounded work:

        1. feed rows of jobs deleted before (``pruning``: up to each job's last feed id, so a
           new job of the same id keeps its own), at most ``ROWS_PER_BATCH``;
        2. with what is left of that budget, up to ``JOBS_PER_BATCH`` jobs that ended before
           ``before`` (finished, failed or cancelled, and no child of theirs left: leaves go
           first, so an open job keeps all its ancestors):
           the job rows go now (so nothing can reopen a half-pruned job), their feed rows in
           this and later batches;
        3. up to ``ROWS_PER_BATCH`` webhook deliveries made before it that are not pending,
           and as many live chat messages last sent before it (their job's message is
           finished with: a later change posts a new one).

        An empty result means nothing is left to prune."""
        with self._write("prune") as conn:
            events_gone = self._prune_feed(conn)
            jobs_gone = self._prune_jobs(conn, before) if events_gone < ROWS_PER_BATCH else 0
            d = webhook_deliveries.c
            old = (
                select(d.id)
                .where(d.created_at < before, d.state != "pending")
                .limit(ROWS_PER_BATCH)
            )
            stale = [row.id for row in conn.execute(self._skip_locked(old))]
            deliveries_gone = 0
            if stale:
                done = delete(webhook_deliveries).where(d.id.in_(stale))
                deliveries_gone = conn.execute(done).rowcount
            deliveries_gone += self._prune_live(conn, before)
        return Pruned(jobs_gone, events_gone, deliveries_gone)

    def _prune_live(self, conn: Connection, before: datetime) -> int:
        m = live_messages.c
        key = (m.webhook_id, m.job_user_id, m.job_id)
        old = select(*key).where(m.updated_at < before).limit(ROWS_PER_BATCH)
        stale = [tuple(row) for row in conn.execute(self._skip_locked(old))]
        if not stale:
            return 0
        return int(conn.execute(delete(live_messages).where(tuple_(*key).in_(stale))).rowcount)

    def _skip_locked(self, stmt: Any) -> Any:
        """On PostgreSQL, rows another pruner holds are passed over (replicas split the work)."""
        return stmt.with_for_update(skip_locked=True) if self.dialect == "postgresql" else stmt

    def _prune_feed(self, conn: Connection) -> int:
        """Delete up to ``ROWS_PER_BATCH`` feed rows of deleted jobs, reading them through
        the feed's job index; forget the jobs none of whose owed rows is left. A few
        statements a batch, whatever the number of jobs."""
        p, e = pruning.c, events.c
        owed = {
            (owner, job_id): last
            for owner, job_id, last in conn.execute(select(pruning).limit(JOBS_PER_BATCH))
        }
        if not owed:
            return 0
        rows = conn.execute(
            select(e.id, e.user_id, e.job_id)
            .where(
                e.job_id.in_(sorted({job_id for _, job_id in owed})),
                e.id <= max(owed.values()),  # not a newer job's of the same id
            )
            # A job's oldest rows first (its owed ones), in the job index's own order.
            .order_by(e.job_id, e.user_id, e.id)
            .limit(2 * ROWS_PER_BATCH)
        )
        doomed = [row.id for row in rows if row.id <= owed.get((row.user_id, row.job_id), -1)][
            :ROWS_PER_BATCH
        ]
        if doomed:
            conn.execute(delete(events).where(e.id.in_(doomed)))
        if len(doomed) < ROWS_PER_BATCH:
            left = (
                select(e.id)
                .where(p.job_id == e.job_id, p.user_id == e.user_id, e.id <= p.last_event_id)
                .exists()
            )
            conn.execute(delete(pruning).where(~left))
        return len(doomed)

    def _prune_jobs(self, conn: Connection, before: datetime) -> int:
        """Delete up to ``JOBS_PER_BATCH`` jobs that ended before ``before`` and have no child
        left (children go first), leaving their feed rows to ``_prune_feed``."""
        j, e = jobs.c, events.c
        child = jobs.alias("child")
        # Leaves first: a job is pruned only once none of its children is left, so a job
        # still open keeps every ancestor (P -> C -> G with G open keeps C and so P).
        any_child = (
            select(child.c.id)
            .where(child.c.parent_id == j.id, child.c.user_id == j.user_id)
            .exists()
        )
        # The status as an expression (status || ''), not the column: otherwise SQLite, with no
        # statistics, walks the status index and sorts every ended job instead of reading the
        # end-date index in order up to the batch's size.
        ended_status = (j.status + "").in_(TERMINAL_VALUES)
        pick = (
            select(j.user_id, j.id)
            .where(j.end_date < before, ended_status, ~any_child)
            .order_by(j.end_date)
            .limit(JOBS_PER_BATCH)
        )
        ended = [tuple(row) for row in conn.execute(self._skip_locked(pick))]
        if not ended:
            return 0
        ids = sorted({job_id for _, job_id in ended})
        last = (
            select(e.user_id, e.job_id, func.max(e.id))
            .where(e.job_id.in_(ids), tuple_(e.user_id, e.job_id).in_(ended))
            .group_by(e.user_id, e.job_id)
        )
        owed = [
            {"user_id": owner, "job_id": job_id, "last_event_id": top}
            for owner, job_id, top in conn.execute(last)
        ]
        if owed:
            insert = self.dialect_insert()(pruning)
            conn.execute(
                insert.on_conflict_do_update(
                    index_elements=["user_id", "job_id"],
                    set_={"last_event_id": insert.excluded.last_event_id},
                ),
                owed,
            )
        gone = delete(jobs).where(j.id.in_(ids), tuple_(j.user_id, j.id).in_(ended))
        return int(conn.execute(gone).rowcount)

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
