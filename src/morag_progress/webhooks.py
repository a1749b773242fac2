"""Webhooks: signed deliveries of job events, made from the change feed through an outbox.

A user registers a URL for events (``job.finished``, ``job.failed``, ``job.cancelled``,
``job.stalled``, and ``job.progress``, throttled per job). The server's dispatcher reads the feed
from a stored cursor and, in the same transaction that moves the cursor, writes one delivery row
per matching webhook (the outbox): a restart loses nothing, and a replica that crashes mid-way
leaves the work to the next. Due deliveries are leased, sent, and recorded with their outcome;
failures are retried with exponential backoff and jitter up to ``webhook_max_attempts``. Sending
happens apart from the write path, which never waits for a webhook.

Each delivery is JSON signed with HMAC-SHA256 of the body, in ``X-Morag-Signature:
sha256=<hex>``, with ``X-Morag-Event-Id``, ``X-Morag-Event`` and ``X-Morag-Timestamp``. A
receiver checks it with :func:`verify_signature` (or the same three lines of its own).
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from sqlalchemy import and_, func, select, update

from morag_progress.errors import InvalidInputError, ProgressError
from morag_progress.models import JobStatus, utcnow
from morag_progress.store import SQLStore
from morag_progress.store.schema import events, webhook_cursor, webhook_deliveries, webhooks

__all__ = [
    "EVENT_TYPES",
    "Dispatcher",
    "Webhook",
    "WebhookStore",
    "check_url",
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


def sign(secret: str, body: bytes) -> str:
    """The ``X-Morag-Signature`` value for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, body: bytes, header: str | None) -> bool:
    """True when ``header`` is the signature of ``body`` with ``secret`` (constant time)."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse what a webhook must not call: not http(s), no host, or (unless allowed) an address
    that is private, loopback, link-local, reserved or multicast, as given or as resolved."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInputError("url", "must be an http(s) URL with a host", url)
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as e:
        raise InvalidInputError("url", "must name a host that resolves", url) from e
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global or address.is_multicast:
            raise InvalidInputError(
                "url",
                "must not point at a private, loopback or link-local address "
                "(MORAG_PROGRESS_WEBHOOK_ALLOW_PRIVATE allows it)",
                url,
            )


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

    def lease_due(self, *, now: datetime, limit: int = 20, lease_s: float = 60) -> list[Delivery]:
        """Take up to ``limit`` due deliveries for ``lease_s`` seconds (another replica skips
        them meanwhile; one whose sender died is due again after the lease)."""
        d = webhook_deliveries.c
        due = (
            select(d.id)
            .where(d.state == "pending", d.next_attempt_at <= now)
            .order_by(d.next_attempt_at, d.id)
            .limit(limit)
        )
        with self.store.transaction("lease deliveries") as conn:
            ids = [row[0] for row in conn.execute(due)]
            if not ids:
                return []
            leased = conn.execute(
                update(webhook_deliveries)
                .where(and_(d.id.in_(ids), d.state == "pending", d.next_attempt_at <= now))
                .values(next_attempt_at=now + timedelta(seconds=lease_s))
                .returning(*webhook_deliveries.c)
            ).mappings()
            return [_delivery(row) for row in leased]

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
    """Fills the outbox from the feed and sends what is due, until cancelled."""

    def __init__(
        self,
        hooks: WebhookStore,
        *,
        allow_private: bool = False,
        max_attempts: int = 10,
        timeout: float = 10.0,
        clock: Callable[[], datetime] = utcnow,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.hooks = hooks
        self.allow_private = allow_private
        self.max_attempts = max_attempts
        self._clock = clock
        self._client = httpx.AsyncClient(
            timeout=timeout, transport=transport, follow_redirects=False
        )

    async def run(self, interval: float) -> None:
        try:
            while True:
                try:
                    await self.tick()
                except ProgressError:
                    logger.warning("webhook dispatch failed; trying again", exc_info=True)
                await asyncio.sleep(interval)
        finally:
            await self._client.aclose()

    async def tick(self) -> int:
        """Fill the outbox and send every delivery due now; returns how many were sent."""
        await asyncio.to_thread(self.hooks.fill, now=self._clock())
        due = await asyncio.to_thread(self.hooks.lease_due, now=self._clock())
        await asyncio.gather(*(self._send(delivery) for delivery in due))
        return len(due)

    async def _send(self, delivery: Delivery) -> None:
        target = await asyncio.to_thread(self.hooks.secret_and_url, delivery.webhook_id)
        if target is None:
            return  # the webhook was deleted meanwhile
        secret, url = target
        body = delivery.payload.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "morag-progress-webhooks",
            "X-Morag-Signature": sign(secret, body),
            "X-Morag-Event-Id": f"evt_{delivery.event_id}",
            "X-Morag-Event": delivery.event_type,
            "X-Morag-Timestamp": str(int(time.time())),
        }
        status: int | None = None
        error: str | None = None
        try:
            # Checked again at each send: a name may resolve elsewhere than when it was made.
            await asyncio.to_thread(check_url, url, allow_private=self.allow_private)
            response = await self._client.post(url, content=body, headers=headers)
            status = response.status_code
            if status >= 300:
                error = response.text[:500] or response.reason_phrase
        except InvalidInputError as e:
            error = str(e)
        except httpx.HTTPError as e:
            error = f"{type(e).__name__}: {e}"[:500]
        await asyncio.to_thread(
            self.hooks.record,
            delivery,
            status=status,
            error=error,
            now=self._clock(),
            max_attempts=self.max_attempts,
        )
