"""The tables: jobs (latest state), progress_events (the change feed), worker_mappings."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    DDL,
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.dialects import sqlite

from morag_progress.audit import ACTOR_LENGTH
from morag_progress.models import as_utc

__all__ = [
    "FEED_CHANNEL",
    "SQLiteDateTime",
    "UTCDateTime",
    "api_keys",
    "eta_history",
    "events",
    "feed_cursors",
    "jobs",
    "live_messages",
    "metadata",
    "pruning",
    "share_links",
    "stream_tokens",
    "webhook_deliveries",
    "webhooks",
    "worker_mappings",
]


class SQLiteDateTime(sqlite.DATETIME):
    """SQLite's DATETIME (the same text: ``YYYY-MM-DD HH:MM:SS.ffffff``), converted by the
    standard library's C code: SQLAlchemy's conversions are Python (a format string out, a
    regular expression in), about 2.5 us a value, and the write path binds and reads several
    per update. ``tests/store/test_schema.py`` holds them to SQLAlchemy's."""

    def bind_processor(self, dialect: Dialect) -> Any:
        return _sqlite_text

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        return _sqlite_datetime


def _sqlite_text(value: datetime | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise TypeError(f"SQLite DateTime type only accepts Python datetime objects, got {value!r}")
    return value.isoformat(" ", "microseconds")


def _sqlite_datetime(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database.

    SQLite has no time zones: values are stored as naive UTC and given their zone back on read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(SQLiteDateTime())  # type: ignore[no-untyped-call]
        return dialect.type_descriptor(self.impl)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


# SQLite only makes a rowid alias (and so AUTOINCREMENT) of a column typed INTEGER.
_FeedId = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

jobs = Table(
    "jobs",
    metadata,
    # Ids are unique per user: another user's job may have the same id (an empty user_id is
    # a job of a trusted in-process caller without a user). The key leads with the id, so an
    # unscoped lookup by id alone is an index seek too.
    Column("id", String(128), primary_key=True),
    Column("user_id", String(128), primary_key=True, server_default=""),
    Column("document_name", String(255), nullable=False),
    Column("document_type", String(64), nullable=False),
    Column("document_id", String(255), nullable=True),
    Column("status", String(32), nullable=False),
    Column("percentage", Integer, nullable=False, default=0),
    Column("summary", Text, nullable=True),
    Column("current", BigInteger, nullable=True),
    Column("total", BigInteger, nullable=True),
    Column("stage", String(255), nullable=True),
    Column("worker_id", String(255), nullable=True),
    # The API key that claimed the job: only that worker may report on it.
    Column("claimed_by", String(32), nullable=True),
    Column("attempt", Integer, nullable=False, default=1),
    Column("parent_id", String(128), nullable=True),
    Column("weight", Float, nullable=False, default=1.0),
    Column("metadata", JSON, nullable=False, default=dict),
    Column("error", Text, nullable=True),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("start_date", UTCDateTime, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("end_date", UTCDateTime, nullable=True),
    Column("last_seen_at", UTCDateTime, nullable=True),
    # A parent's running sums over its children, so each child's change rolls up in O(1).
    Column("children", Integer, nullable=False, default=0),
    Column("children_done", Integer, nullable=False, default=0),
    Column("children_failed", Integer, nullable=False, default=0),
    Column("children_weight", Float, nullable=False, default=0.0),
    Column("children_progress", Float, nullable=False, default=0.0),
    # What this child last added to its parent's sums.
    Column("rolled_up_pct", Integer, nullable=False, default=0),
    Column("rolled_up_done", Boolean, nullable=False, default=False),
    Column("stall_timeout_s", Float, nullable=True),
    Column("rate", Float, nullable=True),
    # The live pace (``eta.Pace`` as JSON): written when a measuring window closes.
    Column("pace", JSON, nullable=True),
    # Ordering key of the last applied update: (attempt, last_ts_us, last_seq). Microseconds since
    # the epoch as an integer compare exactly on every database; a float would round.
    Column("last_ts_us", BigInteger, nullable=True),
    Column("last_seq", BigInteger, nullable=False, default=0),
    # Who created the job (``audit.py``): a key's role and id, or the process that wrote it.
    Column("created_by", String(ACTOR_LENGTH), nullable=True),
    # The job's span (``tracing.py``): its own W3C traceparent, and its creator's span id.
    Column("traceparent", String(55), nullable=True),
    Column("trace_parent_id", String(16), nullable=True),
    # The worker's latest checkpoint (JSON text, at most MAX_CHECKPOINT_BYTES) and the
    # percentage it was saved at: a requeued job resumes there (``store/lifecycle.py``).
    Column("checkpoint", Text, nullable=True),
    Column("checkpoint_percentage", Integer, nullable=True),
    # A parent that expects its children (a run's ranks, made as each process starts): it
    # cannot finish before that many have ended, and those not made yet count as 0%.
    Column("expected_children", Integer, nullable=True),
    # A child of such a parent: since when the server has seen it behind its siblings, and
    # whether it is flagged as a straggler (``store/runs.py``); the parent counts its flagged.
    Column("behind_since", UTCDateTime, nullable=True),
    Column("straggler", Boolean, nullable=False, default=False),
    Column("stragglers", Integer, nullable=False, default=0),
    # A job's deadline, and why the server marked it at risk (``deadlines.Risk``: it will
    # likely miss the deadline, or runs longer than usual); null while it is not.
    Column("deadline", UTCDateTime, nullable=True),
    Column("at_risk", String(16), nullable=True),
    Index("ix_jobs_user_created", "user_id", "created_at", "id"),
    Index("ix_jobs_status_created", "status", "created_at", "id"),
    Index("ix_jobs_parent", "parent_id"),
    # Runs (parents expecting their children) by status: the straggler sweep's (store/runs.py).
    Index(
        "ix_jobs_runs",
        "status",
        postgresql_where=text("expected_children IS NOT NULL"),
        sqlite_where=text("expected_children IS NOT NULL"),
    ),
    # The remote queue (claim) and a user's jobs by status, both in (created_at, id) order.
    Index("ix_jobs_queue", "status", "user_id", "created_at", "id"),
    # Workers' recent work: jobs ended since a time (set once a job, so cheap to keep).
    Index("ix_jobs_ended", "end_date", "worker_id"),
)

events = Table(
    "progress_events",
    metadata,
    Column("id", _FeedId, primary_key=True, autoincrement=True),
    Column("job_id", String(128), nullable=False),
    Column("user_id", String(128), nullable=True),
    Column("status", String(32), nullable=False),
    Column("percentage", Integer, nullable=False),
    Column("message", Text, nullable=True),
    Column("attempt", Integer, nullable=False),
    Column("current", BigInteger, nullable=True),
    Column("total", BigInteger, nullable=True),
    Column("stage", String(255), nullable=True),
    Column("timestamp", UTCDateTime, nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
    # The audit trail (``audit.py``): who made the change, and what kind of change it was.
    Column("actor", String(ACTOR_LENGTH), nullable=True),
    Column("action", String(16), nullable=True),
    # A job's changes: both equalities in the key, so SQLite's planner (no statistics) takes
    # it over the user index for a job's history, whatever id range is asked for.
    Index("ix_progress_events_job", "job_id", "user_id", "id"),
    Index("ix_progress_events_user", "user_id", "id"),
    # Feed ids are never reused, even after retention deletes the newest rows.
    sqlite_autoincrement=True,
)

worker_mappings = Table(
    "worker_mappings",
    metadata,
    Column("worker_id", String(255), primary_key=True),
    # Whose worker: a worker id is a user's own name (empty: an in-process mapping).
    Column("user_id", String(128), primary_key=True, server_default=""),
    Column("job_id", String(128), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# What finished jobs of each kind took (``eta.History`` as JSON), per user and document type.
eta_history = Table(
    "eta_history",
    metadata,
    Column("user_id", String(128), primary_key=True),
    Column("document_type", String(64), primary_key=True),
    Column("history", JSON, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(255), nullable=True),
    Column("user_id", String(128), nullable=False),
    Column("role", String(16), nullable=False),
    # SHA-256 of the key: keys are 256 random bits, so a fast hash is as safe as a slow one.
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
)

# Short-lived read tokens for browsers' EventSource, which cannot send an Authorization header.
stream_tokens = Table(
    "stream_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("key_id", String(32), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_stream_tokens_expiry", "expires_at"),
)

# Read-only links to one job each, for people without a key (``api/routes/share.py``).
share_links = Table(
    "share_links",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("user_id", String(128), nullable=False),
    Column("job_id", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_share_links_expiry", "expires_at"),
    Index("ix_share_links_user", "user_id", "expires_at"),
)

# Webhooks: users' endpoints, and the outbox of deliveries made from the change feed.
webhooks = Table(
    "webhooks",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", String(128), nullable=False),
    Column("url", Text, nullable=False),
    Column("events", JSON, nullable=False),
    # Signing needs the secret itself (HMAC), so it is stored as given and shown once.
    Column("secret", String(128), nullable=False),
    Column("progress_interval_s", Float, nullable=False),
    # json (ours, signed), slack or discord (their incoming webhooks' bodies).
    Column("format", String(16), nullable=False, server_default="json"),
    # At most this many deliveries an hour (None: no cap), so a flapping job cannot flood.
    Column("max_per_hour", Integer, nullable=True),
    # Feed id when it was made: it is told of later changes only.
    Column("after_event_id", BigInteger, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # A live chat message's platform credentials (a Slack or Telegram bot token, an ntfy access
    # token; sent as given, so stored as given, never shown) and where it posts (a Slack
    # channel, a Telegram chat).
    Column("token", Text, nullable=True),
    Column("channel", String(256), nullable=True),
    Index("ix_webhooks_user", "user_id"),
)

live_messages = Table(
    "live_messages",
    metadata,
    # One chat message per job and webhook, kept up to date (``chat.py``): the platform's
    # reference to it once posted, and who is sending to it now (a short claim, so two senders
    # never post it twice nor edit it out of order).
    Column("webhook_id", String(32), primary_key=True),
    Column("job_user_id", String(128), primary_key=True),
    Column("job_id", String(128), primary_key=True),
    Column("ref", String(256), nullable=True),
    # The feed id of the state it shows: an older delivery (another replica's, late) is not
    # sent over it.
    Column("event_id", BigInteger, nullable=True),
    Column("busy_until", UTCDateTime, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_live_messages_updated", "updated_at"),  # retention
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", _FeedId, primary_key=True, autoincrement=True),
    Column("webhook_id", String(32), nullable=False),
    Column("event_id", BigInteger, nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("job_id", String(128), nullable=False),
    # The job's user: ids are unique per user, and an admin's webhook hears every user's jobs.
    Column("job_user_id", String(128), nullable=False, server_default=""),
    # The body is fixed when the delivery is made, so every retry carries the same signature.
    Column("payload", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=False),
    Column("last_status", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime, nullable=True),
    UniqueConstraint("webhook_id", "event_id", name="uq_webhook_deliveries_event"),
    Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
    Index("ix_webhook_deliveries_webhook", "webhook_id", "id"),
    Index(
        "ix_webhook_deliveries_progress", "webhook_id", "job_user_id", "job_id", "event_type", "id"
    ),
    Index("ix_webhook_deliveries_created", "created_at"),  # retention
    sqlite_autoincrement=True,
)

# Jobs retention has deleted whose feed rows are still being deleted (in batches): the rows of
# (user, job) up to ``last_event_id`` go; a new job of the same id keeps its own.
pruning = Table(
    "pruning",
    metadata,
    Column("user_id", String(128), primary_key=True),
    Column("job_id", String(128), primary_key=True),
    Column("last_event_id", BigInteger, nullable=False),
)

# How far each stored reader has read the feed (``cursor.py``), one row a reader: the webhook
# outbox ("outbox"), the span exporter ("spans", and "spans_start": where tracing began). A
# restart resumes there, losing nothing.
feed_cursors = Table(
    "feed_cursors",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("event_id", BigInteger, nullable=False),
)

# PostgreSQL: each statement that writes feed rows sends one NOTIFY, so every replica's tail
# wakes at once instead of waiting for its next poll (the feed stays the source of truth).
FEED_CHANNEL = "morag_progress_feed"
FEED_NOTIFY_FUNCTION = DDL(  # type: ignore[no-untyped-call]  # SQLAlchemy's DDL is untyped
    "CREATE OR REPLACE FUNCTION morag_progress_feed_notify() RETURNS trigger AS $$ "
    f"BEGIN PERFORM pg_notify('{FEED_CHANNEL}', ''); RETURN NULL; END; $$ LANGUAGE plpgsql"
)
FEED_NOTIFY_TRIGGER = DDL(  # type: ignore[no-untyped-call]
    "CREATE TRIGGER progress_events_notify AFTER INSERT ON progress_events "
    "FOR EACH STATEMENT EXECUTE FUNCTION morag_progress_feed_notify()"
)
event.listen(events, "after_create", FEED_NOTIFY_FUNCTION.execute_if(dialect="postgresql"))
event.listen(events, "after_create", FEED_NOTIFY_TRIGGER.execute_if(dialect="postgresql"))
