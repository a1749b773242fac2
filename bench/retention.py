"""Retention benchmark: pruning jobs that ended long ago from a store of 1,000,000 jobs.

    python bench/retention.py [--jobs 1000000] [--events 2]

On SQLite. The jobs table is filled with ``--jobs`` jobs, ``--events`` feed rows each;
half of them ended 100 days ago (to prune), the rest ended yesterday or run (to keep).
Ours: the store's pruning, batch after batch (each its own short transaction) until nothing
is left: rows deleted per second, and the longest batch (how long it held the write lock).
Reference, on a copy of the same data: the two plain statements an operator would type
(``DELETE FROM progress_events ...`` then ``DELETE FROM jobs ...``), one transaction holding
the lock for all of it.

Target (the operations issue): pruning is cheap at 1M jobs, and no batch holds the write lock
for more than milliseconds.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text

from morag_progress.store import SQLStore
from morag_progress.store.schema import events, jobs

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def fill(url: str, count: int, per_job: int) -> None:
    SQLStore(url).close()  # the schema
    engine = create_engine(url)
    chunk = 20_000
    event_id = 0
    for first in range(0, count, chunk):
        job_rows, event_rows = [], []
        for n in range(first, min(first + chunk, count)):
            old = n % 2 == 0
            ended = NOW - timedelta(days=100 if old else 1)
            job_rows.append(
                {
                    "id": f"job-{n:07d}",
                    "user_id": f"user-{n % 10}",
                    "document_name": f"doc-{n}.pdf",
                    "document_type": "pdf",
                    "status": "FINISHED" if n % 5 else "PROCESSING",
                    "percentage": 100,
                    "attempt": 1,
                    "weight": 1.0,
                    "metadata": {},
                    "cancel_requested": False,
                    "created_at": ended - timedelta(minutes=5),
                    "updated_at": ended,
                    "end_date": ended if n % 5 else None,
                    "last_seq": 0,
                }
            )
            for k in range(per_job):
                event_id += 1
                event_rows.append(
                    {
                        "id": event_id,
                        "job_id": f"job-{n:07d}",
                        "user_id": f"user-{n % 10}",
                        "status": "PROCESSING",
                        "percentage": 50 * k,
                        "attempt": 1,
                        "timestamp": ended,
                        "recorded_at": ended,
                    }
                )
        with engine.begin() as conn:
            conn.execute(jobs.insert(), job_rows)
            conn.execute(events.insert(), event_rows)
    engine.dispose()


def ours(url: str, before: datetime) -> tuple[int, float, float]:
    """(rows deleted, seconds, the longest batch in ms)."""
    store = SQLStore(url)
    longest, rows = 0.0, 0
    started = time.perf_counter()
    try:
        while True:
            t = time.perf_counter()
            pruned = store.prune_batch(before=before)
            longest = max(longest, time.perf_counter() - t)
            rows += pruned.rows
            if not pruned.rows:
                break
    finally:
        store.close()
    return rows, time.perf_counter() - started, longest * 1000


def reference(url: str, before: datetime) -> tuple[int, float]:
    engine = create_engine(url)
    started = time.perf_counter()
    with engine.begin() as conn:
        ended = "end_date < :before AND status IN ('FINISHED', 'FAILED', 'CANCELLED')"
        feed = conn.execute(
            text(
                f"DELETE FROM progress_events WHERE job_id IN (SELECT id FROM jobs WHERE {ended})"
            ),
            {"before": before},
        ).rowcount
        gone = conn.execute(text(f"DELETE FROM jobs WHERE {ended}"), {"before": before}).rowcount
    engine.dispose()
    return feed + gone, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=2, help="feed rows per job")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-retention-"))
    try:
        url = f"sqlite:///{work / 'ours.db'}"
        started = time.perf_counter()
        fill(url, args.jobs, args.events)
        print(f"filled {args.jobs:,} jobs, {args.jobs * args.events:,} feed rows "
              f"in {time.perf_counter() - started:.0f} s")  # fmt: skip
        shutil.copy(work / "ours.db", work / "reference.db")
        before = NOW - timedelta(days=30)
        rows, seconds, longest = ours(url, before)
        ref_rows, ref_seconds = reference(f"sqlite:///{work / 'reference.db'}", before)
        assert rows == ref_rows, (rows, ref_rows)  # the same rows went
        print(
            f"ours:      {rows:,} rows in {seconds:.1f} s = {rows / seconds:,.0f} rows/s; "
            f"longest batch (write lock held) {longest:.1f} ms"
        )
        print(
            f"reference: {ref_rows:,} rows in {ref_seconds:.1f} s = {ref_rows / ref_seconds:,.0f} "
            f"rows/s in one transaction (the lock held {ref_seconds * 1000:,.0f} ms)"
        )
        print(f"ratio (ours / reference) in rows/s: {ref_seconds / seconds:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
