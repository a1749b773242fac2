"""Operations routes and the OpenAPI document."""

from __future__ import annotations

import httpx

from morag_progress.api import create_app
from morag_progress.settings import Settings
from morag_progress.store import SQLStore


async def test_health_and_ready(client: httpx.AsyncClient) -> None:
    """/healthz and /readyz answer 200 with a reachable store, without a key."""
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ok"}


async def test_not_ready_when_the_store_is_down() -> None:
    """/readyz answers 503 when the database does not answer; job routes answer 503 too."""
    down = SQLStore(
        "postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1", create_tables=False
    )
    app = create_app(Settings(rate_limit_per_second=0), store=down)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/readyz")).status_code == 503
        response = await c.get("/api/v1/jobs", headers={"Authorization": "Bearer x"})
        assert response.status_code == 503
    down.close()


async def test_openapi_documents_routes_and_errors(client: httpx.AsyncClient) -> None:
    """The OpenAPI document lists each route with its error answers."""
    spec = (await client.get("/openapi.json")).json()
    progress = spec["paths"]["/api/v1/remote-jobs/{job_id}/progress"]["put"]
    assert {"200", "401", "404", "409", "413", "422", "429"} <= progress["responses"].keys()
    assert "/api/v1/jobs" in spec["paths"]
    assert (await client.get("/docs")).status_code == 200
