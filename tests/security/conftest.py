"""A real ``morag-progress serve`` process for the security tests, configured per test."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from morag_progress.keys import Role
from morag_progress.models import utcnow
from morag_progress.store import SQLStore
from tests.live import ServerProcess


@dataclass
class Target:
    """A server under test, its database (to make keys) and its log."""

    url: str
    store: SQLStore
    log: Path
    process: ServerProcess

    def key(self, user: str = "alice", role: Role = Role.USER) -> dict[str, str]:
        """A new key's Authorization header."""
        _, secret = self.store.create_key(user_id=user, role=role, name=None, now=utcnow())
        return {"Authorization": f"Bearer {secret}"}

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, **kwargs)  # type: ignore[arg-type]

    def create(self, auth: dict[str, str], **fields: object) -> httpx.Response:
        body = {"document_name": "talk.mp3", "document_type": "audio", **fields}
        with self.client() as client:
            return client.post("/api/v1/jobs", json=body, headers=auth)

    def logged(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def _targets(database_url: str, tmp_path: Path) -> Iterator[Callable[..., Target]]:
    started: list[tuple[ServerProcess, SQLStore]] = []

    def start(**settings: str) -> Target:
        env = {
            **os.environ,
            "MORAG_PROGRESS_DATABASE_URL": database_url,
            "MORAG_PROGRESS_RATE_LIMIT_PER_SECOND": "0",
            **{f"MORAG_PROGRESS_{name}": value for name, value in settings.items()},
        }
        log = tmp_path / f"server-{len(started)}.log"
        store = SQLStore(database_url)
        process = ServerProcess(env, log=log)
        started.append((process, store))
        process.start()
        return Target(process.url, store, log, process)

    try:
        yield start
    finally:
        for process, store in started:
            process.stop()
            store.close()


@pytest.fixture
def target(database_url: str, tmp_path: Path) -> Iterator[Callable[..., Target]]:
    """Factory: start a server on SQLite and on PostgreSQL with extra ``MORAG_PROGRESS_*``
    settings (named without the prefix: ``MAX_STREAMS_PER_KEY="2"``); stopped at teardown."""
    with _targets(database_url, tmp_path) as start:
        yield start


@pytest.fixture
def sqlite_target(tmp_path: Path) -> Iterator[Callable[..., Target]]:
    """The same on SQLite only, for what does not depend on the database (connections)."""
    with _targets(f"sqlite:///{tmp_path / 'store.db'}", tmp_path) as start:
        yield start
