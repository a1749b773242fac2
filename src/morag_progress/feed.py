"""The change-feed tail: one reader per process, fanned out to live subscribers.

The hub reads new feed rows from the store and offers each to the subscriptions it matches. It is
woken at once by changes made in this process (``wake``, thread-safe) and polls for changes made
by other processes on the same database (Celery workers, other API replicas).

A subscription keeps only the latest row per job, so a slow reader gets the latest state of every
job it watches, never an unbounded backlog.

Feed ids on PostgreSQL come from a sequence and are not commit-ordered: id 7 may commit after id
8. The hub follows the feed with the cursor every reader of it uses (``store/cursor.py``): a
low-water mark it re-reads above, delivering each id once, rows above a gap at once; an id still
missing for ``gap_timeout`` seconds is given up (a rolled-back insert). History reads never
depend on this: they read the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import Any

from morag_progress._threads import run_to_completion
from morag_progress.errors import LimitExceededError
from morag_progress.models import FeedEvent
from morag_progress.store import SQLStore
from morag_progress.store.cursor import FeedCursor

__all__ = ["FeedHub", "Subscription"]

logger = logging.getLogger(__name__)


class Subscription:
    """One reader's view of the feed: matching rows, latest per job, oldest first."""

    def __init__(
        self,
        *,
        user_id: str | None,
        job_id: str | None,
        key_id: str | None = None,
        exact_owner: bool = False,
    ) -> None:
        self.user_id = user_id
        self.job_id = job_id
        self.key_id = key_id
        self.exact_owner = exact_owner
        """Match rows of ``user_id`` only, even when it is None (a job without a user):
        ids are unique per user, so a job stream follows one owner's job."""
        self._pending: dict[str, FeedEvent] = {}
        self._ready = asyncio.Event()

    def matches(self, event: FeedEvent) -> bool:
        """True for rows of the watched job (or any job) of the watched user (or any user)."""
        owner_ok = event.user_id == self.user_id or (self.user_id is None and not self.exact_owner)
        return owner_ok and (self.job_id is None or event.job_id == self.job_id)

    def offer(self, event: FeedEvent) -> None:
        """Hold ``event``, replacing an undelivered older row of the same job."""
        self._pending.pop(event.job_id, None)
        self._pending[event.job_id] = event
        self._ready.set()

    @property
    def pending(self) -> int:
        """How many rows wait to be read (at most one per job)."""
        return len(self._pending)

    def poke(self) -> None:
        """Wake the reader even without rows (its ``next`` returns an empty list)."""
        self._ready.set()

    async def next(self, timeout: float | None = None) -> list[FeedEvent]:
        """The rows that arrived since the last call, waiting for one, for ``timeout``
        seconds (None: until a row arrives or the hub pokes, see ``FeedHub(tick=...)``)."""
        if not self._pending:
            if timeout is None:
                await self._ready.wait()  # no timer to arm and cancel on every row
            else:
                try:
                    async with asyncio.timeout(timeout):  # cheaper than wait_for
                        await self._ready.wait()
                except TimeoutError:
                    return []
        self._ready.clear()
        events = sorted(self._pending.values(), key=lambda e: e.id)
        self._pending.clear()
        return events


class FeedHub:
    """Tails the store's change feed while anyone is subscribed."""

    def __init__(
        self,
        store: SQLStore,
        *,
        poll_interval: float = 0.25,
        tick: float = 5.0,
        gap_timeout: float = 5.0,
        batch: int = 1000,
    ) -> None:
        self._store = store
        self.poll_interval = poll_interval
        self.tick = tick
        """Every ``tick`` seconds each subscription is poked (a stream re-checks its key)."""
        self._next_tick = 0.0
        self.cursor = FeedCursor(0, gap_timeout)
        """Where the tail is in the feed (reading ahead of gaps)."""
        self.batch = batch
        # Indexed, so that a row costs only the subscriptions it concerns: by job for job
        # streams, by user for all-jobs streams (key None: an admin's, which see every row).
        self._by_job: dict[str, set[Subscription]] = {}
        self._by_user: dict[str | None, set[Subscription]] = {}
        self._count = 0
        self._per_key: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._started: asyncio.Future[None] | None = None

    async def subscribe(
        self,
        *,
        user_id: str | None,
        job_id: str | None = None,
        key_id: str | None = None,
        max_per_key: int | None = None,
        exact_owner: bool = False,
    ) -> Subscription:
        """Start receiving the rows that match; the tail starts with the first subscriber.

        With ``key_id`` and ``max_per_key``, raise LimitExceededError when that key holds that
        many subscriptions already.
        """
        if key_id is not None and max_per_key is not None and self._per_key[key_id] >= max_per_key:
            raise LimitExceededError(
                f"this key has {max_per_key} event streams open, the most it may; close one first",
                retry_after=5,
            )
        subscription = Subscription(
            user_id=user_id, job_id=job_id, key_id=key_id, exact_owner=exact_owner
        )
        if self._task is None or self._task.done():
            # Started here, without awaiting anything first: subscribers arriving together
            # (a reconnect storm) must find this tail, not start one each.
            loop = asyncio.get_running_loop()
            self._loop = loop
            self._wakeup = asyncio.Event()
            self._started = loop.create_future()
            self._task = asyncio.create_task(self._run(), name="morag-progress feed tail")
        self._add(subscription)
        started = self._started
        assert started is not None
        try:
            # The tail has read its starting point: every row after it reaches this
            # subscription, so a snapshot the caller reads from now on misses nothing.
            await asyncio.shield(started)
        except BaseException:
            self.unsubscribe(subscription)
            raise
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop receiving; the tail stops with the last subscriber."""
        index, key = self._slot(subscription)
        members = index.get(key)
        if members is not None and subscription in members:
            members.discard(subscription)
            self._count -= 1
            if subscription.key_id is not None:
                self._per_key[subscription.key_id] -= 1
                if not self._per_key[subscription.key_id]:
                    del self._per_key[subscription.key_id]
            if not members:
                del index[key]

    @property
    def subscribers(self) -> int:
        """How many subscriptions are open."""
        return self._count

    def _slot(self, subscription: Subscription) -> tuple[dict[Any, set[Subscription]], Any]:
        if subscription.job_id is not None:
            return self._by_job, subscription.job_id
        return self._by_user, subscription.user_id

    def _add(self, subscription: Subscription) -> None:
        index, key = self._slot(subscription)
        index.setdefault(key, set()).add(subscription)
        self._count += 1
        if subscription.key_id is not None:
            self._per_key[subscription.key_id] += 1

    def _dispatch(self, event: FeedEvent) -> None:
        for subscription in self._by_job.get(event.job_id, ()):
            if subscription.matches(event):
                subscription.offer(event)
        for key in {event.user_id, None}:
            for subscription in self._by_user.get(key, ()):
                subscription.offer(event)

    def wake(self) -> None:
        """Read the feed now (a change was just committed). Safe from any thread."""
        loop, wakeup = self._loop, self._wakeup
        # Already set: the tail reads after clearing it, so this change is read too (and
        # each skipped wake-up is a write to the loop's self-pipe saved).
        if loop is not None and wakeup is not None and not wakeup.is_set() and not loop.is_closed():
            loop.call_soon_threadsafe(wakeup.set)

    async def close(self) -> None:
        """Stop the tail (subscribers still waiting for it to start are cancelled)."""
        if self._started is not None and not self._started.done():
            self._started.cancel()
        self._by_job.clear()
        self._by_user.clear()
        self._count = 0
        self._per_key.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        assert self._wakeup is not None
        assert self._started is not None
        try:
            low = await run_to_completion(self._store.last_event_id)
        except asyncio.CancelledError:
            self._started.cancel()
            raise
        except Exception as e:  # noqa: BLE001  (passed on: the subscribers waiting hear of it)
            self._started.set_exception(e)
            return
        self.cursor = FeedCursor(low, self.cursor.gap_seconds)  # anew: nothing seen yet
        self._next_tick = time.monotonic() + self.tick
        self._started.set_result(None)
        while self._count:
            try:
                events = await run_to_completion(self._read)
            except Exception:  # a failing read must not end every stream
                logger.warning("reading the change feed failed; retrying", exc_info=True)
                events = []
            for event in events:
                self._dispatch(event)
            if time.monotonic() >= self._next_tick:
                self._next_tick = time.monotonic() + self.tick
                for members in (*self._by_job.values(), *self._by_user.values()):
                    for subscription in members:
                        subscription.poke()
            if len(events) < self.batch:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_interval):
                        await self._wakeup.wait()
                self._wakeup.clear()

    def _read(self) -> list[FeedEvent]:
        """New rows above the cursor, each once; the cursor moves past what it may."""
        rows = self._store.events_after(self.cursor.low, limit=self.batch)
        fresh = set(self.cursor.advance((row.id for row in rows), time.monotonic(), ahead=True))
        return [row for row in rows if row.id in fresh]

    @property
    def gap_timeout(self) -> float:
        """How long a missing feed id may hold the tail back (seconds)."""
        return self.cursor.gap_seconds

    @gap_timeout.setter
    def gap_timeout(self, seconds: float) -> None:
        self.cursor.gap_seconds = seconds
