"""Webhooks: signatures, the address guard, the outbox filled from the feed, retries with
backoff to a real receiver on loopback that fails twice, throttled progress, and a server
restart between an event and its delivery."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from morag_progress import JobTracker
from morag_progress.api import create_app
from morag_progress.errors import InvalidInputError
from morag_progress.keys import Role, create_key
from morag_progress.models import utcnow
from morag_progress.settings import Settings
from morag_progress.store import SQLStore
from morag_progress.webhooks import Dispatcher, WebhookStore, check_url, sign, verify_signature
from tests.conftest import Clock
from tests.live import LiveServer


class Receiver:
    """A webhook endpoint on loopback: answers the queued statuses, then 200; keeps requests."""

    def __init__(self, fail: list[int] | None = None) -> None:
        self.fail = list(fail or [])
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                status = receiver.fail.pop(0) if receiver.fail else 200
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"try later")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.requests]


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(fail: list[int] | None = None) -> Receiver:
        made.append(Receiver(fail))
        return made[-1]

    yield make
    for r in made:
        r.close()


def test_signature_round_trip() -> None:
    """verify_signature accepts the signature of the body and nothing else."""
    body = b'{"type": "job.finished"}'
    header = sign("whsec_x", body)
    assert header.startswith("sha256=")
    assert verify_signature("whsec_x", body, header)
    assert not verify_signature("whsec_y", body, header)
    assert not verify_signature("whsec_x", body + b" ", header)
    assert not verify_signature("whsec_x", body, None)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8080/",
        "http://10.1.2.3/",
        "http://192.168.0.10/",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/",
        "http://0.0.0.0/",
    ],
)
def test_private_addresses_are_refused(url: str) -> None:
    """Loopback, private, link-local and unspecified addresses are refused, naming the field;
    the operator setting allows them."""
    with pytest.raises(InvalidInputError) as info:
        check_url(url, allow_private=False)
    assert info.value.field == "url"
    check_url(url, allow_private=True)


@pytest.mark.parametrize("url", ["ftp://example.org/x", "http:///nohost", "not a url"])
def test_bad_urls_are_refused(url: str) -> None:
    """Only http(s) URLs with a host."""
    with pytest.raises(InvalidInputError):
        check_url(url, allow_private=True)


def test_public_address_is_allowed() -> None:
    """A public address passes (an IP literal needs no lookup)."""
    check_url("https://93.184.216.34/hook", allow_private=False)


def dispatcher(store: SQLStore, clock: Clock, **kwargs: Any) -> Dispatcher:
    return Dispatcher(WebhookStore(store), allow_private=True, clock=clock, **kwargs)


def test_delivery_retried_until_accepted_with_stable_signed_body(
    store: SQLStore, tracker: JobTracker, clock: Clock, receiver: Callable[..., Receiver]
) -> None:
    """A receiver that fails twice gets the same signed body three times, at growing
    intervals; the delivery log shows each outcome."""
    endpoint = receiver(fail=[500, 503])
    hooks = WebhookStore(store)
    hook, secret = hooks.create(
        user_id="alice", url=endpoint.url, event_types=["job.finished"], progress_interval_s=10
    )
    job_id = tracker.start_job("talk.mp3", "audio", user_id="alice")
    tracker.update_progress(job_id, 50, None, "half", "alice")  # not subscribed: no delivery
    tracker.mark_completed(job_id, "done", "alice")
    other = tracker.start_job("x", "y", user_id="bob")
    tracker.mark_completed(other, "done", "bob")  # bob's: not alice's webhook's business
    sender = dispatcher(store, clock)

    async def run() -> None:
        assert await sender.tick() == 1
        [first] = hooks.deliveries(hook.id)
        assert (first.state, first.attempts, first.last_status) == ("pending", 1, 500)
        assert await sender.tick() == 0  # not due yet: backing off
        clock.advance((first.next_attempt_at - clock.now).total_seconds() + 0.01)
        assert await sender.tick() == 1
        [second] = hooks.deliveries(hook.id)
        assert second.last_status == 503
        assert second.next_attempt_at - clock.now >= timedelta(seconds=1)  # grown from ~0.5-1 s
        clock.advance(3600)
        assert await sender.tick() == 1
        await sender._client.aclose()

    asyncio.run(run())
    [done] = hooks.deliveries(hook.id)
    assert (done.state, done.attempts, done.last_status) == ("delivered", 3, 200)
    assert len(endpoint.requests) == 3
    bodies = {body for _, body in endpoint.requests}
    assert len(bodies) == 1
    headers, body = endpoint.requests[-1]
    assert verify_signature(secret, body, headers["X-Morag-Signature"])
    assert headers["X-Morag-Event"] == "job.finished"
    event = json.loads(body)
    assert (event["type"], event["job"]["id"], event["job"]["status"]) == (
        "job.finished",
        job_id,
        "FINISHED",
    )
    assert headers["X-Morag-Event-Id"] == event["id"]


def test_gives_up_after_max_attempts(
    store: SQLStore, tracker: JobTracker, clock: Clock, receiver: Callable[..., Receiver]
) -> None:
    """A receiver that never accepts: the delivery is failed after max_attempts."""
    endpoint = receiver(fail=[500] * 10)
    hooks = WebhookStore(store)
    hook, _ = hooks.create(
        user_id="alice", url=endpoint.url, event_types=["job.failed"], progress_interval_s=10
    )
    job_id = tracker.start_job("a", "b", user_id="alice")
    tracker.mark_failed(job_id, "boom", "alice")
    sender = dispatcher(store, clock, max_attempts=3)

    async def run() -> None:
        for _ in range(5):
            await sender.tick()
            clock.advance(7200)
        await sender._client.aclose()

    asyncio.run(run())
    [gone] = hooks.deliveries(hook.id)
    assert (gone.state, gone.attempts) == ("failed", 3)
    assert len(endpoint.requests) == 3


def test_progress_is_throttled_per_job_and_events_filtered(
    store: SQLStore, tracker: JobTracker, clock: Clock, receiver: Callable[..., Receiver]
) -> None:
    """job.progress at most once per interval per job; only subscribed types are sent;
    changes before the webhook existed are not."""
    endpoint = receiver()
    early = tracker.start_job("early", "doc", user_id="alice")
    tracker.update_progress(early, 10, None, "before", "alice")
    hooks = WebhookStore(store)
    hook, _ = hooks.create(
        user_id="alice",
        url=endpoint.url,
        event_types=["job.progress", "job.stalled"],
        progress_interval_s=60,
    )
    job_id = tracker.start_job("a", "b", user_id="alice")
    for percentage in (10, 20, 30, 40):
        clock.advance(1)
        tracker.update_progress(job_id, percentage, None, f"at {percentage}", "alice")
    sender = dispatcher(store, clock)

    async def run() -> None:
        await sender.tick()
        clock.advance(61)
        tracker.update_progress(job_id, 50, None, "at 50", "alice")
        tracker.mark_completed(job_id, "done", "alice")  # job.finished: not subscribed
        await sender.tick()
        await sender._client.aclose()

    asyncio.run(run())
    events = endpoint.events()
    assert [e["type"] for e in events] == ["job.progress", "job.progress"]
    assert [e["job"]["percentage"] for e in events] == [0, 50]  # created (PENDING 0), then 50
    assert all(e["job"]["id"] == job_id for e in events)
    assert len(hooks.deliveries(hook.id)) == 2


def test_routes_and_a_restart_between_event_and_delivery(
    tmp_path: Path, receiver: Callable[..., Receiver]
) -> None:
    """Register over HTTP (secret shown once); stop the server; the job finishes meanwhile;
    a new server on the same database delivers the event."""
    endpoint = receiver()
    database_url = f"sqlite:///{tmp_path / 'hooks.db'}"
    settings = Settings(
        database_url=database_url,
        rate_limit_per_second=0,
        key_cache_seconds=0,
        webhook_allow_private=True,
        webhook_poll_seconds=0.1,
    )
    store = SQLStore(database_url)
    _, key = create_key(store, user_id="alice", role=Role.USER, name=None, now=utcnow())
    _, worker = create_key(store, user_id="alice", role=Role.WORKER, name=None, now=utcnow())
    _, bob = create_key(store, user_id="bob", role=Role.USER, name=None, now=utcnow())
    auth = {"Authorization": f"Bearer {key}"}
    server = LiveServer(create_app(settings)).start()
    try:
        created = httpx.post(
            f"{server.url}/api/v1/webhooks",
            json={"url": endpoint.url, "events": ["job.finished"]},
            headers=auth,
        )
        assert created.status_code == 201, created.text
        hook = created.json()
        assert hook["secret"].startswith("whsec_")
        listed = httpx.get(f"{server.url}/api/v1/webhooks", headers=auth).json()
        assert [h["id"] for h in listed] == [hook["id"]]
        assert "secret" not in listed[0]
        as_worker = httpx.get(
            f"{server.url}/api/v1/webhooks", headers={"Authorization": f"Bearer {worker}"}
        )
        assert as_worker.status_code == 403
        as_bob = httpx.get(
            f"{server.url}/api/v1/webhooks/{hook['id']}/deliveries",
            headers={"Authorization": f"Bearer {bob}"},
        )
        assert as_bob.status_code == 404
    finally:
        server.stop()
    tracker = JobTracker(store=store)
    job_id = tracker.start_job("a", "b", user_id="alice")
    tracker.mark_completed(job_id, "done while no server ran", "alice")
    server = LiveServer(create_app(settings), port=server.port).start()
    try:
        deadline = time.monotonic() + 10
        while not endpoint.requests:
            assert time.monotonic() < deadline, "not delivered after the restart"
            time.sleep(0.05)
        headers, body = endpoint.requests[0]
        assert verify_signature(hook["secret"], body, headers["X-Morag-Signature"])
        assert json.loads(body)["job"]["id"] == job_id
        deliveries = httpx.get(
            f"{server.url}/api/v1/webhooks/{hook['id']}/deliveries", headers=auth
        ).json()
        deadline = time.monotonic() + 5
        while deliveries[0]["state"] != "delivered":
            assert time.monotonic() < deadline
            time.sleep(0.05)
            deliveries = httpx.get(
                f"{server.url}/api/v1/webhooks/{hook['id']}/deliveries", headers=auth
            ).json()
        assert deliveries[0]["attempts"] == 1
        gone = httpx.delete(f"{server.url}/api/v1/webhooks/{hook['id']}", headers=auth)
        assert gone.status_code == 204
        assert httpx.get(f"{server.url}/api/v1/webhooks", headers=auth).json() == []
    finally:
        server.stop()
        store.close()


def test_private_url_is_refused_by_default(tmp_path: Path) -> None:
    """Without the operator setting, a loopback URL is a 422 naming the url field."""
    store = SQLStore(f"sqlite:///{tmp_path / 'x.db'}")
    _, key = create_key(store, user_id="alice", role=Role.USER, name=None, now=utcnow())
    app = create_app(Settings(rate_limit_per_second=0), store=store)

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post(
                "/api/v1/webhooks",
                json={"url": "http://127.0.0.1:9/hook", "events": ["job.failed"]},
                headers={"Authorization": f"Bearer {key}"},
            )

    response = asyncio.run(run())
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "url"]
    store.close()


def test_two_replicas_deliver_each_event_once(
    store: SQLStore, tracker: JobTracker, clock: Clock, receiver: Callable[..., Receiver]
) -> None:
    """Two dispatchers (replicas) fill and send from one outbox at the same moment: each
    event is delivered once."""
    endpoint = receiver()
    hooks = WebhookStore(store)
    hooks.create(
        user_id="alice", url=endpoint.url, event_types=["job.finished"], progress_interval_s=10
    )
    finished = []
    for i in range(10):
        job_id = tracker.start_job(f"j{i}", "doc", user_id="alice")
        tracker.mark_completed(job_id, "done", "alice")
        finished.append(job_id)
    replicas = [dispatcher(store, clock), dispatcher(store, clock)]

    async def run() -> None:
        await asyncio.gather(*(replica.tick() for replica in replicas))
        await asyncio.gather(*(replica.tick() for replica in replicas))
        for replica in replicas:
            await replica._client.aclose()

    asyncio.run(run())
    delivered = [event["job"]["id"] for event in endpoint.events()]
    assert sorted(delivered) == sorted(finished)


def test_outbox_waits_for_a_missing_feed_id(
    store: SQLStore, tracker: JobTracker, clock: Clock, receiver: Callable[..., Receiver]
) -> None:
    """A feed id that is missing (its transaction has not committed yet) holds the outbox
    back, so the row cannot be skipped; after a few seconds it counts as rolled back."""
    endpoint = receiver()
    hooks = WebhookStore(store)
    hooks.create(
        user_id="alice", url=endpoint.url, event_types=["job.finished"], progress_interval_s=10
    )
    first = tracker.start_job("a", "doc", user_id="alice")
    tracker.mark_completed(first, "done", "alice")
    from sqlalchemy import text

    with store.transaction("make a gap") as conn:  # a later id, as if an earlier one were in flight
        last = int(conn.execute(text("SELECT max(id) FROM progress_events")).scalar() or 0)
        conn.execute(
            text(
                "INSERT INTO progress_events (id, job_id, user_id, status, percentage, message,"
                " attempt, timestamp, recorded_at) VALUES (:id, :job, 'alice', 'FINISHED', 100,"
                " 'late', 1, :now, :now)"
            ),
            {"id": last + 2, "job": first, "now": clock.now.replace(tzinfo=None)},
        )
    sender = dispatcher(store, clock)

    async def run() -> None:
        await sender.tick()
        assert [e["job"]["id"] for e in endpoint.events()] == [first]  # not past the gap
        clock.advance(6)
        await sender.tick()
        await sender._client.aclose()

    asyncio.run(run())
    assert len(endpoint.events()) == 2  # the gap was given up; the row after it went out
