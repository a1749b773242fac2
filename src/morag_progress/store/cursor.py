"""Following the change feed: one cursor type for every reader.

Feed ids are handed out before their transactions commit: on PostgreSQL id 7 may commit after
id 8, so a reader that saw 8 must not assume 7 never comes. A :class:`FeedCursor` is a
low-water mark (every id at or below it has been read) and one gap rule: a missing id holds
the mark until the reader has seen it missing for ``gap_seconds`` by its own clock, which makes
it a rolled-back insert. The reader's own clock, not the rows' recorded times: those are their
writers' clocks, and a replica whose clock runs behind would make a gap look old at once.

Two kinds of reader share it, each keeping one cursor for its life:

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
from typing import Any

from sqlalchemy import Connection, select

from morag_progress.store.schema import feed_cursors

__all__ = ["FEED_GAP_SECONDS", "FeedCursor"]

FEED_GAP_SECONDS = 5.0
"""How long a missing feed id may hold a cursor, as its reader sees it missing."""


@dataclass(slots=True)
class FeedCursor:
    """A position in the feed (see the module's text)."""

    low: int = 0
    """Every feed id at or below it has been read."""
    gap_seconds: float = FEED_GAP_SECONDS
    seen: set[int] = field(default_factory=set)
    """Ids above ``low`` handed out already (only a reader that reads ahead has any)."""
    missing_since: dict[int, float] = field(default_factory=dict)
    """When (the reader's clock, seconds) each open gap was first seen, by its first id."""

    def advance(self, ids: Iterable[int], now: float, *, ahead: bool = False) -> list[int]:
        """The ids to hand out of ``ids`` (the rows read after ``low``, in order), moving
        ``low`` past every id read or given up; ``now`` is the reader's clock, in seconds.
        ``ahead``: hand out rows above a gap still open too (remembered in ``seen``);
        otherwise stop there."""
        taken: list[int] = []
        for event_id in ids:
            if event_id <= self.low:
                continue
            fresh = event_id not in self.seen
            if event_id != self.low + 1:  # ids below it are missing
                since = self.missing_since.setdefault(self.low + 1, now)
                if now - since < self.gap_seconds:
                    if not ahead:
                        break  # an id below may still commit
                    if fresh:
                        self.seen.add(event_id)
                        taken.append(event_id)
                    continue
            self.low = event_id  # contiguous, or the ids below it given up
            if fresh:
                taken.append(event_id)
        self.moved_to(self.low)
        return taken

    def moved_to(self, low: int) -> None:
        """Take ``low`` as the mark (a stored cursor, as another replica may have moved it),
        forgetting what lies at or below it."""
        self.low = low
        self.seen = {event_id for event_id in self.seen if event_id > self.low}
        self.missing_since = {
            first: since for first, since in self.missing_since.items() if first > self.low
        }

    def load(self, conn: Connection, name: str, *, lock: bool) -> bool:
        """Take the stored mark ``name`` (False when there is none); locked for the
        transaction when ``lock``, so PostgreSQL replicas sharing it take turns."""
        read = select(feed_cursors.c.event_id).where(feed_cursors.c.name == name)
        if lock:
            read = read.with_for_update()
        found = conn.execute(read).scalar()
        if found is None:
            return False
        self.moved_to(int(found))
        return True

    def save(self, conn: Connection, name: str, *, insert: Any) -> None:
        """Store the cursor's mark as ``name``, in the caller's transaction (``insert``: the
        dialect's INSERT, which knows ON CONFLICT)."""
        stmt = insert(feed_cursors).values(name=name, event_id=self.low)
        conn.execute(
            stmt.on_conflict_do_update(index_elements=["name"], set_={"event_id": self.low})
        )
