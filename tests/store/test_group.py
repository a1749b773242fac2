"""Group commit: queued items share transactions, in order, each caller gets its own outcome."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from morag_progress.errors import StoreError
from morag_progress.models import ProgressUpdate
from morag_progress.store import SQLStore
from morag_progress.store.group import GroupCommit
from morag_progress.tracker import JobTracker


def held_first_batch(
    answer: Callable[[int], int],
) -> tuple[Callable[[list[int]], list[int | BaseException]], list[list[int]], threading.Event]:
    """An ``apply_batch`` that records its batches and holds the first until released (the
    items submitted meanwhile queue behind it)."""
    batches: list[list[int]] = []
    release = threading.Event()

    def apply(items: list[int]) -> list[int | BaseException]:
        if not batches:
            release.wait(5)
        batches.append(items)
        return [answer(item) for item in items]

    return apply, batches, release


def test_items_queued_while_the_writer_works_share_one_batch_in_order() -> None:
    """While one batch is being applied, the items that arrive are applied together next, in
    the order they were queued."""
    apply, batches, release = held_first_batch(lambda item: item * 10)
    group: GroupCommit[int, int] = GroupCommit(apply)
    first = group.submit(0)
    time.sleep(0.05)  # the writer holds item 0
    futures = [group.submit(i) for i in range(1, 101)]
    release.set()
    assert first.result(5) == 0
    assert [f.result(5) for f in futures] == [i * 10 for i in range(1, 101)]
    assert batches[0] == [0]
    assert [i for batch in batches[1:] for i in batch] == list(range(1, 101))
    assert len(batches) <= 3  # 100 items in one or two transactions, not 100
    group.close()


def test_a_transaction_takes_items_up_to_max_batch_by_size() -> None:
    """Items weigh their size: a transaction stops taking items once it holds max_batch units,
    and an item bigger than that goes alone."""
    apply, batches, release = held_first_batch(lambda item: item)
    group: GroupCommit[int, int] = GroupCommit(apply, max_batch=10, size=lambda item: item)
    first = group.submit(1)
    time.sleep(0.05)  # the writer holds the first item; the rest queue
    futures = [group.submit(size) for size in (4, 4, 4, 30, 2)]
    release.set()
    assert [f.result(5) for f in [first, *futures]] == [1, 4, 4, 4, 30, 2]
    assert batches == [[1], [4, 4, 4], [30], [2]]
    group.close()


def test_an_items_error_is_its_own_and_a_batch_error_is_everyones() -> None:
    """A result that is an exception fails that caller only; an exception out of the batch
    fails every caller of that batch, and the writer goes on."""
    fail_batch = threading.Event()

    def apply(items: list[int]) -> list[int | BaseException]:
        if fail_batch.is_set():
            fail_batch.clear()
            raise StoreError("the database went away")
        return [ValueError("bad") if item < 0 else item for item in items]

    group: GroupCommit[int, int] = GroupCommit(apply)
    assert group.submit(1).result(5) == 1
    with pytest.raises(ValueError, match="bad"):
        group.submit(-1).result(5)
    fail_batch.set()
    with pytest.raises(StoreError, match="went away"):
        group.submit(2).result(5)
    assert group.submit(3).result(5) == 3
    group.close()
    with pytest.raises(StoreError, match="closed"):
        group.submit(4).result(5)


def test_concurrent_reports_on_a_real_store_all_commit_in_fewer_transactions(
    store: SQLStore, tracker: JobTracker
) -> None:
    """Eight threads report 50 times each on their own jobs: every update is applied and in the
    history, and the writer used fewer transactions than updates."""
    jobs = [tracker.start_job(f"d{i}", "pdf", user_id="u") for i in range(8)]

    def report(job_id: str) -> int:
        applied = 0
        for pct in range(1, 51):
            applied += tracker.apply(ProgressUpdate(job_id, pct, f"at {pct}", user_id="u")).applied
        return applied

    before = store._group.batches if store._group is not None else 0
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(report, jobs)) == [50] * 8
    assert store._group is not None
    assert store._group.batches - before < 400
    for job_id in jobs:
        assert len(tracker.history(job_id, "u")) == 51
        assert tracker.get_job_progress(job_id, "u") == 50


async def test_callers_on_an_event_loop_are_woken_once_a_batch() -> None:
    """Outcomes reach callers on an event loop (results and errors alike), and the writer
    wakes the loop once for a whole batch, not once a caller."""

    def answer(item: int) -> int:
        if item < 0:
            raise ValueError("negative")
        return item * 10

    apply, batches, release = held_first_batch(answer)

    def apply_or_fail(items: list[int]) -> list[int | BaseException]:
        try:
            return apply(items)
        except ValueError as e:
            return [e] * len(items)

    group: GroupCommit[int, int] = GroupCommit(apply_or_fail)
    loop = asyncio.get_running_loop()
    wakeups = 0
    original = loop.call_soon_threadsafe

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal wakeups
        wakeups += 1
        return original(*args, **kwargs)

    loop.call_soon_threadsafe = counted  # type: ignore[method-assign,assignment]
    try:
        first = group.submit_async(0)
        await asyncio.sleep(0.05)  # the writer holds item 0
        waiting = [group.submit_async(i) for i in range(1, 51)]
        release.set()
        assert await first == 0
        assert await asyncio.gather(*waiting) == [i * 10 for i in range(1, 51)]
        assert wakeups == len(batches) <= 3
        with pytest.raises(ValueError, match="negative"):
            await group.submit_async(-1)
    finally:
        loop.call_soon_threadsafe = original  # type: ignore[method-assign]
        group.close()


async def test_a_caller_that_gave_up_before_its_batch_is_not_applied() -> None:
    """A cancelled wait (the client went away) before its batch began applies nothing."""
    apply, batches, release = held_first_batch(lambda item: item)
    group: GroupCommit[int, int] = GroupCommit(apply)
    first = group.submit_async(1)
    await asyncio.sleep(0.05)
    gone = group.submit_async(2)
    kept = group.submit_async(3)
    gone.cancel()
    release.set()
    assert await first == 1
    assert await kept == 3
    assert [i for batch in batches for i in batch] == [1, 3]
    group.close()


async def test_a_closed_group_refuses_callers_on_a_loop() -> None:
    """After close, an async caller gets StoreError at once."""
    group: GroupCommit[int, int] = GroupCommit(lambda items: list(items))
    group.close()
    with pytest.raises(StoreError, match="closed"):
        await group.submit_async(1)


def test_each_commit_is_told_its_size_and_a_failing_listener_changes_nothing() -> None:
    """``on_commit`` hears each committed transaction's size in ``size`` units (a failed
    one is not committed: not told); an exception out of it fails no caller."""
    apply, batches, release = held_first_batch(lambda item: item * 10)
    group: GroupCommit[int, int] = GroupCommit(apply, size=lambda item: 2 if item > 100 else 1)
    sizes: list[int] = []

    def listen(size: int) -> None:
        sizes.append(size)
        raise RuntimeError("a broken metric")

    group.on_commit = listen
    first = group.submit(1)
    time.sleep(0.1)  # the first batch is held: these queue behind it
    rest = [group.submit(item) for item in (2, 3, 200)]
    release.set()
    assert first.result(5) == 10
    assert [future.result(5) for future in rest] == [20, 30, 2000]
    group.close()
    assert batches == [[1], [2, 3, 200]]
    assert sizes == [1, 4]


def test_the_writer_is_told_when_it_finds_nothing_queued_and_a_failing_hook_changes_nothing() -> (
    None
):
    """``on_idle`` runs on the writer thread once the queue is empty, not between batches
    that were queued back to back; an exception out of it stops nothing."""
    apply, batches, release = held_first_batch(lambda item: item)
    group: GroupCommit[int, int] = GroupCommit(apply, max_batch=2)
    idle: list[int] = []

    def hook() -> None:
        idle.append(len(batches))
        raise RuntimeError("a broken hook")

    group.on_idle = hook
    first = group.submit(1)
    time.sleep(0.1)  # the writer holds the first batch: these queue behind it
    rest = [group.submit(item) for item in (2, 3, 4, 5)]
    release.set()
    assert [future.result(5) for future in [first, *rest]] == [1, 2, 3, 4, 5]
    deadline = time.monotonic() + 5
    while (not idle or idle[-1] != 3) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert batches == [[1], [2, 3], [4, 5]]
    # Perhaps once before the first (the writer may start before the item is queued), then
    # after the last: never between batches that were waiting.
    assert idle[-1] == 3
    assert set(idle) <= {0, 3}
    assert group.submit(6).result(5) == 6
    group.close()
