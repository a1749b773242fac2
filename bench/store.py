"""Store benchmark: reading one job and listing a page by status stay flat as the store grows.

    python bench/store.py [--sizes 10000,100000,1000000] [--postgres URL] [--reads 2000]

For each size the jobs table is filled (bulk inserts, statuses spread over the seven states,
users over 10), then, through the store's own methods: ``get_job`` of random ids, and
``list_jobs(status=PROCESSING, user=...)`` pages of 50 from random keyset cursors in the newer
half (so every page is full). It prints
p50/p99 per size and the p99 ratio of each size to the smallest (the reference).

Target (the store issue): reading one job (and a page by status) stays flat, p99 ratio
<= 1.5 from 10k to 1M jobs, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _server import percentile
from sqlalchemy import create_engine, text

from morag_progress.models import JobStatus
from morag_progress.store import SQLStore
from morag_progress.store.schema import jobs

STATUSES = [status.value for status in JobStatus]
USERS = [f"user-{i}" for i in range(10)]
START = datetime(2026, 1, 1, tzinfo=UTC)


def fill(url: str, start: int, stop: int) -> None:
    """Insert jobs ``start`` .. ``stop - 1`` in chunks (the store's schema, no feed rows)."""
    engine = create_engine(url)
    chunk = 20_000
    for first in range(start, stop, chunk):
        rows = [
            {
                "id": f"job-{n:08d}",
                "user_id": USERS[n % len(USERS)],
                "document_name": f"doc-{n}.pdf",
                "document_type": "pdf",
                "status": STATUSES[n % len(STATUSES)],
                "percentage": n % 100,
                "attempt": 1,
                "weight": 1.0,
                "metadata": {},
                "cancel_requested": False,
                "created_at": (START + timedelta(seconds=n)).replace(tzinfo=None)
                if url.startswith("sqlite")
                else START + timedelta(seconds=n),
                "updated_at": START.replace(tzinfo=None) if url.startswith("sqlite") else START,
                "last_seq": 0,
            }
            for n in range(first, min(stop, first + chunk))
        ]
        with engine.begin() as conn:
            conn.execute(jobs.insert(), rows)
    with engine.begin() as conn:
        if url.startswith("postgresql"):
            conn.execute(text("ANALYZE jobs"))
        else:
            conn.execute(text("ANALYZE"))
    engine.dispose()


def measure(store: SQLStore, size: int, reads: int) -> dict[str, tuple[float, float]]:
    rng = random.Random(size)
    timings: dict[str, list[float]] = {"get_job": [], "list page": []}
    for _ in range(reads):
        job_id = f"job-{rng.randrange(size):08d}"
        started = time.perf_counter()
        job = store.get_job(job_id)
        timings["get_job"].append(time.perf_counter() - started)
        assert job is not None
    for _ in range(reads // 4):
        user = rng.choice(USERS)
        # From the newer half: every page then has its full 50 rows, at every size.
        cursor = f"job-{rng.randrange(size // 2, size):08d}"
        started = time.perf_counter()
        store.list_jobs(user_id=user, status=JobStatus.PROCESSING, limit=50, after=cursor)
        timings["list page"].append(time.perf_counter() - started)
    return {
        name: (statistics.median(values) * 1e6, percentile(values, 0.99) * 1e6)
        for name, values in timings.items()
    }


def run(label: str, url: str, sizes: list[int], reads: int) -> None:
    print(f"\n{label}")
    print(f"{'jobs':>10} {'operation':<10} {'p50 us':>9} {'p99 us':>9} {'p99 ratio':>10}")
    SQLStore(url).close()  # tables at the newest revision
    filled = 0
    reference: dict[str, float] = {}
    for size in sizes:
        started = time.perf_counter()
        fill(url, filled, size)
        filled = size
        took = time.perf_counter() - started
        store = SQLStore(url)
        measure(store, size, reads // 4)  # warm the cache as a running server's would be
        results = measure(store, size, reads)
        store.close()
        for name, (p50, p99) in results.items():
            reference.setdefault(name, p99)
            ratio = p99 / reference[name]
            print(f"{size:>10,} {name:<10} {p50:>9.0f} {p99:>9.0f} {ratio:>9.2f}x")
        print(f"{'':>10} (filled to {size:,} in {took:.0f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--postgres", help="an empty PostgreSQL database's SQLAlchemy URL")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    directory = Path(tempfile.mkdtemp(prefix="morag-bench-store-"))
    try:
        run("SQLite (WAL)", f"sqlite:///{directory / 'store.db'}", sizes, args.reads)
        if args.postgres:
            run("PostgreSQL", args.postgres, sizes, args.reads)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
