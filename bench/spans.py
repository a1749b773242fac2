"""Job spans: how fast the server turns ended jobs into OpenTelemetry spans.

    python bench/spans.py [--jobs 2000] [--changes 50] [--postgres URL]

Ours: ``JobSpans.export_ended`` until the backlog is gone: take the ended jobs from the feed
(cursor), read each one's changes, build its span with events, end it. Reference: the bare SDK
building the same spans (same names, attributes and events) from data already in memory, so
the ratio is what following the feed and reading each job's history costs. Both export into
the SDK's in-memory exporter through a simple processor: the network is not measured.

It also times one take over a feed with no end in it (the price of following a busy feed).
Target (the operations issue): exporting keeps up with jobs ending far faster than a server
ends them (thousands a second), and costs nothing on the progress path.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import text

from morag_progress import JobTracker, ProgressUpdate
from morag_progress.store import SQLStore
from morag_progress.store.spans import EndedJobs
from morag_progress.tracing import JobSpans


def fill(tracker: JobTracker, jobs: int, changes: int) -> list[str]:
    ids = []
    for i in range(jobs):
        job_id = tracker.start_job(f"doc-{i}.pdf", "pdf", user_id="alice")
        updates = [
            ProgressUpdate(job_id, 1 + p * 98 // changes, f"step {p}", stage=f"s{p * 4 // changes}")
            for p in range(changes)
        ]
        tracker.apply_many([*updates, ProgressUpdate.final(job_id, success=True)])
        ids.append(job_id)
    return ids


def reference(store: SQLStore, ids: list[str]) -> float:
    """Seconds for the bare SDK to build the same spans from data read beforehand."""
    data = [(store.get_job(i, user_id="alice"), store.history(i, user_id="alice")) for i in ids]
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("reference")
    started = time.perf_counter()
    for job, changes in data:
        assert job is not None
        span = tracer.start_span(
            f"job {job.document_type}",
            kind=trace.SpanKind.INTERNAL,
            attributes={"morag.job.id": job.id, "morag.job.status": job.status.value},
            start_time=int(job.created_at.timestamp() * 1e9),
        )
        step = -1
        for change in changes:
            if change.percentage // 10 > step:
                step = change.percentage // 10
                span.add_event(
                    "progress",
                    {"morag.job.percentage": change.percentage},
                    timestamp=int(change.timestamp.timestamp() * 1e9),
                )
        span.end()
    elapsed = time.perf_counter() - started
    assert len(exporter.get_finished_spans()) == len(ids)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--postgres", help="a PostgreSQL URL (an empty database) instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        url = args.postgres or f"sqlite:///{Path(folder) / 'spans.db'}"
        store = SQLStore(url)
        tracker = JobTracker(store=store)
        exported = InMemorySpanExporter()
        spans = JobSpans(store, processor=SimpleSpanProcessor(exported))
        spans.begin()
        ids = fill(tracker, args.jobs, args.changes)
        if args.postgres:  # the statistics autovacuum keeps (a fresh table has none yet)
            with store.transaction("analyze") as conn:
                conn.execute(text("ANALYZE"))
        started = time.perf_counter()
        while spans.export_ended():
            pass
        ours = time.perf_counter() - started
        assert len(exported.get_finished_spans()) == args.jobs, len(exported.get_finished_spans())
        events = sum(len(s.events) for s in exported.get_finished_spans()) / args.jobs
        bare = reference(store, ids)

        busy = tracker.start_job("busy", "pdf", user_id="alice")
        tracker.apply_many([ProgressUpdate(busy, 1, f"m{i}") for i in range(5000)])
        take = EndedJobs(store)
        started = time.perf_counter()
        taken = take.take(now=datetime.now(UTC))
        scan_ms = (time.perf_counter() - started) * 1000
        store.close()

    rows = args.jobs * (args.changes + 2)
    kind = "PostgreSQL" if args.postgres else "SQLite"
    print(f"{kind}: {args.jobs:,} ended jobs, {rows:,} feed rows, {events:.0f} events a span")
    print(f"ours:      {args.jobs / ours:9,.0f} jobs/s ({ours * 1000 / args.jobs:.2f} ms a job)")
    print(f"bare SDK:  {args.jobs / bare:9,.0f} jobs/s ({bare * 1000 / args.jobs:.2f} ms a job)")
    print(f"ratio:     {bare / ours:.2f}x of the bare SDK's speed")
    print(
        f"one take over 5,000 feed rows without an end: {scan_ms:.1f} ms "
        f"({len(taken.ended)} ended, behind={taken.behind})"
    )


if __name__ == "__main__":
    main()
