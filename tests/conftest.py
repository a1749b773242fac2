"""Shared fixtures: isolated settings, a controllable clock, stores on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from morag_progress.api import create_app
from morag_progress.keys import Role
from morag_progress.models import utcnow
from morag_progress.settings import Settings
from morag_progress.store import SQLStore
from morag_progress.tracker import JobTracker
from tests.live import Faults, LiveServer, Remote, ServerProcess
from tests.services import PostgresServer, start_postgres, start_redis


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
    monkeypatch.setenv("MORAG_PROGRESS_SPOOL_DIR", str(tmp_path / "spool"))


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
def redis_url() -> Iterator[str]:
    server = start_redis()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A throw-away PostgreSQL server for the session, or the one a caller started and
    named by its port in ``MORAG_PROGRESS_TEST_POSTGRES_PORT`` (a mutation run starts one
    for its many short pytest sessions); each test that uses it gets a database of its own."""
    shared = os.environ.get("MORAG_PROGRESS_TEST_POSTGRES_PORT")
    if shared:
        yield PostgresServer.running(int(shared))
        return
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


def fresh_postgres_database(server: PostgresServer) -> str:
    """The URL of a new, empty database on ``server``."""
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
    return fresh_postgres_database(server)


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


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[Remote]:
    store = SQLStore(f"sqlite:///{tmp_path / 'remote.db'}")
    settings = Settings(rate_limit_per_second=0, key_cache_seconds=0)
    faults = Faults(create_app(settings, store=store))
    server = LiveServer(faults).start()
    _, key = store.create_key(user_id="alice", role=Role.WORKER, name="w", now=utcnow())
    _, user_key = store.create_key(user_id="alice", role=Role.USER, name="u", now=utcnow())
    try:
        yield Remote(server, faults, JobTracker(store=store), key, user_key)
    finally:
        server.stop()
        store.close()


Eventually = Callable[..., None]


@pytest.fixture
def eventually() -> Eventually:
    """Wait (bounded) until ``check()`` stops raising AssertionError."""

    def wait(check: Callable[[], None], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                check()
                return
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    return wait


@pytest.fixture
def server_env(database_url: str) -> dict[str, str]:
    """The servers' environment: one database (a SQLite file, or PostgreSQL) for all of them."""
    return {**os.environ, "MORAG_PROGRESS_DATABASE_URL": database_url}


@pytest.fixture
def serve(server_env: dict[str, str]) -> Iterator[Callable[[], str]]:
    """Factory: start a server process on a free port and return its base URL."""
    servers: list[ServerProcess] = []

    def start() -> str:
        servers.append(ServerProcess(dict(server_env)).start())
        return servers[-1].url

    yield start
    for server in servers:
        server.stop()
