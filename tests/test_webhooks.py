"""Webhooks: signatures, the address guard, the outbox filled from the feed, retries with
backoff to a real receiver on loopback that fails twice, throttled progress, and a server
restart between an event and its delivery."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from morag_progress import JobTracker
from morag_progress.api import create_app
from morag_progress.api.schemas import WebhookIn
from morag_progress.errors import InvalidInputError
from morag_progress.keys import Role
from morag_progress.models import utcnow
from morag_progress.settings import Settings
from morag_progress.store import SQLStore
from morag_progress.store.schema import live_messages
from morag_progress.store.webhooks import ALL_USERS, EVENT_TYPES
from morag_progress.webhooks import (
    Dispatcher,
    WebhookStore,
    check_url,
    masked_url,
    redact_url,
    sign,
    verify_signature,
)
from tests.conftest import Clock
from tests.helpers import stall
from tests.live import LiveServer
from tests.platforms import NTFY_TOKEN, SLACK_TOKEN, TELEGRAM_TOKEN, Platforms


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
                if status == 429:
                    self.send_header("Retry-After", "30")
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
    """verify_signature accepts the signature of the body at its time and nothing else: not
    another secret, not another body, not another time, not one older than the tolerance."""
    body = b'{"type": "job.finished"}'
    now = int(time.time())
    header = sign("whsec_x", body, now)
    assert header.startswith(f"t={now},v1=")
    assert verify_signature("whsec_x", body, header)
    assert not verify_signature("whsec_y", body, header)
    assert not verify_signature("whsec_x", body + b" ", header)
    assert not verify_signature("whsec_x", body, None)
    assert not verify_signature("whsec_x", body, header.replace(f"t={now}", f"t={now - 1}"))
    assert not verify_signature("whsec_x", body, header, now=now + 301)  # a replay, too late
    assert verify_signature("whsec_x", body, header, now=now + 299)
    assert verify_signature("whsec_x", body, f"t={now},v1=00,{header.split(',')[1]}")
    assert not verify_signature("whsec_x", body, "v1=abc")
    assert not verify_signature("whsec_x", body, "t=notanumber,v1=abc")


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
        "http://2130706433/",  # 127.0.0.1 written as one number
        "http://100.64.0.1/",  # shared address space (CGNAT)
        "http://198.18.0.1/",  # benchmarking
        "http://192.0.2.1/",  # documentation
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped loopback
        "http://[64:ff9b::7f00:1]/",  # NAT64 form of loopback
        "http://[2002:7f00:1::]/",  # 6to4 form of loopback
        "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",  # Teredo
        "http://[2001:db8::1]/",  # documentation
        "http://[fe80::1]/",
    ],
)
def test_private_addresses_are_refused(url: str) -> None:
    """Loopback, private, link-local and unspecified addresses are refused, naming the field;
    the operator setting allows them."""
    with pytest.raises(InvalidInputError) as info:
        check_url(url, allow_private=False)
    assert info.value.field == "url"
    check_url(url, allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.org/x",
        "http:///nohost",
        "not a url",
        "http://[::1",
        "http://a]/",
        "http://example.org:99999/",
        "http://u:p@[::1/",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    """Only http(s) URLs with a host."""
    with pytest.raises(InvalidInputError):
        check_url(url, allow_private=True)


def test_public_address_is_allowed() -> None:
    """A public address passes (an IP literal needs no lookup) and is what a sender uses."""
    assert check_url("https://93.184.216.34/hook", allow_private=False) == ["93.184.216.34"]
    assert check_url("https://[2606:2800:220:1::1]/", allow_private=False)


def test_credentials_in_a_url_never_reach_an_error_or_log() -> None:
    """A refused URL's password is redacted in the error."""
    with pytest.raises(InvalidInputError) as info:
        check_url("http://user:hunter2@127.0.0.1/hook", allow_private=False)
    assert "hunter2" not in str(info.value)
    assert (
        redact_url("https://u:p%40ss@example.org:8443/x?y=1")
        == "https://u:***@example.org:8443/x?y=1"
    )
    assert redact_url("https://example.org/x") == "https://example.org/x"


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
    assert (event["job"]["action"], event["job"]["actor"]) == ("report", tracker.actor)
    assert headers["X-Morag-Event-Id"] == event["id"]


def test_a_receiver_that_asks_to_wait_is_left_alone_that_long(
    store: SQLStore, tracker: JobTracker, clock: Clock, receiver: Callable[..., Receiver]
) -> None:
    """A 429 with ``Retry-After: 30`` is tried again no sooner than 30 s later (the backoff
    alone would have waited a second)."""
    endpoint = receiver(fail=[429])
    hooks = WebhookStore(store)
    hook, _ = hooks.create(
        user_id="alice", url=endpoint.url, event_types=["job.finished"], progress_interval_s=10
    )
    job_id = tracker.start_job("talk.mp3", "audio", user_id="alice")
    tracker.mark_completed(job_id, "done", "alice")
    sender = dispatcher(store, clock)

    async def run() -> None:
        assert await sender.tick() == 1
        [first] = hooks.deliveries(hook.id)
        assert first.last_status == 429
        assert first.next_attempt_at - clock.now >= timedelta(seconds=30)
        clock.advance(29)
        assert await sender.tick() == 0
        clock.advance(1.01)
        assert await sender.tick() == 1
        await sender._client.aclose()

    asyncio.run(run())
    assert hooks.deliveries(hook.id)[0].state == "delivered"


def test_gives_up_after_max_attempts(
    store: SQLStore, tracker: JobTracker, clock: Clock, receiver: Callable[..., Receiver]
) -> None:
    """A receiver that never accepts: the delivery is failed after max_attempts; each
    attempt's outcome is told (the metrics' webhook counter)."""
    endpoint = receiver(fail=[500] * 10)
    hooks = WebhookStore(store)
    hook, _ = hooks.create(
        user_id="alice", url=endpoint.url, event_types=["job.failed"], progress_interval_s=10
    )
    job_id = tracker.start_job("a", "b", user_id="alice")
    tracker.mark_failed(job_id, "boom", "alice")
    outcomes: list[str] = []
    sender = dispatcher(store, clock, max_attempts=3, on_outcome=outcomes.append)

    async def run() -> None:
        for _ in range(5):
            await sender.tick()
            clock.advance(7200)
        await sender._client.aclose()

    asyncio.run(run())
    [gone] = hooks.deliveries(hook.id)
    assert (gone.state, gone.attempts) == ("failed", 3)
    assert len(endpoint.requests) == 3
    assert outcomes == ["retry", "retry", "failed"]  # what the metrics count


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


def test_a_failing_webhook_pauses_then_is_tried_with_one_delivery(
    store: SQLStore, tracker: JobTracker, clock: Clock, receiver: Callable[..., Receiver]
) -> None:
    """After ``breaker_failures`` failed attempts in a row a webhook's deliveries wait (it
    holds no slot) for the pause; then one is tried, and its success lets the rest go."""
    endpoint = receiver(fail=[500, 500, 500])
    hooks = WebhookStore(store)
    hook, _ = hooks.create(
        user_id="alice", url=endpoint.url, event_types=["job.finished"], progress_interval_s=10
    )
    for i in range(5):
        tracker.mark_completed(tracker.start_job(f"d{i}", "doc", user_id="alice"), "ok", "alice")
    seconds = [0.0]
    outcomes: list[str] = []
    sender = dispatcher(
        store,
        clock,
        per_webhook=1,
        breaker_failures=3,
        breaker_pause=30,
        monotonic=lambda: seconds[0],
        on_outcome=outcomes.append,
    )

    async def run() -> list[int]:
        sent = [await sender.tick() for _ in range(3)]  # three failures: paused
        assert sender.paused(hook.id)
        clock.advance(3600)  # every delivery due again
        sent += [await sender.tick(), await sender.tick()]
        seconds[0] += 31  # the pause is over: one delivery tries the webhook again
        sent.append(await sender.tick())
        assert not sender.paused(hook.id)
        sent.append(await sender.tick())
        await sender._client.aclose()
        return sent

    assert asyncio.run(run()) == [1, 1, 1, 0, 0, 1, 1]
    assert outcomes == ["retry", "retry", "paused", "retry", "delivered", "delivered"]
    assert len(endpoint.requests) == 5


def test_a_jobs_waiting_progress_delivery_is_superseded_by_its_next(
    store: SQLStore, tracker: JobTracker, clock: Clock
) -> None:
    """A receiver that is away has one progress delivery a job waiting, the latest; every
    other event is kept. One superseded while it was being sent is not tried again."""
    job_id = tracker.start_job("a", "b", user_id="alice")
    other = tracker.start_job("c", "d", user_id="alice")
    hooks = WebhookStore(store)
    hook, _ = hooks.create(
        user_id="alice",
        url="http://127.0.0.1:9/hook",
        event_types=["job.progress", "job.finished"],
        progress_interval_s=0,
    )
    tracker.update_progress(job_id, 10, None, "at 10", "alice")
    hooks.fill(now=clock.advance(1))
    [first] = hooks.lease_due(now=clock.now)  # being sent
    for percentage in (20, 30):
        tracker.update_progress(job_id, percentage, None, f"at {percentage}", "alice")
        tracker.update_progress(other, percentage, None, f"at {percentage}", "alice")
        hooks.fill(now=clock.advance(1))
    assert hooks.superseded == 3
    hooks.record(first.delivery, status=500, error="x", now=clock.now, max_attempts=10)
    tracker.mark_completed(job_id, "done", "alice")
    hooks.fill(now=clock.advance(1))
    kept = {
        (d.job_id, json.loads(d.payload)["job"]["percentage"], d.event_type)
        for d in hooks.deliveries(hook.id)
        if d.state == "pending"
    }
    assert kept == {
        (job_id, 30, "job.progress"),
        (other, 30, "job.progress"),
        (job_id, 100, "job.finished"),
    }
    states = sorted(d.state for d in hooks.deliveries(hook.id))
    assert states == ["pending"] * 3 + ["superseded"] * 3


def test_due_deliveries_are_taken_user_by_user(
    store: SQLStore, tracker: JobTracker, clock: Clock
) -> None:
    """Bob's one delivery is not queued behind Alice's older ones, and no user takes more
    than ``per_user`` at a time."""
    hooks = WebhookStore(store)
    url = "http://127.0.0.1:9/hook"
    alices, _ = hooks.create(
        user_id="alice", url=url, event_types=["job.finished"], progress_interval_s=10
    )
    bobs, _ = hooks.create(
        user_id="bob", url=url, event_types=["job.finished"], progress_interval_s=10
    )
    for i in range(5):
        tracker.mark_completed(tracker.start_job(f"a{i}", "doc", user_id="alice"), "ok", "alice")
    hooks.fill(now=clock.advance(1))
    tracker.mark_completed(tracker.start_job("b", "doc", user_id="bob"), "ok", "bob")
    hooks.fill(now=clock.advance(1))
    first = hooks.lease_due(now=clock.now, limit=2)
    assert [lease.user_id for lease in first] == ["alice", "bob"]
    assert [lease.delivery.webhook_id for lease in first] == [alices.id, bobs.id]
    rest = hooks.lease_due(now=clock.now, limit=10, per_user=2)
    assert [lease.user_id for lease in rest] == ["alice", "alice"]
    hooks.release([lease.delivery for lease in rest], now=clock.now)
    assert len(hooks.lease_due(now=clock.now, limit=10)) == 4  # alice's released and the rest


def test_an_admin_webhook_throttles_progress_per_users_job(
    store: SQLStore, tracker: JobTracker, clock: Clock
) -> None:
    """Ids are unique per user: Alice's job x and Bob's job x each get their progress
    delivery on an admin's webhook, which hears both (Bob's was throttled as Alice's)."""
    hooks = WebhookStore(store)
    hook, _ = hooks.create(
        user_id=ALL_USERS,
        url="http://127.0.0.1:9/hook",
        event_types=["job.progress"],
        progress_interval_s=60,
    )
    for user in ("alice", "bob"):
        tracker.start_job("n", "t", user_id=user, job_id="x")
        tracker.update_progress("x", 50, None, "half", user)
    hooks.fill(now=clock.advance(1))
    made = hooks.deliveries(hook.id)  # each job's first change; its next within the interval
    assert [(d.job_id, d.state) for d in made] == [("x", "pending"), ("x", "pending")]


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
    _, key = store.create_key(user_id="alice", role=Role.USER, name=None, now=utcnow())
    _, worker = store.create_key(user_id="alice", role=Role.WORKER, name=None, now=utcnow())
    _, bob = store.create_key(user_id="bob", role=Role.USER, name=None, now=utcnow())
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
    _, key = store.create_key(user_id="alice", role=Role.USER, name=None, now=utcnow())
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


class HostileReceiver:
    """A raw TCP webhook endpoint on loopback that misbehaves: ``huge`` answers 200 with an
    endless body, ``trickle`` sends its answer a byte every half second, ``slow`` waits
    ``delay`` seconds before a 200, ``chatty`` answers 500 with a body full of secrets."""

    def __init__(self, mode: str, delay: float = 0.0) -> None:
        import socket

        self.mode, self.delay = mode, delay
        self.sent = 0
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.closed = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: Any) -> None:
        with conn:
            try:
                self.requests.append(conn.recv(65536))
                if self.mode == "huge":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 500000000\r\n\r\n")
                    chunk = b"x" * 65536
                    while not self.closed:
                        conn.sendall(chunk)
                        self.sent += len(chunk)
                elif self.mode == "trickle":
                    for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok":
                        conn.sendall(bytes([byte]))
                        time.sleep(0.5)
                elif self.mode == "slow":
                    time.sleep(self.delay)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                else:
                    body = b"database password is hunter2 " * 100
                    head = f"HTTP/1.1 500 Oops\r\nContent-Length: {len(body)}\r\n\r\n"
                    conn.sendall(head.encode() + body)
            except OSError:
                return

    def close(self) -> None:
        self.closed = True
        self.sock.close()


@pytest.fixture
def hostile() -> Iterator[Callable[..., HostileReceiver]]:
    made: list[HostileReceiver] = []

    def make(mode: str, delay: float = 0.0) -> HostileReceiver:
        made.append(HostileReceiver(mode, delay))
        return made[-1]

    yield make
    for r in made:
        r.close()


def _hook_with_events(
    store: SQLStore, tracker: JobTracker, url: str, jobs: int = 1
) -> tuple[WebhookStore, str]:
    hooks = WebhookStore(store)
    hook, _ = hooks.create(
        user_id="alice", url=url, event_types=["job.finished"], progress_interval_s=10
    )
    for i in range(jobs):
        job_id = tracker.start_job(f"j{i}", "doc", user_id="alice")
        tracker.mark_completed(job_id, "done", "alice")
    return hooks, hook.id


def _tick_once(sender: Dispatcher) -> float:
    """One tick of ``sender`` (its sends awaited), then closed; the seconds it took."""

    async def run() -> float:
        start = time.monotonic()
        await sender.tick()
        await sender.close()
        return time.monotonic() - start

    return asyncio.run(run())


def test_an_endless_answer_is_read_only_up_to_the_cap(
    store: SQLStore, tracker: JobTracker, clock: Clock, hostile: Callable[..., HostileReceiver]
) -> None:
    """A receiver answering 200 with a 500 MB body: the delivery counts once its status is
    in, and the sender stops reading after its cap (memory stays flat)."""
    endpoint = hostile("huge")
    hooks, hook_id = _hook_with_events(store, tracker, endpoint.url)
    sender = dispatcher(store, clock, timeout=5, max_response_bytes=64 * 1024)

    took = _tick_once(sender)
    [delivery] = hooks.deliveries(hook_id)
    assert (delivery.state, delivery.last_status) == ("delivered", 200)
    assert took < 4
    time.sleep(0.2)
    assert endpoint.sent < 16 * 1024 * 1024  # what socket buffers hold, not 500 MB


def test_a_trickling_receiver_is_cut_off_at_the_total_deadline(
    store: SQLStore, tracker: JobTracker, clock: Clock, hostile: Callable[..., HostileReceiver]
) -> None:
    """A byte every half second never trips a per-read timeout; the total deadline ends the
    delivery, which is retried later."""
    endpoint = hostile("trickle")
    hooks, hook_id = _hook_with_events(store, tracker, endpoint.url)
    sender = dispatcher(store, clock, timeout=1.5)

    took = _tick_once(sender)
    [delivery] = hooks.deliveries(hook_id)
    assert delivery.state == "pending"
    assert delivery.last_error == "no answer within the 1.5 s deadline"
    assert 1.4 < took < 3


def test_a_slow_receiver_does_not_hold_other_webhooks(
    store: SQLStore, tracker: JobTracker, clock: Clock, hostile: Callable[..., HostileReceiver]
) -> None:
    """Ten deliveries to a receiver that takes 3 s each, then one to a fast receiver: the fast
    one arrives at once; the slow one never has more than its share in flight."""
    slow = hostile("slow", delay=3)
    _hook_with_events(store, tracker, slow.url, jobs=10)
    fast = hostile("slow", delay=0)
    hooks, fast_id = _hook_with_events(store, tracker, fast.url)
    sender = dispatcher(store, clock, timeout=10, per_webhook=2, max_in_flight=8)

    async def run() -> float:
        task = asyncio.create_task(sender.run(0.05))
        start = time.monotonic()
        while [d.state for d in hooks.deliveries(fast_id)] != ["delivered"]:
            assert time.monotonic() - start < 2.5, "the fast webhook waited for the slow one"
            await asyncio.sleep(0.05)
        took = time.monotonic() - start
        assert len(slow.requests) <= 2  # its share, no more
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return took

    assert asyncio.run(run()) < 2.5


def test_the_receivers_answer_is_not_echoed_to_the_hook_owner(
    store: SQLStore, tracker: JobTracker, clock: Clock, hostile: Callable[..., HostileReceiver]
) -> None:
    """A failed delivery records the status in our words, never the receiver's body."""
    endpoint = hostile("chatty")
    hooks, hook_id = _hook_with_events(store, tracker, endpoint.url)
    sender = dispatcher(store, clock)

    _tick_once(sender)
    [delivery] = hooks.deliveries(hook_id)
    assert (delivery.last_status, delivery.last_error) == (500, "the receiver answered HTTP 500")


def test_delivery_connects_to_the_checked_address_with_the_original_host(
    store: SQLStore, tracker: JobTracker, clock: Clock, hostile: Callable[..., HostileReceiver]
) -> None:
    """A URL naming a host is sent to the address it resolved to when checked, with the
    host's name in the Host header and its user info as basic auth."""
    endpoint = hostile("slow")
    port = endpoint.url.split(":")[2].split("/")[0]
    hooks, hook_id = _hook_with_events(store, tracker, f"http://me:pw@localhost:{port}/hook")
    sender = dispatcher(store, clock)

    _tick_once(sender)
    [delivery] = hooks.deliveries(hook_id)
    assert delivery.state == "delivered"
    head = endpoint.requests[0].decode("latin-1").lower()
    assert f"host: localhost:{port}" in head
    assert "authorization: basic " in head


def test_a_running_jobs_progress_carries_its_estimate(
    store: SQLStore, tracker: JobTracker, clock: Clock, receiver: Callable[..., Receiver]
) -> None:
    """A job.progress delivery of a running job carries the live estimate as of when it was
    made: seconds left, the p10-p90 range and the basis."""
    endpoint = receiver()
    WebhookStore(store).create(
        user_id="alice", url=endpoint.url, event_types=["job.progress"], progress_interval_s=1
    )
    job_id = tracker.start_job("a", "b", user_id="alice")
    sender = dispatcher(store, clock)

    async def run() -> None:
        for percentage in (10, 20, 30):
            clock.advance(2)
            tracker.update_progress(job_id, percentage, None, f"at {percentage}", "alice")
            await sender.tick()
        await sender._client.aclose()

    asyncio.run(run())
    last = endpoint.events()[-1]["job"]
    assert last["percentage"] == 30
    assert last["eta_basis"] == "live"
    assert last["eta_low_seconds"] < last["eta_seconds"] < last["eta_high_seconds"]
    assert 10 < last["eta_seconds"] < 30  # 70% left at 5 %/s: 14 s


@pytest.mark.parametrize(("fmt", "field"), [("slack", "text"), ("discord", "content")])
def test_chat_formats_send_one_line_of_text(
    store: SQLStore,
    tracker: JobTracker,
    clock: Clock,
    receiver: Callable[..., Receiver],
    fmt: str,
    field: str,
) -> None:
    """A slack or discord webhook gets its service's incoming-webhook body: one line naming
    the job, its status, percentage and message, which can mention no one and make no link
    (Slack's control characters escaped; Discord's mentions off)."""
    endpoint = receiver()
    WebhookStore(store).create(
        user_id="alice",
        url=endpoint.url,
        event_types=["job.failed", "job.finished"],
        progress_interval_s=10,
        format=fmt,
    )
    failed = tracker.start_job("manual.pdf", "pdf", user_id="alice")
    tracker.update_progress(failed, 40, None, "Extracting", "alice")
    tracker.mark_failed(failed, "out of memory", "alice")
    sneaky = tracker.start_job("@everyone <!channel>", "pdf", user_id="alice")
    tracker.mark_completed(sneaky, "<https://evil.example|click> & more", "alice")
    sender = dispatcher(store, clock)

    async def run() -> None:
        await sender.tick()
        await sender._client.aclose()

    asyncio.run(run())
    bodies = endpoint.events()  # sent at once: in either order
    first = next(b for b in bodies if "manual.pdf" in b[field])
    second = next(b for b in bodies if "manual.pdf" not in b[field])
    assert first[field] == f"❌ manual.pdf ({failed}): FAILED 40%: out of memory"
    if fmt == "slack":
        assert list(second) == ["text"]
        assert "&lt;!channel&gt;" in second["text"]
        assert "&lt;https://evil.example|click&gt; &amp; more" in second["text"]
    else:
        assert second["allowed_mentions"] == {"parse": []}
        assert "@everyone <!channel>" in second["content"]


def test_a_stall_says_how_long_the_worker_was_silent(
    store: SQLStore, tracker: JobTracker, clock: Clock, receiver: Callable[..., Receiver]
) -> None:
    """A job.stalled delivery keeps the worker's last message and says how long it had been
    silent: ``silent_seconds`` in JSON, "(no report for N s)" in a chat line."""
    plain, chat = receiver(), receiver()
    hooks = WebhookStore(store)
    hooks.create(user_id="alice", url=plain.url, event_types=["job.stalled"], progress_interval_s=1)
    hooks.create(
        user_id="alice",
        url=chat.url,
        event_types=["job.stalled"],
        progress_interval_s=1,
        format="slack",
    )
    job_id = tracker.start_job("scan.pdf", "pdf", user_id="alice")
    tracker.update_progress(job_id, 30, None, "reading page 3", "alice")
    clock.advance(75)
    stall(tracker, job_id, "alice")
    sender = dispatcher(store, clock)

    async def run() -> None:
        await sender.tick()
        await sender._client.aclose()

    asyncio.run(run())
    [event] = plain.events()
    assert (event["job"]["message"], event["job"]["silent_seconds"]) == ("reading page 3", 75)
    [line] = chat.events()
    assert line["text"].endswith("STALLED 30%: reading page 3 (no report for 75 s)")


def test_a_flapping_job_cannot_flood_a_channel(
    store: SQLStore, tracker: JobTracker, clock: Clock, receiver: Callable[..., Receiver]
) -> None:
    """A chat webhook gets at most 30 deliveries an hour by default: the rest of the hour's
    are dropped (and counted), except a job's end, which is always told; an hour later it
    gets deliveries again. A json webhook has no cap unless asked."""
    chat, plain = receiver(), receiver()
    hooks = WebhookStore(store)
    slack, _ = hooks.create(
        user_id="alice",
        url=chat.url,
        event_types=["job.stalled", "job.progress", "job.failed"],
        progress_interval_s=1,
        format="slack",
    )
    assert slack.max_per_hour == 30
    json_hook, _ = hooks.create(
        user_id="alice", url=plain.url, event_types=["job.stalled"], progress_interval_s=1
    )
    assert json_hook.max_per_hour is None
    jobs = [tracker.start_job(f"flap-{i}", "pdf", user_id="alice") for i in range(40)]
    for job_id in jobs:
        tracker.update_progress(job_id, 10, None, "working", "alice")
        stall(tracker, job_id, "alice")
    tracker.mark_failed(jobs[0], "gave up", "alice")  # over the cap, but an end is told
    outcomes: list[str] = []
    sender = dispatcher(store, clock, on_outcome=outcomes.append)

    async def run() -> None:
        for _ in range(25):  # each tick sends at most 4 per webhook at once
            await sender.tick()
        clock.advance(3601)
        late = tracker.start_job("after an hour", "pdf", user_id="alice")
        tracker.update_progress(late, 10, None, "working", "alice")
        for _ in range(3):
            await sender.tick()
        await sender._client.aclose()

    asyncio.run(run())
    texts = [e["text"] for e in chat.events()]
    assert len(texts) == 32  # 30 in the first hour and the failure; the next hour's first
    assert any("FAILED" in text and "gave up" in text for text in texts)
    assert "after an hour" in texts[-1]
    assert outcomes.count("dropped") == 40 * 2 - 30  # a progress (throttled) and a stall each
    assert len(plain.requests) == 40  # no cap on json unless asked


def test_a_chat_webhook_over_http(tmp_path: Path) -> None:
    """POST with ``format: slack`` answers with the format and its default hourly cap; an
    unknown format or a cap out of range is a 422 naming the field."""
    store = SQLStore(f"sqlite:///{tmp_path / 'x.db'}")
    _, key = store.create_key(user_id="alice", role=Role.USER, name=None, now=utcnow())
    app = create_app(Settings(rate_limit_per_second=0, webhook_allow_private=True), store=store)
    url = "http://127.0.0.1:9/hook"

    async def post(**fields: object) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.post(
                "/api/v1/webhooks",
                json={"url": url, "events": ["job.failed"], **fields},
                headers={"Authorization": f"Bearer {key}"},
            )

    try:
        made = asyncio.run(post(format="slack")).json()
        assert (made["format"], made["max_per_hour"]) == ("slack", 30)
        capped = asyncio.run(post(format="discord", max_per_hour=5)).json()
        assert capped["max_per_hour"] == 5
        for fields, field in (
            ({"format": "teams"}, "format"),
            ({"max_per_hour": 0}, "max_per_hour"),
        ):
            refused = asyncio.run(post(**fields))
            assert refused.status_code == 422
            assert refused.json()["detail"][0]["loc"] == ["body", field]
    finally:
        store.close()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://hooks.slack.com/services/T0/B0/s3cr3t", "https://hooks.slack.com/services/***"),
        ("https://discord.com/api/webhooks/1/t0k3n", "https://discord.com/api/***"),
        ("https://u:pw@example.org:8443/hook?key=s3cr3t", "https://example.org:8443/hook?***"),
        ("http://[::1]:9000/", "http://[::1]:9000/"),
        ("https://example.org", "https://example.org/"),
    ],
)
def test_a_listed_url_shows_the_endpoint_and_no_secret(url: str, shown: str) -> None:
    """A webhook's URL as listings show it: its endpoint, never what may be a secret."""
    assert masked_url(url) == shown


@pytest.fixture
def platforms() -> Iterator[Platforms]:
    fake = Platforms()
    yield fake
    fake.close()


_LIVE: dict[str, tuple[str, str, str | None]] = {  # path, token, channel
    "slack": ("/slack/api", SLACK_TOKEN, "#builds"),
    "telegram": ("/telegram", TELEGRAM_TOKEN, "-1001"),
    "ntfy": ("/ntfy/jobs", NTFY_TOKEN, None),
}


def _live_hook(store: SQLStore, platforms: Platforms, platform: str, **options: Any) -> str:
    path, token, channel = _LIVE[platform]
    hook, _ = WebhookStore(store).create(
        user_id="alice",
        url=platforms.url + path,
        event_types=list(EVENT_TYPES),
        progress_interval_s=1.0,
        format=platform,
        token=token,
        channel=channel,
        **options,
    )
    assert hook.live
    return hook.id


async def _send_until(store: SQLStore, done: Callable[[], bool], timeout: float = 30) -> None:
    """Run a dispatcher as a server does (every 0.1 s) until ``done()`` and until what it
    sends is over (a sender stopped between the platform's answer and noting it would post
    that message again next time, as a server stopped mid-send does)."""
    sender = Dispatcher(WebhookStore(store), allow_private=True)
    task = asyncio.create_task(sender.run(0.1))

    def sending() -> bool:
        with store.connection("test") as conn:
            busy = live_messages.c.busy_until.is_not(None)
            return conn.execute(select(live_messages.c.job_id).where(busy)).first() is not None

    try:
        deadline = time.monotonic() + timeout
        while not done() or sending():
            assert time.monotonic() < deadline, "the live message did not reach its state"
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_a_job_of_ten_thousand_reports_is_one_message_edited_about_once_a_second(
    sqlite_tracker: JobTracker, platforms: Platforms
) -> None:
    """10,000 reports over about 5 s make exactly one message on each platform (Slack,
    Telegram, ntfy: a webhook each), edited at most about once a second (each webhook's pace,
    3,600 an hour), ending in the job's final state; a 429 on each last edit delays it by the
    platform's wait and loses nothing."""
    tracker = sqlite_tracker
    store = tracker.store
    for platform in _LIVE:
        _live_hook(store, platforms, platform, max_per_hour=3600)
    job_id = tracker.start_job("scan.pdf", "pdf", user_id="alice")
    ended: list[float] = []

    def work() -> None:
        for i in range(10_000):
            tracker.update_progress(job_id, i // 100, None, f"page {i}", "alice")
            if i % 200 == 0:
                time.sleep(0.1)
        for platform in _LIVE:
            platforms.limit(platform, retry_after=2)
        tracker.mark_completed(job_id, "all pages read", "alice")
        ended.append(time.monotonic())

    def finished() -> bool:
        shown = [platforms.of(platform) for platform in _LIVE]
        return all(messages and "FINISHED" in messages[0].text for messages in shown)

    async def run() -> None:
        worker = asyncio.create_task(asyncio.to_thread(work))
        await _send_until(store, finished)
        await worker

    asyncio.run(run())
    for platform in _LIVE:
        messages = platforms.of(platform)
        assert len(messages) == 1, platform  # one message, however many reports
        times = [at for at, _ in messages[0].texts]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # About once a second at most (seen at the receiver: one answer may come a little
        # late, the next on time), and about once a second while the job moves.
        assert min(gaps) >= 0.5, platform
        assert len(gaps) <= (times[-1] - times[0]) / 0.95, platform
        assert max(gaps[:-1]) <= 2.5, platform
        assert len(times) >= 5, platform
        final = messages[0].text
        assert "100% · FINISHED" in final
        assert "all pages read" in final
        assert "scan.pdf" in final
        assert times[-1] - ended[0] >= 2  # the 429's wait was kept, and the end still told
        sent = [r for r in platforms.requests if r[0].startswith(f"/{platform}")]
        assert len(sent) == len(times) + 1  # every send but the one refused made an edit


def test_a_live_chat_webhook_over_http(tmp_path: Path) -> None:
    """A live webhook (slack with a bot token, telegram, ntfy) is made over HTTP with its
    platform's defaults (URL, pace, a 1 s progress interval); its token is never shown again;
    a token or channel where none belongs, one missing, or a malformed one is a 422 that names
    the field."""
    store = SQLStore(f"sqlite:///{tmp_path / 'x.db'}")
    _, key = store.create_key(user_id="alice", role=Role.USER, name=None, now=utcnow())
    app = create_app(Settings(rate_limit_per_second=0, webhook_allow_private=True), store=store)

    async def call(method: str, **fields: object) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            body = {"events": ["job.progress", "job.finished"], **fields}
            return await client.request(
                method,
                "/api/v1/webhooks",
                json=body if method == "POST" else None,
                headers={"Authorization": f"Bearer {key}"},
            )

    # No name resolves here, so the platforms' default URLs are read from the body's model.
    default = WebhookIn.model_validate(
        {"events": ["job.progress"], "format": "telegram", "token": TELEGRAM_TOKEN, "channel": "1"}
    )
    assert (default.url, default.progress_interval_s) == ("https://api.telegram.org", 1.0)
    slack_default = {"events": ["job.progress"], "format": "slack", "token": "x", "channel": "C"}
    assert WebhookIn.model_validate(slack_default).url == "https://slack.com/api"
    api = "http://127.0.0.1:9/api"
    try:
        slack = asyncio.run(
            call("POST", format="slack", url=api, token=SLACK_TOKEN, channel="#builds")
        )
        assert slack.status_code == 201, slack.text
        made = slack.json()
        assert (made["live"], made["channel"], made["max_per_hour"]) == (True, "#builds", 3000)
        assert made["progress_interval_s"] == 1.0
        telegram = asyncio.run(
            call("POST", format="telegram", url=api, token=TELEGRAM_TOKEN, channel="-1001")
        ).json()
        assert telegram["max_per_hour"] == 1200
        ntfy = asyncio.run(
            call("POST", format="ntfy", url="http://127.0.0.1:9/jobs", progress_interval_s=5)
        ).json()
        assert (ntfy["live"], ntfy["max_per_hour"], ntfy["progress_interval_s"]) == (True, 720, 5)
        listed = asyncio.run(call("GET"))
        assert SLACK_TOKEN not in listed.text
        assert TELEGRAM_TOKEN.split(":")[1] not in listed.text
        for fields, named in (
            ({"format": "slack", "url": api, "token": SLACK_TOKEN}, "channel:"),
            ({"format": "telegram", "token": "nope", "channel": "-1"}, "token:"),
            ({"format": "telegram", "channel": "-1"}, "token:"),
            ({"format": "json", "url": "http://127.0.0.1:9/x", "token": "t"}, "token, channel:"),
            ({"format": "ntfy"}, "url:"),
            ({"format": "ntfy", "url": "http://127.0.0.1:9/x", "channel": "c"}, "channel:"),
            ({"format": "slack", "url": api, "token": "xoxb 1", "channel": "#b"}, "token"),
        ):
            refused = asyncio.run(call("POST", **fields))
            assert refused.status_code == 422, fields
            assert named in refused.json()["message"], (fields, refused.json()["message"])
    finally:
        store.close()


def test_a_deleted_message_is_posted_again_and_two_jobs_share_the_pace(
    sqlite_tracker: JobTracker, platforms: Platforms
) -> None:
    """A job's message deleted in the channel is posted anew at its next change (Slack's
    message_not_found); two jobs of one webhook each keep their own message, and share its
    pace (here 1,800 sends an hour: 2 s apart, whichever job)."""
    tracker = sqlite_tracker
    store = tracker.store
    _live_hook(store, platforms, "slack", max_per_hour=1800)
    one = tracker.start_job("one.pdf", "pdf", user_id="alice")
    two = tracker.start_job("two.pdf", "pdf", user_id="alice")

    def shown(text: str, count: int) -> Callable[[], bool]:
        return lambda: sum(text in m.text for m in platforms.of("slack")) >= count

    async def run() -> None:
        tracker.update_progress(one, 10, None, "first", "alice")
        tracker.update_progress(two, 10, None, "first", "alice")
        await _send_until(store, shown("first", 2))
        with platforms.lock:
            platforms.messages.clear()  # someone deleted both messages
        tracker.update_progress(one, 20, None, "second", "alice")
        tracker.update_progress(two, 20, None, "second", "alice")
        await _send_until(store, shown("second", 2))

    asyncio.run(run())
    messages = platforms.of("slack")
    assert len(messages) == 2
    assert sorted(m.text.splitlines()[0] for m in messages) == [
        f"⏳ one.pdf ({one})",
        f"⏳ two.pdf ({two})",
    ]
    sends = sorted(at for m in platforms.messages.values() for at, _ in m.texts)
    assert all(b - a >= 1.9 for a, b in itertools.pairwise(sends))
    updates = [p for p, _, _ in platforms.requests if p.endswith("chat.update")]
    assert len(updates) == 2  # each tried its edit, was told the message was gone, posted
