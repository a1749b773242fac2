"""run_to_completion: a cancelled caller's thread finishes before the cancellation goes on."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from morag_progress._threads import run_to_completion


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
