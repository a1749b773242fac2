"""Search benchmark: a rare word among one user's 200,000 jobs, through the search index and
through the substring scan it replaced, side by side on the same store.

    python bench/search.py [--jobs 200000] [--reads 200] [--postgres URL]

The jobs table is filled through the store's schema (the index's triggers run as they do for
every created job), one user's jobs, each named from a word list, nine in ten ended with a
message; one job holds a word no other job has. Then, through the store's own methods:
``list_jobs(search=...)`` (a page of 50) and ``count_jobs(search=...)`` (the counts a
dashboard shows beside it) for the rare word, a word in a few hundred jobs, and a word in
every job; the reference is the same call with the index set aside (``MAX_CANDIDATES`` below
zero: the scan every search was before). It prints p50/p99 of each and the ratio of p99s.

Target (issue 20): a rare word among 200k jobs <= 20 ms.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _server import percentile
from sqlalchemy import create_engine

from morag_progress.store import SQLStore, search
from morag_progress.store.schema import jobs

START = datetime(2026, 1, 1, tzinfo=UTC)
USER = "dave"
RARE = "zzqxvk"


def fill(url: str, count: int) -> float:
    """Insert ``count`` jobs of one user in chunks; returns the seconds it took."""
    naive = url.startswith("sqlite")
    rng = random.Random(7)
    words = ["".join(rng.choices("abcdefghijklmnopqrstuvwxy", k=6)) for _ in range(500)]
    engine = create_engine(url)
    began = time.perf_counter()
    for first in range(0, count, 20_000):
        rows = []
        for n in range(first, min(first + 20_000, count)):
            at = START + timedelta(seconds=n)
            ended = n % 10 != 0
            name = f"lecture {rng.choice(words)} {n}.mp3" if n != count // 2 else f"{RARE}.mp3"
            rows.append(
                {
                    "id": f"job-{n:08d}",
                    "user_id": USER,
                    "document_name": name,
                    "document_type": "audio",
                    "status": "FINISHED" if ended else "PROCESSING",
                    "percentage": 100 if ended else n % 100,
                    "summary": f"Transcribed {rng.choice(words)} in {n % 60} s" if ended else None,
                    "attempt": 1,
                    "weight": 1.0,
                    "metadata": {},
                    "cancel_requested": False,
                    "created_at": at.replace(tzinfo=None) if naive else at,
                    "updated_at": at.replace(tzinfo=None) if naive else at,
                    "last_seq": 0,
                }
            )
        with engine.begin() as conn:
            conn.execute(jobs.insert(), rows)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("ANALYZE")  # what a server's autovacuum would have done by now
    engine.dispose()
    return time.perf_counter() - began


def timed(call: Callable[[], object], reads: int) -> list[float]:
    samples = []
    for _ in range(reads):
        began = time.perf_counter()
        call()
        samples.append((time.perf_counter() - began) * 1000)
    return samples


def run(label: str, url: str, count: int, reads: int) -> None:
    store = SQLStore(url)  # creates the schema (and the index) before the fill
    seconds = fill(url, count)
    print(f"{label}: {count:,} jobs of one user filled in {seconds:.1f} s")
    common = "lecture"
    some = sorted({j.document_name.split()[1] for j in store.list_jobs(user_id=USER, limit=5)})[0]
    for word, what in (
        (RARE, "rare word (1 job)"),
        (some, "word of ~400 jobs"),
        (common, "every job"),
    ):
        for name, call in (
            ("page", lambda w=word: store.list_jobs(user_id=USER, search=w)),
            ("counts", lambda w=word: store.count_jobs(user_id=USER, search=w)),
        ):
            call()  # warm
            indexed = timed(call, reads)
            original = search.MAX_CANDIDATES
            search.MAX_CANDIDATES = -1
            try:
                call()
                scanned = timed(call, reads)
            finally:
                search.MAX_CANDIDATES = original
            p99 = (percentile(indexed, 0.99), percentile(scanned, 0.99))
            print(
                f"  {what:<20} {name:<6} index p50/p99 {statistics.median(indexed):7.2f} /"
                f" {p99[0]:7.2f} ms   scan {statistics.median(scanned):7.2f} /"
                f" {p99[1]:7.2f} ms   ratio {p99[0] / p99[1]:.3f}x"
            )
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--reads", type=int, default=200)
    parser.add_argument("--postgres", help="an empty PostgreSQL database's SQLAlchemy URL")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="morag-search-"))
    try:
        run("SQLite", f"sqlite:///{directory / 'search.db'}", args.jobs, args.reads)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    if args.postgres:
        run("PostgreSQL", args.postgres, args.jobs, args.reads)


if __name__ == "__main__":
    main()
