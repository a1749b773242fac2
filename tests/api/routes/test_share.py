"""Share links: a read-only link to one job for people without a key, its page and its badge;
what the link reads (that job, in brief, and nothing else) and when it stops."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx

from morag_progress.api.routes.share import SharedJob, badge
from morag_progress.keys import hash_key
from morag_progress.models import utcnow
from morag_progress.store import SQLStore
from tests.api.conftest import Auth

NewJob = Callable[..., Any]


async def _link(client: httpx.AsyncClient, auth: Auth, job_id: str, **body: Any) -> httpx.Response:
    return await client.post(f"/api/v1/jobs/{job_id}/share-links", json=body or None, headers=auth)


async def test_a_link_reads_its_job_in_brief_and_nothing_else(
    client: httpx.AsyncClient, alice: Auth, bob: Auth, new_job: NewJob
) -> None:
    """Without a key the link reads its job's name, progress, estimate and times, and not its
    owner, metadata, worker or error; the token is no key for the API, and names no other
    job whatever the query says."""
    job_id = await new_job(alice, metadata={"secret": "s3"})
    other = await new_job(alice, document_name="other.mp3")
    await client.put(
        f"/api/v1/remote-jobs/{job_id}/progress",
        json={"percentage": 40, "message": "Transcribing", "worker_id": "gpu-7"},
        headers=alice,
    )
    made = await _link(client, alice, job_id)
    assert made.status_code == 201
    link = made.json()
    token = link["token"]
    assert token.startswith("msl_")
    assert (link["url"], link["badge_url"]) == (f"/share/{token}", f"/share/{token}/badge.svg")
    read = await client.get(f"/share/{token}/job", params={"job_id": other, "user": "bob"})
    assert read.status_code == 200
    assert read.headers["cache-control"] == "no-store"
    job = read.json()
    assert set(job) == set(SharedJob.model_fields)
    assert (job["document_name"], job["status"], job["percentage"], job["summary"]) == (
        "talk.mp3",
        "PROCESSING",
        40,
        "Transcribing",
    )
    assert "s3" not in read.text
    assert "gpu-7" not in read.text
    assert "alice" not in read.text
    as_key = {"Authorization": f"Bearer {token}"}
    for path in ("/api/v1/jobs", f"/api/v1/jobs/{job_id}", f"/api/v1/jobs/{other}"):
        assert (await client.get(path, headers=as_key)).status_code == 401
    page = await client.get(f"/share/{token}")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "/dashboard/share.js" in page.text


async def test_only_the_owner_makes_and_revokes_a_link(
    client: httpx.AsyncClient,
    alice: Auth,
    bob: Auth,
    alice_worker: Auth,
    admin: Auth,
    new_job: NewJob,
) -> None:
    job_id = await new_job(alice)
    assert (await _link(client, bob, job_id)).status_code == 404  # another user's job
    assert (await _link(client, alice_worker, job_id)).status_code == 403
    token = (await _link(client, alice, job_id)).json()["token"]
    revoke = "/api/v1/share-links/revoke"
    assert (await client.post(revoke, json={"token": token}, headers=bob)).status_code == 404
    assert (await client.get(f"/share/{token}/job")).status_code == 200
    assert (await client.post(revoke, json={"token": token}, headers=alice)).status_code == 204
    for path in (f"/share/{token}", f"/share/{token}/job", f"/share/{token}/badge.svg"):
        assert (await client.get(path)).status_code == 404, path
    assert (await client.post(revoke, json={"token": token}, headers=alice)).status_code == 404
    by_admin = (await _link(client, admin, job_id, expires_in=60)).json()["token"]
    assert (await client.post(revoke, json={"token": by_admin}, headers=admin)).status_code == 204


async def test_a_link_stops_when_it_expires_and_its_life_is_bounded(
    client: httpx.AsyncClient, alice: Auth, new_job: NewJob, store: SQLStore
) -> None:
    job_id = await new_job(alice)
    made = await _link(client, alice, job_id, expires_in=60)
    expires_at = made.json()["expires_at"]
    assert (await client.get(f"{made.json()['url']}/job")).status_code == 200
    now = utcnow()
    store.create_share_link(
        hash_key("msl_old"),
        user_id="alice",
        job_id=job_id,
        now=now - timedelta(hours=2),
        expires_at=now - timedelta(seconds=1),
    )
    assert (await client.get("/share/msl_old/job")).status_code == 404
    assert (await client.get("/share/msl_never/job")).status_code == 404
    assert (
        store.find_share_link(hash_key(made.json()["token"]), now=now + timedelta(seconds=61))
        is None
    )
    assert expires_at.startswith(str((now + timedelta(seconds=60)).year))
    for expires_in in (59, 30 * 86_400 + 1, "60", 60.5):
        refused = await _link(client, alice, job_id, expires_in=expires_in)
        assert refused.status_code == 422, expires_in
        assert "expires_in" in refused.json()["message"]
    assert (await _link(client, alice, job_id, extra=1)).status_code == 422


async def test_the_badge_shows_the_percentage_then_how_it_ended(
    client: httpx.AsyncClient, alice: Auth, new_job: NewJob
) -> None:
    job_id = await new_job(alice)
    token = (await _link(client, alice, job_id)).json()["token"]
    await client.put(
        f"/api/v1/remote-jobs/{job_id}/progress", json={"percentage": 42}, headers=alice
    )
    svg = await client.get(f"/share/{token}/badge.svg")
    assert svg.status_code == 200
    assert svg.headers["content-type"] == "image/svg+xml"
    assert ">42%</text>" in svg.text
    await client.put(f"/api/v1/remote-jobs/{job_id}/result", json={"success": True}, headers=alice)
    assert ">done</text>" in (await client.get(f"/share/{token}/badge.svg")).text
    assert "&lt;b&gt;" in badge("<b>", "x", "#000")


async def test_a_user_holds_a_bounded_number_of_links(
    client: httpx.AsyncClient, alice: Auth, bob: Auth, new_job: NewJob, monkeypatch: Any
) -> None:
    """Past the cap on links that work, a 429 naming it; another user is not affected, and
    revoking one makes room."""
    from morag_progress.store import credentials

    monkeypatch.setattr(credentials, "MAX_SHARE_LINKS", 2)
    job_id = await new_job(alice)
    first = (await _link(client, alice, job_id)).json()["token"]
    assert (await _link(client, alice, job_id)).status_code == 201
    over = await _link(client, alice, job_id)
    assert over.status_code == 429
    assert "2 share links" in over.json()["detail"]
    assert (await _link(client, bob, await new_job(bob))).status_code == 201
    revoke = {"token": first}
    assert (
        await client.post("/api/v1/share-links/revoke", json=revoke, headers=alice)
    ).status_code == 204
    assert (await _link(client, alice, job_id)).status_code == 201
