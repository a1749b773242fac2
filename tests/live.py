"""A real uvicorn server in a thread, for tests that need HTTP on loopback (streams, the
reporter). It can be stopped and started again on the same port: a server that is down, then
up; ``Faults`` in front of the app answers chosen requests with 429 or 500."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from morag_progress.tracker import JobTracker
from tests.services import free_port, reap


class LiveServer:
    """Serves ``app`` on 127.0.0.1 at ``url`` while started."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.app = app
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> LiveServer:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive(), "server thread died on start"
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
        self._server = self._thread = None


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

    def env(self, key: str | None = None, **extra: str) -> dict[str, str]:
        """This process's environment, pointing a worker or the CLI at the server."""
        return {
            **os.environ,
            "MORAG_PROGRESS_API_URL": self.url,
            "MORAG_PROGRESS_API_KEY": key or self.key,
            **extra,
        }

    def new_job(self, **fields: Any) -> str:
        fields.setdefault("document_name", "talk.mp3")
        fields.setdefault("document_type", "audio")
        return self.tracker.start_job(user_id="alice", **fields)

    def job(self, job_id: str) -> Any:
        job = self.tracker.get_job(job_id)
        assert job is not None
        return job


CLI = [sys.executable, "-m", "morag_progress.cli"]


def cli(*args: str, env: dict[str, str]) -> str:
    """Run ``morag-progress ARGS`` as a user would; its standard output."""
    done = subprocess.run(
        [*CLI, *args], capture_output=True, text=True, env=env, timeout=60, check=True
    )
    return done.stdout.strip()


class ServerProcess:
    """``morag-progress serve`` in a process of its own, on a port that survives restarts."""

    def __init__(
        self, env: dict[str, str], port: int | None = None, log: Path | None = None
    ) -> None:
        self.env = env
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> ServerProcess:
        """Start it and wait until it is ready; its log goes to ``log`` (appended), if given."""
        sink = self.log.open("ab") if self.log is not None else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                [*CLI, "serve", "--port", str(self.port)],
                env=self.env,
                stdout=sink,
                stderr=sink,
            )
        finally:
            if self.log is not None:
                sink.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        reap(self.process, grace=0)
        raise RuntimeError("server did not become ready in time")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, as a crash."""
        if self.process is not None:
            reap(self.process, grace=0)

    def stop(self) -> None:
        if self.process is not None:
            reap(self.process)
