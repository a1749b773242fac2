"""Reporter fixtures: a real server on loopback over SQLite, which can fail on demand (429,
500) or be stopped and started again, a worker key, and jobs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from morag_progress.api import create_app
from morag_progress.keys import Role, create_key
from morag_progress.models import utcnow
from morag_progress.settings import Settings
from morag_progress.store import SQLStore
from morag_progress.tracker import JobTracker
from tests.live import LiveServer


class Faults:
    """ASGI middleware: answers the next requests with the queued statuses (and Retry-After)
    instead of passing them on, and records every request it sees, in order."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.queue: list[tuple[int, str | None]] = []
        self.seen: list[tuple[float, str, str, dict[str, Any] | None]] = []

    def fail_next(self, status: int, times: int = 1, retry_after: str | None = None) -> None:
        """Answer the next ``times`` requests with ``status``; 0 passes a request through."""
        self.queue.extend([(status, retry_after)] * times)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.seen.append(
            (time.monotonic(), scope["method"], scope["path"], orjson.loads(body) if body else None)
        )
        status, retry_after = self.queue.pop(0) if self.queue else (0, None)
        if status:
            headers = [(b"content-type", b"application/json")]
            if retry_after is not None:
                headers.append((b"retry-after", retry_after.encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": b'{"detail": "injected"}'})
            return

        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


@dataclass
class Remote:
    """A live server, its store and a worker key of user alice."""

    server: LiveServer
    faults: Faults
    tracker: JobTracker
    key: str
    user_key: str
    jobs: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    def new_job(self, **fields: Any) -> str:
        fields.setdefault("document_name", "talk.mp3")
        fields.setdefault("document_type", "audio")
        return self.tracker.start_job(user_id="alice", **fields)

    def job(self, job_id: str) -> Any:
        job = self.tracker.get_job(job_id)
        assert job is not None
        return job


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[Remote]:
    store = SQLStore(f"sqlite:///{tmp_path / 'remote.db'}")
    settings = Settings(rate_limit_per_second=0, key_cache_seconds=0)
    faults = Faults(create_app(settings, store=store))
    server = LiveServer(faults).start()
    _, key = create_key(store, user_id="alice", role=Role.WORKER, name="w", now=utcnow())
    _, user_key = create_key(store, user_id="alice", role=Role.USER, name="u", now=utcnow())
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
