"""Blocking calls from the event loop that finish even when their caller is cancelled.

``asyncio.to_thread`` and anyio's ``run_sync`` return at once when the awaiting task is
cancelled, but the thread runs on, holding whatever it holds (a database connection). At
shutdown the store is then closed under it, and the connection is returned to a discarded
pool, never closed (found as a rare ResourceWarning in the stream tests). Background loops
(monitor, feed tail, webhook dispatcher) call the store through :func:`run_to_completion`,
which waits for the thread before passing the cancellation on.

:class:`SharedReads` lets concurrent requests share one read of the same thing.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Hashable
from typing import Generic, ParamSpec, TypeVar

from anyio import to_thread

__all__ = ["SharedReads", "run_to_completion"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


async def run_to_completion(func: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """``func(*args, **kwargs)`` in a worker thread; if the caller is cancelled meanwhile, the
    cancellation is raised only once the thread has returned."""
    future = asyncio.ensure_future(to_thread.run_sync(functools.partial(func, *args, **kwargs)))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await asyncio.wait([future])
        raise


_K = TypeVar("_K", bound=Hashable)


class SharedReads(Generic[_K, _T]):
    """Reads that concurrent callers share: a caller joins a read of the same key that has
    not begun yet, so a thousand streams opening at once on one job (a reconnect storm after a
    deploy) cost one read, not a thousand queued behind the thread pool. A read that has begun
    is never joined: whatever it returns, a joiner asked for it before it began, so a caller
    never gets a state older than its own request (event streams rely on this: they subscribe
    first, then read, and must miss nothing in between)."""

    def __init__(self) -> None:
        self._waiting: dict[_K, asyncio.Future[_T]] = {}
        self._lock = threading.Lock()

    async def read(self, key: _K, func: Callable[[], _T]) -> _T:
        """``func()`` in a worker thread, or the result of a not yet begun read of ``key``.
        The read is not cancelled with its first caller: the others still wait for it."""
        with self._lock:
            shared = self._waiting.get(key)
            if shared is None:

                def begin() -> _T:
                    with self._lock:  # from here on, newcomers start a read of their own
                        if self._waiting.get(key) is shared:
                            del self._waiting[key]
                    return func()

                shared = asyncio.ensure_future(to_thread.run_sync(begin))
                self._waiting[key] = shared
                shared.add_done_callback(lambda _: self._forget(key, shared))
        return await asyncio.shield(shared)

    def _forget(self, key: _K, shared: asyncio.Future[_T]) -> None:
        # A read that failed before it began (cancelled at shutdown) leaves no entry behind.
        with self._lock:
            if self._waiting.get(key) is shared:
                del self._waiting[key]

    @property
    def waiting(self) -> int:
        """Reads queued and not yet begun (at most one per key)."""
        return len(self._waiting)
