"""Remote-jobs routes: the seed's progress PUT, status, result, and every error they answer."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from morag_progress.api import create_app
from morag_progress.settings import Settings
from morag_progress.store import SQLStore
from tests.api.conftest import Auth

NewJob = Callable[..., Any]


def progress_url(job_id: str) -> str:
    return f"/api/v1/remote-jobs/{job_id}/progress"


async def test_seed_request(client: httpx.AsyncClient, alice: Auth, new_job: NewJob) -> None:
    """The seed's body is applied and answered with success, applied and the job."""
    job_id = await new_job(alice)
    response = await client.put(
        progress_url(job_id),
        json={
            "percentage": 75,
            "message": "Transcribing audio content",
            "timestamp": "2025-06-11T11:26:50.780725Z",
        },
        headers=alice,
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["success"], body["applied"], body["cancel_requested"]) == (True, True, False)
    assert body["job"]["percentage"] == 75
    assert body["job"]["status"] == "PROCESSING"
    assert body["job"]["summary"] == "Transcribing audio content"
    assert {"rate", "eta_seconds"} <= body["job"].keys()


async def test_the_reply_writes_the_job_as_get_does(
    client: httpx.AsyncClient, alice: Auth, new_job: NewJob
) -> None:
    """One way of writing a job everywhere: the progress reply's job is, text for text, what
    GET returns for it (UTC with Z, floats as floats)."""
    job_id = await new_job(alice, weight=1, stall_timeout_s=30)
    reply = await client.put(progress_url(job_id), json={"percentage": 40}, headers=alice)
    got = await client.get(f"/api/v1/jobs/{job_id}", headers=alice)
    assert reply.json()["job"] == got.json()
    assert reply.json()["job"]["created_at"].endswith("Z")
    assert reply.json()["job"]["weight"] == 1.0
    assert isinstance(reply.json()["job"]["weight"], float)


async def test_stale_report_is_not_an_error(
    client: httpx.AsyncClient, alice: Auth, new_job: NewJob
) -> None:
    """A report older than the last one answers 200 with applied false and the current job."""
    job_id = await new_job(alice)
    await client.put(
        progress_url(job_id),
        json={"percentage": 60, "timestamp": "2025-06-11T11:00:02Z"},
        headers=alice,
    )
    response = await client.put(
        progress_url(job_id),
        json={"percentage": 30, "timestamp": "2025-06-11T11:00:01Z"},
        headers=alice,
    )
    assert response.status_code == 200
    assert response.json()["applied"] is False
    assert response.json()["job"]["percentage"] == 60


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"percentage": 150}, "percentage"),
        ({"percentage": -1}, "percentage"),
        ({"percentage": "abc"}, "percentage"),
        ({"message": "x"}, "percentage"),
        ({"percentage": 5, "message": "x" * 2001}, "message"),
        ({"percentage": 5, "percent": 5}, "percent"),
        ({"percentage": 5, "timestamp": "yesterday"}, "timestamp"),
        ({"percentage": 5, "attempt": 0}, "attempt"),
        ({"percentage": 5, "current": -2}, "current"),
    ],
)
async def test_bad_body_is_422_naming_the_field(
    client: httpx.AsyncClient, alice: Auth, new_job: NewJob, body: dict[str, Any], field: str
) -> None:
    """A bad body answers 422 naming the field and the rule; nothing is written."""
    job_id = await new_job(alice)
    response = await client.put(progress_url(job_id), json=body, headers=alice)
    assert response.status_code == 422
    assert field in response.json()["message"]
    status = await client.get(f"/api/v1/jobs/{job_id}", headers=alice)
    assert status.json()["percentage"] == 0


@pytest.mark.parametrize(
    ("body", "percentage"),
    [
        ({"progress": 0.5}, 50),
        ({"progress": 0.29}, 29),  # 28.999999999999996 before rounding
        ({"progress": 1}, 100),
        ({"percentage": 52.7}, 52),
        ({"percentage": 0}, 0),
        ({"percentage": 1}, 1),
    ],
)
async def test_progress_is_a_fraction_and_percentage_whole_percents(
    client: httpx.AsyncClient,
    alice: Auth,
    new_job: NewJob,
    body: dict[str, Any],
    percentage: int,
) -> None:
    """``progress`` takes 0..1 (as Celery callbacks report), ``percentage`` 0..100 floored."""
    job_id = await new_job(alice)
    response = await client.put(progress_url(job_id), json=body, headers=alice)
    assert response.status_code == 200
    assert response.json()["job"]["percentage"] == percentage


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"percentage": 0.5}, "send a fraction of the work as progress"),
        ({"percentage": 40, "progress": 0.4}, "exactly one of percentage"),
        ({"message": "no amount"}, "exactly one of percentage"),
        ({"progress": 1.5}, "less than or equal to 1"),
    ],
)
async def test_a_fraction_in_percentage_is_refused_not_floored(
    client: httpx.AsyncClient, alice: Auth, new_job: NewJob, body: dict[str, Any], says: str
) -> None:
    """0.5 as a percentage would floor to 0 and move a job at 75% back: it is a 422 that says
    to send it as ``progress``, and the job keeps its 75%."""
    job_id = await new_job(alice)
    await client.put(progress_url(job_id), json={"percentage": 75}, headers=alice)
    response = await client.put(progress_url(job_id), json=body, headers=alice)
    assert response.status_code == 422
    assert says in response.json()["message"]
    job = await client.get(f"/api/v1/jobs/{job_id}", headers=alice)
    assert job.json()["percentage"] == 75


@pytest.mark.parametrize(
    ("route", "body", "where"),
    [
        ("progress", b'{"percentage": 1', "line 1 column 16"),
        ("jobs", b'{"document_name": "a",\n "document_type" "b"}', "line 2 column 18"),
    ],
)
async def test_a_body_that_is_not_json_is_400_saying_where(
    client: httpx.AsyncClient, alice: Auth, new_job: NewJob, route: str, body: bytes, where: str
) -> None:
    """Cut off or malformed JSON is a 400 (as the OpenAPI page says), naming line and column."""
    headers = {**alice, "Content-Type": "application/json"}
    if route == "progress":
        response = await client.put(
            progress_url(await new_job(alice)), content=body, headers=headers
        )
    else:
        response = await client.post("/api/v1/jobs", content=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("the body is not valid JSON: ")
    assert where in response.json()["detail"]


async def test_nan_is_422(client: httpx.AsyncClient, alice: Auth, new_job: NewJob) -> None:
    """NaN (which Python's JSON accepts) is refused."""
    job_id = await new_job(alice)
    response = await client.put(
        progress_url(job_id),
        content=b'{"percentage": NaN}',
        headers={**alice, "Content-Type": "application/json"},
    )
    assert response.status_code == 422


async def test_far_future_timestamp_is_422(
    client: httpx.AsyncClient, alice: Auth, new_job: NewJob
) -> None:
    """A timestamp more than 5 minutes ahead is refused, naming the field."""
    job_id = await new_job(alice)
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    response = await client.put(
        progress_url(job_id), json={"percentage": 5, "timestamp": future}, headers=alice
    )
    assert response.status_code == 422
    assert response.json()["message"].startswith("timestamp must not be more than 5 minutes")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer"},
    ],
)
async def test_missing_or_wrong_key_is_401(
    client: httpx.AsyncClient, alice: Auth, new_job: NewJob, headers: dict[str, str]
) -> None:
    """No key or a wrong one: 401 with WWW-Authenticate: Bearer."""
    job_id = await new_job(alice)
    response = await client.put(progress_url(job_id), json={"percentage": 5}, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


async def test_revoked_key_is_401(
    client: httpx.AsyncClient, store: SQLStore, alice: Auth, new_job: NewJob
) -> None:
    """A revoked key stops working."""
    job_id = await new_job(alice)
    [key] = store.list_keys(user_id="alice")
    store.revoke_key(key.id, now=datetime.now(UTC))
    response = await client.put(progress_url(job_id), json={"percentage": 5}, headers=alice)
    assert response.status_code == 401


async def test_unknown_job_is_404(client: httpx.AsyncClient, alice: Auth) -> None:
    """The HTTP API does not create jobs on report: an unknown id is 404."""
    response = await client.put(progress_url("no-such-job"), json={"percentage": 5}, headers=alice)
    assert response.status_code == 404
    assert (await client.get("/api/v1/jobs/no-such-job", headers=alice)).status_code == 404


async def test_another_users_job_is_404_and_untouched(
    client: httpx.AsyncClient, alice: Auth, bob: Auth, admin: Auth, new_job: NewJob
) -> None:
    """Bob cannot report on, read or tell apart Alice's job from a missing one; an admin can."""
    job_id = await new_job(alice)
    for response in (
        await client.put(progress_url(job_id), json={"percentage": 50}, headers=bob),
        await client.get(f"/api/v1/remote-jobs/{job_id}/status", headers=bob),
        await client.put(
            f"/api/v1/remote-jobs/{job_id}/result", json={"success": True}, headers=bob
        ),
    ):
        assert response.status_code == 404
        assert response.json() == {"detail": f"job {job_id!r} not found"}
    status = await client.get(f"/api/v1/remote-jobs/{job_id}/status", headers=alice)
    assert status.json()["percentage"] == 0
    assert (
        await client.put(progress_url(job_id), json={"percentage": 50}, headers=admin)
    ).status_code == 200


async def test_worker_key_reports_on_its_users_jobs(
    client: httpx.AsyncClient, alice: Auth, alice_worker: Auth, bob: Auth, new_job: NewJob
) -> None:
    """A worker key of Alice's reports on Alice's jobs, not Bob's."""
    mine = await new_job(alice)
    theirs = await new_job(bob)
    assert (
        await client.put(progress_url(mine), json={"percentage": 5}, headers=alice_worker)
    ).status_code == 200
    assert (
        await client.put(progress_url(theirs), json={"percentage": 5}, headers=alice_worker)
    ).status_code == 404


async def test_terminal_job_is_409(client: httpx.AsyncClient, alice: Auth, new_job: NewJob) -> None:
    """After completion a report answers 409 naming the state."""
    job_id = await new_job(alice)
    done = await client.put(
        f"/api/v1/remote-jobs/{job_id}/result",
        json={"success": True, "message": "ok"},
        headers=alice,
    )
    assert done.status_code == 200
    assert done.json()["job"]["status"] == "FINISHED"
    response = await client.put(progress_url(job_id), json={"percentage": 50}, headers=alice)
    assert response.status_code == 409
    assert "FINISHED" in response.json()["detail"]


async def test_superseded_attempt_is_409(
    client: httpx.AsyncClient, alice: Auth, new_job: NewJob
) -> None:
    """A report from an older attempt than the job's answers 409."""
    job_id = await new_job(alice)
    await client.put(progress_url(job_id), json={"percentage": 50, "attempt": 2}, headers=alice)
    response = await client.put(
        progress_url(job_id), json={"percentage": 60, "attempt": 1}, headers=alice
    )
    assert response.status_code == 409
    assert "attempt 2" in response.json()["detail"]


async def test_failure_result_keeps_percentage(
    client: httpx.AsyncClient, alice: Auth, new_job: NewJob
) -> None:
    """A failed result keeps the last percentage and records the error."""
    job_id = await new_job(alice)
    await client.put(progress_url(job_id), json={"percentage": 42}, headers=alice)
    response = await client.put(
        f"/api/v1/remote-jobs/{job_id}/result",
        json={"success": False, "message": "GPU lost"},
        headers=alice,
    )
    job = response.json()["job"]
    assert (job["status"], job["percentage"], job["error"]) == ("FAILED", 42, "GPU lost")


async def test_cancelled_result_ends_the_job_cancelled(
    client: httpx.AsyncClient, alice: Auth, new_job: NewJob
) -> None:
    """A worker that stops on a cancel request ends the job CANCELLED, percentage kept."""
    job_id = await new_job(alice)
    await client.put(progress_url(job_id), json={"percentage": 30}, headers=alice)
    response = await client.put(
        f"/api/v1/remote-jobs/{job_id}/result",
        json={"success": False, "cancelled": True},
        headers=alice,
    )
    job = response.json()["job"]
    assert (job["status"], job["percentage"], job["summary"]) == ("CANCELLED", 30, "Cancelled")


async def test_cancel_reaches_the_worker(
    client: httpx.AsyncClient, alice: Auth, alice_worker: Auth, new_job: NewJob
) -> None:
    """A cancel request shows up as cancel_requested in the worker's next progress reply."""
    job_id = await new_job(alice)
    await client.put(progress_url(job_id), json={"percentage": 20}, headers=alice_worker)
    cancel = await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=alice)
    assert cancel.json()["status"] == "PROCESSING"
    reply = await client.put(progress_url(job_id), json={"percentage": 25}, headers=alice_worker)
    assert reply.json()["cancel_requested"] is True


async def test_body_over_the_limit_is_413(
    store: SQLStore, alice: Auth, new_job: NewJob, client: httpx.AsyncClient
) -> None:
    """A body over the limit answers 413, whether announced by Content-Length or streamed."""
    job_id = await new_job(alice)
    big = b'{"percentage": 5, "message": "' + b"x" * 70_000 + b'"}'
    response = await client.put(
        progress_url(job_id), content=big, headers={**alice, "Content-Type": "application/json"}
    )
    assert response.status_code == 413

    async def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(10):
            yield b"x" * 10_000

    response = await client.put(
        progress_url(job_id),
        content=chunks(),
        headers={**alice, "Content-Type": "application/json"},
    )
    assert response.status_code == 413


async def test_rate_limit_is_429_with_retry_after(
    store: SQLStore, key: Callable[..., Auth]
) -> None:
    """Past the per-key rate a request answers 429 with Retry-After; another key is unaffected.
    One request per 100 s: no token comes back while the test runs, however busy the machine."""
    settings = Settings(rate_limit_per_second=0.01, key_cache_seconds=0)
    app: FastAPI = create_app(settings, store=store)
    first, second = key("alice"), key("alice")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        assert (await c.get("/api/v1/jobs", headers=first)).status_code == 200
        limited = await c.get("/api/v1/jobs", headers=first)
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert (await c.get("/api/v1/jobs", headers=second)).status_code == 200


async def test_batch_reports_per_item(
    client: httpx.AsyncClient, alice: Auth, bob: Auth, new_job: NewJob
) -> None:
    """A batch is applied in order; each report gets its own status, one bad item spoils none."""
    mine, done, theirs = await new_job(alice), await new_job(alice), await new_job(bob)
    await client.put(f"/api/v1/remote-jobs/{done}/result", json={"success": True}, headers=alice)
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    body = {
        "updates": [
            {"job_id": mine, "percentage": 10, "message": "a"},
            {"job_id": mine, "percentage": 20, "message": "b"},
            {"job_id": done, "percentage": 30},
            {"job_id": theirs, "percentage": 40},
            {"job_id": mine, "percentage": 50, "timestamp": future},
            {"job_id": "missing", "percentage": 60},
        ]
    }
    response = await client.post("/api/v1/remote-jobs/progress", json=body, headers=alice)
    assert response.status_code == 200
    results = response.json()["results"]
    assert [(r["job_id"], r["status"], r["applied"]) for r in results] == [
        (mine, 200, True),
        (mine, 200, True),
        (done, 409, False),
        (theirs, 404, False),
        (mine, 422, False),
        ("missing", 404, False),
    ]
    assert "timestamp" in results[4]["detail"]
    job = (await client.get(f"/api/v1/jobs/{mine}", headers=alice)).json()
    assert (job["percentage"], job["summary"]) == (20, "b")


async def test_batch_limits(client: httpx.AsyncClient, alice: Auth) -> None:
    """An empty batch, or one of over 1000 reports, is 422."""
    assert (
        await client.post("/api/v1/remote-jobs/progress", json={"updates": []}, headers=alice)
    ).status_code == 422
    many = {"updates": [{"job_id": "j", "percentage": 1}] * 1001}
    assert (
        await client.post("/api/v1/remote-jobs/progress", json=many, headers=alice)
    ).status_code == 422


async def test_heartbeat(
    client: httpx.AsyncClient, store: SQLStore, alice: Auth, new_job: NewJob
) -> None:
    """A heartbeat refreshes last_seen_at, wakes a STALLED job, and answers cancel_requested."""
    from morag_progress import JobStatus, JobTracker

    job_id = await new_job(alice)
    JobTracker(store=store).update_progress(job_id, 30, JobStatus.STALLED)
    response = await client.post(f"/api/v1/remote-jobs/{job_id}/heartbeat", headers=alice)
    assert response.status_code == 200
    assert response.json()["job"]["status"] == "PROCESSING"
    assert response.json()["cancel_requested"] is False
    assert (
        await client.post("/api/v1/remote-jobs/nope/heartbeat", headers=alice)
    ).status_code == 404


async def test_heartbeat_starts_a_pending_job(
    client: httpx.AsyncClient, alice: Auth, new_job: NewJob
) -> None:
    """A worker's first heartbeat moves a PENDING job to PROCESSING and sets its start date."""
    job_id = await new_job(alice)
    response = await client.post(f"/api/v1/remote-jobs/{job_id}/heartbeat", headers=alice)
    job = response.json()["job"]
    assert job["status"] == "PROCESSING"
    assert job["start_date"] is not None
    again = await client.post(f"/api/v1/remote-jobs/{job_id}/heartbeat", headers=alice)
    assert again.json()["job"]["start_date"] == job["start_date"]


async def test_heartbeat_and_result_name_the_worker(
    client: httpx.AsyncClient, alice: Auth, new_job: NewJob
) -> None:
    """A heartbeat's or a result's ``worker_id`` names a job that has none yet, so a worker
    that never sends progress still shows in the Workers view; a job keeps its first name; a
    bad name is refused naming the field."""
    beat, ended = await new_job(alice), await new_job(alice)
    url = "/api/v1/remote-jobs/{}/{}"
    reply = await client.post(
        url.format(beat, "heartbeat"), json={"worker_id": "gpu-01"}, headers=alice
    )
    assert reply.json()["job"]["worker_id"] == "gpu-01"
    again = await client.post(
        url.format(beat, "heartbeat"), json={"worker_id": "gpu-09"}, headers=alice
    )
    assert again.json()["job"]["worker_id"] == "gpu-01"
    done = await client.put(
        url.format(ended, "result"), json={"success": True, "worker_id": "gpu-02"}, headers=alice
    )
    assert done.json()["job"]["worker_id"] == "gpu-02"
    workers = (await client.get("/api/v1/workers", headers=alice)).json()["workers"]
    assert {w["worker_id"] for w in workers} == {"gpu-01", "gpu-02"}
    bad = await client.post(url.format(beat, "heartbeat"), json={"worker_id": ""}, headers=alice)
    assert bad.status_code == 422
    assert "worker_id" in bad.text


async def test_logs_are_parsed_on_the_server(
    client: httpx.AsyncClient, alice: Auth, new_job: NewJob
) -> None:
    """Raw log lines (NDJSON and text) are parsed on the server and applied in order."""
    job_id = await new_job(alice)
    lines = "\n".join(
        [
            '{"event": "Processing progress: Video processing (30%)", "timestamp": "2025-06-11T11:26:51Z"}',
            "some unrelated line",
            '{"event": "Processing progress: Video processing (60%)", "timestamp": "2025-06-11T11:26:52Z"}',
            '{"event": "Processing progress: Video processing (45%)", "timestamp": "2025-06-11T11:26:51.5Z"}',
            "Encoding:  70%|#######   | 7/10 [00:01<00:00, 5.0it/s]",
        ]
    )
    response = await client.post(
        f"/api/v1/remote-jobs/{job_id}/logs",
        content=lines,
        headers={**alice, "Content-Type": "text/plain"},
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["lines"], body["events"], body["applied"]) == (5, 4, 3)
    assert (body["job"]["percentage"], body["job"]["current"], body["job"]["total"]) == (70, 7, 10)
    assert (
        await client.post("/api/v1/remote-jobs/nope/logs", content=lines, headers=alice)
    ).status_code == 404


async def test_logs_allow_a_larger_body(
    client: httpx.AsyncClient, alice: Auth, new_job: NewJob
) -> None:
    """Log uploads may be up to 1 MiB, beyond the 64 KiB of other bodies; past it, 413."""
    job_id = await new_job(alice)
    chunk = ("ordinary line without progress\n" * 6000).encode()  # ~190 KB
    ok = await client.post(f"/api/v1/remote-jobs/{job_id}/logs", content=chunk, headers=alice)
    assert ok.status_code == 200
    too_big = await client.post(
        f"/api/v1/remote-jobs/{job_id}/logs", content=chunk * 6, headers=alice
    )
    assert too_big.status_code == 413


async def test_claim_over_http(
    client: httpx.AsyncClient, alice: Auth, key: Callable[..., Auth], new_job: NewJob
) -> None:
    """A worker claims a queued job (204 when none waits); only it may report on the job then."""
    from morag_progress.keys import Role

    gpu1, gpu2 = key("alice", Role.WORKER), key("alice", Role.WORKER)
    assert (
        await client.post("/api/v1/remote-jobs/claim", json={"worker_id": "gpu-01"}, headers=gpu1)
    ).status_code == 204
    job_id = await new_job(alice, remote=True)
    claimed = await client.post(
        "/api/v1/remote-jobs/claim", json={"worker_id": "gpu-01"}, headers=gpu1
    )
    assert claimed.status_code == 200
    assert (claimed.json()["id"], claimed.json()["status"], claimed.json()["worker_id"]) == (
        job_id,
        "PROCESSING",
        "gpu-01",
    )
    assert (
        await client.put(progress_url(job_id), json={"percentage": 30}, headers=gpu2)
    ).status_code == 404
    assert (
        await client.put(progress_url(job_id), json={"percentage": 30}, headers=gpu1)
    ).status_code == 200
    assert (
        await client.put(progress_url(job_id), json={"percentage": 31}, headers=alice)
    ).status_code == 200
    bad = await client.post("/api/v1/remote-jobs/claim", json={"worker": "x"}, headers=gpu1)
    assert bad.status_code == 422


async def test_a_large_log_upload_is_coalesced(
    client: httpx.AsyncClient, alice: Auth, new_job: NewJob
) -> None:
    """30,000 progress lines apply at most 50 updates: the job ends at the last line's state,
    its history has one row per applied update, and the answer says how many were coalesced."""
    job_id = await new_job(alice)
    lines = [f"[{i * 99 // 30_000}%] s{i}" for i in range(30_000)]  # about 0.4 MB
    lines.append("[99%] almost")
    response = await client.post(
        f"/api/v1/remote-jobs/{job_id}/logs", content="\n".join(lines), headers=alice
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["lines"], body["events"]) == (30_001, 30_001)
    assert body["events"] - body["coalesced"] <= 50
    assert body["applied"] == body["events"] - body["coalesced"]
    assert (body["job"]["percentage"], body["job"]["summary"]) == (99, "almost")
    history = (await client.get(f"/api/v1/jobs/{job_id}/history", headers=alice)).json()
    assert len(history) == 1 + body["applied"]
    assert [e["percentage"] for e in history] == sorted(e["percentage"] for e in history)


async def test_a_tqdm_bar_with_counts_past_64_bits_is_applied_without_them(
    client: httpx.AsyncClient, alice: Auth, new_job: NewJob
) -> None:
    """A log line whose counts no column can hold still reports its percentage."""
    job_id = await new_job(alice)
    line = " 50%|#####     | 9223372036854775808/9223372036854775809 [00:01<00:01, 1.0it/s]"
    response = await client.post(f"/api/v1/remote-jobs/{job_id}/logs", content=line, headers=alice)
    assert response.status_code == 200, response.text
    assert (response.json()["job"]["percentage"], response.json()["job"]["total"]) == (50, None)


async def test_an_admins_batch_fails_only_the_item_whose_id_two_users_have(
    client: httpx.AsyncClient, alice: Auth, bob: Auth, admin: Auth, new_job: NewJob
) -> None:
    """An admin (unscoped) reporting on an id that Alice and Bob both have gets 409 for that
    item alone; the batch's other items are applied."""
    await new_job(alice, id="shared")
    await new_job(bob, id="shared")
    only = await new_job(alice, id="alices-only")
    batch = {"updates": [{"job_id": "shared", "percentage": 5}, {"job_id": only, "percentage": 7}]}
    response = await client.post("/api/v1/remote-jobs/progress", json=batch, headers=admin)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["status"], r["applied"]) for r in results] == [(409, False), (200, True)]
    assert "several users" in results[0]["detail"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/result", {"success": "yes"}, "success"),
        ("/progress", {"percentage": 5, "timestamp": "1700000000"}, "timestamp"),
    ],
)
async def test_loose_values_are_refused(
    client: httpx.AsyncClient, alice: Auth, new_job: NewJob, path: str, body: Any, field: str
) -> None:
    """A string for a bool, and digits for an ISO 8601 time, are 422s naming the field."""
    job_id = await new_job(alice)
    response = await client.put(f"/api/v1/remote-jobs/{job_id}{path}", json=body, headers=alice)
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", field]


async def test_a_blank_worker_name_is_refused(
    client: httpx.AsyncClient, alice_worker: Auth
) -> None:
    """A claim needs a worker name that is not blank."""
    response = await client.post(
        "/api/v1/remote-jobs/claim", json={"worker_id": "   "}, headers=alice_worker
    )
    assert response.status_code == 422
    assert "blank" in response.text
