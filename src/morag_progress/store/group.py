"""Group commit: one writer thread per store applies the updates callers queue, many to a
transaction.

A caller (an HTTP request, a Celery task's callback) puts its update on a queue and waits for
its own outcome; the writer takes whatever has queued up (up to ``max_batch``), applies each in
turn inside one transaction, commits once, and only then resolves each caller's future: an
acknowledged update is committed, as before, but concurrent reports share one ``BEGIN``, one
``COMMIT`` (and on PostgreSQL one WAL flush) instead of one each, and wait for one thread
instead of competing for the database lock. Updates of one job are applied in the order they
were queued.

A caller on an event loop waits with ``submit_async``: the writer then wakes each loop once
per batch, handing it all of its callers' outcomes, instead of once per caller (each wake-up
is a write to the loop's self-pipe and a turn of the loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from morag_progress.errors import StoreError

__all__ = ["GroupCommit"]

logger = logging.getLogger(__name__)

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")
_STOP = object()


@dataclass(frozen=True, slots=True)
class _Waiter:
    """A caller waiting on an event loop: the loop, and the future it awaits."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


class GroupCommit(Generic[_Item, _Result]):
    """Applies queued items in batches with ``apply_batch``, which takes a list of items and
    returns one result (or exception, for that item alone) per item, committing them together;
    an exception out of ``apply_batch`` itself fails the whole batch."""

    def __init__(
        self,
        apply_batch: Callable[[list[_Item]], list[_Result | BaseException]],
        *,
        max_batch: int = 500,
        size: Callable[[_Item], int] = lambda _: 1,
        name: str = "morag-progress writer",
    ) -> None:
        self._apply_batch = apply_batch
        self.max_batch = max_batch
        """How much one transaction takes, in ``size`` units (an item is at least one)."""
        self._size = size
        self._name = name
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._closed = False
        self.batches = 0
        """How many transactions the writer has run (for tests and metrics)."""
        self.on_commit: Callable[[int], None] | None = None
        """Told each committed transaction's size (in ``size`` units), on the writer thread."""
        self.on_idle: Callable[[], None] | None = None
        """Called on the writer thread when it finds nothing queued, before it waits."""

    def submit(self, item: _Item) -> Future[_Result]:
        """Queue ``item``; the future holds its result once its transaction has committed."""
        future: Future[_Result] = Future()
        if not self._put(item, future):
            future.set_exception(StoreError("the store is closed"))
        return future

    def submit_async(self, item: _Item) -> asyncio.Future[_Result]:
        """``submit`` for a caller on the running event loop: its future is resolved on the
        loop, together with the other outcomes of the batch for that loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_Result] = loop.create_future()
        if not self._put(item, _Waiter(loop, future)):
            future.set_exception(StoreError("the store is closed"))
        return future

    def _put(self, item: _Item, waiter: Future[_Result] | _Waiter) -> bool:
        with self._lock:  # so that no item is queued behind the stop marker
            if self._closed:
                return False
            self._ensure_thread()
            self._queue.put((item, waiter))
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Apply what is queued, then stop the writer thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
            running = thread is not None and thread.is_alive() and self._pid == os.getpid()
            if running:
                self._queue.put(_STOP)
        if running and thread is not None:
            thread.join(timeout)

    def _ensure_thread(self) -> None:
        # A forked process (a Celery prefork worker) inherits the flag but not the thread.
        # Called with the lock held.
        if self._thread is None or self._pid != os.getpid():
            self._queue = queue.SimpleQueue()
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get_nowait()
            except queue.Empty:
                if self.on_idle is not None:
                    try:
                        self.on_idle()
                    except Exception:  # the writer goes on whatever its owner's hook does
                        logger.exception("the writer's idle hook failed")
                first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            taken = self._size(first[0])  # type: ignore[index]
            stop = False
            while taken < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stop = True
                    break
                batch.append(more)
                taken += self._size(more[0])  # type: ignore[index]
            self._commit(batch)  # type: ignore[arg-type]
            if stop:
                return

    def _commit(self, batch: list[tuple[_Item, Future[_Result] | _Waiter]]) -> None:
        # Callers that gave up before their batch began (a cancelled future) are not applied.
        taken = [(item, waiter) for item, waiter in batch if _begins(waiter)]
        if not taken:
            return
        outcomes: list[_Result | BaseException]
        try:
            outcomes = list(self._apply_batch([item for item, _ in taken]))
        except Exception as e:
            if not isinstance(e, StoreError):
                logger.exception("a batch of %d updates failed", len(taken))
            outcomes = [e] * len(taken)
        else:
            if self.on_commit is not None:
                with contextlib.suppress(Exception):  # a metric never fails the writer
                    self.on_commit(sum(self._size(item) for item, _ in taken))
        finally:
            self.batches += 1
        on_loops: defaultdict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]]
        on_loops = defaultdict(list)
        for (_, waiter), outcome in zip(taken, outcomes, strict=True):
            if isinstance(waiter, _Waiter):
                on_loops[waiter.loop].append((waiter.future, outcome))
            elif isinstance(outcome, BaseException):
                waiter.set_exception(outcome)
            else:
                waiter.set_result(outcome)
        for loop, settled in on_loops.items():
            # A loop that has closed has nobody waiting on it any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, settled)


def _begins(waiter: Future[Any] | _Waiter) -> bool:
    """Whether the caller still waits; a thread's future is marked running."""
    if isinstance(waiter, _Waiter):
        return not waiter.future.done()
    return waiter.set_running_or_notify_cancel()


def _settle(settled: list[tuple[asyncio.Future[Any], Any]]) -> None:
    """On the loop: hand each waiting caller its outcome."""
    for future, outcome in settled:
        if future.done():  # cancelled while its batch ran
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
