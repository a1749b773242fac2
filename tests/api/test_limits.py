"""Rate limits shared by replicas through Redis: one budget per key whichever server answers,
and a Redis that is down lets requests through rather than failing them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from morag_progress.api import create_app
from morag_progress.settings import Settings
from morag_progress.store import SQLStore
from tests.api.conftest import Auth
from tests.services import free_port


@pytest.fixture
async def replicas(store: SQLStore, redis_url: str) -> AsyncIterator[list[httpx.AsyncClient]]:
    """Two apps (replicas) over one store and one Redis, limited to one request every 4 s (a
    burst of one), slow enough that no token comes back while a test runs on a busy machine."""
    settings = Settings(rate_limit_per_second=0.25, key_cache_seconds=0, redis_url=redis_url)
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
