"""What a real server lets out: no secret in its log, /metrics only to whom the operator says
and without any user's data, and per-user quotas on creating jobs."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from morag_progress.keys import Role
from tests.security.conftest import Target


def test_stream_tokens_and_url_passwords_never_reach_the_log(
    sqlite_target: Callable[..., Target],
) -> None:
    """A dashboard's ``?token=`` and a webhook URL's password are not in the server's log,
    though the requests that carried them are."""
    t = sqlite_target(WEBHOOK_ALLOW_PRIVATE="true", ACCESS_LOG="true")
    alice = t.key("alice")
    secret_url = "http://hook-user:hunter2-secret@127.0.0.1:9/hook"
    with t.client() as client:
        token = client.post("/api/v1/stream-tokens", headers=alice).json()["token"]
        job = t.create(alice).json()["id"]
        client.put(f"/api/v1/remote-jobs/{job}/result", json={"success": True}, headers=alice)
        assert client.get(f"/api/v1/jobs/{job}/events?token={token}").status_code == 200
        encoded = f"/api/v1/jobs/{job}/events?%74oken={token}"  # the name percent-encoded
        assert client.get(encoded).status_code == 200
        hook = client.post(
            "/api/v1/webhooks", json={"url": secret_url, "events": ["job.failed"]}, headers=alice
        )
        assert hook.status_code == 201
        listed = client.get("/api/v1/webhooks", headers={"Authorization": f"Bearer {token}"})
        assert "hunter2-secret" not in listed.text  # not even to a read token of its owner
        failed = t.create(alice).json()["id"]
        client.put(f"/api/v1/remote-jobs/{failed}/result", json={"success": False}, headers=alice)
        deadline = time.monotonic() + 10
        path = f"/api/v1/webhooks/{hook.json()['id']}/deliveries"
        while not [d for d in client.get(path, headers=alice).json() if d["attempts"]]:
            assert time.monotonic() < deadline, "the delivery was never tried"
            time.sleep(0.1)
    t.process.stop()
    log = t.logged()
    assert "/events?token=***" in log  # the request is logged...
    assert token not in log  # ...its token is not
    assert "hunter2-secret" not in log
    assert alice["Authorization"].split()[1] not in log


def test_metrics_access_is_the_operators_choice(sqlite_target: Callable[..., Target]) -> None:
    """By default /metrics answers loopback clients and names no user; with ``key`` it needs
    an admin key; with ``off`` it is not there."""
    t = sqlite_target()
    alice = t.key("alice-the-user")
    assert t.create(alice).status_code == 201
    with t.client() as client:
        metrics = client.get("/metrics")
        assert metrics.status_code == 200
        assert "morag_progress_jobs" in metrics.text
        assert "alice" not in metrics.text
    t.process.stop()
    keyed = sqlite_target(METRICS_ACCESS="key")
    with keyed.client() as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=keyed.key("u")).status_code == 403
        assert client.get("/metrics", headers=keyed.key("ops", Role.ADMIN)).status_code == 200
    keyed.process.stop()
    off = sqlite_target(METRICS_ACCESS="off")
    with off.client() as client:
        assert client.get("/metrics").status_code == 404


def test_per_user_quotas_on_creating_jobs(sqlite_target: Callable[..., Target]) -> None:
    """Past its jobs-per-minute quota a user gets 429 with Retry-After, and so does one with
    too many open jobs; other users are not affected, and ending a job frees a place."""
    t = sqlite_target(JOBS_PER_MINUTE_PER_USER="3")
    alice, bob = t.key("alice"), t.key("bob")
    assert [t.create(alice).status_code for _ in range(4)] == [201, 201, 201, 429]
    refused = t.create(alice)
    assert "3 jobs a minute" in refused.json()["detail"]
    assert int(refused.headers["Retry-After"]) >= 1
    assert t.create(bob).status_code == 201
    # Making a job that exists again (every rank of a run makes the run's job) costs nothing.
    erin = t.key("erin")
    assert [t.create(erin, id="run-1").status_code for _ in range(10)] == [201] * 10
    assert [t.create(erin).status_code for _ in range(3)] == [201, 201, 429]
    t.process.stop()

    t = sqlite_target(MAX_OPEN_JOBS_PER_USER="2")
    carol = t.key("carol")
    first = t.create(carol).json()["id"]
    assert t.create(carol).status_code == 201
    over = t.create(carol)
    assert over.status_code == 429
    assert "2 jobs that have not ended" in over.json()["detail"]
    with httpx.Client(base_url=t.url) as client:
        client.post(f"/api/v1/jobs/{first}/cancel", headers=carol)
    assert t.create(carol).status_code == 201


def test_the_open_jobs_cap_holds_under_concurrent_creates_and_requeues(
    target: Callable[..., Target],
) -> None:
    """Many creates at once pass the cap on open jobs exactly up to it (the check and the
    insert are one transaction, on both databases); a requeue that would pass it is refused,
    nothing changed."""
    from concurrent.futures import ThreadPoolExecutor

    t = target(MAX_OPEN_JOBS_PER_USER="5", JOBS_PER_MINUTE_PER_USER="0")
    dave, worker = t.key("dave"), t.key("dave", Role.WORKER)
    with ThreadPoolExecutor(max_workers=24) as pool:
        answers = list(pool.map(lambda _: t.create(dave, remote=True).status_code, range(24)))
    assert sorted(answers) == [201] * 5 + [429] * 19
    with t.client() as client:
        assert len(client.get("/api/v1/jobs", headers=dave).json()["jobs"]) == 5
        claimed = client.post("/api/v1/remote-jobs/claim", json={"worker_id": "w"}, headers=worker)
        failed = claimed.json()["id"]
        result = {"success": False, "message": "out of memory"}
        ended = client.put(f"/api/v1/remote-jobs/{failed}/result", json=result, headers=worker)
        assert ended.status_code == 200
        assert t.create(dave).status_code == 201  # the failed job's slot, taken
        again = client.post(f"/api/v1/jobs/{failed}/requeue", headers=dave)
        assert again.status_code == 429
        assert "5 jobs that have not ended" in again.json()["detail"]
        assert client.get(f"/api/v1/jobs/{failed}", headers=dave).json()["status"] == "FAILED"
