"""``morag-progress demo``: every reporting path at once, on the embedded default.

It starts the API on a free port over a temporary SQLite database, creates a handful of jobs
for a demo user, and runs real workers against them: two remote GPU workers over HTTP
(``remote_worker``), a Celery worker on kombu's filesystem broker (``celery_app``), and a
wrapped command whose output is parsed (``command`` under ``morag-progress run``). One remote
job is cancelled half-way, as a user would from the API. The jobs are shown live from the
server's event stream (and on the dashboard, through a read-only sign-in link), then summed up
with the signed webhooks the demo's own receiver got; the exit code is 0 when every job ended
as expected and each ending arrived as a verified webhook.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO

import httpx
import uvicorn
from rich.console import Console
from rich.live import Live

from morag_progress.api import create_app
from morag_progress.api.server import uvicorn_config
from morag_progress.cli.view import JobsView
from morag_progress.cli.worker import follow
from morag_progress.keys import STREAM_TOKEN_PREFIX, Role, generate_key, hash_key
from morag_progress.models import utcnow
from morag_progress.settings import Settings
from morag_progress.store import SQLStore
from morag_progress.webhooks import verify_signature

__all__ = ["run_demo"]


@dataclass
class _Demo:
    """What the demo started, to stop it all in one place."""

    directory: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[IO[bytes]] = field(default_factory=list)

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log = (self.directory / f"{name}.log").open("wb")
        self.logs.append(log)
        self.processes.append(
            subprocess.Popen(
                args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.directory
            )
        )

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in self.logs:
            log.close()


@contextlib.contextmanager
def _serve(store: SQLStore, settings: Settings) -> Iterator[str]:
    """The API in a thread on a free loopback port; yields its URL."""
    config = uvicorn_config(
        create_app(settings, store=store), settings, host="127.0.0.1", port=0, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="morag-progress-demo-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the demo's API server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def run_demo(
    *, keep_serving: bool = False, seconds: float = 8.0, console: Console | None = None
) -> int:
    """Run the demo; returns the exit code (0 when every job ended as expected)."""
    console = console or Console()
    directory = Path(tempfile.mkdtemp(prefix="morag-progress-demo-"))
    database_url = f"sqlite:///{directory / 'demo.db'}"
    store = SQLStore(database_url)
    user_api_key, user_key = store.create_key(
        user_id="demo", role=Role.USER, name="demo", now=utcnow()
    )
    user_key_id = user_api_key.id
    _, worker_key = store.create_key(user_id="demo", role=Role.WORKER, name="gpu", now=utcnow())
    settings = Settings(
        database_url=database_url,
        rate_limit_per_second=0,
        sse_ping_seconds=1.0,
        webhook_allow_private=True,  # the demo's own webhook receiver is on loopback
        webhook_poll_seconds=0.2,
    )
    # A ready sign-in for the dashboard: a read token in the link's fragment (never the key).
    link_token = generate_key(STREAM_TOKEN_PREFIX)
    store.create_stream_token(
        hash_key(link_token), user_key_id, expires_at=utcnow() + timedelta(hours=1)
    )
    demo = _Demo(directory)
    try:
        with _serve(store, settings) as url:
            # soft_wrap: a link or a key cut across two lines cannot be copied or clicked.
            say = functools.partial(console.print, soft_wrap=True)
            say(f"[bold]morag-progress demo[/bold]: API at [link={url}/docs]{url}[/link]")
            say(f"  dashboard (signed in, read-only, for an hour): {url}/#token={link_token}")
            say(f"  the demo user's API key: {user_key}")
            say(f"  OpenAPI docs: {url}/docs")
            say(
                f"  workers' logs: {directory} (kept with MORAG_PROGRESS_DEMO_KEEP_FILES=1)",
                style="dim",
            )
            code = _run(demo, url, user_key, worker_key, database_url, seconds, console)
            if keep_serving:
                console.print(f"Still serving at {url} (Ctrl-C to stop).")
                with contextlib.suppress(KeyboardInterrupt):
                    while True:
                        time.sleep(3600)
            return code
    finally:
        demo.stop()
        store.close()
        if not keep_serving and os.environ.get("MORAG_PROGRESS_DEMO_KEEP_FILES") != "1":
            shutil.rmtree(directory, ignore_errors=True)


def _run(
    demo: _Demo,
    url: str,
    user_key: str,
    worker_key: str,
    database_url: str,
    seconds: float,
    console: Console,
) -> int:
    user = {"Authorization": f"Bearer {user_key}"}
    http = httpx.Client(base_url=url, headers=user, timeout=10)

    def new_job(name: str, document_type: str, **fields: object) -> str:
        body = {"document_name": name, "document_type": document_type, **fields}
        response = http.post("/api/v1/jobs", json=body)
        response.raise_for_status()
        return str(response.json()["id"])

    inbox = _Inbox()
    hook = http.post(
        "/api/v1/webhooks",
        json={"url": inbox.url, "events": ["job.finished", "job.failed", "job.cancelled"]},
    )
    hook.raise_for_status()
    secret = hook.json()["secret"]

    expected: dict[str, str] = {}
    lecture = new_job("lecture.mp3", "audio", remote=True)
    podcast = new_job("podcast.wav", "audio", remote=True)
    expected.update({lecture: "FINISHED", podcast: "CANCELLED"})
    python = sys.executable
    base_env = {**os.environ, "PYTHONUNBUFFERED": "1", "MORAG_PROGRESS_API_URL": url}
    for worker in ("gpu-01", "gpu-02"):
        demo.spawn(
            f"remote-{worker}",
            [
                python,
                "-m",
                "morag_progress.demo.remote_worker",
                "--worker-id",
                worker,
                "--seconds",
                str(seconds),
            ],
            {**base_env, "MORAG_PROGRESS_API_KEY": worker_key},
        )

    slides = new_job("slides.pptx", "presentation")
    expected[slides] = "FINISHED"
    demo.spawn(
        "command",
        [
            python,
            "-m",
            "morag_progress.cli",
            "run",
            "--job",
            slides,
            "--min-interval",
            "0.2",
            "--",
            python,
            "-m",
            "morag_progress.demo.command",
            str(seconds * 0.8),
        ],
        {**base_env, "MORAG_PROGRESS_API_KEY": user_key},
    )

    if importlib.util.find_spec("celery") is None:
        console.print(
            "[yellow]Celery is not installed: the Celery part is skipped "
            "(pip install 'morag-progress[demo]').[/yellow]"
        )
    else:
        report = str(uuid.uuid4())
        new_job("report.pdf", "document", id=report)
        expected[report] = "FINISHED"
        broker = demo.directory / "broker"
        celery_env = {
            **base_env,
            "MORAG_DEMO_BROKER_DIR": str(broker),
            "MORAG_PROGRESS_DATABASE_URL": database_url,
        }
        celery_env.pop("MORAG_PROGRESS_API_URL")  # beside the database: report through it
        demo.spawn(
            "celery-worker",
            [
                python,
                "-m",
                "celery",
                "-A",
                "morag_progress.demo.celery_app",
                "worker",
                "--pool=solo",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel=INFO",
            ],
            celery_env,
        )
        _send_celery_task(broker, report, seconds)

    view = JobsView(only=set(expected))
    deadline = time.monotonic() + max(60.0, seconds * 8)
    cancelled = threading.Event()

    def changed() -> None:
        live.update(
            view.render(
                title="Jobs (live from the event stream)", whole_ids=False, width=console.width
            )
        )
        job = view.jobs.get(podcast)
        if job and not cancelled.is_set() and job.get("percentage", 0) >= 40:
            cancelled.set()  # a user cancels one job half-way
            http.post(f"/api/v1/jobs/{podcast}/cancel")

    with Live(
        view.render(whole_ids=False, width=console.width),
        console=console,
        refresh_per_second=8,
        transient=True,
    ) as live:
        follow(url, user, view, changed, stop=lambda: time.monotonic() > deadline)

    console.print(view.render(title="Summary", whole_ids=False, width=console.width))
    verified = inbox.wait_for(len(expected), secret, timeout=10)
    inbox.close()
    kinds = ", ".join(f"{kind} x{n}" for kind, n in sorted(verified.items()))
    console.print(
        f"Signed webhooks received and verified: {sum(verified.values())} ({kinds or 'none'})"
    )
    wrong = {
        job_id: job.get("status")
        for job_id, job in view.jobs.items()
        if job.get("status") != expected[job_id]
    }
    if wrong:
        console.print(f"[red]Not as expected:[/red] {wrong} (logs in {demo.directory})")
        return 1
    if sum(verified.values()) != len(expected):
        console.print(f"[red]Expected {len(expected)} signed webhooks, one per job.[/red]")
        return 1
    console.print(
        f"[green]All {len(expected)} jobs ended as expected[/green]: remote workers over HTTP, "
        "a Celery worker through the store, a wrapped command's output, and a cancel request."
    )
    return 0


class _Inbox:
    """The demo's webhook receiver on loopback: keeps each delivery's headers and body."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        inbox = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                inbox.received.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, secret: str, timeout: float) -> dict[str, int]:
        """Deliveries whose signature checks out, by event type, once ``count`` arrived (or
        at the deadline)."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        verified: dict[str, int] = {}
        for headers, body in list(self.received):
            if verify_signature(secret, body, headers.get("X-Morag-Signature")):
                kind = headers.get("X-Morag-Event", "?")
                verified[kind] = verified.get(kind, 0) + 1
        return verified

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _send_celery_task(broker: Path, job_id: str, seconds: float) -> None:
    """Queue the ingest task with the job's id as the task's id (job id = task id)."""
    os.environ["MORAG_DEMO_BROKER_DIR"] = str(broker)
    from morag_progress.demo.celery_app import app, ingest_document

    ingest_document.apply_async(args=("report.pdf",), kwargs={"seconds": seconds}, task_id=job_id)
    app.close()
