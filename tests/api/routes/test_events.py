"""Event streams end to end, against a real uvicorn server in a thread (ASGITransport buffers
whole bodies, so an endless stream cannot be read through it)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from morag_progress import JobTracker
from morag_progress.api import create_app
from morag_progress.api.routes import events
from morag_progress.settings import Settings
from morag_progress.store import SQLStore
from tests.api.conftest import Auth
from tests.live import LiveServer


@pytest.fixture
def live_app(store: SQLStore) -> FastAPI:
    settings = Settings(
        rate_limit_per_second=0,
        key_cache_seconds=0,
        sse_ping_seconds=0.3,
        feed_poll_seconds=0.05,
        stall_timeout_seconds=None,  # only jobs' own timeouts: some jobs here are old on purpose
        monitor_interval_seconds=0.1,
    )
    return create_app(settings, store=store)


@pytest.fixture
def live_url(live_app: FastAPI) -> Iterator[str]:
    server = LiveServer(live_app).start()
    yield server.url
    server.stop()


@dataclass
class Event:
    event: str | None = None
    id: str | None = None
    data: str = ""
    comments: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.data)


class Stream:
    """Reads server-sent events from a live response, each read bounded by a deadline."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.iter_lines()
        self.comments: list[str] = []
        self.ended = False

    def next(self) -> Event:
        event = Event()
        for line in self.lines:
            if line == "":
                if event.event or event.data:
                    return event
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "":
                self.comments.append(value)
            elif name == "event":
                event.event = value
            elif name == "id":
                event.id = value
            elif name == "data":
                event.data += value
        self.ended = True
        raise EOFError("stream ended")

    def rest(self) -> list[Event]:
        """Every event until the stream ends."""
        events = []
        with contextlib.suppress(EOFError):
            while True:
                events.append(self.next())
        return events


@pytest.fixture
def open_stream(live_url: str) -> Iterator[Callable[..., Stream]]:
    clients: list[httpx.Client] = []
    contexts: list[Any] = []

    def open_(path: str, headers: dict[str, str]) -> Stream:
        client = httpx.Client(base_url=live_url, timeout=httpx.Timeout(10.0))
        clients.append(client)
        context = client.stream("GET", path, headers=headers)
        contexts.append(context)
        response = context.__enter__()
        return Stream(response)

    yield open_
    for context in contexts:
        context.__exit__(None, None, None)
    for client in clients:
        client.close()


def report(url: str, auth: Auth, job_id: str, **body: Any) -> httpx.Response:
    return httpx.put(
        f"{url}/api/v1/remote-jobs/{job_id}/progress", json=body, headers=auth, timeout=10
    )


def create(url: str, auth: Auth) -> str:
    response = httpx.post(
        f"{url}/api/v1/jobs",
        json={"document_name": "a", "document_type": "pdf"},
        headers=auth,
        timeout=10,
    )
    return str(response.json()["id"])


def test_stall_and_recovery_reach_the_stream(
    live_url: str, alice: Auth, open_stream: Callable[..., Stream]
) -> None:
    """A job silent past its stall_timeout_s becomes STALLED on its stream; its next report
    makes it PROCESSING again."""
    response = httpx.post(
        f"{live_url}/api/v1/jobs",
        json={"document_name": "a", "document_type": "pdf", "stall_timeout_s": 0.3},
        headers=alice,
        timeout=10,
    )
    job_id = response.json()["id"]
    report(live_url, alice, job_id, percentage=10, message="reading page 3")
    stream = open_stream(f"/api/v1/jobs/{job_id}/events", alice)
    first = stream.next()
    # On a slow machine the job may have stalled before the stream opened: then its snapshot
    # says so, and no STALLED change follows it.
    stalled = stream.next() if first.json()["status"] == "PROCESSING" else first
    assert (stalled.json()["status"], stalled.json()["percentage"]) == ("STALLED", 10)
    said = stalled.json().get("message") or stalled.json()["summary"]  # a change, or a job
    assert said == "reading page 3"  # the worker's last word stays
    report(live_url, alice, job_id, percentage=20)
    assert stream.next().json()["status"] == "PROCESSING"


def test_job_stream(live_url: str, alice: Auth, open_stream: Callable[..., Stream]) -> None:
    """A job's stream starts with a snapshot, sends each change with its feed id, keeps the
    connection alive with comments, and ends after the terminal event."""
    job_id = create(live_url, alice)
    stream = open_stream(f"/api/v1/jobs/{job_id}/events", alice)
    assert stream.response.headers["content-type"].startswith("text/event-stream")
    snapshot = stream.next()
    assert snapshot.event == "snapshot"
    assert snapshot.json()["status"] == "PENDING"
    report(live_url, alice, job_id, percentage=40, message="half-way")
    change = stream.next()
    assert (change.event, change.json()["percentage"], change.json()["message"]) == (
        "progress",
        40,
        "half-way",
    )
    assert int(change.id or 0) > int(snapshot.id or 0) > 0
    time.sleep(0.7)
    report(live_url, alice, job_id, percentage=100, message="done")
    final = stream.next()
    assert final.json()["status"] == "FINISHED"
    assert any(c for c in stream.comments)  # keep-alive comments came while it was quiet
    with pytest.raises(EOFError):
        stream.next()


def test_resume_with_last_event_id(
    live_url: str, alice: Auth, open_stream: Callable[..., Stream]
) -> None:
    """Reconnecting with Last-Event-ID gets exactly the missed changes, then live ones."""
    job_id = create(live_url, alice)
    first = open_stream(f"/api/v1/jobs/{job_id}/events", alice)
    report(live_url, alice, job_id, percentage=10)
    first.next()
    seen = first.next()
    assert seen.json()["percentage"] == 10
    for pct in (20, 30):  # while "disconnected"
        report(live_url, alice, job_id, percentage=pct)
    resumed = open_stream(f"/api/v1/jobs/{job_id}/events", {**alice, "Last-Event-ID": seen.id})
    assert [resumed.next().json()["percentage"] for _ in range(2)] == [20, 30]
    report(live_url, alice, job_id, percentage=40)
    assert resumed.next().json()["percentage"] == 40


def test_change_from_another_process_reaches_the_stream(
    live_url: str,
    store: SQLStore,
    database_url: str,
    alice: Auth,
    open_stream: Callable[..., Stream],
) -> None:
    """A Celery worker writing through its own ProgressHandler/tracker is seen by the stream."""
    job_id = create(live_url, alice)
    stream = open_stream(f"/api/v1/jobs/{job_id}/events", alice)
    stream.next()
    elsewhere = JobTracker(database_url)
    assert elsewhere.update_progress(job_id, 55, summary="from a worker")
    change = stream.next()
    assert (change.json()["percentage"], change.json()["message"]) == (55, "from a worker")
    elsewhere.close()


def test_streams_are_per_user(
    live_url: str, alice: Auth, bob: Auth, open_stream: Callable[..., Stream]
) -> None:
    """Bob cannot stream Alice's job (404), and his all-jobs stream carries only his jobs."""
    mine, theirs = create(live_url, alice), create(live_url, bob)
    denied = httpx.get(f"{live_url}/api/v1/jobs/{mine}/events", headers=bob, timeout=10)
    assert denied.status_code == 404
    bobs = open_stream("/api/v1/events", bob)
    snapshot = bobs.next()
    assert [job["id"] for job in snapshot.json()] == [theirs]
    report(live_url, alice, mine, percentage=70)
    report(live_url, bob, theirs, percentage=20)
    change = bobs.next()
    assert (change.json()["job_id"], change.json()["percentage"]) == (theirs, 20)
    unauthenticated = httpx.get(f"{live_url}/api/v1/events", timeout=10)
    assert unauthenticated.status_code == 401


def test_stream_of_a_finished_job_ends_after_its_snapshot(
    live_url: str, alice: Auth, open_stream: Callable[..., Stream]
) -> None:
    """A finished job's stream sends the snapshot and ends; resuming past the end ends too."""
    job_id = create(live_url, alice)
    report(live_url, alice, job_id, percentage=50)
    report(live_url, alice, job_id, percentage=100)
    stream = open_stream(f"/api/v1/jobs/{job_id}/events", alice)
    assert stream.next().json()["status"] == "FINISHED"
    with pytest.raises(EOFError):
        stream.next()
    resumed = open_stream(f"/api/v1/jobs/{job_id}/events", {**alice, "Last-Event-ID": "0"})
    assert [resumed.next().json()["percentage"] for _ in range(3)] == [0, 50, 100]
    with pytest.raises(EOFError):
        resumed.next()


def test_all_jobs_stream_resumes_with_the_latest_per_job(
    live_url: str, alice: Auth, open_stream: Callable[..., Stream]
) -> None:
    """Resuming the all-jobs stream gives the latest missed state of each job, then live ones."""
    first, second = create(live_url, alice), create(live_url, alice)
    stream = open_stream("/api/v1/events", alice)
    head = stream.next().id
    for pct in (10, 20, 30):
        report(live_url, alice, first, percentage=pct)
    report(live_url, alice, second, percentage=5)
    resumed = open_stream("/api/v1/events", {**alice, "Last-Event-ID": head or "0"})
    missed = [resumed.next().json() for _ in range(2)]
    assert [(e["job_id"], e["percentage"]) for e in missed] == [(first, 30), (second, 5)]
    report(live_url, alice, second, percentage=6)
    assert resumed.next().json()["percentage"] == 6


def test_stream_tokens_for_browsers(
    live_url: str, store: SQLStore, alice: Auth, bob: Auth, open_stream: Callable[..., Stream]
) -> None:
    """A stream token opens the caller's streams without a header; it opens nothing else,
    an API key in its place is refused, and so is a token of a revoked key."""
    job_id = create(live_url, alice)
    issued = httpx.post(f"{live_url}/api/v1/stream-tokens", headers=alice, timeout=10)
    assert issued.status_code == 201
    token = issued.json()["token"]
    assert issued.json()["expires_in"] > 0
    stream = open_stream(f"/api/v1/jobs/{job_id}/events?token={token}", {})
    assert stream.next().event == "snapshot"
    assert (
        httpx.get(
            f"{live_url}/api/v1/jobs/{job_id}", params={"token": token}, timeout=10
        ).status_code
        == 401
    )
    api_key = alice["Authorization"].removeprefix("Bearer ")
    assert (
        httpx.get(f"{live_url}/api/v1/events", params={"token": api_key}, timeout=10).status_code
        == 401
    )
    bobs_token = httpx.post(f"{live_url}/api/v1/stream-tokens", headers=bob, timeout=10).json()[
        "token"
    ]
    assert (
        httpx.get(
            f"{live_url}/api/v1/jobs/{job_id}/events", params={"token": bobs_token}, timeout=10
        ).status_code
        == 404
    )
    [bobs_key] = store.list_keys(user_id="bob")
    store.revoke_key(bobs_key.id, now=datetime.now(UTC))
    assert (
        httpx.get(f"{live_url}/api/v1/events", params={"token": bobs_token}, timeout=10).status_code
        == 401
    )


def test_expired_stream_token_is_refused(store: SQLStore, alice: Auth) -> None:
    """A token past its expiry no longer opens streams."""
    from morag_progress.keys import hash_key

    [key] = store.list_keys(user_id="alice")
    store.create_stream_token(
        hash_key("mps_old"), key.id, expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    assert store.find_stream_token(hash_key("mps_old"), now=datetime.now(UTC)) is None


def test_a_revoked_stream_token_stops_working_and_ends_its_streams(
    live_url: str, alice: Auth, bob: Auth, open_stream: Callable[..., Stream]
) -> None:
    """Revoking a token (a shared dashboard link) refuses its next request at once and ends
    its open streams; only its user (or an admin) may revoke it."""
    job_id = create(live_url, alice)
    token = httpx.post(f"{live_url}/api/v1/stream-tokens", headers=alice, timeout=10).json()[
        "token"
    ]
    stream = open_stream(f"/api/v1/events?token={token}", {})
    assert stream.next().event == "snapshot"
    revoke = f"{live_url}/api/v1/stream-tokens/revoke"
    assert httpx.post(revoke, json={"token": token}, headers=bob, timeout=10).status_code == 404
    assert httpx.post(revoke, json={"token": token}, headers=alice, timeout=10).status_code == 204
    assert httpx.post(revoke, json={"token": token}, headers=alice, timeout=10).status_code == 404
    read = httpx.get(
        f"{live_url}/api/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"}
    )
    assert read.status_code == 401
    assert "revoked" in read.json()["detail"]
    started = time.monotonic()
    stream.rest()
    assert stream.ended
    assert time.monotonic() - started < 8


def test_a_stream_token_reads_jobs_but_not_webhooks(live_url: str, alice: Auth) -> None:
    """A token (a dashboard link anyone holding it may use) reads jobs; webhooks, whose URLs
    may hold secrets, need the key itself."""
    created = httpx.post(
        f"{live_url}/api/v1/webhooks",
        json={"url": "https://93.184.215.14/services/T0/B0/secret", "events": ["job.finished"]},
        headers=alice,
        timeout=10,
    )
    assert created.status_code == 201
    token = httpx.post(f"{live_url}/api/v1/stream-tokens", headers=alice, timeout=10).json()[
        "token"
    ]
    as_token = {"Authorization": f"Bearer {token}"}
    assert httpx.get(f"{live_url}/api/v1/jobs", headers=as_token, timeout=10).status_code == 200
    hooks = httpx.get(f"{live_url}/api/v1/webhooks", headers=as_token, timeout=10)
    assert hooks.status_code == 403
    assert "secret" not in hooks.text
    assert hooks.json()["detail"] == "a stream token reads jobs only; this needs an API key"
    assert httpx.get(f"{live_url}/api/v1/webhooks", headers=alice, timeout=10).status_code == 200


def test_a_stream_opened_with_a_token_ends_at_its_expiry(
    live_url: str, store: SQLStore, alice: Auth, open_stream: Callable[..., Stream]
) -> None:
    """A token's stream does not outlive the token."""
    from morag_progress.keys import STREAM_TOKEN_PREFIX, generate_key, hash_key

    [key] = store.list_keys(user_id="alice")
    token = generate_key(STREAM_TOKEN_PREFIX)
    expires_at = datetime.now(UTC) + timedelta(seconds=1.5)
    store.create_stream_token(hash_key(token), key.id, expires_at=expires_at)
    stream = open_stream(f"/api/v1/events?token={token}", {})
    assert stream.next().event == "snapshot"
    stream.rest()
    assert stream.ended
    assert datetime.now(UTC) >= expires_at


def test_disconnected_clients_are_forgotten(
    live_url: str, live_app: FastAPI, alice: Auth, open_stream: Callable[..., Stream]
) -> None:
    """A client that goes away frees its subscription and the open-streams gauge; the feed
    tail stops with the last one."""
    job_id = create(live_url, alice)
    hub = live_app.state.hub
    url = f"/api/v1/jobs/{job_id}/events"
    with (
        httpx.Client(base_url=live_url, timeout=10) as client,
        client.stream("GET", url, headers=alice) as response,
    ):
        stream = Stream(response)  # kept: dropping its line iterator would close the response
        stream.next()
        assert hub.subscribers == 1
    # the connection is closed here, mid-stream
    deadline = time.monotonic() + 5
    while hub.subscribers and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hub.subscribers == 0
    gauge = httpx.get(f"{live_url}/metrics", timeout=10).text
    assert "morag_progress_open_streams 0.0" in gauge


def test_a_resume_point_past_the_feeds_head_starts_afresh(
    live_url: str, alice: Auth, open_stream: Callable[..., Stream]
) -> None:
    """A Last-Event-ID the feed has not reached (a stale client of another database) gets a
    snapshot, not a stream that stays silent until the feed gets there."""
    job_id = create(live_url, alice)
    report(live_url, alice, job_id, percentage=40)
    stream = open_stream(
        f"/api/v1/jobs/{job_id}/events", {**alice, "Last-Event-ID": "999999999999999999"}
    )
    assert stream.next().json()["percentage"] == 40


def test_a_resume_past_the_replay_limit_gets_a_snapshot_with_the_end(
    live_url: str, alice: Auth, open_stream: Callable[..., Stream], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job stream resumed after more missed changes than it replays says so (a ``gap``
    event) and sends the job as it is, its final state included, then ends."""
    monkeypatch.setattr(events, "JOB_REPLAY_LIMIT", 5)
    job_id = create(live_url, alice)
    stream = open_stream(f"/api/v1/jobs/{job_id}/events", alice)
    seen = stream.next()
    for pct in range(10, 90, 10):  # 8 changes while "disconnected"
        report(live_url, alice, job_id, percentage=pct)
    report(live_url, alice, job_id, percentage=100, message="done")
    resumed = open_stream(f"/api/v1/jobs/{job_id}/events", {**alice, "Last-Event-ID": seen.id})
    gap = resumed.next()
    assert gap.event == "gap"
    assert gap.json() == {"after": int(seen.id or 0), "missed_more_than": 5, "next": "snapshot"}
    snapshot = resumed.next()
    assert snapshot.event == "snapshot"
    assert (snapshot.json()["status"], snapshot.json()["summary"]) == ("FINISHED", "done")
    with pytest.raises(EOFError):
        resumed.next()
    monkeypatch.setattr(events, "JOB_REPLAY_LIMIT", 1000)  # within the limit: replayed
    within = open_stream(f"/api/v1/jobs/{job_id}/events", {**alice, "Last-Event-ID": "0"})
    assert within.next().event == "progress"


def test_an_all_jobs_resume_past_the_replay_limit_gets_a_snapshot(
    live_url: str, alice: Auth, open_stream: Callable[..., Stream], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The all-jobs stream, resumed after more missed changes than it reads, says so and
    sends every job as it is: the finished one as finished."""
    monkeypatch.setattr(events, "ALL_REPLAY_LIMIT", 3)
    first, second = create(live_url, alice), create(live_url, alice)
    head = open_stream("/api/v1/events", alice).next().id
    for pct in (10, 20, 30, 100):
        report(live_url, alice, first, percentage=pct)
    report(live_url, alice, second, percentage=5)
    resumed = open_stream("/api/v1/events", {**alice, "Last-Event-ID": head or "0"})
    assert resumed.next().event == "gap"
    snapshot = resumed.next()
    assert snapshot.event == "snapshot"
    states = {job["id"]: (job["status"], job["percentage"]) for job in snapshot.json()}
    assert states == {first: ("FINISHED", 100), second: ("PROCESSING", 5)}
    report(live_url, alice, second, percentage=6)
    assert resumed.next().json()["percentage"] == 6


def test_a_users_stream_starts_at_its_own_position_not_the_servers(
    live_url: str, store: SQLStore, alice: Auth, bob: Auth, open_stream: Callable[..., Stream]
) -> None:
    """The snapshot's id is the position in the caller's own changes: it does not tell
    Alice how busy Bob is, and resuming from it still misses nothing of hers."""
    mine = create(live_url, alice)
    theirs = create(live_url, bob)
    for pct in range(1, 30):
        report(live_url, bob, theirs, percentage=pct)
    snapshot = open_stream("/api/v1/events", alice).next()
    assert int(snapshot.id or 0) == store.last_event_id(user_id="alice") < store.last_event_id()
    report(live_url, alice, mine, percentage=40)
    resumed = open_stream("/api/v1/events", {**alice, "Last-Event-ID": snapshot.id or "0"})
    assert resumed.next().json()["percentage"] == 40


def test_an_all_jobs_resume_while_the_users_expensive_reads_are_busy_starts_afresh(
    live_url: str, alice: Auth, open_stream: Callable[..., Stream], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading up to ten thousand missed changes is an expensive read: when the user's
    share of them is busy (``limits.ReadGate`` says 429), the resume sends a gap and the
    jobs as they are (cheap), not an error, and goes on live."""
    import contextlib

    from fastapi import HTTPException

    from morag_progress.api.limits import ReadGate

    job_id = create(live_url, alice)
    head = open_stream("/api/v1/events", alice).next().id
    report(live_url, alice, job_id, percentage=10)

    @contextlib.asynccontextmanager
    async def busy(self: ReadGate, user: str, wait: float | None = None) -> Any:
        raise HTTPException(429, "busy")
        yield  # pragma: no cover

    monkeypatch.setattr(ReadGate, "slot", busy)
    resumed = open_stream("/api/v1/events", {**alice, "Last-Event-ID": head or "0"})
    assert resumed.next().event == "gap"
    snapshot = resumed.next()
    assert snapshot.event == "snapshot"
    assert [(job["id"], job["percentage"]) for job in snapshot.json()] == [(job_id, 10)]
    report(live_url, alice, job_id, percentage=20)
    assert resumed.next().json()["percentage"] == 20
