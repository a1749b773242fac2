"""Jobs routes: create (idempotent), read, list with pagination, cancel, history."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from morag_progress import JobTracker
from morag_progress.keys import Role
from morag_progress.models import utcnow
from morag_progress.store import SQLStore
from tests.api.conftest import Auth
from tests.helpers import stall

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
        ({"document_name": "a", "document_type": "pdf", "expected_children": 0}, "expected_"),
        ({"document_name": "a", "document_type": "pdf", "expected_children": 10_001}, "expected_"),
        ({"document_name": "a", "document_type": "pdf", "expected_children": "4"}, "expected_"),
        ({"document_name": "a", "document_type": "pdf", "expected_children": 2.5}, "expected_"),
        ({"document_name": "a", "document_type": "pdf", "deadline": "tomorrow"}, "deadline"),
        ({"document_name": "a", "document_type": "pdf", "deadline": 1790000000}, "deadline"),
        ({"document_name": "a", "document_type": "pdf", "deadline_seconds": 0}, "deadline_"),
        (
            {
                "document_name": "a",
                "document_type": "pdf",
                "deadline": "2030-01-01T00:00:00Z",
                "deadline_seconds": 60,
            },
            "deadline or deadline_seconds",
        ),
    ],
)
async def test_create_validates(
    client: httpx.AsyncClient, alice: Auth, body: dict[str, Any], field: str
) -> None:
    """A bad job body is 422 naming the field."""
    response = await client.post("/api/v1/jobs", json=body, headers=alice)
    assert response.status_code == 422
    assert field in response.json()["message"]


async def test_a_run_expects_its_ranks_and_shows_its_stragglers(
    client: httpx.AsyncClient, alice: Auth, store: SQLStore
) -> None:
    """A parent made with ``expected_children`` (a run) and ranks made by their own requests,
    in any order and more than once: the run counts the ranks not made yet as 0%, and after
    the sweep a straggling rank is flagged on it (``stragglers``) and on itself."""
    run = {"id": "run-7", "document_name": "train", "document_type": "run", "expected_children": 4}
    for r in (2, 0):
        rank = {"id": f"run-7:rank-{r}", "document_name": "train", "document_type": "run"}
        for body in (run, {**rank, "parent_id": "run-7"}, run):
            assert (await client.post("/api/v1/jobs", json=body, headers=alice)).status_code == 201
    for r, pct in ((0, 80), (2, 20)):
        answer = await client.put(
            f"/api/v1/remote-jobs/run-7:rank-{r}/progress", json={"percentage": pct}, headers=alice
        )
        assert answer.status_code == 200
    job = (await client.get("/api/v1/jobs/run-7", headers=alice)).json()
    assert (job["expected_children"], job["children"], job["percentage"], job["stragglers"]) == (
        4,
        2,
        25,  # (80 + 20 + 0 + 0) / 4
        0,
    )
    assert job["summary"] == "0 of 4 child jobs done"
    slowest = {"id": "run-7:rank-2", "percentage": 20, "straggler": False}
    assert job["slowest_child"] == slowest
    listed = (await client.get("/api/v1/jobs?top_level=true", headers=alice)).json()["jobs"]
    assert [(j["id"], j["slowest_child"]) for j in listed] == [("run-7", slowest)]
    later = utcnow()
    store.sweep_stragglers(now=later, share=0.1, hold=60)
    store.sweep_stragglers(now=later + timedelta(seconds=60), share=0.1, hold=60)
    job = (await client.get("/api/v1/jobs/run-7", headers=alice)).json()
    assert job["stragglers"] == 1
    assert job["slowest_child"] == {**slowest, "straggler": True}
    assert job["summary"].startswith("Straggler: run-7:rank-2 at 20%")
    ranks = (await client.get("/api/v1/jobs?parent_id=run-7", headers=alice)).json()["jobs"]
    assert {j["id"]: j["straggler"] for j in ranks} == {"run-7:rank-0": False, "run-7:rank-2": True}
    events = (await client.get("/api/v1/jobs/run-7/history", headers=alice)).json()
    assert events[-1]["action"] == "straggler"


async def test_a_deadline_is_given_as_a_time_or_as_seconds_from_now(
    client: httpx.AsyncClient, alice: Auth
) -> None:
    body = {"document_name": "a", "document_type": "pdf", "deadline": "2030-01-01T12:00:00+01:00"}
    job = (await client.post("/api/v1/jobs", json=body, headers=alice)).json()
    assert (job["deadline"], job["at_risk"]) == ("2030-01-01T11:00:00Z", None)
    before = utcnow()
    relative = {"document_name": "b", "document_type": "pdf", "deadline_seconds": 3600}
    job = (await client.post("/api/v1/jobs", json=relative, headers=alice)).json()
    deadline = datetime.fromisoformat(job["deadline"])
    assert before + timedelta(seconds=3600) <= deadline <= utcnow() + timedelta(seconds=3600)
    plain = {"document_name": "c", "document_type": "pdf"}
    assert (await client.post("/api/v1/jobs", json=plain, headers=alice)).json()["deadline"] is None


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


async def test_a_page_of_large_jobs_ends_early_and_paging_goes_on(
    client: httpx.AsyncClient, alice: Auth, new_job: NewJob
) -> None:
    """Jobs with 16 KiB of metadata each: a page of 500 asked for holds about a megabyte, not
    500 x 16 KiB; its cursor leads through every job exactly once."""
    from morag_progress.api.routes import PAGE_BYTES

    made = {await new_job(alice, metadata={"notes": "n" * 16_000}) for _ in range(100)}
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 500, **({"cursor": cursor} if cursor else {})}
        answer = await client.get("/api/v1/jobs", params=params, headers=alice)
        assert len(answer.content) <= PAGE_BYTES * 1.1
        page = answer.json()
        seen += [job["id"] for job in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert 40 <= len(page["jobs"]) < 100  # ended early, by size
    assert sorted(seen) == sorted(made)


async def test_a_history_page_of_long_messages_ends_early(
    client: httpx.AsyncClient, alice: Auth, new_job: NewJob
) -> None:
    """A history page past about a megabyte ends early; asking after its last id goes on."""
    from morag_progress.api.routes import PAGE_BYTES

    job = await new_job(alice)
    body = [
        {"job_id": job, "percentage": 1 + i % 98, "message": f"{i} " + "m" * 1990}
        for i in range(700)
    ]
    for start in range(0, 700, 100):
        batch = {"updates": body[start : start + 100]}
        assert (
            await client.post("/api/v1/remote-jobs/progress", json=batch, headers=alice)
        ).status_code == 200
    seen: list[int] = []
    after = 0
    while True:
        answer = await client.get(
            f"/api/v1/jobs/{job}/history", params={"after": after, "limit": 10_000}, headers=alice
        )
        assert len(answer.content) <= PAGE_BYTES * 1.1
        rows = answer.json()
        if not rows:
            break
        seen += [row["id"] for row in rows]
        after = rows[-1]["id"]
    assert len(seen) == len(set(seen)) == 701  # its creation and the 700 reports


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
    newest = (
        await client.get(
            f"/api/v1/jobs/{job_id}/history", params={"order": "desc", "limit": 2}, headers=alice
        )
    ).json()
    assert [e["percentage"] for e in newest] == [50, 10]
    earlier = (
        await client.get(
            f"/api/v1/jobs/{job_id}/history",
            params={"order": "desc", "before": newest[-1]["id"]},
            headers=alice,
        )
    ).json()
    assert [e["percentage"] for e in earlier] == [0]
    assert (await client.get(f"/api/v1/jobs/{job_id}/history", headers=bob)).status_code == 404


async def _claimed(client: httpx.AsyncClient, worker: Auth, owner: Auth, new_job: NewJob) -> str:
    """A remote job claimed by ``worker``, reported to 40%."""
    job_id = await new_job(owner, remote=True)
    claimed = await client.post(
        "/api/v1/remote-jobs/claim", json={"worker_id": "gpu-01"}, headers=worker
    )
    assert claimed.json()["id"] == job_id
    await client.put(
        f"/api/v1/remote-jobs/{job_id}/progress", json={"percentage": 40}, headers=worker
    )
    return str(job_id)


async def test_requeue_a_failed_remote_job(
    client: httpx.AsyncClient, alice: Auth, alice_worker: Auth, bob: Auth, new_job: NewJob
) -> None:
    """A failed remote job goes back to the queue at 0% without its error; the next claim is
    attempt 2, and the old attempt's late report is refused as superseded."""
    job_id = await _claimed(client, alice_worker, alice, new_job)
    await client.put(
        f"/api/v1/remote-jobs/{job_id}/result",
        json={"success": False, "message": "CUDA out of memory"},
        headers=alice_worker,
    )
    assert (await client.post(f"/api/v1/jobs/{job_id}/requeue", headers=bob)).status_code == 404
    response = await client.post(f"/api/v1/jobs/{job_id}/requeue", headers=alice)
    assert response.status_code == 200
    job = response.json()
    assert (job["status"], job["percentage"], job["error"], job["worker_id"], job["end_date"]) == (
        "WAITING_FOR_REMOTE_WORKER",
        0,
        None,
        None,
        None,
    )
    assert (job["attempt"], job["start_date"]) == (2, None)
    # Until a worker claims it again, the old worker's late words change nothing.
    for method, path, body in (
        ("PUT", "progress", {"percentage": 70}),
        ("PUT", "progress", {"percentage": 0}),
        ("POST", "heartbeat", None),
        ("PUT", "result", {"success": True}),
    ):
        late = await client.request(
            method, f"/api/v1/remote-jobs/{job_id}/{path}", json=body, headers=alice_worker
        )
        assert late.status_code == 404, (path, body)
    waiting = (await client.get(f"/api/v1/jobs/{job_id}", headers=alice)).json()
    assert (waiting["status"], waiting["percentage"]) == ("WAITING_FOR_REMOTE_WORKER", 0)
    again = await client.post(
        "/api/v1/remote-jobs/claim", json={"worker_id": "gpu-02"}, headers=alice_worker
    )
    assert (again.json()["id"], again.json()["attempt"]) == (job_id, 2)
    late = await client.put(
        f"/api/v1/remote-jobs/{job_id}/progress",
        json={"percentage": 90, "attempt": 1},
        headers=alice_worker,
    )
    assert late.status_code == 409
    history = (await client.get(f"/api/v1/jobs/{job_id}/history", headers=alice)).json()
    assert [e["status"] for e in history][-3:] == [
        "FAILED",
        "WAITING_FOR_REMOTE_WORKER",
        "PROCESSING",
    ]


@pytest.mark.parametrize("state", ["running", "finished", "never claimed"])
async def test_requeue_refuses_other_jobs(
    client: httpx.AsyncClient, alice: Auth, alice_worker: Auth, new_job: NewJob, state: str
) -> None:
    """Only a failed, cancelled or stalled job that a remote worker claimed is requeued; any
    other answers 409 saying why, and is left as it was."""
    if state == "never claimed":
        job_id = await new_job(alice, remote=True)
        await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=alice)
        why = "never claimed by a remote worker"
    else:
        job_id = await _claimed(client, alice_worker, alice, new_job)
        why = "is PROCESSING"
        if state == "finished":
            await client.put(
                f"/api/v1/remote-jobs/{job_id}/result", json={"success": True}, headers=alice_worker
            )
            why = "is FINISHED"
    before = (await client.get(f"/api/v1/jobs/{job_id}", headers=alice)).json()
    response = await client.post(f"/api/v1/jobs/{job_id}/requeue", headers=alice)
    assert response.status_code == 409
    assert why in response.json()["detail"]
    assert "can be requeued" in response.json()["detail"]
    assert (await client.get(f"/api/v1/jobs/{job_id}", headers=alice)).json() == before


async def test_requeue_needs_a_user_key(
    client: httpx.AsyncClient, alice: Auth, alice_worker: Auth, new_job: NewJob
) -> None:
    """A worker key may not requeue (403)."""
    job_id = await _claimed(client, alice_worker, alice, new_job)
    response = await client.post(f"/api/v1/jobs/{job_id}/requeue", headers=alice_worker)
    assert response.status_code == 403


async def test_search_and_top_level(
    client: httpx.AsyncClient, alice: Auth, bob: Auth, new_job: NewJob
) -> None:
    """q finds the caller's jobs by name, id or message in any case, treating % and _ as
    text; top_level leaves out children; both page like any list."""
    lecture = await new_job(alice, document_name="Lecture_01.mp3", id="job-lec")
    await new_job(alice, document_name="manual 50%.pdf", id="man-1")
    child = await new_job(alice, document_name="lecture part", parent_id=lecture)
    await new_job(bob, document_name="lecture of bob")
    await client.put(
        f"/api/v1/remote-jobs/{child}/progress",
        json={"percentage": 5, "message": "Transcribing GERMAN audio"},
        headers=alice,
    )

    async def ids(**params: Any) -> set[str]:
        response = await client.get("/api/v1/jobs", params=params, headers=alice)
        assert response.status_code == 200, response.text
        return {j["id"] for j in response.json()["jobs"]}

    assert await ids(q="LECTURE") == {lecture, child}
    assert await ids(q="german") == {child}
    assert await ids(q="MAN-1") == {"man-1"}
    assert await ids(q="50%") == {"man-1"}
    assert await ids(q="e_0") == {lecture}  # "_" is a character, not a wildcard
    assert await ids(q="%") == {"man-1"}
    assert await ids(q="lecture", top_level=True) == {lecture}
    assert await ids(q="nothing like it") == set()
    first = (await client.get("/api/v1/jobs", params={"q": "e", "limit": 1}, headers=alice)).json()
    rest = await ids(q="e", cursor=first["next_cursor"])
    assert len(rest) == 2
    assert first["jobs"][0]["id"] not in rest
    too_long = await client.get("/api/v1/jobs", params={"q": "x" * 201}, headers=alice)
    assert too_long.status_code == 422


async def test_workers_view(
    client: httpx.AsyncClient, alice: Auth, alice_worker: Auth, bob: Auth, new_job: NewJob
) -> None:
    """Each worker with its last sign of life, its current job, and what it ended lately;
    another user's workers are not listed."""
    running = await _claimed(client, alice_worker, alice, new_job)
    done = await new_job(alice, remote=True)
    await client.post(
        "/api/v1/remote-jobs/claim", json={"worker_id": "gpu-02"}, headers=alice_worker
    )
    await client.put(
        f"/api/v1/remote-jobs/{done}/result", json={"success": True}, headers=alice_worker
    )
    failed = await new_job(alice, remote=True)
    await client.post(
        "/api/v1/remote-jobs/claim", json={"worker_id": "gpu-02"}, headers=alice_worker
    )
    await client.put(
        f"/api/v1/remote-jobs/{failed}/result",
        json={"success": False, "message": "disk full"},
        headers=alice_worker,
    )
    listed = (await client.get("/api/v1/workers", headers=alice)).json()
    assert listed["window_seconds"] == 3600
    workers = {w["worker_id"]: w for w in listed["workers"]}
    assert set(workers) == {"gpu-01", "gpu-02"}
    assert workers["gpu-01"]["current_job"]["id"] == running
    assert (workers["gpu-01"]["finished"], workers["gpu-01"]["failed"]) == (0, 0)
    assert workers["gpu-02"]["current_job"] is None
    assert (workers["gpu-02"]["finished"], workers["gpu-02"]["failed"]) == (1, 1)
    assert workers["gpu-02"]["last_seen"].endswith("Z")
    assert (workers["gpu-01"]["state"], workers["gpu-02"]["state"]) == ("running", "idle")
    assert (await client.get("/api/v1/workers", headers=bob)).json()["workers"] == []
    bad = await client.get("/api/v1/workers", params={"window": 5}, headers=alice)
    assert bad.status_code == 422


async def test_a_report_names_a_worker_that_no_claim_named(
    client: httpx.AsyncClient, alice: Auth, alice_worker: Auth, new_job: NewJob
) -> None:
    """A report may name its worker (``worker_id``): a job nobody claimed takes the first
    name it is given and the worker is listed; a later report naming another keeps it; a
    claimed job keeps its claim's name; a name that breaks the rules is refused by field."""
    job = await new_job(alice)
    for name, pct in (("laptop:4242", 10), ("other:1", 20)):
        answer = await client.put(
            f"/api/v1/remote-jobs/{job}/progress",
            json={"percentage": pct, "worker_id": name},
            headers=alice,
        )
        assert answer.status_code == 200
        assert answer.json()["job"]["worker_id"] == "laptop:4242"
    claimed = await _claimed(client, alice_worker, alice, new_job)  # as gpu-01
    answer = await client.put(
        f"/api/v1/remote-jobs/{claimed}/progress",
        json={"percentage": 30, "worker_id": "laptop:4242"},
        headers=alice_worker,
    )
    assert answer.json()["job"]["worker_id"] == "gpu-01"
    workers = (await client.get("/api/v1/workers", headers=alice)).json()["workers"]
    assert {w["worker_id"]: w["current_job"]["id"] for w in workers} == {
        "laptop:4242": job,
        "gpu-01": claimed,
    }
    for bad in ("", " ", "x" * 256, 7):
        refused = await client.put(
            f"/api/v1/remote-jobs/{job}/progress",
            json={"percentage": 40, "worker_id": bad},
            headers=alice,
        )
        assert refused.status_code == 422, bad
        assert "worker_id" in refused.text


async def test_workers_of_two_users_and_a_stalled_job(
    client: httpx.AsyncClient,
    alice: Auth,
    alice_worker: Auth,
    key: Callable[..., Auth],
    admin: Auth,
    new_job: NewJob,
    store: SQLStore,
) -> None:
    """Two users' workers of one name are two rows for an admin; a worker whose job stalled is
    listed as stalled, with the job it fell silent on and no current job; a worker's current
    job is the one it reported on last."""
    bob_worker = key("bob", Role.WORKER)
    bob = key("bob", Role.USER)
    older = await _claimed(client, alice_worker, alice, new_job)  # gpu-01
    newer = await _claimed(client, alice_worker, alice, new_job)
    await client.put(
        f"/api/v1/remote-jobs/{newer}/progress", json={"percentage": 50}, headers=alice_worker
    )
    await _claimed(client, bob_worker, bob, new_job)
    rows = (await client.get("/api/v1/workers", headers=admin)).json()["workers"]
    assert sorted((w["worker_id"], w["user_id"]) for w in rows) == [
        ("gpu-01", "alice"),
        ("gpu-01", "bob"),
    ]
    alices = next(w for w in rows if w["user_id"] == "alice")
    assert alices["current_job"]["id"] == newer
    tracker = JobTracker(store=store)
    for job_id in (older, newer):
        assert stall(tracker, job_id, "alice").applied
    mine = (await client.get("/api/v1/workers", headers=alice)).json()["workers"]
    assert [(w["worker_id"], w["current_job"]) for w in mine] == [("gpu-01", None)]
    assert mine[0]["state"] == "stalled"
    assert mine[0]["stalled_job"]["id"] == newer  # the one it stalled on last


async def test_actors_read_as_the_names_of_their_keys(
    client: httpx.AsyncClient, store: SQLStore, new_job: NewJob
) -> None:
    """A key made with a name (``keys create --name``) is named beside its actor: the job's
    ``created_by_name`` and each history row's ``actor_name``, for its user and an admin;
    a key without a name, and another user's key, read as null."""
    made = {}
    for label, user, role, name in [
        ("owner", "alice", Role.USER, "alice-laptop"),
        ("worker", "alice", Role.WORKER, "gpu-01"),
        ("bare", "alice", Role.WORKER, None),
        ("admin", "root", Role.ADMIN, "ops"),
    ]:
        _, secret = store.create_key(user_id=user, role=role, name=name, now=utcnow())
        made[label] = {"Authorization": f"Bearer {secret}"}
    job_id = await new_job(made["owner"])
    url = f"/api/v1/remote-jobs/{job_id}/progress"
    for label, pct in (("worker", 10), ("bare", 20), ("admin", 30)):
        answer = await client.put(url, json={"percentage": pct}, headers=made[label])
        assert answer.status_code == 200
    for viewer, expected in [
        ("owner", ["alice-laptop", "gpu-01", None, None]),
        ("admin", ["alice-laptop", "gpu-01", None, "ops"]),
    ]:
        job = (await client.get(f"/api/v1/jobs/{job_id}", headers=made[viewer])).json()
        assert job["created_by_name"] == "alice-laptop"
        listed = (await client.get("/api/v1/jobs", headers=made[viewer])).json()["jobs"]
        assert [j["created_by_name"] for j in listed if j["id"] == job_id] == ["alice-laptop"]
        history = (await client.get(f"/api/v1/jobs/{job_id}/history", headers=made[viewer])).json()
        assert [e["actor_name"] for e in history] == expected


async def test_the_history_says_who_did_what(
    client: httpx.AsyncClient, store: SQLStore, new_job: NewJob
) -> None:
    """The audit trail over HTTP: the job says who created it, and each row of its history who
    made the change and what kind it was, by key (``<role>:<key id>``): the user's creation
    and requeue, the worker's claims, reports (one by one and in a batch) and results, an
    admin's cancel."""
    keys = {}
    for name, user, role in [
        ("owner", "alice", Role.USER),
        ("worker", "alice", Role.WORKER),
        ("admin", "root", Role.ADMIN),
    ]:
        made, secret = store.create_key(user_id=user, role=role, name=None, now=utcnow())
        keys[name] = ({"Authorization": f"Bearer {secret}"}, f"{role.value}:{made.id}")
    (owner, by_owner), (worker, by_worker), (admin, by_admin) = keys.values()
    job_id = await new_job(owner, remote=True)
    claim = {"worker_id": "gpu-01"}
    assert (await client.post("/api/v1/remote-jobs/claim", json=claim, headers=worker)).is_success
    url = f"/api/v1/remote-jobs/{job_id}"
    assert (await client.put(f"{url}/progress", json={"percentage": 40}, headers=worker)).is_success
    failed = {"success": False, "message": "CUDA out of memory"}
    assert (await client.put(f"{url}/result", json=failed, headers=worker)).is_success
    assert (await client.post(f"/api/v1/jobs/{job_id}/requeue", headers=owner)).is_success
    assert (await client.post("/api/v1/remote-jobs/claim", json=claim, headers=worker)).is_success
    assert (await client.post(f"/api/v1/jobs/{job_id}/cancel", headers=admin)).is_success
    batch = {"updates": [{"job_id": job_id, "percentage": 60}]}
    assert (
        await client.post("/api/v1/remote-jobs/progress", json=batch, headers=worker)
    ).is_success
    ended = {"success": False, "cancelled": True}
    assert (await client.put(f"{url}/result", json=ended, headers=worker)).is_success

    job = (await client.get(f"/api/v1/jobs/{job_id}", headers=owner)).json()
    assert job["created_by"] == by_owner
    history = (await client.get(f"/api/v1/jobs/{job_id}/history", headers=owner)).json()
    assert [(e["action"], e["actor"], e["status"]) for e in history] == [
        ("create", by_owner, "WAITING_FOR_REMOTE_WORKER"),
        ("claim", by_worker, "PROCESSING"),
        ("report", by_worker, "PROCESSING"),
        ("report", by_worker, "FAILED"),
        ("requeue", by_owner, "WAITING_FOR_REMOTE_WORKER"),
        ("claim", by_worker, "PROCESSING"),
        ("cancel", by_admin, "PROCESSING"),
        ("report", by_worker, "PROCESSING"),
        ("report", by_worker, "CANCELLED"),
    ]


async def test_a_wrong_method_lists_every_method_of_the_path(
    client: httpx.AsyncClient, alice: Auth
) -> None:
    """405 says, in Allow, every method the path has (GET and POST /api/v1/jobs are two
    routes; Starlette alone would name one), and answers in the API's error shape."""
    answer = await client.delete("/api/v1/jobs", headers=alice)
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET, POST"
    assert answer.json() == {"detail": "Method Not Allowed"}
    progress = await client.get("/api/v1/remote-jobs/j/progress", headers=alice)
    assert (progress.status_code, progress.headers["allow"]) == (405, "PUT")
    missing = await client.get("/api/v1/nothing-here", headers=alice)
    assert missing.status_code == 404  # other HTTP errors are answered as before


async def test_a_requeued_job_resumes_from_its_checkpoint(
    client: httpx.AsyncClient, alice: Auth, alice_worker: Auth, new_job: NewJob
) -> None:
    """A worker saves a checkpoint with a report (and a newer one with a heartbeat), dies at
    70%, and the job is requeued: it waits at 70%, not 0%, its history never goes below
    70%, and the next claim hands the latest checkpoint back. Lists and progress replies
    say where a checkpoint was saved, not what it holds."""
    job_id = await _claimed(client, alice_worker, alice, new_job)
    report = await client.put(
        f"/api/v1/remote-jobs/{job_id}/progress",
        json={"percentage": 70, "checkpoint": {"step": 700, "shard": "b"}},
        headers=alice_worker,
    )
    assert report.status_code == 200
    assert report.json()["job"]["checkpoint"] is None  # a progress reply does not echo it
    assert report.json()["job"]["checkpoint_percentage"] == 70
    beat = await client.post(
        f"/api/v1/remote-jobs/{job_id}/heartbeat",
        json={"checkpoint": {"step": 712, "shard": "b"}},
        headers=alice_worker,
    )
    assert beat.status_code == 200
    one = (await client.get(f"/api/v1/jobs/{job_id}", headers=alice)).json()
    assert (one["checkpoint"], one["checkpoint_percentage"]) == ({"step": 712, "shard": "b"}, 70)
    listed = (await client.get("/api/v1/jobs", headers=alice)).json()["jobs"]
    assert [(j["checkpoint"], j["checkpoint_percentage"]) for j in listed] == [(None, 70)]
    await client.put(
        f"/api/v1/remote-jobs/{job_id}/result",
        json={"success": False, "message": "node lost"},
        headers=alice_worker,
    )
    requeued = (await client.post(f"/api/v1/jobs/{job_id}/requeue", headers=alice)).json()
    assert (requeued["status"], requeued["percentage"], requeued["attempt"]) == (
        "WAITING_FOR_REMOTE_WORKER",
        70,
        2,
    )
    assert "resume" in requeued["summary"]
    claimed = await client.post(
        "/api/v1/remote-jobs/claim", json={"worker_id": "gpu-02"}, headers=alice_worker
    )
    resumed = claimed.json()
    assert (resumed["id"], resumed["attempt"], resumed["percentage"]) == (job_id, 2, 70)
    assert resumed["checkpoint"] == {"step": 712, "shard": "b"}
    await client.put(
        f"/api/v1/remote-jobs/{job_id}/progress", json={"percentage": 75}, headers=alice_worker
    )
    history = (await client.get(f"/api/v1/jobs/{job_id}/history", headers=alice)).json()
    after = [e["percentage"] for e in history if e["attempt"] == 2]
    assert after == [70, 70, 75]  # requeued, claimed, reported: never below the checkpoint


async def test_a_checkpoint_is_a_bounded_json_object(
    client: httpx.AsyncClient, alice: Auth, alice_worker: Auth, new_job: NewJob
) -> None:
    """A checkpoint is a JSON object of at most 32 KiB: anything else is a 422 naming it, and
    the job keeps the checkpoint it had."""
    job_id = await _claimed(client, alice_worker, alice, new_job)
    url = f"/api/v1/remote-jobs/{job_id}/progress"
    assert (
        await client.put(url, json={"percentage": 50, "checkpoint": {"a": 1}}, headers=alice_worker)
    ).status_code == 200
    fits = {"blob": "x" * (32 * 1024 - 12)}
    assert (
        await client.put(url, json={"percentage": 51, "checkpoint": fits}, headers=alice_worker)
    ).status_code == 200
    for bad in ([1, 2], "text", {"blob": "x" * (32 * 1024)}, {"nul": "a\x00b"}):
        refused = await client.put(
            url, json={"percentage": 60, "checkpoint": bad}, headers=alice_worker
        )
        assert refused.status_code == 422, bad
        assert "checkpoint" in str(refused.json()["detail"][0]["loc"])
    beat_url = f"/api/v1/remote-jobs/{job_id}/heartbeat"
    bad_beats: tuple[dict[str, Any], ...] = (
        {"checkpoint": []},
        {"checkpoint_percentage": 40},  # a percentage without its checkpoint
        {"checkpoint": {"a": 1}, "checkpoint_percentage": 101},
        {"checkpoint": {"a": 1}, "checkpoint_percentage": 40.5},
    )
    for bad_beat in bad_beats:
        beat = await client.post(beat_url, json=bad_beat, headers=alice_worker)
        assert beat.status_code == 422, bad_beat
    job = (await client.get(f"/api/v1/jobs/{job_id}", headers=alice)).json()
    assert (job["percentage"], job["checkpoint"], job["checkpoint_percentage"]) == (51, fits, 51)
    # A heartbeat's checkpoint stands for the percentage it names (the work it saved).
    beat = await client.post(
        beat_url, json={"checkpoint": {"b": 2}, "checkpoint_percentage": 48}, headers=alice_worker
    )
    assert beat.status_code == 200
    job = (await client.get(f"/api/v1/jobs/{job_id}", headers=alice)).json()
    assert (job["percentage"], job["checkpoint"], job["checkpoint_percentage"]) == (
        51,
        {"b": 2},
        48,
    )
