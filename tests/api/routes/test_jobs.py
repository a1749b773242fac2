"""Jobs routes: create (idempotent), read, list with pagination, cancel, history."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.api.conftest import Auth

NewJob = Callable[..., Any]


async def test_create_job(client: httpx.AsyncClient, alice: Auth) -> None:
    """POST /api/v1/jobs answers 201 with the job and its Location."""
    response = await client.post(
        "/api/v1/jobs",
        json={"document_name": "talk.mp3", "document_type": "audio", "metadata": {"lang": "de"}},
        headers=alice,
    )
    assert response.status_code == 201
    job = response.json()
    assert response.headers["location"] == f"/api/v1/jobs/{job['id']}"
    assert (job["user_id"], job["status"], job["percentage"], job["metadata"]) == (
        "alice",
        "PENDING",
        0,
        {"lang": "de"},
    )


async def test_client_id_is_idempotent(client: httpx.AsyncClient, alice: Auth, bob: Auth) -> None:
    """The same id twice makes one job; another user's identical id makes that user's own
    job (201), revealing nothing of the first."""
    body = {"id": "ingest-42", "document_name": "a.pdf", "document_type": "pdf"}
    first = await client.post("/api/v1/jobs", json=body, headers=alice)
    again = await client.post("/api/v1/jobs", json=body, headers=alice)
    assert (first.status_code, again.status_code) == (201, 201)
    assert first.json()["created_at"] == again.json()["created_at"]
    bobs = await client.post("/api/v1/jobs", json={**body, "document_name": "b.pdf"}, headers=bob)
    assert bobs.status_code == 201
    assert (bobs.json()["id"], bobs.json()["user_id"]) == ("ingest-42", "bob")
    assert bobs.headers["Location"] == "/api/v1/jobs/ingest-42"
    mine = await client.get("/api/v1/jobs/ingest-42", headers=alice)
    assert mine.json()["document_name"] == "a.pdf"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"document_type": "pdf"}, "document_name"),
        ({"document_name": "", "document_type": "pdf"}, "document_name"),
        ({"document_name": "a", "document_type": "pdf", "id": "has space"}, "id"),
        ({"document_name": "a", "document_type": "pdf", "weight": 0}, "weight"),
    ],
)
async def test_create_validates(
    client: httpx.AsyncClient, alice: Auth, body: dict[str, Any], field: str
) -> None:
    """A bad job body is 422 naming the field."""
    response = await client.post("/api/v1/jobs", json=body, headers=alice)
    assert response.status_code == 422
    assert field in response.json()["message"]


async def test_worker_cannot_create_or_cancel(
    client: httpx.AsyncClient, alice: Auth, alice_worker: Auth, new_job: NewJob
) -> None:
    """Worker keys read and report; creating and cancelling is 403."""
    body = {"document_name": "a", "document_type": "pdf"}
    assert (await client.post("/api/v1/jobs", json=body, headers=alice_worker)).status_code == 403
    job_id = await new_job(alice)
    assert (
        await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=alice_worker)
    ).status_code == 403
    assert (await client.get(f"/api/v1/jobs/{job_id}", headers=alice_worker)).status_code == 200


async def test_list_is_scoped_filtered_and_paged(
    client: httpx.AsyncClient, alice: Auth, bob: Auth, admin: Auth, new_job: NewJob
) -> None:
    """Each user lists their own jobs; an admin lists all; pages follow next_cursor."""
    mine = [await new_job(alice, document_type="pdf" if i % 2 else "audio") for i in range(5)]
    theirs = await new_job(bob)
    listed = (await client.get("/api/v1/jobs", headers=alice)).json()
    assert {j["id"] for j in listed["jobs"]} == set(mine)
    assert listed["next_cursor"] is None
    pdfs = (await client.get("/api/v1/jobs", params={"document_type": "pdf"}, headers=alice)).json()
    assert {j["id"] for j in pdfs["jobs"]} == {mine[1], mine[3]}
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/v1/jobs", params=params, headers=alice)).json()
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 5
    assert sorted(seen) == sorted(mine)
    everyone = (await client.get("/api/v1/jobs", headers=admin)).json()
    assert theirs in {j["id"] for j in everyone["jobs"]}
    processing = (
        await client.get("/api/v1/jobs", params={"status": "PROCESSING"}, headers=alice)
    ).json()
    assert processing["jobs"] == []
    assert (
        await client.get("/api/v1/jobs", params={"status": "DONE"}, headers=alice)
    ).status_code == 422


async def test_list_children_of_a_parent(
    client: httpx.AsyncClient, alice: Auth, bob: Auth, new_job: NewJob
) -> None:
    """parent_id lists a parent's children, of the caller's jobs only."""
    parent = await new_job(alice)
    children = {await new_job(alice, parent_id=parent) for _ in range(2)}
    await new_job(alice)
    listed = (await client.get("/api/v1/jobs", params={"parent_id": parent}, headers=alice)).json()
    assert {j["id"] for j in listed["jobs"]} == children
    other = (await client.get("/api/v1/jobs", params={"parent_id": parent}, headers=bob)).json()
    assert other["jobs"] == []


async def test_cancel(client: httpx.AsyncClient, alice: Auth, bob: Auth, new_job: NewJob) -> None:
    """Cancelling a pending job ends it; cancelling again is 409; another user's is 404."""
    job_id = await new_job(alice)
    assert (await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=bob)).status_code == 404
    response = await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=alice)
    assert response.json()["status"] == "CANCELLED"
    assert (await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=alice)).status_code == 409


async def test_history(client: httpx.AsyncClient, alice: Auth, bob: Auth, new_job: NewJob) -> None:
    """History lists each applied change, oldest first, from a given feed id."""
    job_id = await new_job(alice)
    for pct in (10, 50):
        await client.put(
            f"/api/v1/remote-jobs/{job_id}/progress", json={"percentage": pct}, headers=alice
        )
    history = (await client.get(f"/api/v1/jobs/{job_id}/history", headers=alice)).json()
    assert [e["percentage"] for e in history] == [0, 10, 50]
    later = (
        await client.get(
            f"/api/v1/jobs/{job_id}/history", params={"after": history[0]["id"]}, headers=alice
        )
    ).json()
    assert [e["percentage"] for e in later] == [10, 50]
    assert (await client.get(f"/api/v1/jobs/{job_id}/history", headers=bob)).status_code == 404
