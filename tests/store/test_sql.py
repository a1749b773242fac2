"""SQLStore on SQLite and PostgreSQL: concurrent writers, time zones, the feed, mappings."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta

from morag_progress import JobTracker, ProgressUpdate, UpdateOutcome
from morag_progress.store import NewJob, SQLStore
from tests.conftest import Clock

# Each writer applies every other update of one job, in its own order, as fast as it can.
WRITER = """
import sys
from datetime import UTC, datetime, timedelta
from morag_progress import JobTracker, ProgressUpdate
url, job_id, first, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
tracker = JobTracker(url)
base = datetime(2026, 1, 1, tzinfo=UTC)
applied = 0
for k in range(first, n, 2):
    update = ProgressUpdate(job_id, 1 + k % 98, f"k={k}", timestamp=base + timedelta(microseconds=k))
    applied += tracker.apply(update).applied
print(applied)
"""


def test_two_processes_writing_one_job_lose_nothing(database_url: str) -> None:
    """Two processes writing the same job at once: no error, every update applied or stale,
    one feed row per applied update, and the job ends at the newest update."""
    tracker = JobTracker(database_url)
    job_id = tracker.start_job("shared.pdf", "pdf", job_id="shared")
    n = 400
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, database_url, job_id, str(first), str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for first in (0, 1)
    ]
    applied = 0
    for writer in writers:
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err
        applied += int(out)
    job = tracker.get_job(job_id)
    assert job is not None
    assert job.summary == f"k={n - 1}"
    assert job.percentage == 1 + (n - 1) % 98
    history = tracker.history(job_id, limit=10_000)
    assert len(history) == 1 + applied  # creation + each applied update, nothing else
    # The feed never goes back in time: each applied update is newer than the one before.
    ks = [int(row.message.removeprefix("k=")) for row in history[1:] if row.message]
    assert ks == sorted(ks)
    tracker.close()


def test_concurrent_threads_on_one_store(store: SQLStore) -> None:
    """Threads sharing one store (one engine, pooled connections) do not trip over each other."""
    from concurrent.futures import ThreadPoolExecutor

    tracker = JobTracker(store=store)
    job_ids = [tracker.start_job(f"doc-{i}", "pdf") for i in range(4)]

    def work(job_id: str) -> int:
        return sum(tracker.update_progress(job_id, pct) for pct in range(1, 41))

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(work, job_ids))
    assert results == [40, 40, 40, 40]
    assert {tracker.get_job_progress(j) for j in job_ids} == {40}


def test_datetimes_come_back_aware_utc(store: SQLStore) -> None:
    """Timestamps written in any zone are read back as the same instant in UTC."""
    cet = datetime(2026, 3, 1, 13, 0, tzinfo=UTC).astimezone(
        __import__("zoneinfo").ZoneInfo("Europe/Berlin")
    )
    _, created = store.create_job(NewJob("j", "doc", "pdf"), now=cet)
    assert created
    read = store.get_job("j")
    assert read is not None
    assert read.created_at == datetime(2026, 3, 1, 13, 0, tzinfo=UTC)
    assert read.created_at.utcoffset() == timedelta(0)


def test_feed_is_global_and_increasing(store: SQLStore, clock: Clock) -> None:
    """events_after returns every job's changes in feed order, optionally one user's."""
    tracker = JobTracker(store=store, clock=clock)
    a = tracker.start_job("a", "pdf", user_id="alice")
    b = tracker.start_job("b", "pdf", user_id="bob")
    tracker.update_progress(a, 10)
    tracker.update_progress(b, 20)
    everything = store.events_after(0)
    assert [(e.job_id, e.percentage) for e in everything] == [(a, 0), (b, 0), (a, 10), (b, 20)]
    assert [e.job_id for e in store.events_after(everything[1].id)] == [a, b]
    assert [e.job_id for e in store.events_after(0, user_id="bob")] == [b, b]
    assert [e.percentage for e in store.history(a, after=everything[0].id)] == [10]


def test_update_result_carries_event_id(store: SQLStore, clock: Clock) -> None:
    """An applied update says which feed row it wrote."""
    tracker = JobTracker(store=store, clock=clock)
    job_id = tracker.start_job("a", "pdf")
    result = tracker.apply(ProgressUpdate(job_id, 10, current=1, total=10, stage="ocr"))
    assert result.outcome is UpdateOutcome.APPLIED
    [row] = store.history(job_id, after=result.event_id - 1)  # type: ignore[operator]
    assert (row.id, row.current, row.total, row.stage) == (result.event_id, 1, 10, "ocr")


def test_mappings_are_shared_between_store_instances(database_url: str) -> None:
    """A mapping written through one store is read through another (another process)."""
    first, second = SQLStore(database_url), SQLStore(database_url)
    now = datetime.now(UTC)
    first.set_mapping("worker-1", "job-1", now=now)
    assert second.get_mapping("worker-1") == "job-1"
    second.set_mapping("worker-1", "job-2", now=now)
    assert first.get_mapping("worker-1") == "job-2"
    first.delete_mapping("worker-1")
    first.delete_mapping("worker-1")  # no error the second time
    assert second.get_mapping("worker-1") is None
    first.close()
    second.close()
