"""Webhooks from a real server to hostile receivers: a trickling receiver is cut off at the
deadline without delaying another user's delivery, special-purpose addresses are refused, and
deliveries are signed with their timestamp."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from morag_progress.webhooks import verify_signature
from tests.security.conftest import Target
from tests.test_webhooks import HostileReceiver, Receiver


@pytest.fixture
def receivers() -> Iterator[list[HostileReceiver | Receiver]]:
    made: list[HostileReceiver | Receiver] = []
    yield made
    for receiver in made:
        receiver.close()


def _finish_job(t: Target, auth: dict[str, str]) -> str:
    job_id = str(t.create(auth).json()["id"])
    with t.client() as client:
        client.put(f"/api/v1/remote-jobs/{job_id}/result", json={"success": True}, headers=auth)
    return job_id


def _hook(t: Target, auth: dict[str, str], url: str) -> dict[str, str]:
    with t.client() as client:
        response = client.post(
            "/api/v1/webhooks", json={"url": url, "events": ["job.finished"]}, headers=auth
        )
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_a_trickling_receiver_holds_only_its_own_delivery(
    sqlite_target: Callable[..., Target], receivers: list[HostileReceiver | Receiver]
) -> None:
    """Alice's receiver trickles its answer; Bob's answers at once. Bob's delivery arrives
    within a second or two, signed with a fresh timestamp; Alice's ends at the deadline with a
    short error of the server's own words."""
    t = sqlite_target(WEBHOOK_ALLOW_PRIVATE="true", WEBHOOK_TIMEOUT_SECONDS="2")
    trickle = HostileReceiver("trickle")
    good = Receiver()
    receivers += [trickle, good]
    alice, bob = t.key("alice"), t.key("bob")
    slow_hook = _hook(t, alice, trickle.url)
    bobs_hook = _hook(t, bob, good.url)
    for _ in range(3):
        _finish_job(t, alice)
    start = time.monotonic()
    bobs_job = _finish_job(t, bob)
    while not good.requests:
        assert time.monotonic() - start < 2.5, "bob's delivery waited behind alice's receiver"
        time.sleep(0.05)
    headers, body = good.requests[0]
    assert headers["X-Morag-Signature"].startswith("t=")
    assert verify_signature(bobs_hook["secret"], body, headers["X-Morag-Signature"])
    assert bobs_job.encode() in body
    deadline = time.monotonic() + 10
    with t.client() as client:
        while True:
            deliveries = client.get(
                f"/api/v1/webhooks/{slow_hook['id']}/deliveries", headers=alice
            ).json()
            errors = {d["last_error"] for d in deliveries if d["attempts"]}
            if errors:
                break
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert errors == {"no answer within the 2 s deadline"}


@pytest.mark.parametrize(
    "url",
    [
        "http://[64:ff9b::7f00:1]/hook",
        "http://[2002:7f00:1::]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://100.64.0.1/hook",
        "http://198.18.0.1/hook",
        "http://2130706433/hook",
    ],
)
def test_disguised_loopback_and_special_ranges_are_refused(
    sqlite_target: Callable[..., Target], url: str
) -> None:
    """NAT64, 6to4 and mapped forms of loopback, CGNAT and benchmarking ranges are a 422
    naming the url field, with the server's default settings."""
    t = sqlite_target()
    alice = t.key("alice")
    with t.client() as client:
        response = client.post(
            "/api/v1/webhooks", json={"url": url, "events": ["job.failed"]}, headers=alice
        )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "url"]


def test_webhooks_per_user_are_capped(sqlite_target: Callable[..., Target]) -> None:
    """Past its allowance of webhooks a user gets 429; another user is not affected."""
    t = sqlite_target(MAX_WEBHOOKS_PER_USER="2", WEBHOOK_ALLOW_PRIVATE="true")
    alice, bob = t.key("alice"), t.key("bob")
    url = "http://127.0.0.1:9/hook"
    assert [_hook_status(t, alice, url) for _ in range(3)] == [201, 201, 429]
    assert _hook_status(t, bob, url) == 201


def _hook_status(t: Target, auth: dict[str, str], url: str) -> int:
    with t.client() as client:
        body = {"url": url, "events": ["job.finished"]}
        return client.post("/api/v1/webhooks", json=body, headers=auth).status_code


def test_one_users_black_holes_do_not_hold_up_anothers_deliveries(
    sqlite_target: Callable[..., Target], receivers: list[HostileReceiver | Receiver]
) -> None:
    """Alice has eight webhooks to a receiver that never answers and a dozen finished jobs:
    with four deliveries a webhook, her 96 deliveries could fill every slot the server has, and
    each is then tried again oldest first. Bob's deliveries still arrive within a second or so
    of his job finishing, each time."""
    t = sqlite_target(WEBHOOK_ALLOW_PRIVATE="true", WEBHOOK_TIMEOUT_SECONDS="3")
    black_hole = HostileReceiver("slow", delay=3600)
    good = Receiver()
    receivers += [black_hole, good]
    alice, bob = t.key("alice"), t.key("bob")
    for _ in range(8):
        _hook(t, alice, black_hole.url)
    _hook(t, bob, good.url)
    for _ in range(12):
        _finish_job(t, alice)
    deadline = time.monotonic() + 5
    while len(black_hole.requests) < 8:  # her deliveries are in flight
        assert time.monotonic() < deadline
        time.sleep(0.05)
    waited = []
    for _ in range(3):
        before = len(good.requests)
        start = time.monotonic()
        _finish_job(t, bob)
        while len(good.requests) == before:
            assert time.monotonic() - start < 10, "bob's delivery never came"
            time.sleep(0.02)
        waited.append(time.monotonic() - start)
        time.sleep(1)
    assert max(waited) < 1.5, waited
