"""OpenTelemetry: each job that ends is one span in its creator's trace, with events for its
changes, exported once whichever process ended it; workers' spans join it. Spans go to the
SDK's in-memory exporter here (OTLP over HTTP: tests/api/test_tracing_otlp.py)."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from morag_progress import JobStatus, JobTracker, ProgressUpdate
from morag_progress.client import ProgressReporter
from morag_progress.keys import Role
from morag_progress.models import utcnow
from morag_progress.store import SQLStore
from morag_progress.tracing import JobSpans, TraceContext, attached, current_traceparent, job_trace
from tests.conftest import Clock, Eventually
from tests.live import ServerProcess

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def exported() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def exporter(
    store: SQLStore, exported: InMemorySpanExporter, clock: Clock, **options: Any
) -> JobSpans:
    """Job spans into ``exported``, on the test's clock, following the feed from now."""
    job_spans = JobSpans(store, processor=SimpleSpanProcessor(exported), clock=clock, **options)
    job_spans.begin()
    return job_spans


@pytest.fixture
def spans(store: SQLStore, exported: InMemorySpanExporter, clock: Clock) -> Iterator[JobSpans]:
    job_spans = exporter(store, exported, clock)
    yield job_spans
    job_spans.shutdown()


@pytest.fixture
def tracer() -> trace.Tracer:
    """A tracer of the test's own (the creator's and the worker's spans), not the global one."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    return provider.get_tracer("test")


def hex_ids(span: ReadableSpan | trace.Span) -> tuple[str, str]:
    context = span.get_span_context()
    assert context is not None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def only(exported: InMemorySpanExporter) -> ReadableSpan:
    [span] = exported.get_finished_spans()
    return span


# -- the trace context ---------------------------------------------------------------------------


def test_a_traceparent_is_read_as_the_standard_says() -> None:
    parsed = TraceContext.parse(VALID)
    assert parsed == TraceContext("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "01")
    assert str(parsed) == VALID
    assert TraceContext.parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more")
    for bad in (
        "",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # version ff
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero span id
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        VALID + "-extra",  # version 00 has exactly four fields
        VALID[:-1],
        "x" * 600,
        None,
        7,
    ):
        assert TraceContext.parse(bad) is None, bad


@given(st.text(max_size=80))
def test_any_header_is_read_or_ignored_never_raises(value: str) -> None:
    parsed = TraceContext.parse(value)
    own, parent = job_trace(value)
    assert TraceContext.parse(own) is not None  # a job always gets a context of its own
    if parsed is not None:
        assert (own[3:35], parent) == (parsed.trace_id, parsed.span_id)


def test_a_job_joins_its_creators_trace_or_starts_one() -> None:
    own, parent = job_trace(VALID)
    child = TraceContext.parse(own)
    assert child is not None
    assert (child.trace_id, parent) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    assert child.span_id != "00f067aa0ba902b7"
    fresh, none = job_trace("not a traceparent")
    assert none is None
    assert TraceContext.parse(fresh) is not None


# -- spans ---------------------------------------------------------------------------------------


def test_a_finished_job_is_one_span_in_its_creators_trace(
    tracker: JobTracker, spans: JobSpans, exported: InMemorySpanExporter, tracer: trace.Tracer
) -> None:
    """Created inside the caller's span (the current context, in-process), the job's span is
    its child; it runs from creation to the end, status OK, with events for status and stage
    changes and one per 10% of progress (100 reports make 11 progress events, not 100)."""
    with tracer.start_as_current_span("ingest request") as creator:
        job_id = tracker.start_job("talk.mp3", "audio", user_id="alice")
    job = tracker.get_job(job_id)
    assert job is not None
    assert job.traceparent is not None
    for pct in range(1, 100):
        stage = "transcribe" if pct < 50 else "embed"
        tracker.apply(ProgressUpdate(job_id, pct, f"step {pct}", stage=stage, user_id="alice"))
    tracker.apply(ProgressUpdate.final(job_id, success=True, user_id="alice"))
    assert spans.export_ended() is False  # no backlog
    span = only(exported)
    creator_trace, creator_span = hex_ids(creator)
    assert hex_ids(span) == (creator_trace, job.traceparent[36:52])
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == creator_span
    assert span.name == "job audio"
    assert span.status.status_code is StatusCode.OK
    assert span.start_time == int(job.created_at.timestamp() * 1e9)
    ended = tracker.get_job(job_id)
    assert ended is not None
    assert ended.end_date is not None
    assert span.end_time == int(ended.end_date.timestamp() * 1e9)
    attributes = span.attributes or {}
    assert attributes["morag.job.id"] == job_id
    assert attributes["morag.job.status"] == "FINISHED"
    assert attributes["morag.job.created_by"] == tracker.actor
    names = [event.name for event in span.events]
    assert names.count("progress") == 11  # 0%, 10%, ..., 100%
    assert names.count("stage") == 2
    assert names.count("status") == 3  # PENDING, PROCESSING, FINISHED
    first_stage = next(e for e in span.events if e.name == "stage")
    assert first_stage.attributes is not None
    assert first_stage.attributes["morag.job.stage"] == "transcribe"
    spans.export_ended()
    assert len(exported.get_finished_spans()) == 1  # once


@pytest.mark.parametrize(
    ("success", "cancelled", "code"),
    [(False, False, StatusCode.ERROR), (False, True, StatusCode.UNSET)],
)
def test_failed_and_cancelled_jobs_map_their_status(
    tracker: JobTracker,
    spans: JobSpans,
    exported: InMemorySpanExporter,
    success: bool,
    cancelled: bool,
    code: StatusCode,
) -> None:
    job_id = tracker.start_job("a.pdf", "pdf", user_id="alice")
    tracker.apply(ProgressUpdate(job_id, 30, user_id="alice"))
    end = ProgressUpdate.final(
        job_id, success=success, cancelled=cancelled, message="GPU lost", user_id="alice"
    )
    tracker.apply(end)
    spans.export_ended()
    span = only(exported)
    assert span.status.status_code is code
    if code is StatusCode.ERROR:
        assert span.status.description == "GPU lost"
    assert span.parent is None  # nobody was tracing when it was made: a trace of its own


def test_an_explicit_creator_and_a_workers_spans_join_the_job(
    tracker: JobTracker, spans: JobSpans, exported: InMemorySpanExporter, tracer: trace.Tracer
) -> None:
    """A creator given as a traceparent (an HTTP header) is the parent; a worker's span started
    inside ``attached(job.traceparent)`` is a child of the job's span."""
    job_id = tracker.start_job("a.pdf", "pdf", user_id="alice", parent_trace=VALID)
    job = tracker.get_job(job_id)
    assert job is not None
    assert job.traceparent is not None
    with attached(job.traceparent):
        assert current_traceparent() == job.traceparent
        with tracer.start_as_current_span("ocr page 1") as work:
            pass
    assert current_traceparent() is None
    assert hex_ids(work)[0] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert f"{work.parent.span_id:016x}" == job.traceparent[36:52]  # type: ignore[attr-defined]
    tracker.apply(ProgressUpdate.final(job_id, success=True, user_id="alice"))
    spans.export_ended()
    span = only(exported)
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == "00f067aa0ba902b7"


def test_a_requeued_jobs_later_end_is_a_child_span_of_the_job(
    tracker: JobTracker, spans: JobSpans, exported: InMemorySpanExporter, clock: Clock
) -> None:
    job_id = tracker.start_job(
        "clip.mov", "video", user_id="alice", status=JobStatus.WAITING_FOR_REMOTE_WORKER
    )
    assert tracker.claim("gpu-1", claimant="k1", user_id="alice") is not None
    tracker.apply(ProgressUpdate.final(job_id, success=False, message="OOM", user_id="alice"))
    clock.advance(5)
    tracker.requeue(job_id, "alice")
    clock.advance(5)
    assert tracker.claim("gpu-2", claimant="k1", user_id="alice") is not None
    clock.advance(5)
    tracker.apply(ProgressUpdate.final(job_id, success=True, user_id="alice"))
    spans.export_ended()
    first, second = exported.get_finished_spans()
    assert (first.name, second.name) == ("job video", "job video attempt 2")
    assert second.parent is not None
    assert f"{second.parent.span_id:016x}" == hex_ids(first)[1]
    assert (first.status.status_code, second.status.status_code) == (
        StatusCode.ERROR,
        StatusCode.OK,
    )
    assert second.start_time is not None
    assert first.end_time is not None
    assert second.start_time > first.end_time  # from the requeue on


def test_events_are_capped(
    store: SQLStore, tracker: JobTracker, exported: InMemorySpanExporter, clock: Clock
) -> None:
    job_spans = exporter(store, exported, clock, max_events=5)
    job_id = tracker.start_job("a.pdf", "pdf", user_id="alice")
    for pct in range(1, 101):
        tracker.apply(ProgressUpdate(job_id, pct, stage=f"s{pct // 5}", user_id="alice"))
    job_spans.export_ended()
    span = only(exported)
    assert len(span.events) == 5
    dropped = (span.attributes or {})["morag.job.events_dropped"]
    assert isinstance(dropped, int)
    assert dropped > 20


def test_replicas_export_each_job_once(
    store: SQLStore, tracker: JobTracker, exported: InMemorySpanExporter, clock: Clock
) -> None:
    """Two exporters (two servers) taking turns on one store, while jobs end: every job's
    span goes out exactly once."""
    replicas = [exporter(store, exported, clock, batch=3) for _ in "ab"]
    done = threading.Event()

    def export(replica: JobSpans) -> None:
        while not done.is_set():
            replica.export_ended()

    threads = [threading.Thread(target=export, args=(r,)) for r in replicas]
    for thread in threads:
        thread.start()
    ids = []
    for i in range(30):
        job_id = tracker.start_job(f"doc-{i}", "pdf", user_id="alice")
        tracker.apply(ProgressUpdate.final(job_id, success=True, user_id="alice"))
        ids.append(job_id)
    done.set()
    for thread in threads:
        thread.join()
    while replicas[1].export_ended():
        pass
    exported_ids = [
        str((s.attributes or {})["morag.job.id"]) for s in exported.get_finished_spans()
    ]
    assert sorted(exported_ids) == sorted(ids)
    assert sum(r.exported for r in replicas) == 30


def test_a_parent_that_follows_its_children_gets_its_span(
    tracker: JobTracker, spans: JobSpans, exported: InMemorySpanExporter
) -> None:
    """A parent ends by the server's roll-up, not by a report: its span is exported too, and
    says who ended it."""
    parent = tracker.start_job("course", "bundle", user_id="alice")
    child = tracker.start_job("part", "audio", user_id="alice", parent_id=parent)
    tracker.apply(ProgressUpdate(child, 100, user_id="alice"))
    spans.export_ended()
    by_id = {(s.attributes or {})["morag.job.id"]: s for s in exported.get_finished_spans()}
    assert set(by_id) == {parent, child}
    assert (by_id[parent].attributes or {})["morag.job.ended_by"] == "server"


# -- OTLP over HTTP, from a real server to a receiver on loopback --------------------------------


def _known(value: object) -> None:
    assert value is not None


class Receiver:
    """An OTLP/HTTP trace receiver on loopback: decodes each export request (protobuf) and
    keeps its spans, with their resources' service names."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        self.spans: list[tuple[str, Any]] = []
        self.paths: list[str] = []
        received = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                received.paths.append(self.path)
                for resource_spans in request.resource_spans:
                    service = next(
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    )
                    for scope_spans in resource_spans.scope_spans:
                        received.spans += [(service, span) for span in scope_spans.spans]
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_servers_job_spans_reach_an_otlp_receiver(
    database_url: str, eventually: Eventually
) -> None:
    """``serve`` with ``MORAG_PROGRESS_OTEL_TRACES`` sends each ended job's span over OTLP/HTTP:
    the job made with a ``traceparent`` header is a child of that span, its own context comes
    back as ``traceparent``, and a reporter learns it from its replies for the worker's spans."""
    receiver = Receiver()
    env = {
        **os.environ,
        "MORAG_PROGRESS_DATABASE_URL": database_url,
        "MORAG_PROGRESS_OTEL_TRACES": "true",
        "MORAG_PROGRESS_OTEL_INTERVAL_SECONDS": "0.2",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_SERVICE_NAME": "ingest-api",
    }
    store = SQLStore(database_url)
    server = ServerProcess(env).start()
    try:
        _, secret = store.create_key(user_id="alice", role=Role.USER, name=None, now=utcnow())
        auth = {"Authorization": f"Bearer {secret}"}
        body = {"document_name": "talk.mp3", "document_type": "audio"}
        created = httpx.post(
            f"{server.url}/api/v1/jobs", json=body, headers={**auth, "traceparent": VALID}
        ).json()
        job_trace_id, job_span_id = created["traceparent"][3:35], created["traceparent"][36:52]
        assert job_trace_id == VALID[3:35]
        env_worker = {"api_url": server.url, "api_key": secret, "min_interval": 0}
        with ProgressReporter(created["id"], **env_worker) as reporter:  # type: ignore[arg-type]
            reporter.update(50, "halfway")
            eventually(lambda: _known(reporter.traceparent))
            with reporter.traced():
                assert current_traceparent() == created["traceparent"]
        eventually(lambda: _known(receiver.spans or None), timeout=20)
        [(service, span)] = receiver.spans
        assert service == "ingest-api"
        assert set(receiver.paths) == {"/v1/traces"}
        assert (span.trace_id.hex(), span.span_id.hex()) == (job_trace_id, job_span_id)
        assert span.parent_span_id.hex() == VALID[36:52]
        assert span.name == "job audio"
        assert span.status.code == 1  # OK
        assert {e.name for e in span.events} >= {"status", "progress"}
        attributes = {a.key: a.value.string_value for a in span.attributes}
        assert attributes["morag.job.id"] == created["id"]
        assert attributes["morag.job.created_by"].startswith("user:")
    finally:
        server.stop()
        store.close()
        receiver.close()


def test_a_backlog_is_taken_at_once_not_an_interval_at_a_time(
    store: SQLStore,
    tracker: JobTracker,
    exported: InMemorySpanExporter,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A take that stops at its limits (here: 50 feed rows of progress, then an end) says it
    is behind, so the exporter takes again at once instead of falling behind a busy feed."""
    monkeypatch.setattr("morag_progress.store.spans._SCAN", 50)
    spans = exporter(store, exported, clock)
    busy = tracker.start_job("busy.pdf", "pdf", user_id="alice")
    tracker.apply_many([ProgressUpdate(busy, 1, f"m{i}", user_id="alice") for i in range(60)])
    done = tracker.start_job("done.pdf", "pdf", user_id="alice")
    tracker.apply(ProgressUpdate.final(done, success=True, user_id="alice"))
    assert spans.export_ended() is True  # 50 rows looked at, no end among them
    assert not exported.get_finished_spans()
    assert spans.export_ended() is False
    assert (only(exported).attributes or {})["morag.job.id"] == done


def test_a_long_first_attempt_still_makes_the_later_end_an_attempt_span(
    store: SQLStore, tracker: JobTracker, exported: InMemorySpanExporter, clock: Clock
) -> None:
    """The earlier end is found by the feed's index, not among the changes read for events:
    a first attempt longer than ``max_history`` does not make the job's span twice."""
    spans = exporter(store, exported, clock, max_history=20)
    job_id = tracker.start_job(
        "clip.mov", "video", user_id="alice", status=JobStatus.WAITING_FOR_REMOTE_WORKER
    )
    assert tracker.claim("gpu-1", claimant="k1", user_id="alice") is not None
    for pct in range(1, 60):
        clock.advance(1)
        tracker.apply(ProgressUpdate(job_id, pct, user_id="alice"))
    tracker.apply(ProgressUpdate.final(job_id, success=False, message="OOM", user_id="alice"))
    tracker.requeue(job_id, "alice")
    assert tracker.claim("gpu-2", claimant="k1", user_id="alice") is not None
    tracker.apply(ProgressUpdate.final(job_id, success=True, user_id="alice"))
    spans.export_ended()
    first, second = exported.get_finished_spans()
    assert (first.name, second.name) == ("job video", "job video attempt 2")
    assert hex_ids(first)[1] != hex_ids(second)[1]
    dropped = (first.attributes or {})["morag.job.events_dropped"]
    assert isinstance(dropped, int)
    assert dropped >= 1  # not all were read
    assert second.status.status_code is StatusCode.OK


def test_ends_older_than_the_max_age_are_passed_over(
    store: SQLStore, tracker: JobTracker, exported: InMemorySpanExporter, clock: Clock
) -> None:
    """Tracing turned back on after a pause does not replay the pause's jobs as stale spans;
    what ends from then on is exported."""
    spans = exporter(store, exported, clock)
    old = tracker.start_job("old.pdf", "pdf", user_id="alice")
    tracker.apply(ProgressUpdate.final(old, success=True, user_id="alice"))
    clock.advance(2 * 3600)  # two hours without an export pass
    new = tracker.start_job("new.pdf", "pdf", user_id="alice")
    tracker.apply(ProgressUpdate.final(new, success=True, user_id="alice"))
    spans.export_ended()
    assert (only(exported).attributes or {})["morag.job.id"] == new


def test_a_failed_first_attempt_keeps_its_own_error_when_the_job_failed_again(
    store: SQLStore, tracker: JobTracker, exported: InMemorySpanExporter, clock: Clock
) -> None:
    """Spans exported late (after a requeue and a second failure) each carry their own
    attempt's error."""
    spans = exporter(store, exported, clock)
    job_id = tracker.start_job(
        "clip.mov", "video", user_id="alice", status=JobStatus.WAITING_FOR_REMOTE_WORKER
    )
    for error in ("first OOM", "second OOM"):
        assert tracker.claim("gpu-1", claimant="k1", user_id="alice") is not None
        tracker.apply(ProgressUpdate.final(job_id, success=False, message=error, user_id="alice"))
        if error == "first OOM":
            tracker.requeue(job_id, "alice")
    spans.export_ended()
    assert [s.status.description for s in exported.get_finished_spans()] == [
        "first OOM",
        "second OOM",
    ]


_HEX = "0123456789abcdef"


@given(
    st.text(_HEX, min_size=32, max_size=32),
    st.text(_HEX, min_size=16, max_size=16),
    st.text(_HEX, min_size=2, max_size=2),
)
def test_every_valid_header_makes_the_job_its_child(trace_id: str, span: str, flags: str) -> None:
    header = f"00-{trace_id}-{span}-{flags}"
    own, parent = job_trace(header)
    if trace_id == "0" * 32 or span == "0" * 16:
        assert parent is None  # invalid ids: a trace of its own
        return
    assert (own[3:35], parent) == (trace_id, span)
    assert own[-2:] == ("01" if int(flags, 16) & 1 else "00")  # sampled, or not, as asked


def test_without_the_otel_extra_tracing_says_what_to_install(
    store: SQLStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``otel_traces`` on a server without OpenTelemetry's SDK fails its start with the command
    that installs it; off, the server starts as ever."""
    from morag_progress.api import create_app
    from morag_progress.errors import ConfigurationError
    from morag_progress.settings import Settings

    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # import fails
    with pytest.raises(ConfigurationError, match=r"pip install 'morag-progress\[otel\]'"):
        create_app(Settings(otel_traces=True), store=store)
    assert create_app(Settings(otel_traces=False), store=store) is not None


def test_a_job_that_first_ended_before_tracing_began_gets_its_own_span(
    store: SQLStore, tracker: JobTracker, exported: InMemorySpanExporter, clock: Clock
) -> None:
    """Its earlier end was never exported, so its later end is the job's own span (with the
    ids workers saw), not the child of a span nobody has."""
    job_id = tracker.start_job(
        "clip.mov", "video", user_id="alice", status=JobStatus.WAITING_FOR_REMOTE_WORKER
    )
    assert tracker.claim("gpu-1", claimant="k1", user_id="alice") is not None
    tracker.apply(ProgressUpdate.final(job_id, success=False, message="OOM", user_id="alice"))
    spans = exporter(store, exported, clock)  # tracing turned on only now
    tracker.requeue(job_id, "alice")
    assert tracker.claim("gpu-2", claimant="k1", user_id="alice") is not None
    tracker.apply(ProgressUpdate.final(job_id, success=True, user_id="alice"))
    spans.export_ended()
    span = only(exported)
    job = tracker.get_job(job_id)
    assert job is not None
    assert job.traceparent is not None
    assert (span.name, hex_ids(span)[1]) == ("job video", job.traceparent[36:52])


def test_the_exporter_outlives_a_database_that_fails_at_its_start(
    store: SQLStore,
    tracker: JobTracker,
    exported: InMemorySpanExporter,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``run`` tries again after a failing pass, its first one included."""
    import asyncio

    from morag_progress.errors import StoreError
    from morag_progress.store.spans import EndedJobs

    spans = JobSpans(store, processor=SimpleSpanProcessor(exported), clock=clock)
    real = EndedJobs.begin
    failures = iter([StoreError("database is locked")])

    def flaky(self: EndedJobs) -> None:
        for failure in failures:
            raise failure
        real(self)

    monkeypatch.setattr(EndedJobs, "begin", flaky)

    async def main() -> None:
        task = asyncio.create_task(spans.run(0.01))
        await asyncio.sleep(0.2)  # failed once, then began
        job_id = tracker.start_job("a.pdf", "pdf", user_id="alice")
        tracker.apply(ProgressUpdate.final(job_id, success=True, user_id="alice"))
        for _ in range(300):
            if exported.get_finished_spans():
                break
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(main())
    assert len(exported.get_finished_spans()) == 1


def test_a_broken_opentelemetry_never_fails_the_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Carrying a span is best effort: if OpenTelemetry raises, the block runs untraced and no
    span is carried (a task is sent, a job is made), rather than the work failing."""
    from opentelemetry import context

    def broken(*_: object) -> None:
        raise RuntimeError("broken context")

    monkeypatch.setattr(context, "attach", broken)
    monkeypatch.setattr(trace, "get_current_span", broken)
    ran = []
    with attached(VALID):
        ran.append(True)
    assert ran == [True]
    assert current_traceparent() is None
