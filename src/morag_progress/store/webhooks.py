"""The webhook tables: users' endpoints and the outbox of deliveries made from the change feed.

The outbox is filled by reading the feed after a stored cursor and, in the same transaction
that moves the cursor, writing one delivery row per matching webhook: a restart loses nothing,
and a replica that crashes mid-way leaves the work to the next. Due deliveries are leased for a
while (another replica skips them meanwhile), and each attempt's outcome is recorded, with the
next attempt backed off exponentially (with jitter). Sending is ``morag_progress.webhooks``.
"""

from __future__ import annotations

import random
import secrets
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import orjson
from sqlalchemy import Connection, and_, func, or_, select, tuple_, update

from morag_progress.audit import Action
from morag_progress.chat import (
    LIVE_PER_HOUR,
    Target,
    chat_body,
    chat_text,
    is_live,
    render,
    silent_seconds,
)
from morag_progress.eta import Eta, Pace, estimate
from morag_progress.models import JobStatus, utcnow
from morag_progress.store.cursor import FeedCursor
from morag_progress.store.schema import (
    events,
    jobs,
    live_messages,
    webhook_deliveries,
    webhooks,
)
from morag_progress.store.sql import SQLStore

__all__ = ["ALL_USERS", "EVENT_TYPES", "Delivery", "Lease", "Webhook", "WebhookStore"]

_OUTBOX = "outbox"
"""The outbox's stored feed cursor (``cursor.py``)."""
_FILL_PAIRS = 5000

EVENT_TYPES = (
    "job.progress",
    "job.stalled",
    "job.finished",
    "job.failed",
    "job.cancelled",
    "job.straggler",
    "job.at_risk",
)
_TYPE_OF_STATUS = {
    JobStatus.FINISHED.value: "job.finished",
    JobStatus.FAILED.value: "job.failed",
    JobStatus.CANCELLED.value: "job.cancelled",
    JobStatus.STALLED.value: "job.stalled",
}
ALL_USERS = "*"
"""The owner of an admin's webhook: it hears of every user's jobs."""


@dataclass(frozen=True, slots=True)
class Webhook:
    """A registered endpoint (its secret is shown once, when it is made)."""

    id: str
    user_id: str
    url: str
    events: list[str]
    progress_interval_s: float
    created_at: datetime
    format: str = "json"
    max_per_hour: int | None = None
    channel: str | None = None
    """Where a live message posts (a Slack channel, a Telegram chat)."""
    live: bool = False
    """It keeps one message per job up to date (``chat.py``)."""


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
    job_user_id: str = ""
    """The job's user (ids are unique per user; an admin's webhook hears every user's jobs)."""


@dataclass(frozen=True, slots=True)
class Lease:
    """A delivery taken to be sent (``lease_due``), and whose webhook it is for."""

    delivery: Delivery
    user_id: str
    spacing: float | None = None
    """For a live webhook, the seconds its sends are kept apart (its ``max_per_hour``)."""


def _live(hook: Any) -> bool:
    return is_live(hook["format"], hook["token"])


def _webhook(row: Any) -> Webhook:
    return Webhook(
        id=row["id"],
        user_id=row["user_id"],
        url=row["url"],
        events=list(row["events"]),
        progress_interval_s=row["progress_interval_s"],
        created_at=row["created_at"],
        format=row["format"],
        max_per_hour=row["max_per_hour"],
        channel=row["channel"],
        live=_live(row),
    )


def _delivery(row: Any) -> Delivery:
    return Delivery(**{name: row[name] for name in Delivery.__dataclass_fields__})


class WebhookStore:
    """The webhook tables, in the jobs' database."""

    def __init__(self, store: SQLStore) -> None:
        self.store = store
        self.dropped = 0
        """Deliveries this process dropped over a webhook's hourly cap (a metric)."""
        self.superseded = 0
        """Pending progress deliveries this process replaced by a newer one (a metric)."""
        self._cursor = FeedCursor()
        """The outbox's place in the feed (stored; this process's view of its gaps)."""

    def create(
        self,
        *,
        user_id: str,
        url: str,
        event_types: list[str],
        progress_interval_s: float,
        format: str = "json",
        max_per_hour: int | None = None,
        token: str | None = None,
        channel: str | None = None,
    ) -> tuple[Webhook, str]:
        """A new webhook and its secret. A chat ``format`` (slack, discord) is capped at
        ``CHAT_PER_HOUR`` deliveries an hour unless ``max_per_hour`` says otherwise; a live
        one (``chat.is_live``) is paced at its platform's ``LIVE_PER_HOUR`` sends an hour."""
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}")
        if max_per_hour is None and is_live(format, token):
            max_per_hour = LIVE_PER_HOUR[format]
        elif max_per_hour is None and format != "json":
            max_per_hour = CHAT_PER_HOUR
        secret = "whsec_" + secrets.token_urlsafe(32)
        row = {
            "id": "wh_" + uuid.uuid4().hex[:24],
            "user_id": user_id,
            "url": url,
            "events": sorted(set(event_types)),
            "secret": secret,
            "progress_interval_s": progress_interval_s,
            "format": format,
            "max_per_hour": max_per_hour,
            "token": token,
            "channel": channel,
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
                conn.execute(live_messages.delete().where(live_messages.c.webhook_id == webhook_id))
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
            # Locked on PostgreSQL: replicas fill in turns, each feed row once.
            lock = self.store.dialect == "postgresql"
            cursor = self._cursor
            if not cursor.load(conn, _OUTBOX, lock=lock):
                cursor.moved_to(0)
            start = cursor.low
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
                        # Bounded work per transaction: at most _FILL_PAIRS (event, webhook)
                        # pairs, however many webhooks there are.
                        .limit(max(1, min(batch, _FILL_PAIRS // len(hooks))))
                    )
                    .mappings()
                    .all()
                )
                readable = cursor.advance((row["id"] for row in rows), now.timestamp())
                rows = list(rows[: len(readable)])  # up to the first gap still open
                if not rows:
                    return 0
            else:
                rows = []  # nobody to tell: skip to the end without reading the feed
                cursor.moved_to(end)
            last_progress: dict[tuple[str, str, str], tuple[datetime, bool]] = {}
            known = _jobs_of(conn, rows, now) if hooks else {}
            sent_this_hour: dict[str, int] = {}
            # A live message's progress, the latest of each job's in this batch: written once,
            # after the loop (a job reporting 1,000 times a second makes one row a batch).
            deferred: dict[tuple[str, str, str], tuple[Any, Any, datetime]] = {}
            for event in rows:
                event_type = _event_type(event)
                for hook in hooks:
                    if not _wants(hook, event, event_type):
                        continue
                    live = _live(hook)
                    due = now
                    if event_type == "job.progress":
                        due = self._progress_due(conn, hook, event, now, last_progress)
                        if due > now and not live:
                            continue  # throttled: the job's next progress tells its state
                    key = (hook["id"], *_job_key(event))
                    if live:  # its newest state replaces any of the job's not yet written
                        deferred.pop(key, None)
                        if event_type == "job.progress":
                            deferred[key] = (hook, event, due)
                            continue
                    exempt = event_type in _NEVER_CAPPED
                    # A live message is paced as it is sent, not capped: one message a job,
                    # whose waiting edit always carries the job's latest state.
                    if not live and self._over_cap(conn, hook, now, sent_this_hour, exempt=exempt):
                        self.dropped += 1  # a flapping job must not flood a channel
                        continue
                    self._make(conn, hook, event, event_type, now, now, known)
                    made += 1
            for hook, event, due in deferred.values():
                self._make(conn, hook, event, "job.progress", now, due, known)
                made += 1
            cursor.save(conn, _OUTBOX, insert=self.store.dialect_insert())
        return made

    def _make(
        self,
        conn: Connection,
        hook: Any,
        event: Any,
        event_type: str,
        now: datetime,
        due: datetime,
        known: dict[tuple[str, str], _Known],
    ) -> None:
        """Write one delivery, due at ``due``, superseding what it replaces."""
        live = _live(hook)
        if live or event_type == "job.progress":
            self._supersede(conn, hook, event, every_type=live)
        row = _new_delivery(hook, event, event_type, now, known.get(_job_key(event)))
        row.update(created_at=due, next_attempt_at=due)
        conn.execute(
            self.store.dialect_insert()(webhook_deliveries).values(row).on_conflict_do_nothing()
        )

    @staticmethod
    def _progress_due(
        conn: Any,
        hook: Any,
        event: Any,
        now: datetime,
        last_progress: dict[tuple[str, str, str], tuple[datetime, bool]],
    ) -> datetime:
        """When the job's progress may next be sent to ``hook``: ``now``, or (throttled) one
        ``progress_interval_s`` after its last progress delivery was due. A plain webhook
        drops a throttled progress (the next one tells the state). A live message keeps it,
        due then, and while one of the job's waits unsent (not yet taken by a sender), a
        newer one replaces it at the time it was due: the message always ends on the job's
        latest state, moves at most once an interval, and a job that never stops reporting
        is never put off."""
        key = (hook["id"], *_job_key(event))
        if key not in last_progress:
            d = webhook_deliveries.c
            previous = conn.execute(
                select(d.created_at, d.state, d.next_attempt_at)
                .where(
                    d.webhook_id == hook["id"],
                    d.job_user_id == (event["user_id"] or ""),
                    d.job_id == event["job_id"],
                    d.event_type == "job.progress",
                )
                .order_by(d.id.desc())  # the last made is the last due: dues never go back
                .limit(1)
            ).first()
            if previous is not None:
                # Waiting: made and not yet taken. One being sent (leased) or backing off
                # after a failure has moved its next attempt past its due time: the next
                # change then keeps the interval after it.
                unsent = previous[1] == "pending" and previous[2] <= previous[0]
                last_progress[key] = (previous[0], unsent)
        live = _live(hook)
        at, waiting = last_progress.get(key, (None, False))
        if at is not None and live and waiting:
            return max(at, now)
        if at is not None and (now - at).total_seconds() < hook["progress_interval_s"]:
            due: datetime = at + timedelta(seconds=hook["progress_interval_s"])
            if live:
                last_progress[key] = (due, True)
            return due
        last_progress[key] = (now, True)
        return now

    def _supersede(self, conn: Connection, hook: Any, event: Any, *, every_type: bool) -> None:
        """A job's progress delivery that is still pending is superseded by its next one:
        a receiver that is down or slow has at most one progress delivery a job waiting (the
        latest), however long it stays away; the other events are all kept. For a live
        message (``every_type``), whose every delivery is the job's whole state, the newest
        supersedes whatever of the job's is pending: its message never goes back."""
        d = webhook_deliveries.c
        conditions = [
            d.webhook_id == hook["id"],
            d.job_user_id == (event["user_id"] or ""),
            d.job_id == event["job_id"],
            d.state == "pending",
        ]
        if not every_type:
            conditions.append(d.event_type == "job.progress")
        done = conn.execute(
            update(webhook_deliveries).where(*conditions).values(state="superseded")
        )
        self.superseded += max(0, done.rowcount)

    @staticmethod
    def _over_cap(
        conn: Any, hook: Any, now: datetime, sent: dict[str, int], *, exempt: bool
    ) -> bool:
        """Whether ``hook`` has had its ``max_per_hour`` deliveries in the last hour (counting
        those this fill makes). If not, or if the delivery is ``exempt`` (a job's end), it is
        counted."""
        cap = hook["max_per_hour"]
        if cap is None:
            return False
        if hook["id"] not in sent:
            d = webhook_deliveries.c
            sent[hook["id"]] = conn.execute(
                select(func.count()).where(
                    d.webhook_id == hook["id"], d.created_at > now - timedelta(hours=1)
                )
            ).scalar_one()
        if not exempt and sent[hook["id"]] >= cap:
            return True
        sent[hook["id"]] += 1
        return False

    def lease_due(
        self,
        *,
        now: datetime,
        limit: int = 20,
        lease_s: float = 60,
        per_webhook: int | None = None,
        per_user: int | None = None,
        exclude: Collection[str] = (),
        exclude_users: Collection[str] = (),
    ) -> list[Lease]:
        """Take up to ``limit`` due deliveries for ``lease_s`` seconds (another replica skips
        them meanwhile; one whose sender died is due again after the lease), with their
        webhooks' owners: each user's oldest first, user by user (a user with one delivery due
        is not queued behind another's thousand), at most ``per_webhook`` of any one webhook
        and ``per_user`` of any one user, none of the webhooks in ``exclude`` or of the users
        in ``exclude_users``."""
        d, w = webhook_deliveries.c, webhooks.c
        conditions = [d.state == "pending", d.next_attempt_at <= now]
        if exclude:
            conditions.append(d.webhook_id.not_in(sorted(exclude)))
        if exclude_users:
            conditions.append(w.user_id.not_in(sorted(exclude_users)))
        oldest = (d.next_attempt_at, d.id)
        ranked = (
            select(
                d.id,
                d.next_attempt_at,
                w.user_id,
                w.format,
                w.token.is_not(None).label("has_token"),
                w.max_per_hour,
                func.row_number().over(partition_by=d.webhook_id, order_by=oldest).label("hook"),
                func.row_number().over(partition_by=w.user_id, order_by=oldest).label("user"),
            )
            .join(webhooks, w.id == d.webhook_id)
            .where(*conditions)
            .subquery()
        )
        r = ranked.c
        due = select(r.id, r.user_id, r.format, r.has_token, r.max_per_hour)
        if per_webhook is not None:
            due = due.where(r.hook <= per_webhook)
        if per_user is not None:
            due = due.where(r.user <= per_user)
        due = due.order_by(r.user, r.next_attempt_at, r.id).limit(limit)
        with self.store.transaction("lease deliveries") as conn:
            owners = {}
            spacing: dict[int, float | None] = {}
            for row in conn.execute(due):
                owners[row.id] = row.user_id
                live = is_live(row.format, "" if row.has_token else None)
                spacing[row.id] = 3600 / (row.max_per_hour or 3600) if live else None
            if not owners:
                return []
            c = webhook_deliveries.c
            leased = conn.execute(
                update(webhook_deliveries)
                .where(and_(c.id.in_(owners), c.state == "pending", c.next_attempt_at <= now))
                .values(next_attempt_at=now + timedelta(seconds=lease_s))
                .returning(*webhook_deliveries.c)
            ).mappings()
            taken = {
                row["id"]: Lease(_delivery(row), owners[row["id"]], spacing[row["id"]])
                for row in leased
            }
        return [taken[i] for i in owners if i in taken]  # in the order they were ranked

    def release(self, deliveries: Collection[Delivery], *, now: datetime) -> None:
        """Give back leased deliveries that were not sent: due again at ``now``."""
        if not deliveries:
            return
        c = webhook_deliveries.c
        with self.store.transaction("release deliveries") as conn:
            conn.execute(
                update(webhook_deliveries)
                .where(c.id.in_([x.id for x in deliveries]), c.state == "pending")
                .values(next_attempt_at=now)
            )

    def target(self, webhook_id: str) -> Target | None:
        """Where a webhook sends, with its secret and platform credentials (None: deleted)."""
        w = webhooks.c
        stmt = select(w.url, w.format, w.secret, w.token, w.channel).where(w.id == webhook_id)
        with self.store.connection("read webhook") as conn:
            row = conn.execute(stmt).mappings().first()
        return None if row is None else Target(**row)

    # -- live messages ---------------------------------------------------------------------------

    def claim_live(
        self, delivery: Delivery, *, now: datetime, hold_s: float
    ) -> tuple[Literal["taken", "busy", "stale"], str | None]:
        """Take the job's live message for ``hold_s`` seconds (whoever sends to it meanwhile
        waits: it is never posted twice nor edited out of order). ``("taken", ref)``: with the
        platform's reference to the message once posted; ``("busy", None)``: another sender
        holds it; ``("stale", None)``: it shows a later change than ``delivery`` already (a
        late delivery, another replica's), which must not be sent over it."""
        m = live_messages.c
        key = _live_key(delivery)
        until = now + timedelta(seconds=hold_s)
        with self.store.transaction("claim live message") as conn:
            made = conn.execute(
                self.store.dialect_insert()(live_messages)
                .values(**key, ref=None, busy_until=until, updated_at=now)
                .on_conflict_do_nothing()
                .returning(m.job_id)  # rowcount is not to be trusted for this on every driver
            ).first()
            if made is not None:
                return "taken", None
            mine = [getattr(m, name) == value for name, value in key.items()]
            taken = conn.execute(
                update(live_messages)
                .where(
                    *mine,
                    or_(m.busy_until.is_(None), m.busy_until <= now),
                    or_(m.event_id.is_(None), m.event_id < delivery.event_id),
                )
                .values(busy_until=until)
                .returning(m.ref)
            ).first()
            if taken is not None:
                return "taken", taken[0]
            shown = conn.execute(select(m.event_id).where(*mine)).scalar()
        return (
            ("stale", None) if shown is not None and shown >= delivery.event_id else ("busy", None)
        )

    def release_live(
        self, delivery: Delivery, *, ref: str | None, now: datetime, shown: bool
    ) -> None:
        """Give the job's live message back, with its reference (None: not posted, or gone),
        and, when ``shown``, the change it shows now (``delivery``'s)."""
        m = live_messages.c
        key = _live_key(delivery)
        values: dict[str, Any] = {"ref": ref, "busy_until": None, "updated_at": now}
        if shown:
            values["event_id"] = delivery.event_id
        with self.store.transaction("release live message") as conn:
            conn.execute(
                update(live_messages)
                .where(*(getattr(m, name) == value for name, value in key.items()))
                .values(values)
            )

    def drop(self, delivery: Delivery) -> None:
        """Supersede a pending delivery without sending it (its message shows later already)."""
        c = webhook_deliveries.c
        with self.store.transaction("drop delivery") as conn:
            done = conn.execute(
                update(webhook_deliveries)
                .where(c.id == delivery.id, c.state == "pending")
                .values(state="superseded")
            )
        self.superseded += max(0, done.rowcount)

    def record(
        self,
        delivery: Delivery,
        *,
        status: int | None,
        error: str | None,
        now: datetime,
        max_attempts: int,
        retry_after: float | None = None,
    ) -> str:
        """Write what became of one attempt: ``delivered``, ``retry`` (later: not before
        ``retry_after`` seconds, when the receiver asked for it) or ``failed`` (for good);
        returns which."""
        attempts = delivery.attempts + 1
        values: dict[str, Any] = {"attempts": attempts, "last_status": status, "last_error": error}
        if status is not None and 200 <= status < 300:
            values.update(state="delivered", delivered_at=now)
            outcome = "delivered"
        elif attempts >= max_attempts:
            values.update(state="failed")
            outcome = "failed"
        else:
            outcome = "retry"
            # Exponential backoff with jitter: 1 s, 2 s, 4 s ... capped at an hour.
            wait = min(3600.0, 2.0 ** (attempts - 1)) * random.uniform(0.5, 1.0)
            wait = max(wait, min(3600.0, retry_after or 0.0))
            values.update(next_attempt_at=now + timedelta(seconds=wait))
        c = webhook_deliveries.c
        conditions = [c.id == delivery.id]
        if outcome != "delivered":
            # Superseded while it was being sent: a newer delivery of the job's progress
            # carries its state; this one is not tried again.
            conditions.append(c.state == "pending")
        with self.store.transaction("record delivery") as conn:
            conn.execute(update(webhook_deliveries).where(*conditions).values(values))
        return outcome


def _live_key(delivery: Delivery) -> dict[str, str]:
    return {
        "webhook_id": delivery.webhook_id,
        "job_user_id": delivery.job_user_id,
        "job_id": delivery.job_id,
    }


def _event_type(event: Any) -> str:
    """A feed row's webhook event: a run's straggler flagged (``store/runs.py``), a job marked
    at risk (``store/risk.py``), else what its status says."""
    if event["action"] == Action.STRAGGLER:
        return "job.straggler"
    if event["action"] == Action.AT_RISK:
        return "job.at_risk"
    return _TYPE_OF_STATUS.get(event["status"], "job.progress")


def _wants(hook: Any, event: Any, event_type: str) -> bool:
    if event["id"] <= hook["after_event_id"] or event_type not in hook["events"]:
        return False
    return bool(hook["user_id"] == ALL_USERS or hook["user_id"] == event["user_id"])


def _job_key(event: Any) -> tuple[str, str]:
    return (event["user_id"] or "", event["job_id"])


@dataclass(frozen=True, slots=True)
class _Known:
    """What a delivery tells of a job beyond its feed row: its name, its live estimate now
    when it runs, and when its worker was last heard from."""

    name: str
    eta: Eta | None
    last_seen_at: datetime | None = None


def _jobs_of(conn: Connection, rows: list[Any], now: datetime) -> dict[tuple[str, str], _Known]:
    """The name (and a running job's live estimate) of each job of ``rows``: one read."""
    keys = {_job_key(e) for e in rows}
    if not keys:
        return {}
    j = jobs.c
    stmt = select(
        j.user_id, j.id, j.document_name, j.status, j.percentage, j.total, j.pace, j.last_seen_at
    )
    found = {}
    for row in conn.execute(stmt.where(tuple_(j.user_id, j.id).in_(sorted(keys)))).mappings():
        eta = None
        if row["status"] == JobStatus.PROCESSING.value:
            eta = estimate(
                now=now.timestamp(),
                percentage=row["percentage"],
                pace=Pace.from_json(row["pace"]),
                total=row["total"],
            )
        found[(row["user_id"], row["id"])] = _Known(row["document_name"], eta, row["last_seen_at"])
    return found


FORMATS = ("json", "slack", "discord", "telegram", "ntfy")
_NEVER_CAPPED = frozenset({"job.finished", "job.failed", "job.cancelled"})
"""A job ends once: its end is always told, whatever the cap (it counts toward it)."""
CHAT_PER_HOUR = 30
"""Deliveries an hour a chat webhook gets by default."""


def _new_delivery(
    hook: Any, event: Any, event_type: str, now: datetime, known: _Known | None = None
) -> dict[str, Any]:
    eta = None if known is None else known.eta
    silent = None if known is None else silent_seconds(event, known.last_seen_at)
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
            "actor": event["actor"],  # who made the change, and what kind (the audit trail)
            "action": event["action"],
        },
    }
    if eta is not None and event["status"] == JobStatus.PROCESSING.value:
        payload["job"].update(
            eta_seconds=eta.seconds,
            eta_low_seconds=eta.low,
            eta_high_seconds=eta.high,
            eta_basis=eta.basis,
        )
    if silent is not None:
        payload["job"]["silent_seconds"] = silent  # the worker's silence that stalled it
    name = None if known is None else known.name
    if _live(hook):  # the job's whole state: the live message's next edit
        serialized = render(event, name, eta, silent).to_json()
    elif hook["format"] != "json":  # their incoming webhooks' bodies: a line of text
        line = chat_text(event, name, eta, silent)
        serialized = orjson.dumps(chat_body(hook["format"], line)).decode()
    else:
        serialized = orjson.dumps(payload).decode()
    return {
        "webhook_id": hook["id"],
        "event_id": event["id"],
        "event_type": event_type,
        "job_id": event["job_id"],
        "job_user_id": event["user_id"] or "",
        "payload": serialized,
        "state": "pending",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }
