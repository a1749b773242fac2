"""Celery tasks whose lifecycle and progress are a job (``pip install morag-progress[celery]``).

::

    from morag_progress.integrations.celery import ProgressTask

    @app.task(bind=True, base=ProgressTask)
    def ingest(self, path):
        self.progress(5, "Downloading")
        options = {"progress_callback": self.stage("processing", 60, start=10)}  # 10 + p * 60
        process_file(path, options)

The job's id is the task's id, unless a ``ProgressHandler`` mapping names another job for it
(``handler.register_job_mapping(task_id, job_id)``); a job that does not exist yet is created.
The task's lifecycle drives the job:

=========================  ==================================================================
task starts                PROCESSING (a retried run starts a new attempt: ``retries + 1``)
task returns               FINISHED, 100%
task raises                FAILED, the percentage kept, the error recorded
task retries               the job stays PROCESSING; the next run reports as a new attempt
task revoked               CANCELLED (the ``task_revoked`` signal, in the worker process)
=========================  ==================================================================

Progress goes through a reporter, so a task is never slowed, blocked or failed by reporting: a
:class:`~morag_progress.client.LocalReporter` writing through the store (the seed's "Celery
Task -> Progress Callback -> Progress Handler -> Job Entity") or, when
``MORAG_PROGRESS_API_URL`` is set (a worker on another machine), a
:class:`~morag_progress.client.ProgressReporter` over HTTP. ``progress_remote`` on the task
forces one or the other.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import Task
from celery.signals import task_revoked

from morag_progress.client._core import ReporterCore, Stage
from morag_progress.client.jobs import create_job
from morag_progress.client.sync import LocalReporter, ProgressReporter
from morag_progress.errors import ConfigurationError, JobConflictError, ProgressError
from morag_progress.settings import load_settings
from morag_progress.trace_context import attached, current_traceparent

if TYPE_CHECKING:
    from morag_progress.handler import ProgressHandler

__all__ = ["ProgressTask", "filesystem_broker", "progress_group"]

logger = logging.getLogger("morag_progress.integrations")

_TRACE_HEADER = "morag_traceparent"
"""The message header carrying the sender's span (W3C ``traceparent``)."""


def filesystem_broker(directory: str | Path) -> dict[str, Any]:
    """Celery settings for kombu's filesystem transport in ``directory``: a broker that needs
    no server (the demo and the tests use it). ``app.conf.update(filesystem_broker(path))``."""
    folder = Path(directory)
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return {
        "broker_url": "filesystem://",
        "broker_transport_options": {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
        },
        "broker_connection_retry_on_startup": True,
    }


def _handler() -> ProgressHandler:
    """One handler per worker process and store (created in the child after a prefork fork)."""
    return _handler_for(load_settings().database_url)


@functools.cache
def _handler_for(database_url: str | None) -> ProgressHandler:
    from morag_progress.handler import ProgressHandler  # the store: only for in-process reports

    return ProgressHandler(database_url)


class ProgressTask(Task):  # type: ignore[misc]  # celery has no type information
    """Base class of tasks whose progress is a job (see the module's documentation)."""

    abstract = True
    progress_document_type = "celery"
    """The ``document_type`` of a job the task creates."""
    progress_min_interval = 0.5
    """Seconds between two progress writes of one run (the latest wins in between)."""
    progress_remote: bool | None = None
    """True: report over HTTP; False: through the store; None: HTTP when MORAG_PROGRESS_API_URL
    is set."""

    # -- what the task body calls ------------------------------------------------------------

    @property
    def reporter(self) -> ReporterCore:
        """This run's reporter (one per run, opened when the task starts)."""
        reporter: ReporterCore | None = getattr(self.request, "morag_reporter", None)
        if reporter is None:  # called outside a worker run (task.apply, a direct call)
            reporter = self._open(self.request.id or "eager")
        return reporter

    def progress(
        self,
        percentage: float,
        message: str | None = None,
        *,
        current: int | None = None,
        total: int | None = None,
    ) -> None:
        """Report ``percentage`` (0..100). Returns at once; never raises."""
        self.reporter.update(percentage, message, current=current, total=total)

    @property
    def progress_callback(self) -> Any:
        """The seed's ``progress_callback(progress, message)`` (0..1) for this run."""
        return self.reporter.progress_callback

    def stage(self, name: str, weight: float, *, start: float | None = None) -> Stage:
        """Start a stage covering ``weight`` percent; returns its 0..1 callback."""
        return self.reporter.stage(name, weight, start=start)

    @property
    def job_id(self) -> str:
        """The job this run reports on."""
        return self._job_id(self.request.id or "eager")

    # -- tracing: the caller's span is the job's parent; the task body runs in the job's span

    def apply_async(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        """Send the task as Celery does, with the caller's current span (if it traces) in a
        message header: the task's job becomes its child (``tracing.py``)."""
        trace = current_traceparent()
        if trace is not None:
            options["headers"] = {**(options.get("headers") or {}), _TRACE_HEADER: trace}
        return super().apply_async(args, kwargs, **options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task body inside its job's span: spans the body starts join the trace of
        whoever sent the task."""
        reporter = getattr(self.request, "morag_reporter", None)
        with attached(reporter.traceparent if reporter is not None else None):
            return super().__call__(*args, **kwargs)

    # -- lifecycle hooks (Celery calls these in the worker) ----------------------------------

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        try:
            reporter = self._open(task_id)
            reporter.heartbeat()  # PENDING -> PROCESSING, start_date set
        except Exception:
            # Reporting never fails the task.
            logger.exception("task %s: could not open its progress reporter", task_id)

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        self._close(True, None)

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        self._close(False, f"{type(exc).__name__}: {exc}")

    def on_retry(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        reporter = self._take()
        if reporter is not None:
            reporter.close()  # no final status: the job goes on as a new attempt

    # -- internals --------------------------------------------------------------------------

    def _job_id(self, task_id: str) -> str:
        mapped = _handler().get_job_id_for_worker(task_id) if not self._remote() else None
        return mapped or task_id

    def _remote(self) -> bool:
        if self.progress_remote is not None:
            return bool(self.progress_remote)
        return bool(load_settings().api_url)

    def _open(self, task_id: str) -> ReporterCore:
        job_id = self._job_id(task_id)
        attempt = int(getattr(self.request, "retries", 0) or 0) + 1
        sender = self._sender_trace()
        reporter: ReporterCore
        if self._remote():
            trace = None
            try:
                job = create_job(
                    self.name, self.progress_document_type, job_id=job_id, parent_trace=sender
                )
                trace = job.get("traceparent")
            except ProgressError as e:  # reporting still starts: the job may exist already
                logger.warning("job %s: not created on the server: %s", job_id, e)
            reporter = ProgressReporter(
                job_id,
                min_interval=self.progress_min_interval,
                attempt=attempt,
                traceparent=trace,
            )
        else:
            tracker = _handler().job_tracker
            known = tracker.get_job(job_id)
            if known is None:  # the producer may have created it, for a user
                with contextlib.suppress(JobConflictError):  # ...or just now, concurrently
                    tracker.start_job(
                        document_name=self.name,
                        document_type=self.progress_document_type,
                        job_id=job_id,
                        parent_trace=sender,
                    )
                known = tracker.get_job(job_id)
            reporter = LocalReporter(
                job_id,
                tracker,
                min_interval=self.progress_min_interval,
                attempt=attempt,
                traceparent=None if known is None else known.traceparent,
            )
        self.request.morag_reporter = reporter
        return reporter

    def _sender_trace(self) -> str:
        """The span that sent this run (a message header; ``apply_async``), or "" for none:
        the job then starts a trace of its own, not one of the worker's."""
        trace = getattr(self.request, _TRACE_HEADER, None)
        if trace is None:
            trace = (getattr(self.request, "headers", None) or {}).get(_TRACE_HEADER)
        return trace if isinstance(trace, str) else ""

    def _take(self) -> Any:
        reporter = getattr(self.request, "morag_reporter", None)
        self.request.morag_reporter = None
        return reporter

    def _close(self, success: bool, message: str | None) -> None:
        reporter = self._take()
        if reporter is not None:
            reporter.complete(success, message)
            reporter.close()


def progress_group(
    signatures: Sequence[Any],
    *,
    name: str,
    document_type: str = "celery-group",
    weights: Sequence[float] | None = None,
    user_id: str | None = None,
    remote: bool | None = None,
) -> tuple[str, Any]:
    """A Celery group whose tasks are the children of one parent job: the parent's percentage
    is their weighted mean, it finishes when all have ended and fails when one fails.
    Returns the parent job's id and the group to run (``group.delay()``, or the header of a
    chord); each task's id is its child job's id. ``remote``: create the jobs over HTTP (default:
    when MORAG_PROGRESS_API_URL is set), else in the store."""
    from celery import group

    weights = list(weights) if weights is not None else [1.0] * len(signatures)
    if len(weights) != len(signatures):
        raise ConfigurationError("weights", "must have one weight per task", weights)
    over_http = bool(load_settings().api_url) if remote is None else remote

    def make(document_name: str, kind: str, **fields: Any) -> str:
        if over_http:
            return str(create_job(document_name, kind, **fields)["id"])
        tracker = _handler().job_tracker
        return str(tracker.start_job(document_name, kind, user_id=user_id, **fields))

    parent = make(name, document_type)
    children = []
    for signature, weight in zip(signatures, weights, strict=True):
        task_id = str(uuid.uuid4())
        make(signature.task, "celery", job_id=task_id, parent_id=parent, weight=weight)
        children.append(signature.clone().set(task_id=task_id))
    return parent, group(children)


def _on_revoked(sender: Any = None, request: Any = None, **_: Any) -> None:
    """A revoked task's job is CANCELLED (sent in the worker's main process; ``sender`` is the
    task, ``request`` its context)."""
    try:
        task_id = getattr(request, "id", None)
        if not isinstance(sender, ProgressTask) or not task_id:
            return
        task = sender
        job_id = task._job_id(task_id)
        if task._remote():
            with ProgressReporter(job_id) as reporter:
                reporter.complete(False, "Task revoked", cancelled=True)
            return
        tracker = _handler().job_tracker
        job = tracker.get_job(job_id)
        if job is not None and not job.status.is_terminal:
            tracker.mark_cancelled(job_id)
    except Exception:
        # A signal handler must not break the worker.
        logger.exception("revoked task's job not cancelled")


task_revoked.connect(_on_revoked, weak=False)
