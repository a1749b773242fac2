"""Authentication: a stream token is a read token, for GET requests only."""

from __future__ import annotations

import httpx

from tests.api.conftest import Auth


async def test_stream_token_reads_but_never_writes(
    client: httpx.AsyncClient, alice: Auth, bob: Auth
) -> None:
    """Bearer <stream token> lists and reads the user's jobs; any write is 401; another
    user's job stays 404; a made-up token is 401."""
    created = await client.post(
        "/api/v1/jobs", json={"document_name": "a", "document_type": "pdf"}, headers=alice
    )
    job_id = created.json()["id"]
    token = (await client.post("/api/v1/stream-tokens", headers=alice)).json()["token"]
    read = {"Authorization": f"Bearer {token}"}
    listed = await client.get("/api/v1/jobs", headers=read)
    assert [j["id"] for j in listed.json()["jobs"]] == [job_id]
    assert (await client.get(f"/api/v1/jobs/{job_id}/history", headers=read)).status_code == 200
    cancel = await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=read)
    assert cancel.status_code == 401
    assert "only reads" in cancel.json()["detail"]
    report = await client.put(
        f"/api/v1/remote-jobs/{job_id}/progress", json={"percentage": 5}, headers=read
    )
    assert report.status_code == 401
    bobs = (await client.post("/api/v1/stream-tokens", headers=bob)).json()["token"]
    other = await client.get(f"/api/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {bobs}"})
    assert other.status_code == 404
    fake = await client.get("/api/v1/jobs", headers={"Authorization": "Bearer mps_made_up"})
    assert fake.status_code == 401
    assert fake.headers["WWW-Authenticate"] == "Bearer"
