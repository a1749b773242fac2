"""OpenTelemetry: a job is a span, from its creation to its end, in its creator's trace.

Every job gets a W3C trace context when it is created (``trace_context.py``, whose names this
module also exports): whoever runs the job can start its own spans inside it
(:func:`attached`, ``ProgressReporter.traced()``, ``ProgressTask``) and they join the
creator's trace.

A job's span is exported once the job ends, by the server (``pip install
'morag-progress[otel]'`` and ``MORAG_PROGRESS_OTEL_TRACES=true``): :class:`JobSpans` follows
the change feed, so it sees every job that ends, whichever process ended it (an API call, a
Celery task writing the store, a parent following its children, the stall sweep), and one
replica exports each. The span carries the job's fields, its status mapped (FINISHED: OK,
FAILED: ERROR, CANCELLED: unset), and events for its status and stage changes and its progress,
one per ``progress_step`` percent. A job requeued after it ended gets one more span per later
end, a child of the job's span named for the attempt.

Nothing here imports OpenTelemetry until a span is exported.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from morag_progress.errors import ConfigurationError
from morag_progress.models import FeedEvent, Job, JobStatus, utcnow
from morag_progress.trace_context import (
    TraceContext,
    attached,
    current_traceparent,
    job_trace,
    otel_span_context,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import SpanProcessor

    from morag_progress.store import SQLStore

__all__ = ["JobSpans", "TraceContext", "attached", "current_traceparent", "job_trace"]

logger = logging.getLogger("morag_progress.tracing")


def _ns(value: datetime) -> int:
    return int(value.timestamp() * 1_000_000_000)


class JobSpans:
    """Exports a span for each job that ends (see the module's text).

    ``processor`` receives the finished spans (default: a batch processor sending OTLP over
    HTTP to where the standard ``OTEL_EXPORTER_OTLP_*`` variables say). Call :meth:`begin`
    when tracing starts (``run`` does). Each call of :meth:`export_ended` takes at most
    ``batch`` ended jobs from the feed, passing over ends older than ``max_age``; a span's
    events come from at most the first ``max_history`` changes of its attempt, at most
    ``max_events`` of them.
    """

    def __init__(
        self,
        store: SQLStore,
        *,
        processor: SpanProcessor | None = None,
        batch: int = 200,
        progress_step: int = 10,
        max_events: int = 128,
        max_history: int = 2000,
        max_age: timedelta = timedelta(hours=1),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
        except ImportError as e:
            raise ConfigurationError(
                "otel_traces", "needs OpenTelemetry: pip install 'morag-progress[otel]'", True
            ) from e
        from morag_progress import __version__
        from morag_progress.store.spans import EndedJobs

        if processor is None:
            processor = _otlp_processor()
        self._ended = EndedJobs(store, max_age=max_age)
        self._clock = clock
        self._store = store
        self.batch = batch
        self.progress_step = progress_step
        self.max_events = max_events
        self.max_history = max_history
        self._lock = threading.Lock()
        preset: list[tuple[int, int]] = []  # (trace id, span id) the next span must have

        class _Preset(IdGenerator):
            """A job's span keeps the ids given at its creation; other spans get random ones."""

            random = RandomIdGenerator()

            def generate_trace_id(self) -> int:
                return preset[0][0] if preset else int(self.random.generate_trace_id())

            def generate_span_id(self) -> int:
                return preset[0][1] if preset else int(self.random.generate_span_id())

        self._preset = preset
        service = os.environ.get("OTEL_SERVICE_NAME") or "morag-progress"
        # A provider of its own: no span but a job's is ever started on it, so the preset ids
        # (set and used under the lock) cannot reach any other span.
        self._provider = TracerProvider(
            resource=Resource.create({"service.name": service}), id_generator=_Preset()
        )
        self._provider.add_span_processor(processor)
        self._tracer = self._provider.get_tracer("morag_progress", __version__)
        self.exported = 0
        """Spans exported so far."""

    def begin(self) -> None:
        """Start following the feed (at its end, the first time tracing is on; where it
        stopped, after a restart)."""
        self._ended.begin()

    def export_ended(self) -> bool:
        """Export the spans of jobs that ended since the last call (of any replica): at most
        ``batch``. True when more are waiting already (a backlog)."""
        taken = self._ended.take(now=self._clock(), batch=self.batch)
        if taken.skipped:
            logger.warning(
                "%d jobs ended more than %s before their spans could be exported: passed over",
                taken.skipped,
                self._ended.max_age,
            )
        for job, end, earlier in taken.ended:
            try:
                self._export(job, end, earlier)
            except Exception:  # one odd job must not stop the others' spans
                logger.warning("no span for job %s", job.id, exc_info=True)
        if taken.behind:  # catching up: let the exporter send before taking more
            self._provider.force_flush()
        return taken.behind

    async def run(self, interval: float) -> None:
        """Follow the feed from now on, exporting every ``interval`` seconds (at once while
        there is a backlog) until cancelled; a failing pass is logged."""
        import asyncio

        from morag_progress._threads import run_to_completion

        begun = False
        while True:
            try:
                if not begun:  # a server made the cursor before serving: then a no-op
                    await run_to_completion(self.begin)
                    begun = True
                while await run_to_completion(self.export_ended):
                    pass  # a backlog: the next batch at once
            except Exception:
                logger.warning("exporting job spans failed; trying again", exc_info=True)
            await asyncio.sleep(interval)

    def shutdown(self) -> None:
        """Send what is buffered and stop."""
        self._provider.shutdown()

    # -- one job -----------------------------------------------------------------------------

    def _export(self, job: Job, end: FeedEvent, earlier: int | None) -> None:
        """The span of ``job``'s end ``end``; ``earlier``: the feed id of an earlier end (the
        end of an attempt before a requeue), if any."""
        own = TraceContext.parse(job.traceparent)
        if own is None:  # made before jobs had trace contexts
            return
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        changes = self._store.history(
            job.id,
            user_id=job.user_id or "",
            after=earlier or 0,
            before=end.id + 1,
            limit=self.max_history,
        )
        attributes = _given(
            ("morag.job.id", job.id),
            ("morag.job.document_name", job.document_name),
            ("morag.job.document_type", job.document_type),
            ("morag.job.status", end.status.value),
            ("morag.job.percentage", end.percentage),
            ("morag.job.attempt", end.attempt),
            ("morag.job.user_id", job.user_id),
            ("morag.job.parent_id", job.parent_id),
            ("morag.job.worker_id", job.worker_id),
            ("morag.job.created_by", job.created_by),
            ("morag.job.ended_by", end.actor),
        )
        if earlier is None:  # the job's first end: its own span, from its creation
            name, start = f"job {job.document_type}", job.created_at
            parent = (
                TraceContext(own.trace_id, job.trace_parent_id, own.flags)
                if job.trace_parent_id
                else None
            )
            preset = [(int(own.trace_id, 16), int(own.span_id, 16))]
        else:  # a later attempt's end: a child of the job's span, from its requeue
            start = changes[0].timestamp if changes else end.timestamp
            name, parent, preset = f"job {job.document_type} attempt {end.attempt}", own, []
        context = None
        if parent is not None:
            context = trace.set_span_in_context(trace.NonRecordingSpan(otel_span_context(parent)))
        with self._lock:
            self._preset[:] = preset
            try:
                span = self._tracer.start_span(
                    name,
                    context=context,
                    kind=trace.SpanKind.INTERNAL,
                    attributes=attributes,
                    start_time=_ns(start),
                )
            finally:
                self._preset.clear()
        dropped = self._add_events(span, changes)
        if len(changes) == self.max_history and changes[-1].id != end.id:
            dropped += 1  # and the changes not read: at least one
        if dropped:
            span.set_attribute("morag.job.events_dropped", dropped)
        if end.status is JobStatus.FINISHED:
            span.set_status(Status(StatusCode.OK))
        elif end.status is JobStatus.FAILED:
            # The job's error is this end's unless the job has run again since.
            same_run = job.status is JobStatus.FAILED and job.attempt == end.attempt
            error = job.error if same_run else end.message
            span.set_status(Status(StatusCode.ERROR, error or "failed"))
        span.end(end_time=max(_ns(end.recorded_at), _ns(start)))
        if span.get_span_context().trace_flags.sampled:
            self.exported += 1

    def _add_events(self, span: Any, changes: list[FeedEvent]) -> int:
        """Events for status and stage changes and one per ``progress_step`` percent, at most
        ``max_events``; returns how many were left out for that cap."""
        status: JobStatus | None = None
        stage: str | None = None
        step = -1
        added = dropped = 0
        for change in changes:
            names = []
            if change.status is not status:
                names.append("status")
            if change.stage != stage and change.stage is not None:
                names.append("stage")
            if change.percentage // self.progress_step > step:
                names.append("progress")
            status, stage = change.status, change.stage
            step = max(step, change.percentage // self.progress_step)
            for name in names:
                if added >= self.max_events:
                    dropped += 1
                    continue
                span.add_event(name, _event_attributes(change), timestamp=_ns(change.timestamp))
                added += 1
        return dropped


def _event_attributes(change: FeedEvent) -> dict[str, Any]:
    return _given(
        ("morag.job.status", change.status.value),
        ("morag.job.percentage", change.percentage),
        ("morag.job.attempt", change.attempt),
        ("morag.job.stage", change.stage),
        ("morag.job.message", change.message),
        ("morag.actor", change.actor),
        ("morag.action", change.action),
    )


def _given(*pairs: tuple[str, Any]) -> dict[str, Any]:
    """Span or event attributes: the pairs with a value (OpenTelemetry has no null)."""
    return {key: value for key, value in pairs if value is not None and value != ""}


def _otlp_processor() -> SpanProcessor:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as e:
        raise ConfigurationError(
            "otel_traces",
            "needs the OTLP exporter: pip install 'morag-progress[otel]'",
            True,
        ) from e
    return BatchSpanProcessor(OTLPSpanExporter())
