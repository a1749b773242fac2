"""FeedHub and Subscription: coalescing, other writers, out-of-order feed ids."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from morag_progress import JobStatus, JobTracker
from morag_progress.feed import FeedHub, Subscription
from morag_progress.models import FeedEvent, utcnow
from morag_progress.store import SQLStore
from morag_progress.store.schema import events


def feed_event(
    id: int, job_id: str = "j", user_id: str | None = "alice", percentage: int = 1
) -> FeedEvent:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return FeedEvent(
        id, job_id, user_id, JobStatus.PROCESSING, percentage, None, 1, None, None, None, now, now
    )


async def test_subscription_keeps_the_latest_per_job() -> None:
    """A reader that does not keep up holds one row per job: the latest, oldest job first."""
    subscription = Subscription(user_id=None, job_id=None)
    for i in range(1, 1001):
        subscription.offer(feed_event(i, job_id=f"job-{i % 3}", percentage=i % 100))
    assert subscription.pending == 3
    batch = await subscription.next(0.1)
    assert [e.id for e in batch] == [998, 999, 1000]
    assert await subscription.next(0.01) == []


def test_subscription_filters() -> None:
    """A subscription matches its user and job only."""
    mine = Subscription(user_id="alice", job_id="j")
    assert mine.matches(feed_event(1))
    assert not mine.matches(feed_event(2, user_id="bob"))
    assert not mine.matches(feed_event(3, job_id="other"))
    assert Subscription(user_id=None, job_id=None).matches(feed_event(4, user_id="bob"))


async def test_hub_delivers_changes_written_elsewhere(tmp_path: Path) -> None:
    """A change written through another store on the same database reaches subscribers by polling."""
    url = f"sqlite:///{tmp_path / 'feed.db'}"
    reader, writer = SQLStore(url), SQLStore(url)
    hub = FeedHub(reader, poll_interval=0.05)
    other_process = JobTracker(store=writer)  # no wake-up reaches the hub from here
    job_id = other_process.start_job("a", "pdf", user_id="alice")
    subscription = await hub.subscribe(user_id="alice", job_id=job_id)
    await asyncio.to_thread(other_process.update_progress, job_id, 42)
    batch = await subscription.next(5)
    assert [(e.job_id, e.percentage) for e in batch] == [(job_id, 42)]
    await hub.close()
    reader.close()
    writer.close()


def _insert(store: SQLStore, *ids: int) -> None:
    now = utcnow()  # recorded now: a gap below them is young
    with store._engine.begin() as conn:
        for i in ids:
            conn.execute(
                events.insert().values(
                    id=i,
                    job_id="j",
                    user_id="u",
                    status="PROCESSING",
                    percentage=i,
                    message=None,
                    attempt=1,
                    current=None,
                    total=None,
                    stage=None,
                    timestamp=now,
                    recorded_at=now,
                )
            )


def test_out_of_order_ids_are_each_delivered_once(tmp_path: Path) -> None:
    """A feed id that commits after a higher one (PostgreSQL sequences) is still delivered,
    once; a gap that never fills is given up after gap_timeout."""
    store = SQLStore(f"sqlite:///{tmp_path / 'gaps.db'}")
    hub = FeedHub(store, gap_timeout=3600)
    _insert(store, 1, 2, 4)
    assert [e.id for e in hub._read()] == [1, 2, 4]
    assert hub.cursor.low == 2  # 3 may still commit
    _insert(store, 3)
    assert [e.id for e in hub._read()] == [3]
    assert hub.cursor.low == 4
    assert hub._read() == []
    _insert(store, 6)
    hub.gap_timeout = 0
    assert [e.id for e in hub._read()] == [6]
    assert hub.cursor.low == 6  # 5 given up
    store.close()


async def test_hub_routes_rows_to_the_subscriptions_they_concern(tmp_path: Path) -> None:
    """A row reaches its job's streams and its user's and admins' all-jobs streams, no others;
    unsubscribing removes a subscription and the tail stops with the last one."""
    store = SQLStore(f"sqlite:///{tmp_path / 'route.db'}")
    hub = FeedHub(store, poll_interval=0.05)
    tracker = JobTracker(store=store)
    tracker.add_listener(lambda _job: hub.wake())
    job = tracker.start_job("a", "pdf", user_id="alice")
    subscriptions = {
        "job": await hub.subscribe(user_id="alice", job_id=job),
        "other job": await hub.subscribe(user_id="alice", job_id="other"),
        "alice": await hub.subscribe(user_id="alice"),
        "bob": await hub.subscribe(user_id="bob"),
        "admin": await hub.subscribe(user_id=None),
    }
    assert hub.subscribers == 5
    await asyncio.to_thread(tracker.update_progress, job, 10)
    got = {
        name: [
            e.percentage for e in await s.next(0.5 if name in ("job", "alice", "admin") else 0.1)
        ]
        for name, s in subscriptions.items()
    }
    assert got == {"job": [10], "other job": [], "alice": [10], "bob": [], "admin": [10]}
    for subscription in subscriptions.values():
        hub.unsubscribe(subscription)
        hub.unsubscribe(subscription)  # twice is harmless
    assert hub.subscribers == 0
    await hub.close()
    store.close()


def test_a_job_subscription_follows_one_owner_even_without_a_user() -> None:
    """A job stream's subscription of a job without a user (in-process) takes that job's rows,
    not another user's job of the same id; an admin's all-jobs subscription takes both."""
    from datetime import UTC, datetime

    from morag_progress.feed import Subscription
    from morag_progress.models import FeedEvent, JobStatus

    def row(user: str | None) -> FeedEvent:
        now = datetime.now(UTC)
        return FeedEvent(
            1, "same-id", user, JobStatus.PROCESSING, 5, None, 1, None, None, None, now, now
        )

    exact = Subscription(user_id=None, job_id="same-id", exact_owner=True)
    assert exact.matches(row(None))
    assert not exact.matches(row("bob"))
    everyone = Subscription(user_id=None, job_id=None)
    assert everyone.matches(row(None))
    assert everyone.matches(row("bob"))


class CountingStore(SQLStore):
    """The real store, counting the hub's reads of the feed."""

    reads = 0

    def last_event_id(self, job_id: str | None = None, user_id: str | None = None) -> int:
        type(self).reads += 1
        return super().last_event_id(job_id, user_id)

    def events_after(self, *args: object, **kwargs: object) -> list[FeedEvent]:
        type(self).reads += 1
        return super().events_after(*args, **kwargs)  # type: ignore[arg-type]


async def test_subscribers_arriving_at_once_share_one_tail(tmp_path: Path) -> None:
    """Five hundred subscriptions made at once (a reconnect storm) start one tail, not one
    each: the feed is read as often as for one subscriber, and each gets each change."""
    store = CountingStore(f"sqlite:///{tmp_path / 'feed.db'}")
    tracker = JobTracker(store=store)
    job_id = tracker.start_job("a", "pdf", user_id="alice")
    hub = FeedHub(store, poll_interval=10)
    tracker.add_listener(lambda _job: hub.wake())
    subscriptions = await asyncio.gather(
        *(hub.subscribe(user_id="alice", job_id=job_id) for _ in range(500))
    )
    CountingStore.reads = 0
    await asyncio.to_thread(tracker.update_progress, job_id, 42)
    batches = await asyncio.gather(*(s.next(5) for s in subscriptions))
    assert all([e.percentage for e in batch] == [42] for batch in batches)
    assert CountingStore.reads <= 3  # one tail: a read or two per wake-up, not 500
    await hub.close()
    store.close()


async def test_the_hub_pokes_idle_subscriptions_every_tick(tmp_path: Path) -> None:
    """A subscription waiting without a timeout still wakes every ``tick`` (streams re-check
    their key then), with no rows."""
    store = SQLStore(f"sqlite:///{tmp_path / 'feed.db'}")
    hub = FeedHub(store, poll_interval=0.05, tick=0.2)
    subscription = await hub.subscribe(user_id="alice")
    started = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(subscription.next(), 5) == []
    assert asyncio.get_running_loop().time() - started >= 0.1
    await hub.close()
    store.close()


async def test_closing_before_the_tail_starts_cancels_its_waiting_subscribers(
    tmp_path: Path,
) -> None:
    store = SQLStore(f"sqlite:///{tmp_path / 'feed.db'}")
    hub = FeedHub(store)
    waiting = asyncio.ensure_future(hub.subscribe(user_id="alice"))
    await asyncio.sleep(0)  # subscribed; the tail has not run yet
    await hub.close()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(waiting, 2)
    store.close()
