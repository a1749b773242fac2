"""``ProgressReporter``: a worker's progress, sent from a background thread."""

from __future__ import annotations

import logging
import threading
from types import TracebackType

import httpx

from morag_progress.client._core import Call, ReporterCore, ReporterFacade, connection

__all__ = ["ProgressReporter"]

logger = logging.getLogger("morag_progress.client")


class ProgressReporter(ReporterFacade):
    """Reports one job's progress to a morag-progress server without ever blocking the worker.

    Every call returns at once; a daemon thread sends the latest state at most every
    ``min_interval`` seconds (the first update, stage changes and the final status at once),
    retrying with backoff while the server is unreachable::

        with ProgressReporter(job_id) as reporter:      # FINISHED on exit, FAILED on an error
            for i, item in enumerate(items):
                process(item)
                reporter.update(100 * (i + 1) / len(items), f"Item {i + 1}")

    ``api_url`` and ``api_key`` default to ``MORAG_PROGRESS_API_URL`` / ``MORAG_PROGRESS_API_KEY``.
    ``attempt`` ties reports to one run of the job (a retried task reports a higher one).
    """

    def __init__(
        self,
        job_id: str,
        *,
        api_url: str | None = None,
        api_key: str | None = None,
        min_interval: float = 0.5,
        attempt: int | None = None,
        timeout: float = 10.0,
        close_timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        base_url, headers = connection(api_url, api_key)
        self._core = ReporterCore(job_id, min_interval=min_interval, attempt=attempt)
        self.close_timeout = close_timeout
        self._client = httpx.Client(
            base_url=base_url, headers=headers, timeout=timeout, transport=transport
        )
        self._wake = threading.Event()
        self._core.wake = self._wake.set
        self._closing = False
        self._abandoned = False
        self._thread = threading.Thread(
            target=self._run, name=f"morag-progress-reporter-{job_id}", daemon=True
        )
        self._thread.start()

    # -- lifetime --------------------------------------------------------------------------------

    def close(self, timeout: float | None = None) -> bool:
        """Deliver what is pending (the final status included), waiting at most ``timeout``
        seconds (default ``close_timeout``). True when nothing was left undelivered."""
        self._closing = True
        self._wake.set()
        self._thread.join(self.close_timeout if timeout is None else timeout)
        if self._thread.is_alive():
            logger.warning("job %s: closed with reports not yet delivered", self.job_id)
            self._abandoned = True  # the thread gives up after its request in flight
            self._wake.set()
            return False
        return True

    def __enter__(self) -> ProgressReporter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.complete(True)
        else:
            self.complete(False, f"{type(exc).__name__}: {exc}")
        self.close()

    # -- the sender thread -------------------------------------------------------------------------

    def _run(self) -> None:
        core = self._core
        while not self._abandoned:
            self._wake.clear()
            try:
                call = core.next_call()
                if call is not None:
                    self._send(call)
                    continue
                if self._closing and core.idle:
                    break
                self._wake.wait(core.delay())
            except Exception:
                # Reporting never raises into the worker, and the sender must survive too.
                logger.exception("job %s: progress reporter error", self.job_id)
                self._wake.wait(1.0)
        self._client.close()

    def _send(self, call: Call) -> None:
        try:
            response = self._client.request(call.method, call.path, json=call.body)
        except httpx.HTTPError as e:
            logger.debug("job %s: %s report failed: %r", self.job_id, call.kind.value, e)
            self._core.settle(call, None)
            return
        self._core.settle_response(call, response)
