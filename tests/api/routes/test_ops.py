"""Operations routes and the OpenAPI document."""

from __future__ import annotations

import re

import httpx

from morag_progress.api import create_app
from morag_progress.api.routes.dashboard import DOCS_ASSETS
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
    for page in ("/docs", "/redoc"):
        answer = await client.get(page)
        assert answer.status_code == 200
        assert "/openapi.json" in answer.text
        assert answer.headers["X-Frame-Options"] == "DENY"  # no other site may frame it
        assert answer.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
        # Their files come from this server (fastapi-offline's, by name: an upgrade that
        # renames them fails here).
        assets = re.findall(rf'(?:src|href)="({DOCS_ASSETS}/[^"]+)"', answer.text)
        assert len(assets) >= 2
        for asset in assets:
            assert (await client.get(asset)).status_code == 200, asset


async def test_an_admins_read_of_a_shared_id_is_a_documented_409(
    client: httpx.AsyncClient, alice: dict[str, str], bob: dict[str, str], admin: dict[str, str]
) -> None:
    """Ids are unique per user: an admin key reading an id two users have gets 409, and the
    schema of every route that may answer so lists it."""
    for auth in (alice, bob):
        made = await client.post(
            "/api/v1/jobs",
            json={"id": "shared", "document_name": "a", "document_type": "pdf"},
            headers=auth,
        )
        assert made.status_code == 201
    for path in ("/api/v1/jobs/shared", "/api/v1/jobs/shared/history"):
        answer = await client.get(path, headers=admin)
        assert answer.status_code == 409, path
        assert "several users" in answer.json()["detail"]
    spec = (await client.get("/openapi.json")).json()["paths"]
    for path in ("/api/v1/jobs/{job_id}", "/api/v1/jobs/{job_id}/history"):
        assert "409" in spec[path]["get"]["responses"], path
    assert "409" in spec["/api/v1/jobs/{job_id}/events"]["get"]["responses"]


async def test_an_admin_names_the_user_of_a_shared_id(
    client: httpx.AsyncClient, alice: dict[str, str], bob: dict[str, str], admin: dict[str, str]
) -> None:
    """With ``?user=`` an admin reads, reports on, lists and cancels one user's job of an id
    two users have (without it, 409), and creates a job for a user; another key may name only
    its own user (403 otherwise); a name that breaks the rule is a 422 naming ``user``; the
    schema lists the parameter on every route that authenticates."""
    for auth in (alice, bob):
        made = await client.post(
            "/api/v1/jobs",
            json={"id": "shared", "document_name": "a", "document_type": "pdf"},
            headers=auth,
        )
        assert made.status_code == 201
    as_bob = {"user": "bob"}
    read = await client.get("/api/v1/jobs/shared", params=as_bob, headers=admin)
    assert (read.status_code, read.json()["user_id"]) == (200, "bob")
    put = await client.put(
        "/api/v1/remote-jobs/shared/progress",
        params=as_bob,
        json={"percentage": 40, "message": "admin for bob"},
        headers=admin,
    )
    assert put.status_code == 200, put.text
    assert (await client.get("/api/v1/jobs/shared", headers=bob)).json()["percentage"] == 40
    assert (await client.get("/api/v1/jobs/shared", headers=alice)).json()["percentage"] == 0
    history = await client.get("/api/v1/jobs/shared/history", params=as_bob, headers=admin)
    assert history.status_code == 200
    listed = await client.get("/api/v1/jobs", params=as_bob, headers=admin)
    assert {job["user_id"] for job in listed.json()["jobs"]} == {"bob"}
    cancel = await client.post("/api/v1/jobs/shared/cancel", params=as_bob, headers=admin)
    assert cancel.status_code == 200
    assert (await client.get("/api/v1/jobs/shared", headers=alice)).json()[
        "cancel_requested"
    ] is False
    made = await client.post(
        "/api/v1/jobs",
        params={"user": "carol"},
        json={"document_name": "c", "document_type": "pdf"},
        headers=admin,
    )
    assert (made.status_code, made.json()["user_id"]) == (201, "carol")
    own = await client.get("/api/v1/jobs/shared", params={"user": "alice"}, headers=alice)
    assert own.status_code == 200
    other = await client.get("/api/v1/jobs/shared", params=as_bob, headers=alice)
    assert other.status_code == 403
    hot = await client.put(
        "/api/v1/remote-jobs/shared/progress", params=as_bob, json={"percentage": 50}, headers=alice
    )
    assert hot.status_code == 403
    bad_name = {"user": "*"}
    for bad in (
        await client.get("/api/v1/jobs/shared", params=bad_name, headers=admin),
        await client.put(
            "/api/v1/remote-jobs/shared/progress",
            params=bad_name,
            json={"percentage": 5},
            headers=admin,
        ),
    ):
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["loc"] == ["query", "user"]
    spec = (await client.get("/openapi.json")).json()["paths"]
    for path in ("/api/v1/jobs/{job_id}", "/api/v1/remote-jobs/{job_id}/progress"):
        for operation in spec[path].values():
            assert "user" in [p["name"] for p in operation["parameters"]], path


async def test_metrics(client: httpx.AsyncClient, alice: dict[str, str]) -> None:
    """/metrics counts updates by source and outcome, times requests, and counts jobs by status."""
    job = (
        await client.post(
            "/api/v1/jobs", json={"document_name": "a", "document_type": "pdf"}, headers=alice
        )
    ).json()
    url = f"/api/v1/remote-jobs/{job['id']}/progress"
    await client.put(
        url, json={"percentage": 50, "timestamp": "2026-01-01T00:00:02Z"}, headers=alice
    )
    await client.put(
        url, json={"percentage": 40, "timestamp": "2026-01-01T00:00:01Z"}, headers=alice
    )
    await client.post(
        "/api/v1/remote-jobs/progress",
        json={"updates": [{"job_id": job["id"], "percentage": 60}]},
        headers=alice,
    )
    response = await client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'morag_progress_updates_total{outcome="applied",source="http"} 1.0' in text
    assert 'morag_progress_updates_total{outcome="stale",source="http"} 1.0' in text
    assert 'morag_progress_updates_total{outcome="applied",source="batch"} 1.0' in text
    assert 'morag_progress_jobs{status="PROCESSING"} 1.0' in text
    assert (
        'morag_progress_request_duration_seconds_count{method="PUT",route="/api/v1/remote-jobs/{job_id}/progress",status="200"} 2.0'
        in text
    )
    # Every transaction of the writer: the two reports' and the batch's (some may share one).
    commits = next(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("morag_progress_commit_batch_size_count")
    )
    assert 1 <= commits <= 3
    assert "morag_progress_commit_batch_size_sum 3.0" in text


async def test_stats_are_per_user(
    client: httpx.AsyncClient, alice: dict[str, str], bob: dict[str, str], admin: dict[str, str]
) -> None:
    """/api/v1/stats counts the caller's jobs by status and type; an admin's counts all."""
    for kind in ("pdf", "pdf", "audio"):
        await client.post(
            "/api/v1/jobs", json={"document_name": "a", "document_type": kind}, headers=alice
        )
    await client.post(
        "/api/v1/jobs", json={"document_name": "b", "document_type": "pdf"}, headers=bob
    )
    mine = (await client.get("/api/v1/stats", headers=alice)).json()
    assert mine == {
        "total": 3,
        "by_status": {"PENDING": 3},
        "by_document_type": {"pdf": 2, "audio": 1},
    }
    assert (await client.get("/api/v1/stats", headers=admin)).json()["total"] == 4


async def test_stats_are_filtered_as_the_list_is(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    """Counts take the list's filters (type, parent, top level, search), so the counts beside
    a filtered list are of that list."""
    made = []
    for name, kind in (("lecture.mp3", "audio"), ("manual.pdf", "pdf"), ("notes.pdf", "pdf")):
        response = await client.post(
            "/api/v1/jobs", json={"document_name": name, "document_type": kind}, headers=alice
        )
        made.append(response.json()["id"])
    await client.post(
        "/api/v1/jobs",
        json={"document_name": "part.mp3", "document_type": "audio", "parent_id": made[0]},
        headers=alice,
    )

    async def total(**params: str | bool) -> int:
        response = await client.get("/api/v1/stats", params=params, headers=alice)
        assert response.status_code == 200, response.text
        return int(response.json()["total"])

    assert await total() == 4
    assert await total(top_level=True) == 3
    assert await total(document_type="pdf") == 2
    assert await total(parent_id=made[0]) == 1
    assert await total(q="PDF") == 2
    assert await total(q="nothing") == 0
    bad = await client.get("/api/v1/stats", params={"q": "x" * 201}, headers=alice)
    assert bad.status_code == 422
