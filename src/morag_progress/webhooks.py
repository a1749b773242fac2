"""Webhooks: signed deliveries of job events, made from the change feed through an outbox.

A user registers a URL for events (``job.finished``, ``job.failed``, ``job.cancelled``,
``job.stalled``, and ``job.progress``, throttled per job). The server's dispatcher reads the feed
from a stored cursor and, in the same transaction that moves the cursor, writes one delivery row
per matching webhook (the outbox): a restart loses nothing, and a replica that crashes mid-way
leaves the work to the next. Due deliveries are leased, sent, and recorded with their outcome;
failures are retried with exponential backoff and jitter up to ``webhook_max_attempts``. Sending
happens apart from the write path, which never waits for a webhook.

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
import random
import secrets
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx
import orjson
from sqlalchemy import and_, func, select, update

from morag_progress._threads import run_to_completion
from morag_progress.errors import InvalidInputError
from morag_progress.models import JobStatus, utcnow
from morag_progress.store import SQLStore
from morag_progress.store.schema import events, webhook_cursor, webhook_deliveries, webhooks

__all__ = [
    "EVENT_TYPES",
    "Dispatcher",
    "Webhook",
    "WebhookStore",
    "check_url",
    "redact_url",
    "refused_address",
    "sign",
    "verify_signature",
]

logger = logging.getLogger(__name__)

EVENT_TYPES = ("job.progress", "job.stalled", "job.finished", "job.failed", "job.cancelled")
_TYPE_OF_STATUS = {
    JobStatus.FINISHED.value: "job.finished",
    JobStatus.FAILED.value: "job.failed",
    JobStatus.CANCELLED.value: "job.cancelled",
    JobStatus.STALLED.value: "job.stalled",
}
ALL_USERS = "*"
"""The owner of an admin's webhook: it hears of every user's jobs."""


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
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
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
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@" + parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=netloc))


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


@dataclass(frozen=True, slots=True)
class Webhook:
    """A registered endpoint (its secret is shown once, when it is made)."""

    id: str
    user_id: str
    url: str
    events: list[str]
    progress_interval_s: float
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event for one webhook, and what became of it."""

    id: int
    webhook_id: str
    event_id: int
    event_type: str
    job_id: str
    payload: str
    state: str
    attempts: int
    next_attempt_at: datetime
    last_status: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


def _webhook(row: Any) -> Webhook:
    return Webhook(
        id=row["id"],
        user_id=row["user_id"],
        url=row["url"],
        events=list(row["events"]),
        progress_interval_s=row["progress_interval_s"],
        created_at=row["created_at"],
    )


def _delivery(row: Any) -> Delivery:
    return Delivery(**{name: row[name] for name in Delivery.__dataclass_fields__})


class WebhookStore:
    """The webhook tables, in the jobs' database."""

    def __init__(self, store: SQLStore) -> None:
        self.store = store

    def create(
        self, *, user_id: str, url: str, event_types: list[str], progress_interval_s: float
    ) -> tuple[Webhook, str]:
        """A new webhook and its secret."""
        secret = "whsec_" + secrets.token_urlsafe(32)
        row = {
            "id": "wh_" + uuid.uuid4().hex[:24],
            "user_id": user_id,
            "url": url,
            "events": sorted(set(event_types)),
            "secret": secret,
            "progress_interval_s": progress_interval_s,
            "after_event_id": self.store.last_event_id(),
            "created_at": utcnow(),
        }
        with self.store.transaction("create webhook") as conn:
            conn.execute(webhooks.insert().values(row))
        return _webhook(row), secret

    def list_for(self, user_id: str | None) -> list[Webhook]:
        stmt = select(webhooks).order_by(webhooks.c.created_at)
        if user_id is not None:
            stmt = stmt.where(webhooks.c.user_id == user_id)
        with self.store.connection("list webhooks") as conn:
            return [_webhook(row) for row in conn.execute(stmt).mappings()]

    def get(self, webhook_id: str, user_id: str | None) -> Webhook | None:
        """One webhook, if it is ``user_id``'s (any, for None)."""
        stmt = select(webhooks).where(webhooks.c.id == webhook_id)
        if user_id is not None:
            stmt = stmt.where(webhooks.c.user_id == user_id)
        with self.store.connection("read webhook") as conn:
            row = conn.execute(stmt).mappings().first()
        return None if row is None else _webhook(row)

    def delete(self, webhook_id: str, user_id: str | None) -> bool:
        stmt = webhooks.delete().where(webhooks.c.id == webhook_id)
        if user_id is not None:
            stmt = stmt.where(webhooks.c.user_id == user_id)
        with self.store.transaction("delete webhook") as conn:
            gone = bool(conn.execute(stmt).rowcount)
            if gone:
                conn.execute(
                    webhook_deliveries.delete().where(
                        webhook_deliveries.c.webhook_id == webhook_id,
                        webhook_deliveries.c.state == "pending",
                    )
                )
            return gone

    def deliveries(self, webhook_id: str, *, limit: int = 100) -> list[Delivery]:
        d = webhook_deliveries.c
        stmt = (
            select(webhook_deliveries)
            .where(d.webhook_id == webhook_id)
            .order_by(d.id.desc())
            .limit(limit)
        )
        with self.store.connection("list deliveries") as conn:
            return [_delivery(row) for row in conn.execute(stmt).mappings()]

    # -- the outbox ------------------------------------------------------------------------------

    def fill(self, *, now: datetime, batch: int = 1000) -> int:
        """Turn feed rows after the cursor into deliveries, moving the cursor in the same
        transaction. Returns how many deliveries were made."""
        made = 0
        with self.store.transaction("fill webhook outbox") as conn:
            cursor = conn.execute(
                select(webhook_cursor.c.event_id).where(webhook_cursor.c.name == "outbox")
            ).scalar()
            start = int(cursor or 0)
            # The feed's end first, the webhooks second: a webhook made in between starts
            # after that end (its after_event_id), so skipping to it below loses nothing.
            end = conn.execute(select(func.max(events.c.id))).scalar() or 0
            if end <= start:
                return 0
            hooks = [_row for _row in conn.execute(select(webhooks)).mappings()]
            if hooks:
                rows = (
                    conn.execute(
                        select(events)
                        .where(events.c.id > start, events.c.id <= end)
                        .order_by(events.c.id)
                        .limit(batch)
                    )
                    .mappings()
                    .all()
                )
                rows = _contiguous(rows, start, now)
                if not rows:
                    return 0
                end = rows[-1]["id"]
            else:
                rows = []  # nobody to tell: skip to the end without reading the feed
            last_progress: dict[tuple[str, str], datetime] = {}
            for event in rows:
                event_type = _TYPE_OF_STATUS.get(event["status"], "job.progress")
                for hook in hooks:
                    if not _wants(hook, event, event_type):
                        continue
                    if event_type == "job.progress" and self._throttled(
                        conn, hook, event, now, last_progress
                    ):
                        continue
                    conn.execute(
                        self.store.dialect_insert()(webhook_deliveries)
                        .values(_new_delivery(hook, event, event_type, now))
                        .on_conflict_do_nothing()
                    )
                    made += 1
            values = {"name": "outbox", "event_id": end}
            conn.execute(
                self.store.dialect_insert()(webhook_cursor)
                .values(values)
                .on_conflict_do_update(
                    index_elements=["name"], set_={"event_id": values["event_id"]}
                )
            )
        return made

    @staticmethod
    def _throttled(
        conn: Any,
        hook: Any,
        event: Any,
        now: datetime,
        last_progress: dict[tuple[str, str], datetime],
    ) -> bool:
        key = (hook["id"], event["job_id"])
        if key not in last_progress:
            d = webhook_deliveries.c
            previous = conn.execute(
                select(func.max(d.created_at)).where(
                    d.webhook_id == hook["id"],
                    d.job_id == event["job_id"],
                    d.event_type == "job.progress",
                )
            ).scalar()
            if previous is not None:
                last_progress[key] = previous
        previous = last_progress.get(key)
        if previous is not None and (now - previous).total_seconds() < hook["progress_interval_s"]:
            return True
        last_progress[key] = now
        return False

    def lease_due(
        self,
        *,
        now: datetime,
        limit: int = 20,
        lease_s: float = 60,
        per_webhook: int | None = None,
        exclude: Collection[str] = (),
    ) -> list[Delivery]:
        """Take up to ``limit`` due deliveries for ``lease_s`` seconds (another replica skips
        them meanwhile; one whose sender died is due again after the lease): oldest first, at
        most ``per_webhook`` of any one webhook, none of the webhooks in ``exclude``."""
        d = webhook_deliveries.c
        conditions = [d.state == "pending", d.next_attempt_at <= now]
        if exclude:
            conditions.append(d.webhook_id.not_in(sorted(exclude)))
        if per_webhook is None:
            due = select(d.id).where(*conditions).order_by(d.next_attempt_at, d.id)
        else:
            rank = (
                func.row_number()
                .over(partition_by=d.webhook_id, order_by=(d.next_attempt_at, d.id))
                .label("rank")
            )
            ranked = select(d.id, d.next_attempt_at, rank).where(*conditions).subquery()
            r = ranked.c
            due = select(r.id).where(r.rank <= per_webhook).order_by(r.next_attempt_at, r.id)
        due = due.limit(limit)
        with self.store.transaction("lease deliveries") as conn:
            ids = [row[0] for row in conn.execute(due)]
            if not ids:
                return []
            c = webhook_deliveries.c
            leased = conn.execute(
                update(webhook_deliveries)
                .where(and_(c.id.in_(ids), c.state == "pending", c.next_attempt_at <= now))
                .values(next_attempt_at=now + timedelta(seconds=lease_s))
                .returning(*webhook_deliveries.c)
            ).mappings()
            return sorted((_delivery(row) for row in leased), key=lambda x: x.id)

    def secret_and_url(self, webhook_id: str) -> tuple[str, str] | None:
        stmt = select(webhooks.c.secret, webhooks.c.url).where(webhooks.c.id == webhook_id)
        with self.store.connection("read webhook") as conn:
            row = conn.execute(stmt).first()
        return None if row is None else (row[0], row[1])

    def record(
        self,
        delivery: Delivery,
        *,
        status: int | None,
        error: str | None,
        now: datetime,
        max_attempts: int,
    ) -> None:
        """Write what became of one attempt: delivered, retried later, or failed for good."""
        attempts = delivery.attempts + 1
        values: dict[str, Any] = {"attempts": attempts, "last_status": status, "last_error": error}
        if status is not None and 200 <= status < 300:
            values.update(state="delivered", delivered_at=now)
        elif attempts >= max_attempts:
            values.update(state="failed")
        else:
            # Exponential backoff with jitter: 1 s, 2 s, 4 s ... capped at an hour.
            wait = min(3600.0, 2.0 ** (attempts - 1)) * random.uniform(0.5, 1.0)
            values.update(next_attempt_at=now + timedelta(seconds=wait))
        with self.store.transaction("record delivery") as conn:
            conn.execute(
                update(webhook_deliveries)
                .where(webhook_deliveries.c.id == delivery.id)
                .values(values)
            )


_GAP_SECONDS = 5.0


def _contiguous(rows: Sequence[Any], start: int, now: datetime) -> list[Any]:
    """The rows up to the first missing id. Feed ids are handed out before their transactions
    commit (on PostgreSQL, id 7 may commit after id 8): a missing id may still arrive, so the
    cursor stops before it, unless the row after it is older than a few seconds, which makes
    the missing one a rolled-back insert."""
    kept = []
    expected = start + 1
    for row in rows:
        if row["id"] != expected and (now - row["recorded_at"]).total_seconds() < _GAP_SECONDS:
            break
        kept.append(row)
        expected = row["id"] + 1
    return kept


def _wants(hook: Any, event: Any, event_type: str) -> bool:
    if event["id"] <= hook["after_event_id"] or event_type not in hook["events"]:
        return False
    return bool(hook["user_id"] == ALL_USERS or hook["user_id"] == event["user_id"])


def _new_delivery(hook: Any, event: Any, event_type: str, now: datetime) -> dict[str, Any]:
    payload = {
        "id": f"evt_{event['id']}",
        "type": event_type,
        "created_at": event["recorded_at"].isoformat(),
        "job": {
            "id": event["job_id"],
            "status": event["status"],
            "percentage": event["percentage"],
            "message": event["message"],
            "attempt": event["attempt"],
            "current": event["current"],
            "total": event["total"],
            "stage": event["stage"],
            "timestamp": event["timestamp"].isoformat(),
        },
    }
    return {
        "webhook_id": hook["id"],
        "event_id": event["id"],
        "event_type": event_type,
        "job_id": event["job_id"],
        "payload": orjson.dumps(payload).decode(),
        "state": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


class Dispatcher:
    """Fills the outbox from the feed and sends what is due, until cancelled.

    At most ``max_in_flight`` deliveries are sent at once, at most ``per_webhook`` of them to
    one webhook; each has ``timeout`` seconds in all (connect, send, answer) and reads at most
    ``max_response_bytes`` of the answer. A receiver that is slow only holds its own slots.
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
        max_response_bytes: int = 64 * 1024,
        clock: Callable[[], datetime] = utcnow,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.hooks = hooks
        self.allow_private = allow_private
        self.max_attempts = max_attempts
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.per_webhook = per_webhook
        self.max_response_bytes = max_response_bytes
        self._clock = clock
        self._client = httpx.AsyncClient(
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
            limits=httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=8),
        )
        self._in_flight: dict[asyncio.Task[None], str] = {}

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

    async def _start_due(self) -> list[asyncio.Task[None]]:
        await run_to_completion(self.hooks.fill, now=self._clock())
        room = self.max_in_flight - len(self._in_flight)
        if room <= 0:
            return []
        sending = Counter(self._in_flight.values())
        busy = {hook for hook, n in sending.items() if n >= self.per_webhook}
        due = await run_to_completion(
            self.hooks.lease_due,
            now=self._clock(),
            limit=room,
            lease_s=max(60.0, 3 * self.timeout),  # outlives the send, so no one else takes it
            per_webhook=self.per_webhook,
            exclude=busy,
        )
        started = []
        for delivery in due:
            if sending[delivery.webhook_id] >= self.per_webhook:
                continue  # leased, not sent: due again when the lease runs out
            sending[delivery.webhook_id] += 1
            task = asyncio.create_task(self._send(delivery))
            self._in_flight[task] = delivery.webhook_id
            task.add_done_callback(self._done)
            started.append(task)
        return started

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            logger.warning("webhook delivery failed", exc_info=task.exception())

    async def _send(self, delivery: Delivery) -> None:
        target = await run_to_completion(self.hooks.secret_and_url, delivery.webhook_id)
        if target is None:
            return  # the webhook was deleted meanwhile
        secret, url = target
        status, error = await self._post(url, secret, delivery)
        await run_to_completion(
            self.hooks.record,
            delivery,
            status=status,
            error=error,
            now=self._clock(),
            max_attempts=self.max_attempts,
        )

    async def _post(
        self, url: str, secret: str, delivery: Delivery
    ) -> tuple[int | None, str | None]:
        """POST one delivery within the deadline; the receiver's status and a short error of
        our own words (never the receiver's answer, nor the URL's credentials)."""
        body = delivery.payload.encode()
        now = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "morag-progress-webhooks",
            "X-Morag-Signature": sign(secret, body, now),
            "X-Morag-Event-Id": f"evt_{delivery.event_id}",
            "X-Morag-Event": delivery.event_type,
            "X-Morag-Timestamp": str(now),
        }
        try:
            async with asyncio.timeout(self.timeout):
                # Checked at each send, and connected to as checked: a name that resolves
                # elsewhere a moment later (DNS rebinding) is never asked again.
                # Not run_to_completion: the deadline must hold over a lookup that hangs, and
                # this thread holds no connection of ours.
                addresses = await asyncio.to_thread(
                    check_url, url, allow_private=self.allow_private
                )
                status = await self._post_to(addresses, url, body, headers)
        except InvalidInputError as e:
            return None, e.rule
        except (TimeoutError, httpx.TimeoutException):
            return None, f"no answer within the {self.timeout:g} s deadline"
        except httpx.HTTPError as e:
            return None, f"could not deliver ({type(e).__name__})"
        if status >= 300:
            return status, f"the receiver answered HTTP {status}"
        return status, None

    async def _post_to(
        self, addresses: list[str], url: str, body: bytes, headers: dict[str, str]
    ) -> int:
        """POST to the first of ``addresses`` (at most three) that takes the connection;
        read at most ``max_response_bytes`` of the answer; its status."""
        candidates = list(dict.fromkeys(addresses))[:3]
        for i, address in enumerate(candidates):
            target, host, extensions, auth = _pinned(url, address)
            try:
                async with self._client.stream(
                    "POST",
                    target,
                    content=body,
                    headers={**headers, **host},
                    extensions=extensions,
                    auth=auth,
                ) as response:
                    read = 0
                    async for chunk in response.aiter_raw():
                        read += len(chunk)
                        if read >= self.max_response_bytes:
                            break  # what a receiver says past this is not our business
                    return response.status_code
            except httpx.ConnectError:
                if i == len(candidates) - 1:
                    raise
        raise httpx.ConnectError("no address to connect to")
