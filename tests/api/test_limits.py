"""Rate limits shared by replicas through Redis: one budget per key whichever server answers,
and a Redis that is down lets requests through rather than failing them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from morag_progress.api import create_app
from morag_progress.settings import Settings
from morag_progress.store import SQLStore
from tests.api.conftest import Auth
from tests.services import free_port


@pytest.fixture
async def replicas(store: SQLStore, redis_url: str) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Two apps (replicas) over one store and one Redis, limited to one request every 100 s (a
    burst of one), slow enough that no token comes back while a test runs on a busy machine."""
    settings = Settings(rate_limit_per_second=0.01, key_cache_seconds=0, redis_url=redis_url)
    clients = []
    for _ in range(2):
        app = create_app(settings, store=store)
        clients.append(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
        )
    yield clients
    for client in clients:
        await client.aclose()
        await client._transport.app.state.rate_limiter.close()  # type: ignore[attr-defined]


async def test_one_budget_across_replicas(replicas: list[httpx.AsyncClient], alice: Auth) -> None:
    """Six requests alternating between two replicas: the first passes, the other five get 429
    with Retry-After, as one server would answer."""
    statuses = []
    for i in range(6):
        response = await replicas[i % 2].get("/api/v1/jobs", headers=alice)
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) >= 1
    assert statuses == [200] + [429] * 5


async def test_redis_down_lets_requests_through(
    store: SQLStore, alice: Auth, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listens at the Redis URL: requests are served, and it is logged."""
    settings = Settings(
        rate_limit_per_second=1, key_cache_seconds=0, redis_url=f"redis://127.0.0.1:{free_port()}"
    )
    app = create_app(settings, store=store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        for _ in range(3):
            assert (await c.get("/api/v1/jobs", headers=alice)).status_code == 200
    await app.state.rate_limiter.close()
    assert "rate limit store unreachable" in caplog.text


@pytest.mark.parametrize(
    ("version", "headers", "counted"),
    [
        ("1.1", [(b"content-length", b"10")], False),  # framed by its length
        ("1.1", [], False),  # HTTP/1 without length or chunks: no body
        ("1.1", [(b"transfer-encoding", b"chunked")], True),
        ("2", [], True),  # HTTP/2 needs neither header to carry a body
    ],
)
async def test_a_body_without_a_length_is_counted(
    version: str, headers: list[tuple[bytes, bytes]], counted: bool
) -> None:
    """The body limit counts what arrives unless HTTP/1 framing bounds it already; counted,
    a body over the limit is 413 however it came."""
    from morag_progress.api.limits import BodyLimit

    seen: list[bytes] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    chunks = [b"x" * 8, b"x" * 8]

    async def receive() -> dict[str, Any]:
        body = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": body, "more_body": bool(chunks)}

    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "path": "/x", "http_version": version, "headers": headers}
    await BodyLimit(app, limit=10, large_limit=10, large_suffixes=())(scope, receive, send)
    assert sent[0]["status"] == (413 if counted else 200)


async def test_a_users_expensive_reads_take_turns_and_others_go_past() -> None:
    """ReadGate: a user's second expensive read waits for his first; another user's goes at
    once; one that waits past its limit, or behind too many of the user's own, is a 429; a
    user's slots are forgotten once none is held or awaited."""
    import asyncio

    from fastapi import HTTPException

    from morag_progress.api.limits import ReadGate

    gate = ReadGate(per_user=1, total=4, wait=0.2, max_waiting=1)
    order: list[str] = []
    release = asyncio.Event()

    async def read(user: str, name: str) -> None:
        async with gate.slot(user):
            order.append(f"{name} in")
            await release.wait()
            order.append(f"{name} out")

    first = asyncio.create_task(read("alice", "a1"))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(read("alice", "a2"))
    bob = asyncio.create_task(read("bob", "b1"))
    await asyncio.sleep(0.01)
    assert order == ["a1 in", "b1 in"]  # bob is not behind alice
    with pytest.raises(HTTPException) as crowded:
        async with gate.slot("alice"):  # behind one waiting already: refused at once
            pass
    assert crowded.value.status_code == 429
    assert crowded.value.headers == {"Retry-After": "1"}
    with pytest.raises(HTTPException):
        await second  # waited 0.2 s for alice's slot: 429
    release.set()
    await asyncio.gather(first, bob)
    assert order[-2:] == ["a1 out", "b1 out"] or order[-2:] == ["b1 out", "a1 out"]
    async with gate.slot("alice", wait=0):  # free again at once
        pass
    assert gate._users == {}


async def test_all_users_share_a_total() -> None:
    """ReadGate's total bounds everyone's expensive reads together."""
    import asyncio

    from fastapi import HTTPException

    from morag_progress.api.limits import ReadGate

    gate = ReadGate(per_user=2, total=2, wait=0.1)
    hold = asyncio.Event()

    async def read(user: str) -> None:
        async with gate.slot(user):
            await hold.wait()

    tasks = [asyncio.create_task(read(user)) for user in ("a", "b")]
    await asyncio.sleep(0.01)
    with pytest.raises(HTTPException):
        async with gate.slot("c"):
            pass
    hold.set()
    await asyncio.gather(*tasks)
