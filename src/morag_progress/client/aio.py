"""``AsyncProgressReporter``: a worker's progress, sent from a background asyncio task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from typing import TYPE_CHECKING, Any

from morag_progress.client._core import (
    Call,
    ReporterCore,
    Verdict,
    connection,
    resolve_close_timeout,
)
from morag_progress.client.spool import Spooled, fingerprint, keep_undelivered

if TYPE_CHECKING:  # imported when a reporter is made, not with the package
    from collections.abc import Mapping

    import httpx

__all__ = ["AsyncProgressReporter"]

logger = logging.getLogger("morag_progress.client")


class AsyncProgressReporter(ReporterCore):
    """The asyncio twin of :class:`~morag_progress.client.ProgressReporter`: the same calls
    (``update``, ``progress_callback``, ``stage``, ``heartbeat``, ``complete`` all return at once
    and may be called from any thread), sent by a task on the running loop::

        async with AsyncProgressReporter(job_id) as reporter:
            await transcribe(audio, progress_callback=reporter.progress_callback)
    """

    def __init__(
        self,
        job_id: str,
        *,
        api_url: str | None = None,
        api_key: str | None = None,
        min_interval: float = 0.5,
        attempt: int | None = None,
        traceparent: str | None = None,
        worker: str | None = None,
        resume: Mapping[str, Any] | None = None,
        timeout: float = 10.0,
        close_timeout: float | None = None,
        spool: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        import httpx

        base_url, headers = connection(api_url, api_key)
        self._base_url, self._key, self._spool = base_url, fingerprint(headers), spool
        self.spooled: Spooled | None = None
        """What this reporter's close could not deliver and kept (``spool.py``; None:
        nothing). ``morag-progress flush`` sends it, or a later threaded reporter."""
        super().__init__(
            job_id,
            min_interval=min_interval,
            attempt=attempt,
            traceparent=traceparent,
            worker=worker,
            resume=resume,
        )
        self.close_timeout = resolve_close_timeout(close_timeout)
        self._http_error = httpx.HTTPError
        self._client = httpx.AsyncClient(
            base_url=base_url, headers=headers, timeout=timeout, transport=transport
        )
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):  # no running loop yet: started by __aenter__
            self._start(asyncio.get_running_loop())

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.wake = self._wake_threadsafe
        self._task = loop.create_task(self._run(), name=f"morag-progress-reporter-{self.job_id}")

    def _wake_threadsafe(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:  # a worker thread (run_in_executor) calling the callback
            loop.call_soon_threadsafe(self._wake.set)

    async def aclose(self, timeout: float | None = None) -> bool:
        """Deliver what is pending (the final status included), waiting at most ``timeout``
        seconds (default ``close_timeout``). True when nothing was left undelivered."""
        self._closing = True
        self._wake.set()
        delivered = True
        if self._task is not None:
            try:
                await asyncio.wait_for(
                    asyncio.shield(self._task), self.close_timeout if timeout is None else timeout
                )
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                delivered = False
                if self._spool:
                    self.spooled = keep_undelivered(self, self._base_url, self._key)
                else:
                    logger.warning("job %s: closed with reports not yet delivered", self.job_id)
        await self._client.aclose()
        return delivered

    async def __aenter__(self) -> AsyncProgressReporter:
        if self._task is None:
            self._start(asyncio.get_running_loop())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._complete_on_exit(exc)
        await self.aclose()

    async def _run(self) -> None:
        core = self
        while True:
            self._wake.clear()
            try:
                call = core.next_call()
                if call is not None:
                    await self._send(call)
                    continue
                if self._closing and core.idle:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), core.delay())
            except Exception:
                # Reporting never raises into the worker, and the sender must survive too.
                logger.exception("job %s: progress reporter error", self.job_id)
                await asyncio.sleep(1.0)

    async def _send(self, call: Call) -> None:
        try:
            response = await self._client.request(call.method, call.path, json=call.body)
        except self._http_error as e:
            logger.debug("job %s: %s report failed: %r", self.job_id, call.kind.value, e)
            self.settle(call, Verdict.RETRY, detail=repr(e))
            return
        self.settle_response(call, response)
