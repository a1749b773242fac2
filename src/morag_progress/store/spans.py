"""Jobs that ended, taken from the change feed once each, for their spans (``tracing.py``).

A stored feed cursor (``cursor.py``, named ``spans``) holds the last feed id looked at. Each
take reads the feed after it in one short transaction, keeps the rows where a job ended, and
moves the cursor: on PostgreSQL the cursor row is locked for the transaction, so replicas take
different rows and each ended job is exported by one of them.

- The cursor is made when tracing starts (``begin``), at the feed's end: jobs that ended before
  tracing was first turned on get no span (and a later attempt of one is exported as the
  job's own span). A server that restarts goes on where it stopped.
- Ends older than ``max_age`` when they are taken are passed over: tracing turned back on after
  a long pause does not replay the jobs of the pause as stale spans.
- A feed id that is missing (its transaction still open, or rolled back) holds the cursor for
  at most a few seconds, as for every reader of the feed (``cursor.py``); an end committed
  later than that gets no span.
- A take exports after its commit: a process that dies in between loses those spans
  (telemetry is at most once; the jobs and their history are not touched).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, case, func, select, tuple_

from morag_progress.models import FeedEvent, Job
from morag_progress.store.cursor import FeedCursor
from morag_progress.store.engine import TERMINAL_VALUES, feed_event_from_row, job_from_row
from morag_progress.store.schema import events, feed_cursors, jobs
from morag_progress.store.sql import SQLStore

__all__ = ["EndedJobs", "Taken"]

_CURSOR = "spans"
_START = "spans_start"
"""The feed id tracing started at: ends before it were never exported."""
_SCAN = 5000
"""Feed rows looked at in one take, at most."""


@dataclass(frozen=True, slots=True)
class Taken:
    """What one take found."""

    ended: list[tuple[Job, FeedEvent, int | None]] = field(default_factory=list)
    """Jobs that ended, in feed order: each with the feed row of its end, and the feed id of
    its end before that (a requeued job's earlier attempt) if it had one."""
    behind: bool = False
    """True when the take stopped at its limits, not at the feed's end: take again at once."""
    skipped: int = 0
    """Ends passed over for being older than the maximum age."""


class EndedJobs:
    """The jobs that ended since the last take (see the module's text)."""

    def __init__(self, store: SQLStore, *, max_age: timedelta = timedelta(hours=1)) -> None:
        self.store = store
        self.max_age = max_age
        self._cursor = FeedCursor()
        """The exporter's place in the feed (stored; this process's view of its gaps)."""

    def begin(self) -> None:
        """Make the cursor, at the feed's end, unless there is one already."""
        with self.store.transaction("begin taking ended jobs") as conn:
            self._begin(conn)

    def _begin(self, conn: Connection) -> None:
        end = int(conn.execute(select(func.max(events.c.id))).scalar() or 0)
        for name in (_CURSOR, _START):
            conn.execute(
                self.store.dialect_insert()(feed_cursors)
                .values(name=name, event_id=end)
                .on_conflict_do_nothing()
            )

    def take(self, *, now: datetime, batch: int = 200) -> Taken:
        """Up to ``batch`` jobs that ended after the cursor (at most ``max_age`` ago); the
        cursor moves past them. Makes the cursor first if ``begin`` was not called."""
        e = events.c
        with self.store.transaction("take ended jobs") as conn:
            # Locked on PostgreSQL: replicas take turns, each row once.
            cursor = self._cursor
            if not cursor.load(conn, _CURSOR, lock=self.store.dialect == "postgresql"):
                self._begin(conn)
                return Taken()
            start = cursor.low
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
            readable = cursor.advance((row["id"] for row in rows), now.timestamp())
            seen = rows[: len(readable)]  # up to the first gap still open
            behind = len(rows) == _SCAN and len(seen) == len(rows)
            oldest = now - self.max_age
            ended: list[int] = []
            end = start
            skipped = 0
            for row in seen:
                if row["status"] in TERMINAL_VALUES:
                    if row["recorded_at"] < oldest:
                        skipped += 1
                    elif len(ended) == batch:
                        behind = True
                        break
                    else:
                        ended.append(row["id"])
                end = row["id"]
            if end == start:
                return Taken()
            cursor.moved_to(end)  # the rows looked at, which a full batch may cut short
            cursor.save(conn, _CURSOR, insert=self.store.dialect_insert())
            if not ended:
                return Taken(behind=behind, skipped=skipped)
            began = conn.execute(
                select(feed_cursors.c.event_id).where(feed_cursors.c.name == _START)
            ).scalar()
            # A job's earlier end, if it had one that was exported: only a requeued job has
            # (its attempt grew), so a first end, the common case, searches nothing; newest
            # first through the job index, stopping at the first end found.
            earlier = events.alias("earlier")
            search = (
                select(earlier.c.id)
                .where(
                    earlier.c.job_id == e.job_id,
                    earlier.c.user_id == e.user_id,
                    earlier.c.id < e.id,
                    earlier.c.id > (began or 0),
                    earlier.c.status.in_(TERMINAL_VALUES),
                )
                .order_by(earlier.c.id.desc())
                .limit(1)
                .scalar_subquery()
            )
            previous = case((e.attempt > 1, search), else_=None).label("previous_end")
            found = conn.execute(
                select(events, previous).where(e.id.in_(ended)).order_by(e.id)
            ).mappings()
            ends = [(feed_event_from_row(row), row["previous_end"]) for row in found]
            keys = {(end.job_id, end.user_id or "") for end, _ in ends}
            found_jobs = conn.execute(
                select(jobs).where(tuple_(jobs.c.id, jobs.c.user_id).in_(keys))
            ).mappings()
            known = {(row["id"], row["user_id"]): job_from_row(row) for row in found_jobs}
        # A job pruned since has nothing to tell.
        taken = [
            (known[key], end, previous)
            for end, previous in ends
            if (key := (end.job_id, end.user_id or "")) in known
        ]
        return Taken(taken, behind, skipped)
