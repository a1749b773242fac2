"""Webhooks: signing, the address policy, and the dispatcher that sends the outbox.

A user registers a URL for events (``job.finished``, ``job.failed``, ``job.cancelled``,
``job.stalled``, ``job.straggler`` (a distributed run's rank behind its siblings, on the run),
``job.at_risk`` (likely to miss its deadline, or running longer than usual), and
``job.progress``, throttled per job). The outbox of deliveries is filled
from the change feed and kept in the database (``store/webhooks.py``); the :class:`Dispatcher`
in every server fills it, leases what is due, sends it and records the outcome, retrying with
exponential backoff and jitter up to ``webhook_max_attempts``. Sending happens apart from the
write path, which never waits for a webhook.

Each delivery is JSON signed Stripe-style: ``X-Morag-Signature: t=<unix time>,v1=<hex>``, the
HMAC-SHA256 of ``"<t>." + body`` with the webhook's secret, so a receiver can refuse replays of
old deliveries; with ``X-Morag-Event-Id``, ``X-Morag-Event`` and ``X-Morag-Timestamp`` (the same
``t``). A receiver checks it with :func:`verify_signature` (or the same few lines of its own).

Sending is bounded (``docs/limits.md``): one total deadline per
delivery, at most ``max_response_bytes`` of the answer read, a cap on deliveries in flight and
on those of one webhook, so one slow receiver cannot hold the others; the address is checked and
then connected to as checked (pinned), and every special-purpose range is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from morag_progress import chat
from morag_progress._threads import run_to_completion
from morag_progress.errors import InvalidInputError
from morag_progress.models import utcnow
from morag_progress.store.webhooks import (
    EVENT_TYPES,
    Delivery,
    Lease,
    Webhook,
    WebhookStore,
)

__all__ = [
    "EVENT_TYPES",
    "Dispatcher",
    "Webhook",
    "WebhookStore",
    "check_url",
    "masked_url",
    "redact_url",
    "refused_address",
    "sign",
    "verify_signature",
]

logger = logging.getLogger(__name__)

_MAX_CIRCUITS = 10_000
"""Webhooks whose failures the dispatcher remembers at most (the oldest is forgotten)."""

SIGNATURE_TOLERANCE_S = 300
"""How old (or how far ahead) a signed timestamp :func:`verify_signature` accepts by default."""


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Morag-Signature`` value for ``body`` sent at ``timestamp`` (Unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(
    secret: str,
    body: bytes,
    header: str | None,
    *,
    tolerance: float = SIGNATURE_TOLERANCE_S,
    now: float | None = None,
) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` and its timestamp is within
    ``tolerance`` seconds of ``now`` (default: the current time); compared in constant time."""
    if not header:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isascii() and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


# Ranges no webhook may reach, beyond what ``ipaddress`` calls non-global: shared address space
# (CGNAT), benchmarking, documentation, and every IPv6 form that embeds or translates an IPv4
# address (mapped, compatible, NAT64, 6to4, Teredo), which could reach loopback in disguise.
_REFUSED_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/96",
        "::ffff:0:0/96",
        "64:ff9b::/96",
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "2002::/16",
        "3fff::/20",
        "5f00::/16",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)


def refused_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for an address a webhook must not reach unless the operator allows private ones."""
    if not address.is_global or address.is_multicast:
        return True
    return any(address in network for network in _REFUSED_NETWORKS)


def check_url(url: str, *, allow_private: bool) -> list[str]:
    """Refuse what a webhook must not call: not http(s), no host, or (unless allowed) a name
    that resolves to any private, loopback, link-local or special-purpose address. Returns
    the addresses the name resolves to, which a sender connects to as they were checked."""
    try:
        parts = urlsplit(url)
        named = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018  (raises for a port that is not a number in range)
    except ValueError as e:
        raise InvalidInputError("url", "must be a well-formed URL", redact_url(url)) from e
    if not named:
        raise InvalidInputError("url", "must be an http(s) URL with a host", redact_url(url))
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError, ValueError) as e:
        raise InvalidInputError("url", "must name a host that resolves", redact_url(url)) from e
    addresses = [str(info[4][0]) for info in infos]
    if not allow_private and any(
        refused_address(ipaddress.ip_address(address.partition("%")[0])) for address in addresses
    ):
        raise InvalidInputError(
            "url",
            "must not point at a private, loopback, link-local or special-purpose address "
            "(MORAG_PROGRESS_WEBHOOK_ALLOW_PRIVATE allows it)",
            redact_url(url),
        )
    return addresses


def redact_url(url: str) -> str:
    """``url`` without the password of its user info (for logs and error messages)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url.rpartition("@")[2] if "@" in url else url  # user info cut, whatever it was
    if password is None:
        return url
    netloc = f"{parts.username}:***@" + parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=netloc))


def masked_url(url: str) -> str:
    """``url`` as a listing shows it: enough to tell endpoints apart (scheme, host, port and
    the path's first segment), none of what may be a secret (user info, the rest of the path,
    the query: Slack's and Discord's tokens are in the path)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "***"
    netloc = (f"[{host}]" if ":" in host else host) + (f":{port}" if port is not None else "")
    segments = [segment for segment in parts.path.split("/") if segment]
    path = "/" + "/".join([*segments[:1], *(["***"] if len(segments) > 1 else [])])
    return urlunsplit((parts.scheme, netloc, path, "***" if parts.query else "", ""))


def _pinned(url: str, address: str) -> tuple[str, dict[str, str], dict[str, Any], Any]:
    """The request for ``url`` sent to ``address``: the URL with the address as its host, the
    original ``Host`` header, TLS checked against the original name, and its user info as
    basic auth."""
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    if parts.port is not None:
        host += f":{parts.port}"
    target = urlunsplit((parts.scheme, host, parts.path or "/", parts.query, ""))
    named = parts.hostname or ""
    named = f"[{named}]" if ":" in named else named
    headers = {"Host": named + (f":{parts.port}" if parts.port is not None else "")}
    extensions: dict[str, Any] = {}
    if parts.scheme == "https":
        extensions["sni_hostname"] = parts.hostname
    auth = None
    if parts.username is not None:
        auth = httpx.BasicAuth(unquote(parts.username), unquote(parts.password or ""))
    return target, headers, extensions, auth


@dataclass(slots=True)
class _Circuit:
    """A webhook's recent failures: ``failures`` in a row, and while they are too many, the
    time its deliveries wait until (``open_until``), doubled each time it opens again."""

    failures: int = 0
    open_until: float = 0.0
    pause: float = 0.0


class Dispatcher:
    """Fills the outbox from the feed and sends what is due, until cancelled.

    At most ``max_in_flight`` deliveries are sent at once, at most ``per_webhook`` of them to
    one webhook and ``per_user`` to one user's webhooks; each has ``timeout`` seconds in all
    (connect, send, answer) and reads at most ``max_response_bytes`` of the answer. Due
    deliveries are taken user by user, each user's oldest first. A webhook whose last
    ``breaker_failures`` attempts all failed is paused (its circuit opens) for
    ``breaker_pause`` seconds, doubled each time it fails again up to ``breaker_max_pause``,
    then tried with one delivery. So a receiver that is slow or gone holds few slots and only
    for a while, and one user's receivers cannot hold up another user's deliveries.
    """

    def __init__(
        self,
        hooks: WebhookStore,
        *,
        allow_private: bool = False,
        max_attempts: int = 10,
        timeout: float = 10.0,
        max_in_flight: int = 32,
        per_webhook: int = 4,
        per_user: int = 8,
        breaker_failures: int = 5,
        breaker_pause: float = 30.0,
        breaker_max_pause: float = 600.0,
        max_response_bytes: int = 64 * 1024,
        clock: Callable[[], datetime] = utcnow,
        monotonic: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
        on_outcome: Callable[[str], object] | None = None,
    ) -> None:
        self.hooks = hooks
        self.on_outcome = on_outcome
        """Told what became of each attempt (``delivered``, ``retry``, ``failed``), of each
        delivery dropped over a webhook's hourly cap (``dropped``) or replaced by a newer one
        (``superseded``), and of each webhook paused after repeated failures (``paused``):
        metrics."""
        self.allow_private = allow_private
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.per_webhook = per_webhook
        self.per_user = per_user
        self.breaker_failures = breaker_failures
        self.breaker_pause = breaker_pause
        self.breaker_max_pause = breaker_max_pause
        self.max_response_bytes = max_response_bytes
        self._clock = clock
        self._monotonic = monotonic
        self._client = httpx.AsyncClient(
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
            # No connection is kept for another delivery: the pool knows connections by address,
            # not by name, and two webhooks' hosts may share an address (and a TLS check made
            # for one name must not carry another's payload).
            limits=httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=0),
        )
        self._in_flight: dict[asyncio.Task[None], Lease] = {}
        self._circuits: dict[str, _Circuit] = {}
        """Webhooks whose last attempt failed (at most ``_MAX_CIRCUITS``)."""
        self._paced: dict[str, float] = {}
        """Live webhooks, and when (monotonic) each may send next: kept within the
        platform's limits, and held back as long as it asked after a 429."""

    async def run(self, interval: float) -> None:
        """Start due deliveries every ``interval`` seconds, without waiting for them."""
        try:
            while True:
                try:
                    await self._start_due()
                except Exception:  # the dispatcher outlives any one failure
                    logger.warning("webhook dispatch failed; trying again", exc_info=True)
                await asyncio.sleep(interval)
        finally:
            await self.close()

    async def tick(self) -> int:
        """Fill the outbox, send every delivery due now that there is room for, and wait for
        them; returns how many were sent."""
        started = await self._start_due()
        await asyncio.gather(*started)
        return len(started)

    async def close(self) -> None:
        """Stop the deliveries in flight (their leases run out: they are sent again later)."""
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        await self._client.aclose()

    def paused(self, webhook_id: str) -> bool:
        """Whether ``webhook_id``'s deliveries wait now, after repeated failures."""
        circuit = self._circuits.get(webhook_id)
        return circuit is not None and circuit.open_until > self._monotonic()

    async def _start_due(self) -> list[asyncio.Task[None]]:
        dropped, superseded = self.hooks.dropped, self.hooks.superseded
        await run_to_completion(self.hooks.fill, now=self._clock())
        if self.on_outcome is not None:
            for _ in range(self.hooks.dropped - dropped):  # over a webhook's hourly cap
                self.on_outcome("dropped")
            for _ in range(self.hooks.superseded - superseded):
                self.on_outcome("superseded")
        room = self.max_in_flight - len(self._in_flight)
        if room <= 0:
            return []
        by_hook = Counter(lease.delivery.webhook_id for lease in self._in_flight.values())
        by_user = Counter(lease.user_id for lease in self._in_flight.values())
        hook_cap = {hook: self._hook_cap(hook) for hook in self._circuits}
        busy = {hook for hook, n in by_hook.items() if n >= hook_cap.get(hook, self.per_webhook)}
        busy |= {hook for hook, cap in hook_cap.items() if cap == 0}
        mono = self._monotonic()
        self._paced = {hook: at for hook, at in self._paced.items() if at > mono}
        busy |= self._paced.keys()
        busy |= {lease.delivery.webhook_id for lease in self._in_flight.values() if lease.spacing}
        now = self._clock()
        due = await run_to_completion(
            self.hooks.lease_due,
            now=now,
            limit=room,
            lease_s=max(60.0, 3 * self.timeout),  # outlives the send, so no one else takes it
            per_webhook=self.per_webhook,
            per_user=self.per_user,
            exclude=busy,
            exclude_users={user for user, n in by_user.items() if n >= self.per_user},
        )
        started, unsent = [], []
        for lease in due:
            hook = lease.delivery.webhook_id
            if (
                by_hook[hook] >= hook_cap.get(hook, self.per_webhook)
                or by_user[lease.user_id] >= self.per_user
                or (lease.spacing is not None and (by_hook[hook] or hook in self._paced))
            ):
                unsent.append(lease.delivery)  # its webhook or user is at its share now
                continue
            if lease.spacing is not None:  # a live message: one send at a time, paced
                self._paced[hook] = mono + lease.spacing
            by_hook[hook] += 1
            by_user[lease.user_id] += 1
            task = asyncio.create_task(self._send(lease.delivery))
            self._in_flight[task] = lease
            task.add_done_callback(self._done)
            started.append(task)
        await run_to_completion(self.hooks.release, unsent, now=now)
        return started

    def _hook_cap(self, webhook_id: str) -> int:
        """How many deliveries ``webhook_id`` may have in flight: none while paused, one to
        try it again after a pause, else ``per_webhook``."""
        circuit = self._circuits[webhook_id]
        if circuit.open_until > self._monotonic():
            return 0
        return 1 if circuit.failures >= self.breaker_failures else self.per_webhook

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("webhook delivery failed", exc_info=task.exception())

    def _count(self, webhook_id: str, *, failed: bool) -> None:
        """Note an attempt's outcome in the webhook's circuit: a success closes it; the
        ``breaker_failures``-th failure in a row opens it, and each later one again, for
        twice as long as the last time."""
        if not failed:
            self._circuits.pop(webhook_id, None)
            return
        circuit = self._circuits.get(webhook_id)
        if circuit is None:
            if len(self._circuits) >= _MAX_CIRCUITS:
                self._circuits.pop(next(iter(self._circuits)))
            circuit = self._circuits[webhook_id] = _Circuit()
        if circuit.open_until > self._monotonic():
            return  # paused already: the attempts under way when it opened are ending
        circuit.failures += 1
        if circuit.failures >= self.breaker_failures:
            circuit.pause = min(self.breaker_max_pause, max(self.breaker_pause, 2 * circuit.pause))
            circuit.open_until = self._monotonic() + circuit.pause
            if self.on_outcome is not None:
                self.on_outcome("paused")

    async def _send(self, delivery: Delivery) -> None:
        target = await run_to_completion(self.hooks.target, delivery.webhook_id)
        if target is None:
            return  # the webhook was deleted meanwhile
        if target.live:
            await self._send_live(delivery, target)
            return
        body = delivery.payload.encode()
        now = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "morag-progress-webhooks",
            "X-Morag-Signature": sign(target.secret, body, now),
            "X-Morag-Event-Id": f"evt_{delivery.event_id}",
            "X-Morag-Event": delivery.event_type,
            "X-Morag-Timestamp": str(now),
        }
        sent = await self._call(chat.Call("POST", target.url, headers, body))
        if isinstance(sent, str):
            await self._record(delivery, None, sent)
            return
        error = f"the receiver answered HTTP {sent.status}" if sent.status >= 300 else None
        wait = chat.retry_after_seconds(sent.headers, sent.status, time.time())
        await self._record(delivery, sent.status, error, wait)

    async def _record(
        self,
        delivery: Delivery,
        status: int | None,
        error: str | None,
        retry_after: float | None = None,
    ) -> None:
        self._count(delivery.webhook_id, failed=error is not None)
        outcome = await run_to_completion(
            self.hooks.record,
            delivery,
            status=status,
            error=error,
            now=self._clock(),
            max_attempts=self.max_attempts,
            retry_after=retry_after,
        )
        if self.on_outcome is not None:
            self.on_outcome(outcome)

    async def _send_live(self, delivery: Delivery, target: chat.Target) -> None:
        """Post the job's live message, or edit it: one sender a job at a time (the claim),
        a message that cannot be edited any more posted anew, a 429's wait kept by the whole
        webhook (the platform limits the channel or the bot, not the job)."""
        now = self._clock()
        claim, ref = await run_to_completion(
            self.hooks.claim_live, delivery, now=now, hold_s=max(60.0, 3 * self.timeout)
        )
        if claim == "busy":  # another sender is at this job's message: this waits its turn
            await run_to_completion(self.hooks.release, [delivery], now=now + timedelta(seconds=1))
            return
        if claim == "stale":  # the message shows a later change already
            await run_to_completion(self.hooks.drop, delivery)
            return
        key = chat.message_key(delivery.webhook_id, delivery.job_user_id, delivery.job_id)
        answer, status = chat.Answer(False, error="not sent"), None
        try:
            message = chat.Message.from_json(delivery.payload)
            for _ in range(2):  # an edit of a message gone, then its post
                sent = await self._call(chat.request(target, message, ref, key=key))
                if isinstance(sent, str):
                    answer = chat.Answer(False, error=sent)
                    break
                status = sent.status
                answer = chat.read_answer(
                    target,
                    sent.status,
                    sent.body,
                    sent.headers,
                    editing=ref is not None,
                    now=time.time(),
                )
                if not answer.gone:
                    break
                ref = None
            if answer.ok and answer.ref is not None:
                ref = answer.ref
        except Exception:  # a bug of ours: told, counted as a failed attempt, never stuck
            logger.warning("live message delivery failed", exc_info=True)
            answer = chat.Answer(False, error="could not build or read the platform's request")
        finally:
            await run_to_completion(
                self.hooks.release_live, delivery, ref=ref, now=self._clock(), shown=answer.ok
            )
        if answer.retry_after is not None:
            self._paced[delivery.webhook_id] = max(
                self._paced.get(delivery.webhook_id, 0.0), self._monotonic() + answer.retry_after
            )
        if answer.ok:
            status = status if status is not None and 200 <= status < 300 else 200
        elif status is not None and 200 <= status < 300:
            status = 502  # a 200 that says it failed (Slack's ok: false): not delivered
        await self._record(
            delivery, status, None if answer.ok else answer.error, answer.retry_after
        )

    async def _call(self, call: chat.Call) -> _Answer | str:
        """One request within the deadline: the receiver's answer (at most
        ``max_response_bytes`` of it), or a short error of our own words (never the
        receiver's answer, nor the URL's credentials)."""
        try:
            async with asyncio.timeout(self.timeout):
                # Checked at each send, and connected to as checked: a name that resolves
                # elsewhere a moment later (DNS rebinding) is never asked again.
                # Not run_to_completion: the deadline must hold over a lookup that hangs, and
                # this thread holds no connection of ours.
                addresses = await asyncio.to_thread(
                    check_url, call.url, allow_private=self.allow_private
                )
                return await self._exchange(addresses, call)
        except InvalidInputError as e:
            return e.rule
        except (TimeoutError, httpx.TimeoutException):
            return f"no answer within the {self.timeout:g} s deadline"
        except httpx.HTTPError as e:
            return f"could not deliver ({type(e).__name__})"

    async def _exchange(self, addresses: list[str], call: chat.Call) -> _Answer:
        """Send to the first of ``addresses`` (at most three) that takes the connection;
        read at most ``max_response_bytes`` of the answer."""
        candidates = list(dict.fromkeys(addresses))[:3]
        for i, address in enumerate(candidates):
            target, host, extensions, auth = _pinned(call.url, address)
            try:
                async with self._client.stream(
                    call.method,
                    target,
                    content=call.body,
                    headers={"User-Agent": "morag-progress-webhooks", **call.headers, **host},
                    extensions=extensions,
                    auth=auth,
                ) as response:
                    body = bytearray()
                    # Decoded (a platform's answer may be gzipped), and still bounded: read a
                    # chunk at a time up to the cap.
                    async for chunk in response.aiter_bytes():
                        body += chunk[: self.max_response_bytes - len(body)]
                        if len(body) >= self.max_response_bytes:
                            break  # what a receiver says past this is not our business
                    return _Answer(response.status_code, bytes(body), response.headers)
            except httpx.ConnectError:
                if i == len(candidates) - 1:
                    raise
        raise httpx.ConnectError("no address to connect to")


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    body: bytes
    headers: httpx.Headers
