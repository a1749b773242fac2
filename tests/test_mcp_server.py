"""``morag-progress mcp`` with the official SDK's own client against a real server: the tools over
stdio and streamable HTTP, each scoped by its caller's key exactly as the API is, a progress
notification within a second of each report, and a long wait kept alive through a proxy that
cuts connections silent for a while."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("mcp", reason="the mcp extra is not installed")

import itertools

import httpx2
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from tests.live import CLI, ServerProcess, cli
from tests.services import free_port, reap

TOOLS = {"list_jobs", "show_job", "watch_job", "cancel_job", "requeue_job", "job_history"}


class Api:
    """A real ``morag-progress serve`` on SQLite, with keys for Alice and Bob."""

    def __init__(self, tmp_path: Path) -> None:
        self.db = tmp_path / "jobs.db"
        self.env = {
            **os.environ,
            "MORAG_PROGRESS_DATABASE_URL": f"sqlite:///{self.db}",
            "MORAG_PROGRESS_RATE_LIMIT_PER_SECOND": "0",
        }
        self.server = ServerProcess(self.env).start()
        self.url = self.server.url
        self.alice = cli("keys", "create", "--user", "alice", env=self.env).split()[0]
        self.bob = cli("keys", "create", "--user", "bob", env=self.env).split()[0]

    def call(self, key: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=10, **kwargs)

    def job(self, key: str, name: str = "talk.mp3") -> str:
        made = self.call(
            key, "POST", "/api/v1/jobs", json={"document_name": name, "document_type": "audio"}
        )
        assert made.status_code == 201
        return str(made.json()["id"])

    def report(self, key: str, job_id: str, percentage: int, message: str = "") -> None:
        body = {"percentage": percentage, "message": message}
        answer = self.call(key, "PUT", f"/api/v1/remote-jobs/{job_id}/progress", json=body)
        assert answer.status_code == 200, answer.text


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    served = Api(tmp_path)
    yield served
    served.server.stop()


@contextlib.asynccontextmanager
async def over_stdio(api: Api, key: str, *extra: str) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(
        command=CLI[0],
        args=[*CLI[1:], "mcp", "--api-url", api.url, *extra],
        env={**api.env, "MORAG_PROGRESS_API_KEY": key},
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


class McpHttp:
    """``morag-progress mcp --transport http`` in a process of its own."""

    def __init__(self, api: Api, keepalive: float = 15.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        command = [*CLI, "mcp", "--transport", "http", "--port", str(self.port)]
        command += ["--api-url", api.url, "--keepalive", str(keepalive)]
        env = {k: v for k, v in api.env.items() if k != "MORAG_PROGRESS_API_KEY"}
        self.process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the MCP server did not start"
                assert self.process.poll() is None, "the MCP server exited"
                time.sleep(0.1)

    def stop(self) -> None:
        reap(self.process)


@contextlib.asynccontextmanager
async def over_http(url: str, key: str | None) -> AsyncIterator[ClientSession]:
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    timeout = httpx2.Timeout(30, read=600)
    async with (
        httpx2.AsyncClient(headers=headers, timeout=timeout) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def _text(result: Any) -> str:
    return " ".join(getattr(part, "text", "") for part in result.content)


def test_the_tools_over_stdio_are_the_apis_with_the_callers_key(api: Api) -> None:
    """Six tools; each reads and acts through the API with the key the command runs with:
    Alice's job shown, listed, its history read, cancelled and requeued; Bob's job refused
    with the API's own answer, and so is a job that does not exist; bad arguments named."""
    mine = api.job(api.alice, "mine.mp3")
    api.report(api.alice, mine, 40, "half way")
    theirs = api.job(api.bob, "theirs.mp3")
    refused = api.call(api.alice, "GET", f"/api/v1/jobs/{theirs}").json()["detail"]

    async def run() -> None:
        async with over_stdio(api, api.alice) as session:
            assert {tool.name for tool in (await session.list_tools()).tools} == TOOLS
            shown = await session.call_tool("show_job", {"job_id": mine})
            assert not shown.is_error
            assert shown.structured_content is not None
            assert (
                shown.structured_content["percentage"],
                shown.structured_content["summary"],
            ) == (40, "half way")
            listed = await session.call_tool("list_jobs", {"status": "PROCESSING"})
            assert [job["id"] for job in listed.structured_content["jobs"]] == [mine]
            history = await session.call_tool("job_history", {"job_id": mine, "limit": 10})
            events = history.structured_content["events"]
            assert [event["percentage"] for event in events] == [0, 40]
            cancelled = await session.call_tool("cancel_job", {"job_id": mine})
            assert cancelled.structured_content["cancel_requested"] is True
            other = await session.call_tool("show_job", {"job_id": theirs})
            assert other.is_error
            assert refused in _text(other)
            assert "(404)" in _text(other)
            for verb in ("cancel_job", "requeue_job", "watch_job", "job_history"):
                answer = await session.call_tool(verb, {"job_id": theirs})
                assert answer.is_error, verb
                assert refused in _text(answer), verb
            for sneaky in ("../stream-tokens?", f"{mine}/share-links?", "a b"):
                answer = await session.call_tool("cancel_job", {"job_id": sneaky})
                assert answer.is_error, sneaky  # an id is an id: no other route is reached
                assert "job_id" in _text(answer)
            with sqlite3.connect(api.db) as db:  # the share link the second would have made
                assert db.execute("SELECT count(*) FROM share_links").fetchone() == (0,)
            bad = await session.call_tool("list_jobs", {"limit": 1000})
            assert bad.is_error
            assert "limit" in _text(bad)

    asyncio.run(run())


def test_a_watch_notifies_each_report_within_a_second_over_http(api: Api) -> None:
    """Over streamable HTTP with Alice's key: 100 reports, one every 50 ms, each reach the
    watching client as a progress notification; p95 from the report's answer to the
    notification <= 1 s; the watch returns when the job ends. Without a key, or with Bob's,
    the tools refuse."""
    job_id = api.job(api.alice)
    mcp = McpHttp(api)
    reported: dict[int, float] = {}
    heard: dict[int, float] = {}

    def work() -> None:
        time.sleep(1.0)  # the watch is open
        for percentage in range(1, 100):
            api.report(api.alice, job_id, percentage, f"step {percentage}")
            reported[percentage] = time.monotonic()
            time.sleep(0.05)
        api.call(api.alice, "PUT", f"/api/v1/remote-jobs/{job_id}/result", json={"success": True})
        reported[100] = time.monotonic()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        heard.setdefault(int(progress), time.monotonic())

    async def run() -> None:
        async with over_http(mcp.url, api.alice) as session:
            worker = threading.Thread(target=work)
            worker.start()
            result = await session.call_tool(
                "watch_job", {"job_id": job_id}, progress_callback=on_progress
            )
            worker.join()
            assert not result.is_error, _text(result)
            assert result.structured_content["outcome"] == "ended"
            assert result.structured_content["job"]["status"] == "FINISHED"
        async with over_http(mcp.url, None) as session:
            answer = await session.call_tool("show_job", {"job_id": job_id})
            assert answer.is_error
            assert "bearer" in _text(answer)
        async with over_http(mcp.url, api.bob) as session:
            answer = await session.call_tool("show_job", {"job_id": job_id})
            assert answer.is_error
            assert "(404)" in _text(answer)

    try:
        asyncio.run(run())
    finally:
        mcp.stop()
    delays = sorted(heard[p] - reported[p] for p in reported if p in heard)
    assert len(delays) >= 95  # a change that lands in the same instant as the next may merge
    p95 = delays[int(len(delays) * 0.95) - 1]
    assert p95 <= 1.0, delays[-10:]


def test_a_watch_that_reaches_its_percentage_in_a_burst_returns_at_once(api: Api) -> None:
    """Reports far faster than notifications go out (a burst, or a resumed stream's replay),
    and the watch's percentage reached early: it returns at once, its stream let go."""
    job_id = api.job(api.alice)

    def burst() -> None:
        time.sleep(1.0)
        for p in range(1, 100):
            api.report(api.alice, job_id, p)

    async def run() -> tuple[Any, float]:
        async with over_stdio(api, api.alice) as session:
            worker = threading.Thread(target=burst)
            worker.start()
            started = time.monotonic()
            result = await session.call_tool(
                "watch_job",
                {"job_id": job_id, "until_percentage": 5, "timeout_seconds": 60},
                progress_callback=lambda *_: asyncio.sleep(0.05),  # a slow listener
            )
            worker.join()
            return result, time.monotonic() - started

    result, took = asyncio.run(run())
    assert not result.is_error, _text(result)
    assert result.structured_content["outcome"] == "reached"
    assert result.structured_content["job"]["id"] == job_id
    assert took < 20


def test_one_key_cannot_take_every_watch(api: Api) -> None:
    """Ten watches of one key at once, and an eleventh is refused, saying why; another
    user's key still watches."""
    mine, theirs = api.job(api.alice), api.job(api.bob)
    mcp = McpHttp(api)

    async def run() -> None:
        async with over_http(mcp.url, api.alice) as alice, over_http(mcp.url, api.bob) as bob:
            waits = [
                asyncio.create_task(
                    alice.call_tool("watch_job", {"job_id": mine, "timeout_seconds": 6})
                )
                for _ in range(10)
            ]
            await asyncio.sleep(2)
            refused = await alice.call_tool("watch_job", {"job_id": mine, "timeout_seconds": 1})
            assert refused.is_error
            assert "this key runs 10 watches already" in _text(refused)
            other = await bob.call_tool("watch_job", {"job_id": theirs, "timeout_seconds": 1})
            assert not other.is_error, _text(other)
            assert other.structured_content["outcome"] == "timeout"
            for done in await asyncio.gather(*waits):
                assert done.structured_content["outcome"] == "timeout"

    try:
        asyncio.run(run())
    finally:
        mcp.stop()


class IdleProxy:
    """A TCP proxy that cuts a connection once no byte has crossed it for ``idle`` seconds, as a
    load balancer or an agent's gateway does."""

    def __init__(self, target_port: int, idle: float) -> None:
        self.target_port, self.idle = target_port, idle
        self.port = free_port()
        self.cut = 0
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.port)
        )
        self.ready.set()
        self.loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        try:
            await self._pipe(reader, writer, up_reader, up_writer)
        finally:
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                    await w.wait_closed()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        last = [time.monotonic()]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    last[0] = time.monotonic()
                    dst.write(data)
                    await dst.drain()

        pumps = [
            asyncio.ensure_future(pump(reader, up_writer)),
            asyncio.ensure_future(pump(up_reader, writer)),
        ]
        while not all(p.done() for p in pumps):
            await asyncio.sleep(0.05)
            if time.monotonic() - last[0] > self.idle:
                self.cut += 1
                break
        for p in pumps:
            p.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)

    async def _shutdown(self) -> None:
        """Close the listener, then end every connection (each closes both its sockets)."""
        self.server.close()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await self.server.wait_closed()

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.mark.parametrize("keepalive", [0.3, 30.0])
def test_a_long_wait_survives_an_idle_timeout(api: Api, keepalive: float) -> None:
    """A 30-minute wait behind a 5-minute idle timeout, scaled down: the job is silent for 6 s
    behind a proxy that cuts connections silent for 1 s. With keep-alives every 0.3 s the
    watch returns the job's end; without them (every 30 s) the proxy cuts the call. (The
    proxy cuts other connections meanwhile: the client's idle stream for server requests.)"""
    job_id = api.job(api.alice)
    api.report(api.alice, job_id, 10, "started")
    mcp = McpHttp(api, keepalive=keepalive)
    proxy = IdleProxy(mcp.port, idle=1.0)
    notes: list[float] = []

    async def heard(progress: float, total: float | None, message: str | None) -> None:
        notes.append(time.monotonic())

    def finish_later() -> None:
        time.sleep(6)
        api.call(api.alice, "PUT", f"/api/v1/remote-jobs/{job_id}/result", json={"success": True})

    async def run() -> Any:
        url = f"http://127.0.0.1:{proxy.port}/mcp"
        async with over_http(url, api.alice) as session:
            return await session.call_tool(
                "watch_job",
                {"job_id": job_id, "timeout_seconds": 30},
                read_timeout_seconds=20,
                progress_callback=heard,  # a client that shows progress asks for it
            )

    worker = threading.Thread(target=finish_later)
    worker.start()
    try:
        if keepalive < 1:
            result = asyncio.run(run())
            assert not result.is_error, _text(result)
            assert result.structured_content["outcome"] == "ended"
            gaps = [b - a for a, b in itertools.pairwise(notes)]
            assert max(gaps) < 0.8  # the job silent for 6 s, the call never

        else:
            with pytest.raises(Exception):  # noqa: B017, PT011  (however the SDK says it)
                asyncio.run(run())
            assert proxy.cut >= 1
    finally:
        worker.join()
        proxy.stop()
        mcp.stop()


def test_the_command_refuses_what_it_cannot_serve(api: Api) -> None:
    """Over stdio the tools need a key; over http the server holds none (each client sends its
    own), so --api-key there is refused; both say which option."""
    env = {k: v for k, v in api.env.items() if k != "MORAG_PROGRESS_API_KEY"}
    done = subprocess.run(
        [*CLI, "mcp", "--api-url", api.url], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "--api-key" in done.stderr
    assert "API key" in done.stderr
    done = subprocess.run(
        [*CLI, "mcp", "--transport", "http", "--api-url", api.url, "--api-key", "x"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "holds none" in done.stderr
