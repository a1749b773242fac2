"""run_to_completion: a cancelled caller's thread finishes before the cancellation goes on.
SharedReads: concurrent callers share a read that has not begun, never one that has."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from anyio import to_thread

from morag_progress._threads import SharedReads, run_to_completion


async def test_cancellation_waits_for_the_thread() -> None:
    """Cancelling the awaiting task raises CancelledError only after the blocking call has
    returned, so whatever it holds (a connection) is given back first."""
    done = threading.Event()

    def slow() -> None:
        time.sleep(0.3)
        done.set()

    task = asyncio.create_task(run_to_completion(slow))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert done.is_set()


async def test_result_and_errors_pass_through() -> None:
    """The call's value is returned and its exception raised, with its arguments passed."""
    assert await run_to_completion(divmod, 7, 2) == (3, 1)
    with pytest.raises(ZeroDivisionError):
        await run_to_completion(divmod, 1, 0)


async def test_callers_arriving_together_share_one_read() -> None:
    """While a read waits for a thread, callers of the same key join it; another key reads
    on its own."""
    calls: list[str] = []
    gate = threading.Event()
    reads: SharedReads[str, int] = SharedReads()

    def read(key: str) -> int:
        calls.append(key)
        return len(calls)

    # Keep the thread pool's threads busy so that the reads queue (as in a storm).
    threads = int(to_thread.current_default_thread_limiter().total_tokens)
    blockers = [asyncio.ensure_future(to_thread.run_sync(gate.wait)) for _ in range(threads)]
    try:
        await asyncio.sleep(0.05)
        waiting = [asyncio.ensure_future(reads.read("a", lambda: read("a"))) for _ in range(100)]
        other = asyncio.ensure_future(reads.read("b", lambda: read("b")))
        await asyncio.sleep(0.05)
        assert reads.waiting == 2
    finally:
        gate.set()
    results = await asyncio.gather(*waiting, other)
    await asyncio.gather(*blockers)
    assert sorted(calls) == ["a", "b"]
    assert len(set(results[:100])) == 1
    assert reads.waiting == 0


async def test_a_read_that_has_begun_is_not_joined() -> None:
    """A caller arriving while a read runs gets a read of its own, begun after it asked."""
    reads: SharedReads[str, int] = SharedReads()
    started, release = threading.Event(), threading.Event()
    count = 0

    def read() -> int:
        nonlocal count
        count += 1
        mine = count
        if mine == 1:
            started.set()
            release.wait(5)
        return mine

    first = asyncio.ensure_future(reads.read("k", read))
    await asyncio.to_thread(started.wait, 5)
    second = asyncio.ensure_future(reads.read("k", read))
    await asyncio.sleep(0.05)
    release.set()
    assert (await first, await second) == (1, 2)


async def test_a_shared_read_outlives_its_first_caller() -> None:
    """Cancelling the caller that started a read does not cancel it for the others."""
    reads: SharedReads[str, str] = SharedReads()
    release = threading.Event()

    def slow() -> str:
        release.wait(5)
        return "done"

    first = asyncio.ensure_future(reads.read("k", slow))
    second = asyncio.ensure_future(reads.read("k", lambda: "never called"))
    await asyncio.sleep(0.05)
    first.cancel()
    release.set()
    assert await second == "done"
