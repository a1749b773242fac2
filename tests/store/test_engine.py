"""The database under the store: URLs and settings, SQLite's and PostgreSQL's engines, read
and write transactions, compiled statements, and the lookups the store's parts share."""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text

from morag_progress import JobStatus, JobTracker
from morag_progress.errors import ConfigurationError, JobConflictError, StoreError
from morag_progress.store import NewJob, SQLStore, open_store
from morag_progress.store.engine import NO_USER, db_user, json_loads
from morag_progress.store.schema import jobs
from tests.conftest import Clock


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


def test_json_columns_read_what_only_the_standard_library_reads() -> None:
    """orjson reads JSON; the standard library's NaN and Infinity (which an old row may hold)
    are read too, not refused."""
    assert json_loads(b'{"a": [1, 2.5, "x"]}') == {"a": [1, 2.5, "x"]}
    value = json_loads('{"a": NaN, "b": Infinity}')
    assert math.isnan(value["a"])
    assert value["b"] == math.inf


def test_a_job_without_a_user_is_stored_under_the_empty_owner() -> None:
    assert (db_user(None), db_user("alice"), NO_USER) == ("", "alice", "")


def test_a_read_connection_does_not_take_the_write_lock(tmp_path: Path) -> None:
    """On SQLite a read begins a plain transaction: it goes on while another connection holds
    the write lock (a write, BEGIN IMMEDIATE, would wait for it)."""
    url = f"sqlite:///{tmp_path / 'read.db'}"
    store = SQLStore(url, busy_timeout_ms=100)
    blocker = create_engine(url, connect_args={"isolation_level": None})
    with blocker.connect() as conn:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        with store.connection("read while locked") as read:
            assert read.execute(select(jobs.c.id)).all() == []
        with pytest.raises(StoreError, match="locked"), store.transaction("write") as write:
            write.execute(jobs.delete())
        conn.execute(text("COMMIT"))
    blocker.dispose()
    store.close()


def test_an_unscoped_caller_finds_the_one_owner_of_an_id(store: SQLStore) -> None:
    """Without a user, an id is found if exactly one user has it; two users' ids of the same
    name are a conflict (ids are unique per user), and a scoped caller is never asked."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    store.create_job(NewJob(id="x", document_name="d", document_type="t", user_id="a"), now=now)
    with store.connection("owner") as conn:
        assert store._owner(conn, "x", None) == "a"
        assert store._owner(conn, "y", None) is None
        assert store._owner(conn, "x", "b") == "b"
    store.create_job(NewJob(id="x", document_name="d", document_type="t", user_id="b"), now=now)
    with store.connection("owner") as conn, pytest.raises(JobConflictError):
        store._owner(conn, "x", None)


def test_compiled_statements_are_bounded(store: SQLStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A statement is compiled once per store and reused; past the bound the cache starts
    again (shapes are rebuilt on demand), and what it answers is unchanged."""
    monkeypatch.setattr("morag_progress.store.engine._MAX_PREPARED", 3)
    statements = [select(jobs.c.id).where(jobs.c.percentage > n) for n in range(5)]
    first = store.prepared(statements[0])
    assert store.prepared(statements[0]) is first
    for statement in statements:
        store.prepared(statement)
    assert len(store._compiled) <= 3
    with store.connection("run") as conn:
        assert store.prepared(statements[0]).all(conn, {}) == []
