"""End to end against real `morag-progress serve` processes: the seed's requests.put example."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from morag_progress.settings import Settings
from tests.live import ServerProcess, cli

SEED_REQUEST_BLOCK = """\
import requests

# Report progress
response = requests.put(
    f"{api_base_url}/api/v1/remote-jobs/{job_id}/progress",
    json={
        "percentage": 75,
        "message": "Transcribing audio content",
        "timestamp": "2025-06-11T11:26:50.780725Z"
    },
    headers={"Authorization": f"Bearer {api_key}"}
)
"""


def _new_job(url: str, headers: dict[str, str]) -> str:
    """A new job's id, made over HTTP."""
    answer = httpx.post(
        f"{url}/api/v1/jobs", json={"document_name": "a", "document_type": "pdf"}, headers=headers
    )
    return str(answer.json()["id"])


def test_seed_request_example_as_written(
    serve: Callable[[], str], server_env: dict[str, str]
) -> None:
    """A user starts the server, creates a key, and the seed's requests.put block works."""
    api_base_url = serve()
    api_key = cli("keys", "create", "--user", "alice", env=server_env).splitlines()[0]
    headers = {"Authorization": f"Bearer {api_key}"}
    created = httpx.post(
        f"{api_base_url}/api/v1/jobs",
        json={"document_name": "talk.mp3", "document_type": "audio"},
        headers=headers,
    )
    job_id = created.json()["id"]
    namespace = {"api_base_url": api_base_url, "job_id": job_id, "api_key": api_key}
    exec(compile(SEED_REQUEST_BLOCK, "<seed>", "exec"), namespace)
    response = namespace["response"]
    assert response.status_code == 200
    assert response.json()["job"]["percentage"] == 75
    assert response.json()["job"]["status"] == "PROCESSING"


def test_two_servers_on_one_sqlite_file(
    serve: Callable[[], str], server_env: dict[str, str]
) -> None:
    """Two server processes on one SQLite file are one service: writes through either are seen
    by both, and concurrent reports through both lose nothing."""
    first, second = serve(), serve()
    headers = {
        "Authorization": f"Bearer {cli('keys', 'create', '--user', 'alice', env=server_env).splitlines()[0]}"
    }
    job_id = httpx.post(
        f"{first}/api/v1/jobs", json={"document_name": "a", "document_type": "pdf"}, headers=headers
    ).json()["id"]
    for seq in range(1, 41):
        url = first if seq % 2 else second
        body = {"percentage": seq, "timestamp": "2026-01-01T00:00:00Z", "seq": seq}
        assert (
            httpx.put(
                f"{url}/api/v1/remote-jobs/{job_id}/progress", json=body, headers=headers
            ).status_code
            == 200
        )
    for url in (first, second):
        job = httpx.get(f"{url}/api/v1/jobs/{job_id}", headers=headers).json()
        assert job["percentage"] == 40
    history = httpx.get(f"{second}/api/v1/jobs/{job_id}/history", headers=headers).json()
    assert len(history) == 41


def test_replicas_stream_each_others_updates(
    serve: Callable[[], str], server_env: dict[str, str], database_url: str
) -> None:
    """An update sent to one replica reaches the event stream of another within a second. On
    PostgreSQL the streaming replica polls only every 30 s, so only NOTIFY can make it."""
    key = cli("keys", "create", "--user", "alice", env=server_env).splitlines()[0]
    headers = {"Authorization": f"Bearer {key}"}
    writer = serve()
    if database_url.startswith("postgresql"):
        server_env["MORAG_PROGRESS_FEED_POLL_SECONDS"] = "30"
    reader = serve()
    job_id = _new_job(writer, headers)
    with (
        httpx.Client(timeout=httpx.Timeout(10.0)) as client,
        client.stream("GET", f"{reader}/api/v1/jobs/{job_id}/events", headers=headers) as stream,
    ):
        lines = stream.iter_lines()
        assert next(line for line in lines if line.startswith("event:")) == "event: snapshot"
        time.sleep(0.5)  # the reader's tail is running
        started = time.monotonic()
        report = httpx.put(
            f"{writer}/api/v1/remote-jobs/{job_id}/progress",
            json={"percentage": 50, "message": "from the other replica"},
            headers=headers,
        )
        assert report.status_code == 200
        data = next(line for line in lines if line.startswith("data:") and "other replica" in line)
        elapsed = time.monotonic() - started
    assert '"percentage":50' in data.replace(" ", "")
    assert elapsed < 1.0, f"took {elapsed:.2f} s"


def test_stopping_the_server_ends_its_open_streams(server_env: dict[str, str]) -> None:
    """SIGTERM with event streams open: each stream ends cleanly (its last chunk sent) and the
    server exits at once, rather than waiting for the clients to leave."""
    key = cli("keys", "create", "--user", "alice", env=server_env).splitlines()[0]
    headers = {"Authorization": f"Bearer {key}"}
    server = ServerProcess(dict(server_env)).start()
    try:
        job_id = _new_job(server.url, headers)
        with (
            httpx.Client(timeout=httpx.Timeout(10.0)) as client,
            client.stream("GET", f"{server.url}/api/v1/events", headers=headers) as every,
            client.stream(
                "GET", f"{server.url}/api/v1/jobs/{job_id}/events", headers=headers
            ) as one,
        ):
            streams = [every.iter_lines(), one.iter_lines()]
            for lines in streams:
                assert (
                    next(line for line in lines if line.startswith("event:")) == "event: snapshot"
                )
            assert server.process is not None
            started = time.monotonic()
            server.process.terminate()
            for lines in streams:
                list(lines)  # to the end: a clean end of the response, not a reset
            # uvicorn exits by the signal it stopped for, once it has stopped gracefully.
            assert server.process.wait(10) == -signal.SIGTERM
            assert time.monotonic() - started < 5
    finally:
        server.stop()


def test_the_access_log_is_off_unless_asked_for() -> None:
    """``serve`` writes no line per request by default (as gunicorn); ``access_log`` turns it on."""
    from morag_progress.api.server import uvicorn_config
    from morag_progress.settings import Settings

    assert uvicorn_config(None, Settings()).access_log is False
    assert uvicorn_config(None, Settings(access_log=True)).access_log is True


def test_the_server_settles_the_collector_and_still_collects_cycles() -> None:
    """``settle_collector`` (called by ``serve`` once the app is built) moves what exists out of
    the collector's way and collects the young generation less often, yet a reference cycle
    made afterwards is still freed. In a process of its own: it changes the interpreter."""
    code = """
import gc, weakref
from morag_progress.api.server import COLLECT_YOUNG_EVERY, settle_collector
before = gc.get_threshold()
settle_collector()
assert gc.get_freeze_count() > 10_000, gc.get_freeze_count()
assert gc.get_threshold() == (COLLECT_YOUNG_EVERY, *before[1:]), gc.get_threshold()
class Node: pass
a, b = Node(), Node()
a.other, b.other = b, a
gone = weakref.ref(a)
del a, b
assert gone() is not None  # not yet: the young generation is not full
kept = [[] for _ in range(COLLECT_YOUNG_EVERY)]  # now it is, and is collected
assert gone() is None, "a cycle made after settling was never collected"
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_uvicorns_protocol_has_what_the_guard_extends() -> None:
    """``GuardedProtocol`` overrides these callbacks of uvicorn's httptools protocol and reads
    these attributes (uvicorn is pinned to a minor version for them: this fails on an upgrade
    that renames or reshapes them)."""
    import inspect

    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

    from morag_progress.api.server import GuardedProtocol

    callbacks = {
        "connection_made": ["self", "transport"],
        "connection_lost": ["self", "exc"],
        "on_message_begin": ["self"],
        "on_url": ["self", "url"],
        "on_header": ["self", "name", "value"],
        "on_headers_complete": ["self"],
        "on_message_complete": ["self"],
        "on_response_complete": ["self"],
        "shutdown": ["self"],
    }
    for name, parameters in callbacks.items():
        theirs = getattr(HttpToolsProtocol, name)
        assert list(inspect.signature(theirs).parameters)[: len(parameters)] == parameters, name
        assert name in GuardedProtocol.__dict__, name
    source = inspect.getsource(HttpToolsProtocol.__init__)
    attributes = ("self.connections", "self.cycle", "self.transport", "self.loop")
    for attribute in attributes:
        assert attribute in source, attribute
    assert "response_complete" in inspect.getsource(RequestResponseCycle)


def _serve_guarded(app: Any, **settings: Any) -> tuple[Any, threading.Thread, int]:
    """``app`` served as ``serve`` serves (uvicorn with ``GuardedProtocol``), in a thread."""
    import uvicorn

    from morag_progress.api.server import uvicorn_config
    from tests.services import free_port

    port = free_port()
    config = uvicorn_config(app, Settings(port=port, **settings), log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    return server, thread, port


def test_a_client_that_never_reads_its_answer_is_reset_and_a_steady_one_is_not() -> None:
    """Clients that read nothing of a 16 MB answer are reset at the send deadline (what was
    buffered for them dropped: reading afterwards gets a fraction of it); one that reads
    steadily, if slowly, gets all of it though that takes longer than the deadline."""
    import socket

    size = 16 * 1024 * 1024

    async def big(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = [(b"content-length", str(size).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"x" * size})

    server, thread, port = _serve_guarded(big, send_timeout_seconds=1.0)

    def client() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        return sock

    def read(sock: socket.socket, pause: float) -> int:
        sock.settimeout(3)
        got = 0
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                return got
            if not chunk:
                return got
            got += len(chunk)
            if got >= size:
                return got
            time.sleep(pause)

    stuck = [client() for _ in range(3)]
    steady = client()
    try:
        started = time.monotonic()
        assert read(steady, 0.001) >= size  # headers and all of the body
        assert time.monotonic() - started > 1.0  # slower than the deadline, but reading
        time.sleep(2.0)
        for sock in stuck:
            assert read(sock, 0) < size / 2  # reset: the rest was dropped, not sent
    finally:
        for sock in (*stuck, steady):
            sock.close()
        server.should_exit = True
        thread.join(10)


_ARENAS = """
import ctypes, sys, threading
from morag_progress.api.server import settle_allocator
if sys.argv[1] == "settle":
    print(settle_allocator())
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def churn():  # ctypes lets go of the interpreter: the threads contend for malloc
    for _ in range(20000):
        libc.free(libc.malloc(256))
threads = [threading.Thread(target=churn) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
sys.stdout.flush()
libc.malloc_stats()  # one "Arena N:" block per arena, on stderr
"""


def _arenas(*args: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", _ARENAS, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=True,
    )
    return done.stdout.strip(), done.stderr.count("Arena ")


@pytest.mark.skipif(sys.platform != "linux", reason="malloc arenas are glibc's (Linux)")
def test_the_server_caps_malloc_arenas_unless_the_operator_did() -> None:
    """Eight threads allocating at once get arenas of their own (glibc keeps what each held);
    after ``settle_allocator`` they share two. An operator's ``MALLOC_ARENA_MAX`` is theirs."""
    from morag_progress.api.server import MALLOC_ARENAS

    assert _arenas("settle") == ("True", MALLOC_ARENAS)
    assert _arenas("leave")[1] > MALLOC_ARENAS
    assert _arenas("settle", env={"MALLOC_ARENA_MAX": "3"}) == ("False", 3)
