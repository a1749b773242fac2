"""Reporters that send from a background thread: ``ProgressReporter`` over HTTP, and
``LocalReporter`` straight into a tracker's store (a Celery worker beside the database)."""

from __future__ import annotations

import collections
import logging
import threading
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

from morag_progress.client._core import (
    Call,
    CallKind,
    ReporterCore,
    Verdict,
    connection,
    resolve_close_timeout,
)
from morag_progress.client.spool import (
    Spooled,
    fingerprint,
    keep_undelivered,
    pending,
    send_next,
)
from morag_progress.errors import (
    ConfigurationError,
    JobConflictError,
    JobNotFoundError,
    JobStateError,
    LimitExceededError,
    ProgressError,
)
from morag_progress.models import ProgressUpdate, UpdateOutcome, UpdateResult

if TYPE_CHECKING:  # the package imports neither httpx nor the store until it must
    from collections.abc import Mapping

    import httpx

    from morag_progress.tracker import JobTracker

__all__ = ["LocalReporter", "ProgressReporter"]

logger = logging.getLogger("morag_progress.client")

_SPOOL_FILES_A_START = 100
"""The most spooled files one reporter sends for earlier ones (``flush`` sends the rest)."""


class _ThreadedReporter(ReporterCore):
    """The thread shell: a daemon thread asks the core what to send, sends it with
    :meth:`_send`, and hands the outcome back. Subclasses only say how to send."""

    def _start(self, close_timeout: float | None) -> None:
        self.close_timeout = resolve_close_timeout(close_timeout)
        self._wake = threading.Event()
        self.wake = self._wake.set
        self._closing = False
        self._abandoned = False
        self._thread = threading.Thread(
            target=self._run, name=f"morag-progress-reporter-{self.job_id}", daemon=True
        )
        self._thread.start()

    def _send(self, call: Call) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        """Free the transport once the thread is done with it."""

    def _idle_work(self) -> bool:
        """Something to send while nothing of this job's is due; whether it sent anything."""
        return False

    def _keep(self) -> None:
        """Keep what could not be delivered by the close deadline (``spool.py``)."""

    def close(self, timeout: float | None = None) -> bool:
        """Deliver what is pending (the final status included), waiting at most ``timeout``
        seconds (default ``close_timeout``). True when nothing was left undelivered."""
        self._closing = True
        self._wake.set()
        self._thread.join(self.close_timeout if timeout is None else timeout)
        if self._thread.is_alive():
            self._abandoned = True  # the thread gives up after its request in flight
            self._wake.set()
            self._keep()
            return False
        return True

    def __enter__(self) -> Any:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._complete_on_exit(exc)
        self.close()

    def _run(self) -> None:
        core = self
        while not self._abandoned:
            self._wake.clear()
            try:
                call = core.next_call()
                if call is not None:
                    self._send(call)
                    continue
                if self._closing and core.idle:
                    break
                if not self._closing and self._idle_work():
                    continue
                self._wake.wait(core.delay())
            except Exception:
                # Reporting never raises into the worker, and the sender must survive too.
                logger.exception("job %s: progress reporter error", self.job_id)
                self._wake.wait(1.0)
        self._release()


class ProgressReporter(_ThreadedReporter):
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
    ``worker`` names the worker in the Workers view (default ``<host>:<process id>``; a job
    claimed under a name keeps it). ``resume`` is the checkpoint a claim handed back (its
    ``checkpoint``): the run goes on from it (``reporter.resume``), and ``save_checkpoint``
    keeps a new one with the job. Leaving the block waits at most ``close_timeout`` seconds
    for delivery (default ``MORAG_PROGRESS_CLOSE_TIMEOUT_SECONDS``, 2 s), the only wait the
    worker ever sees; a request in flight waits at most ``timeout``. What is still undelivered
    then is kept in a spool on disk (``spool``: default on; ``spooled`` says where), which
    ``morag-progress flush`` sends, or the next reporter for the same server and key once the
    server answers it. ``job`` is the job as the server last answered it, or (server down, job
    unknown) what the reporter knows, with status None.
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
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        import httpx

        base_url, headers = connection(api_url, api_key)
        super().__init__(
            job_id,
            min_interval=min_interval,
            attempt=attempt,
            traceparent=traceparent,
            worker=worker,
            resume=resume,
        )
        self._http_error = httpx.HTTPError
        self._client = httpx.Client(
            base_url=base_url, headers=headers, timeout=timeout, transport=transport
        )
        self._base_url = base_url
        self._key = fingerprint(headers)
        self._spool = spool
        self._spooled_before: collections.deque[Spooled] | None = None
        """Files an earlier reporter kept for this server and key, read once the server has
        answered this one; sent one request at a time while nothing of this job's is due."""
        self.spooled: Spooled | None = None
        """What this reporter's close could not deliver and kept (None: nothing)."""
        self._start(close_timeout)

    def __enter__(self) -> ProgressReporter:
        return self

    def _send(self, call: Call) -> None:
        try:
            response = self._client.request(call.method, call.path, json=call.body)
        except self._http_error as e:
            logger.debug("job %s: %s report failed: %r", self.job_id, call.kind.value, e)
            self.settle(call, Verdict.RETRY, detail=repr(e))
            return
        self.settle_response(call, response)

    def _release(self) -> None:
        self._client.close()

    def _keep(self) -> None:
        if self._spool:
            self.spooled = keep_undelivered(self, self._base_url, self._key)
        else:
            logger.warning("job %s: closed with reports not yet delivered", self.job_id)

    def _idle_work(self) -> bool:
        if not self._spool or self._job is None:  # until this server has taken a report
            return False
        queue = self._spooled_before
        if queue is None:
            queue = self._spooled_before = collections.deque(
                pending(self._base_url, self._key)[:_SPOOL_FILES_A_START]
            )
        while queue and not queue[0].calls:
            queue.popleft()
        if not queue:
            return False
        verdict, detail = send_next(self._client, queue[0])
        if verdict is Verdict.RETRY:
            queue.clear()  # busy or gone again: this reporter's own reports come first
            return False
        if verdict is not Verdict.TAKEN:
            logger.warning("job %s: a kept report was refused: %s", queue[0].job_id, detail)
        return True


class LocalReporter(_ThreadedReporter):
    """The same reporter, writing through a :class:`~morag_progress.JobTracker` instead of HTTP:
    for a worker that shares the database (the seed's "Celery Task -> Progress Callback ->
    Progress Handler -> Job Entity"), with the same coalescing, throttling and never-raising
    promises. A database that is briefly unavailable is retried like a server that is down."""

    def __init__(
        self,
        job_id: str,
        tracker: JobTracker,
        *,
        user_id: str | None = None,
        min_interval: float = 0.5,
        attempt: int | None = None,
        close_timeout: float = 10.0,
        traceparent: str | None = None,
        worker: str | None = None,
        resume: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            job_id,
            min_interval=min_interval,
            attempt=attempt,
            traceparent=traceparent,
            worker=worker,
            resume=resume,
        )
        self._tracker = tracker
        self._user_id = user_id
        self._start(close_timeout)

    def __enter__(self) -> LocalReporter:
        return self

    @classmethod
    def for_rank(cls, name: str, job_type: str = "run", **options: Any) -> LocalReporter:
        """Not here: in process, the tracker makes a run's jobs (``JobTracker.start_job`` with
        ``expected_children``, then each rank's with ``parent_id``); refused before any
        thread starts."""
        raise ConfigurationError(
            "for_rank", "is for reporters over HTTP; here JobTracker.start_job makes the jobs", name
        )

    def create_first(self, body: Mapping[str, Any], *, job_id: str | None = None) -> None:
        """Not here: in process, the tracker makes the job (``JobTracker.start_job``; a run's
        with ``expected_children``, its ranks' with ``parent_id``)."""
        raise ConfigurationError(
            "create_first", "is for reporters over HTTP; here JobTracker.start_job makes it", body
        )

    def _send(self, call: Call) -> None:
        try:
            result = self._apply(call)
        except ProgressError as e:
            self.settle(
                call,
                _verdict_of_error(e),
                detail=str(e),
                retry_after=e.retry_after if isinstance(e, LimitExceededError) else None,
            )
            return
        job = result.job
        self.settle(
            call,
            _VERDICTS[result.outcome],
            job=None if job is None else job.to_dict(),
            cancel_requested=None if job is None else job.cancel_requested,
            detail=result.outcome.value,
        )

    def _apply(self, call: Call) -> UpdateResult:
        job_id, body = self.job_id, call.body or {}
        if call.kind is CallKind.HEARTBEAT:
            return self._tracker.heartbeat(
                job_id,
                self._user_id,
                worker_id=body.get("worker_id"),
                checkpoint=body.get("checkpoint"),
                checkpoint_percentage=body.get("checkpoint_percentage"),
            )
        if call.kind is CallKind.RESULT:
            update = ProgressUpdate.final(
                job_id,
                success=body["success"],
                message=body.get("message"),
                cancelled=body.get("cancelled", False),
                user_id=self._user_id,
                worker_id=body.get("worker_id"),
                actor=self._tracker.actor,
            )
        else:
            update = ProgressUpdate(
                job_id,
                body["percentage"],
                body.get("message"),
                timestamp=datetime.fromisoformat(body["timestamp"]),
                current=body.get("current"),
                total=body.get("total"),
                stage=body.get("stage"),
                worker_id=body.get("worker_id"),
                attempt=body.get("attempt"),
                seq=body.get("seq"),
                user_id=self._user_id,
                actor=self._tracker.actor,  # named here: the tracker need not copy the update
            )
        return self._tracker.apply(update)


_VERDICTS = {
    UpdateOutcome.APPLIED: Verdict.TAKEN,
    UpdateOutcome.STALE: Verdict.TAKEN,
    UpdateOutcome.NOT_FOUND: Verdict.OVER,
    UpdateOutcome.TERMINAL: Verdict.OVER,
    UpdateOutcome.SUPERSEDED: Verdict.OVER,
    UpdateOutcome.AMBIGUOUS: Verdict.OVER,
}


def _verdict_of_error(e: ProgressError) -> Verdict:
    """As the HTTP route answers it: a bad value is refused (422), a job that is gone, over or
    ambiguous ends reporting (404, 409), anything else (the store locked or down) passes."""
    if isinstance(e, ValueError):
        return Verdict.REFUSED
    if isinstance(e, JobNotFoundError | JobStateError | JobConflictError):
        return Verdict.OVER
    return Verdict.RETRY
