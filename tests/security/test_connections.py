"""Connections and streams against a real server: idle and slow sockets are closed, the number
of connections and of one key's streams is capped, tokens spend the key's rate, failed
sign-ins are limited per address, and a revoked key's open streams close."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx
import pytest

from morag_progress.models import utcnow
from tests.security.conftest import Target


def _connect(t: Target) -> socket.socket:
    parts = urlsplit(t.url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    return sock


def _closed_within(sock: socket.socket, seconds: float) -> bytes:
    """What the server sent before closing the connection, waiting at most ``seconds``."""
    sock.settimeout(seconds)
    received = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            break
        except ConnectionResetError:
            return received  # closed while we were still sending: the answer may be lost
        if not chunk:
            return received
        received += chunk
    pytest.fail(f"the server kept the connection open for {seconds} s")


def test_idle_and_slow_header_connections_are_closed(sqlite_target: Callable[..., Target]) -> None:
    """A connection that sends nothing, or its headers a byte at a time, is closed at the
    header deadline (408), while a normal request on another connection is served."""
    t = sqlite_target(HEADER_TIMEOUT_SECONDS="1")
    idle = _connect(t)
    slow = _connect(t)
    start = time.monotonic()

    def trickle() -> None:
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
            try:
                slow.send(bytes([byte]))
            except OSError:
                return
            time.sleep(0.2)

    threading.Thread(target=trickle, daemon=True).start()
    with t.client() as client:
        assert client.get("/healthz").status_code == 200
    assert b"408" in _closed_within(idle, 5)
    assert b"408" in _closed_within(slow, 5)
    assert time.monotonic() - start < 4
    idle.close()
    slow.close()


def test_a_body_sent_a_byte_at_a_time_is_cut_off(sqlite_target: Callable[..., Target]) -> None:
    """A request whose headers came in time but whose body trickles is closed with 408 at the
    body deadline, without a key."""
    t = sqlite_target(BODY_TIMEOUT_SECONDS="1.5")
    with _connect(t) as slow:
        slow.sendall(
            b"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n"
            b"Content-Type: application/json\r\n\r\n{"
        )
        start = time.monotonic()

        def trickle() -> None:
            for _ in range(20):
                time.sleep(0.3)
                try:
                    slow.send(b" ")
                except OSError:
                    return

        threading.Thread(target=trickle, daemon=True).start()
        assert b"408" in _closed_within(slow, 5)
        assert time.monotonic() - start < 3


def test_an_early_answer_does_not_lift_the_deadlines(sqlite_target: Callable[..., Target]) -> None:
    """A request answered before its body is in (404 here) keeps its body deadline, and the
    next request's headers get theirs: sending them a byte at a time is cut off at 408."""
    t = sqlite_target(HEADER_TIMEOUT_SECONDS="1", BODY_TIMEOUT_SECONDS="1")
    with _connect(t) as sock:
        sock.sendall(b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        sock.settimeout(2)
        assert sock.recv(4096).startswith(b"HTTP/1.1 404")
        sock.sendall(b"defghij")  # the rest of the body, after the answer
        start = time.monotonic()

        def trickle() -> None:
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 20:
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    return
                time.sleep(0.3)

        threading.Thread(target=trickle, daemon=True).start()
        assert b"408" in _closed_within(sock, 5)
        assert time.monotonic() - start < 3


def test_a_kept_alive_connection_idle_after_its_answer_is_closed(
    sqlite_target: Callable[..., Target],
) -> None:
    """After a request with a body is answered, the connection waits for the next request's
    headers: it is closed at the header deadline, not the (much later) body deadline."""
    t = sqlite_target(HEADER_TIMEOUT_SECONDS="1", BODY_TIMEOUT_SECONDS="30")
    with _connect(t) as sock:
        start = time.monotonic()
        sock.sendall(b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        sock.settimeout(2)
        assert sock.recv(4096).startswith(b"HTTP/1.1 404")
        assert b"408" in _closed_within(sock, 5)
        assert time.monotonic() - start < 4


def test_a_pipelined_stream_outlives_the_header_deadline(
    sqlite_target: Callable[..., Target],
) -> None:
    """Two requests sent at once, the second an event stream: the stream is served past the
    header deadline (the deadline is for headers still to come, not for a running answer)."""
    t = sqlite_target(HEADER_TIMEOUT_SECONDS="1")
    auth = t.key("alice")["Authorization"]
    with _connect(t) as sock:
        sock.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: "
            + auth.encode()
            + b"\r\n\r\n"
        )
        sock.settimeout(0.5)
        received = b""
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            assert chunk, "the stream was closed at the header deadline"
            received += chunk
    assert b"event: snapshot" in received


def test_connections_over_the_cap_are_refused_at_once(
    sqlite_target: Callable[..., Target],
) -> None:
    """With the cap reached by idle sockets, one more connection is answered 503 and closed;
    once they are gone the server serves again."""
    t = sqlite_target(MAX_CONNECTIONS="20", HEADER_TIMEOUT_SECONDS="30")
    held = [_connect(t) for _ in range(20)]
    try:
        time.sleep(0.3)
        with _connect(t) as extra:  # answered before it says anything
            assert _closed_within(extra, 5).startswith(b"HTTP/1.1 503")
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 5
    while True:
        try:
            with t.client() as client:
                if client.get("/healthz").status_code == 200:
                    break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not serve again"
        time.sleep(0.1)


def test_oversized_headers_are_refused(sqlite_target: Callable[..., Target]) -> None:
    """Request headers over the cap end in 400 and a closed connection, not a growing buffer."""
    t = sqlite_target(MAX_HEADER_BYTES="8192")
    with _connect(t) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        try:
            for i in range(200):
                sock.sendall(f"X-Pad-{i}: {'a' * 100}\r\n".encode())
        except OSError:
            pass  # closed while we were still sending: what we want
        answer = _closed_within(sock, 5)
    # Closed (not kept reading); a 400 unless the reset of our unread bytes overtook it.
    assert answer.startswith(b"HTTP/1.1 400") or answer == b""


def _open_stream(client: httpx.Client, path: str, headers: dict[str, str]) -> httpx.Response:
    request = client.build_request("GET", path, headers=headers)
    return client.send(request, stream=True)


def test_one_key_cannot_hold_more_than_its_streams(sqlite_target: Callable[..., Target]) -> None:
    """With two streams open, a key's third (by key or by its token) is 429 with Retry-After;
    another key is not affected; closing one frees its place."""
    t = sqlite_target(MAX_STREAMS_PER_KEY="2")
    alice, bob = t.key("alice"), t.key("bob")
    with t.client() as client:
        token = client.post("/api/v1/stream-tokens", headers=alice).json()["token"]
        first = _open_stream(client, "/api/v1/events", alice)
        second = _open_stream(client, f"/api/v1/events?token={token}", {})
        assert (first.status_code, second.status_code) == (200, 200)
        third = client.get(f"/api/v1/events?token={token}")
        assert third.status_code == 429
        assert "2 event streams open" in third.json()["detail"]
        assert int(third.headers["Retry-After"]) >= 1
        other = _open_stream(client, "/api/v1/events", bob)
        assert other.status_code == 200
        first.close()
        deadline = time.monotonic() + 5
        while True:
            again = _open_stream(client, "/api/v1/events", alice)
            if again.status_code == 200:
                break
            again.close()
            assert time.monotonic() < deadline, "a closed stream's place was not freed"
            time.sleep(0.1)
        for response in (second, other, again):
            response.close()


def test_stream_tokens_spend_the_keys_rate(sqlite_target: Callable[..., Target]) -> None:
    """Requests with ``?token=`` count against the key's rate limit like requests with the
    key: past the burst they are 429."""
    t = sqlite_target(RATE_LIMIT_PER_SECOND="3")
    alice = t.key("alice")
    with t.client() as client:
        job = client.post(
            "/api/v1/jobs", json={"document_name": "a", "document_type": "b"}, headers=alice
        ).json()["id"]
        time.sleep(1.2)  # the bucket refills
        token = client.post("/api/v1/stream-tokens", headers=alice).json()["token"]
        client.put(f"/api/v1/remote-jobs/{job}/result", json={"success": True}, headers=alice)
        statuses = [
            client.get(f"/api/v1/jobs/{job}/events?token={token}").status_code for _ in range(8)
        ]
    assert 429 in statuses, statuses
    assert statuses[0] == 200


def test_failed_sign_ins_are_limited_per_address(sqlite_target: Callable[..., Target]) -> None:
    """After the allowed failures, the address gets 429 (with Retry-After) instead of 401,
    for keys and for stream tokens alike."""
    t = sqlite_target(AUTH_FAILURES_PER_MINUTE="5")
    with t.client() as client:
        # A forwarded-for header does not make a new client: no proxy is trusted by default.
        statuses = [
            client.get(
                "/api/v1/jobs",
                headers={"Authorization": f"Bearer mpk_x{i}", "X-Forwarded-For": f"10.0.0.{i}"},
            ).status_code
            for i in range(5)
        ]
        assert statuses == [401] * 5
        blocked = client.get("/api/v1/jobs", headers={"Authorization": "Bearer mpk_wrong"})
        assert blocked.status_code == 429
        assert int(blocked.headers["Retry-After"]) >= 1
        assert client.get("/api/v1/events?token=mps_guess").status_code == 429


def test_a_revoked_keys_open_streams_close(sqlite_target: Callable[..., Target]) -> None:
    """Streams opened with a key, and with a token of that key, end within a few seconds of
    the key being revoked."""
    t = sqlite_target(STREAM_RECHECK_SECONDS="0.5", KEY_CACHE_SECONDS="0.2")
    alice = t.key("alice")
    [key] = t.store.list_keys(user_id="alice")
    with t.client() as client:
        token = client.post("/api/v1/stream-tokens", headers=alice).json()["token"]
        streams = [
            _open_stream(client, "/api/v1/events", alice),
            _open_stream(client, f"/api/v1/events?token={token}", {}),
        ]
        assert [s.status_code for s in streams] == [200, 200]
        ended: list[float] = []

        def drain(response: httpx.Response) -> None:
            for _ in response.iter_lines():
                pass
            ended.append(time.monotonic())

        threads = [threading.Thread(target=drain, args=(s,), daemon=True) for s in streams]
        for thread in threads:
            thread.start()
        time.sleep(1)
        assert not ended  # alive while the key works
        revoked_at = time.monotonic()
        assert t.store.revoke_key(key.id, now=utcnow())
        for thread in threads:
            thread.join(10)
        assert len(ended) == 2, "a revoked key's stream kept running"
        assert max(ended) - revoked_at < 4
