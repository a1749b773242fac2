"""Blocking calls from the event loop that finish even when their caller is cancelled.

``asyncio.to_thread`` and anyio's ``run_sync`` return at once when the awaiting task is
cancelled, but the thread runs on, holding whatever it holds (a database connection). At
shutdown the store is then closed under it, and the connection is returned to a discarded
pool, never closed (found as a rare ResourceWarning in the stream tests). Background loops
(monitor, feed tail, webhook dispatcher) call the store through :func:`run_to_completion`,
which waits for the thread before passing the cancellation on.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from anyio import to_thread

__all__ = ["run_to_completion"]

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
