"""Shared fixtures: isolated settings, a controllable clock, stores on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from morag_progress.store import SQLStore
from morag_progress.tracker import JobTracker
from tests.services import PostgresServer, start_postgres


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Every test gets its own default database; nothing touches the user's data directory."""
    for name in (
        "MORAG_PROGRESS_SQLITE_SYNCHRONOUS",
        "MORAG_PROGRESS_BUSY_TIMEOUT_MS",
        "MORAG_PROGRESS_API_URL",
        "MORAG_PROGRESS_API_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MORAG_PROGRESS_DATABASE_URL", f"sqlite:///{tmp_path / 'default.db'}")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


def _fresh_postgres_database(server: PostgresServer) -> str:
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(server.url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return server.url(name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL with nothing in it yet: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return _fresh_postgres_database(server)


@pytest.fixture
def store(database_url: str) -> Iterator[SQLStore]:
    s = SQLStore(database_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def tracker(store: SQLStore, clock: Clock) -> JobTracker:
    return JobTracker(store=store, clock=clock)


@pytest.fixture
def sqlite_tracker(tmp_path: Path, clock: Clock) -> Iterator[JobTracker]:
    """A tracker on SQLite only, for tests whose subject is not the database."""
    s = SQLStore(f"sqlite:///{tmp_path / 'tracker.db'}")
    try:
        yield JobTracker(store=s, clock=clock)
    finally:
        s.close()


@pytest.fixture
def make_job(tracker: JobTracker) -> Callable[..., str]:
    """Factory: create a job and return its id."""

    def create(user_id: str | None = "alice", **kwargs: object) -> str:
        kwargs.setdefault("document_name", "talk.mp3")
        kwargs.setdefault("document_type", "audio")
        return tracker.start_job(user_id=user_id, **kwargs)  # type: ignore[arg-type]

    return create
