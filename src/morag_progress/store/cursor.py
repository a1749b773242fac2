"""Following the change feed: one cursor type for every reader.

Feed ids are handed out before their transactions commit: on PostgreSQL id 7 may commit after
id 8, so a reader that saw 8 must not assume 7 never comes. A :class:`FeedCursor` is a
low-water mark (every id at or below it has been read) and one gap rule: a missing id holds
the mark until the row after it was recorded more than ``gap_seconds`` ago, which makes the
missing one a rolled-back insert. A row's recorded time is its writer's clock, the age the
reader's: replicas' clocks must agree within a few seconds (as NTP keeps them); one running
ahead gives gaps up sooner, one behind holds them longer.

Two kinds of reader share it:

- a reader whose position is stored (``feed_cursors``, one row per name: the webhook outbox,
  the span exporter) hands out only the rows up to the first gap still open, and moves the
  stored mark in the same transaction; on PostgreSQL the row is locked for it, so replicas
  take turns and each row is handed out once (:meth:`FeedCursor.load`, :meth:`save`);
- a process's own tail (``feed.FeedHub``) hands out rows above an open gap at once, so
  streams are not held back, and remembers them (``seen``) until the mark passes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from morag_progress.store.schema import feed_cursors

__all__ = ["FEED_GAP_SECONDS", "FeedCursor"]

FEED_GAP_SECONDS = 5.0
"""How long a missing feed id may hold a cursor (the row after it, by its recorded time)."""


@dataclass(slots=True)
class FeedCursor:
    """A position in the feed (see the module's text)."""

    low: int
    """Every feed id at or below it has been read."""
    gap_seconds: float = FEED_GAP_SECONDS
    seen: set[int] = field(default_factory=set)
    """Ids above ``low`` handed out already (only a reader that reads ahead has any)."""

    def advance(
        self, marks: Iterable[tuple[int, datetime]], now: datetime, *, ahead: bool = False
    ) -> list[int]:
        """The ids to hand out of ``marks`` (each row's id and recorded time, in id order,
        as read after ``low``), moving ``low`` past every id read or given up. ``ahead``: hand
        out rows above a gap still open too (remembered in ``seen``); otherwise stop there."""
        taken: list[int] = []
        for event_id, recorded in marks:
            if event_id <= self.low:
                continue
            fresh = event_id not in self.seen
            if event_id == self.low + 1 or (now - recorded).total_seconds() >= self.gap_seconds:
                self.low = event_id  # contiguous, or the gap below it given up
                self.seen.discard(event_id)
            elif not ahead:
                break  # an id below may still commit
            elif fresh:
                self.seen.add(event_id)
            if fresh:
                taken.append(event_id)
        # Ids read ahead that the mark has reached are no longer needed.
        self.seen = {event_id for event_id in self.seen if event_id > self.low}
        return taken

    @classmethod
    def load(cls, conn: Connection, name: str, *, lock: bool) -> FeedCursor | None:
        """The stored cursor ``name``, or None when there is none; locked for the transaction
        when ``lock`` (PostgreSQL replicas sharing it take turns)."""
        read = select(feed_cursors.c.event_id).where(feed_cursors.c.name == name)
        if lock:
            read = read.with_for_update()
        found = conn.execute(read).scalar()
        return None if found is None else cls(int(found))

    def save(self, conn: Connection, name: str, *, insert: Any) -> None:
        """Store the cursor's mark as ``name``, in the caller's transaction (``insert``: the
        dialect's INSERT, which knows ON CONFLICT)."""
        stmt = insert(feed_cursors).values(name=name, event_id=self.low)
        conn.execute(
            stmt.on_conflict_do_update(index_elements=["name"], set_={"event_id": self.low})
        )
