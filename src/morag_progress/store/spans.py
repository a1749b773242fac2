"""Jobs that ended, taken from the change feed once each, for their spans (``tracing.py``).

A cursor row (``webhook_cursor``, named ``spans``) holds the last feed id looked at. Each take
reads the feed after it in one short transaction, keeps the rows where a job ended, and moves
the cursor: on PostgreSQL the cursor row is locked for the transaction, so replicas take
different rows and each ended job is exported by one of them. A take exports after its commit:
a process that dies in between loses those spans (telemetry is at most once; the jobs and their
history are not touched).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, func, select, tuple_

from morag_progress.models import FeedEvent, Job
from morag_progress.store.engine import (
    TERMINAL_VALUES,
    contiguous,
    feed_event_from_row,
    job_from_row,
)
from morag_progress.store.schema import events, jobs, webhook_cursor
from morag_progress.store.sql import SQLStore

__all__ = ["EndedJobs"]

_CURSOR = "spans"
_SCAN = 5000
"""Feed rows looked at in one take, at most."""


class EndedJobs:
    """The jobs that ended since the last take (see the module's text)."""

    def __init__(self, store: SQLStore) -> None:
        self.store = store

    def take(self, *, now: datetime, batch: int = 200) -> list[tuple[Job, FeedEvent]]:
        """Up to ``batch`` jobs that ended after the cursor, each with the feed row of its end,
        in feed order; the cursor moves past them. The first take starts at the feed's end:
        jobs that ended before tracing was turned on get no span."""
        e = events.c
        with self.store.transaction("take ended jobs") as conn:
            read = select(webhook_cursor.c.event_id).where(webhook_cursor.c.name == _CURSOR)
            if self.store.dialect == "postgresql":
                read = read.with_for_update()  # replicas take turns, each row once
            cursor = conn.execute(read).scalar()
            if cursor is None:
                start = int(conn.execute(select(func.max(e.id))).scalar() or 0)
                self._move(conn, start)
                return []
            start = int(cursor)
            rows = (
                conn.execute(
                    select(e.id, e.status, e.recorded_at)
                    .where(e.id > start)
                    .order_by(e.id)
                    .limit(_SCAN)
                )
                .mappings()
                .all()
            )
            rows = contiguous(rows, start, now)
            ended: list[int] = []
            end = start
            for row in rows:
                if row["status"] in TERMINAL_VALUES:
                    if len(ended) == batch:
                        break
                    ended.append(row["id"])
                end = row["id"]
            if end == start:
                return []
            self._move(conn, end)
            if not ended:
                return []
            found = conn.execute(select(events).where(e.id.in_(ended)).order_by(e.id)).mappings()
            ends = [feed_event_from_row(row) for row in found]
            keys = {(end.job_id, end.user_id or "") for end in ends}
            found_jobs = conn.execute(
                select(jobs).where(tuple_(jobs.c.id, jobs.c.user_id).in_(keys))
            ).mappings()
            known = {(row["id"], row["user_id"]): job_from_row(row) for row in found_jobs}
        # A job pruned since has nothing to tell.
        return [
            (known[key], end) for end in ends if (key := (end.job_id, end.user_id or "")) in known
        ]

    def _move(self, conn: Connection, event_id: int) -> None:
        values = {"name": _CURSOR, "event_id": event_id}
        conn.execute(
            self.store.dialect_insert()(webhook_cursor)
            .values(values)
            .on_conflict_do_update(index_elements=["name"], set_={"event_id": event_id})
        )
