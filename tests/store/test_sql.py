"""SQLStore on SQLite and PostgreSQL: concurrency, time zones, the feed, mappings, settings."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from morag_progress import JobStatus, JobTracker, ProgressUpdate, UpdateOutcome
from morag_progress.errors import ConfigurationError, StoreError
from morag_progress.store import NewJob, SQLStore, open_store
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


def test_ping(store: SQLStore) -> None:
    """ping() succeeds on a reachable database."""
    store.ping()


def test_unreachable_database_raises_store_error() -> None:
    """A database that does not answer raises StoreError, with the driver's error as cause."""
    with pytest.raises(StoreError, match="postgresql") as info:
        SQLStore("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    assert info.value.__cause__ is not None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "database_url must be a SQLAlchemy URL"),
        ("mysql://localhost/x", "database_url must name sqlite or postgresql"),
    ],
)
def test_bad_url_names_the_setting(url: str, message: str) -> None:
    """A bad database URL is a ConfigurationError naming the setting and the rule."""
    with pytest.raises(ConfigurationError, match=message):
        SQLStore(url)


def test_bad_synchronous_setting(tmp_path: Path) -> None:
    """sqlite_synchronous accepts NORMAL or FULL only."""
    with pytest.raises(ConfigurationError, match="sqlite_synchronous must be NORMAL or FULL"):
        SQLStore(f"sqlite:///{tmp_path / 'x.db'}", sqlite_synchronous="OFF")


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
def test_sqlite_runs_in_wal_with_a_busy_timeout(tmp_path: Path, synchronous: str) -> None:
    """SQLite files use WAL, the chosen synchronous level and a busy timeout."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    store = SQLStore(url, sqlite_synchronous=synchronous, busy_timeout_ms=1234)
    with store._engine.connect() as conn:  # the pragmas are per connection: ask one of ours
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert (
            conn.exec_driver_sql("PRAGMA synchronous").scalar()
            == {"NORMAL": 1, "FULL": 2}[synchronous]
        )
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1234
    store.close()


def test_sqlite_in_memory(clock: Clock) -> None:
    """An in-memory SQLite store works (one shared connection)."""
    tracker = JobTracker(store=SQLStore("sqlite://"), clock=clock)
    job_id = tracker.start_job("a", "pdf")
    assert tracker.update_progress(job_id, 50)
    assert tracker.get_job_status(job_id) is JobStatus.PROCESSING


def test_creates_the_default_directory_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default SQLite file's directory is created on first use; any other directory must
    exist (a typo in a path is an error naming database_url, not a new directory)."""
    from morag_progress.errors import ConfigurationError
    from morag_progress.settings import default_database_url

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "deep" / "er"))
    SQLStore(default_database_url()).close()
    assert (tmp_path / "deep" / "er" / "morag-progress" / "progress.db").exists()
    with pytest.raises(ConfigurationError, match="database_url names a directory that does not"):
        SQLStore(f"sqlite:///{tmp_path / 'typo' / 'progress.db'}")
    assert not (tmp_path / "typo").exists()


def test_open_store_reads_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """open_store() uses MORAG_PROGRESS_DATABASE_URL and MORAG_PROGRESS_SQLITE_SYNCHRONOUS."""
    path = tmp_path / "env.db"
    monkeypatch.setenv("MORAG_PROGRESS_DATABASE_URL", f"sqlite:///{path}")
    monkeypatch.setenv("MORAG_PROGRESS_SQLITE_SYNCHRONOUS", "FULL")
    store = open_store()
    with store._engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2
    store.close()
    assert path.exists()


def test_sqlite_writer_waits_for_the_lock(tmp_path: Path) -> None:
    """A writer blocked by another connection's open write transaction waits, then succeeds."""
    import threading

    url = f"sqlite:///{tmp_path / 'lock.db'}"
    store = SQLStore(url)
    tracker = JobTracker(store=store)
    job_id = tracker.start_job("a", "pdf")
    blocker = create_engine(url, connect_args={"isolation_level": None})
    with blocker.connect() as conn:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        done = threading.Event()
        result: list[bool] = []

        def write() -> None:
            result.append(tracker.update_progress(job_id, 30))
            done.set()

        thread = threading.Thread(target=write)
        thread.start()
        assert not done.wait(0.3)  # held back by the lock, not failed
        conn.execute(text("COMMIT"))
    thread.join(10)
    assert result == [True]
    blocker.dispose()
    store.close()
