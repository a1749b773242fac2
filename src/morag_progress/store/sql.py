"""SQLStore: the Store on SQLite (embedded default) and PostgreSQL, through SQLAlchemy Core.

The rules of docs/architecture.md section 3 that depend on the job's current state run inside one
conditional ``UPDATE ... RETURNING``: the database decides atomically whether an update is
newer than the last applied one and what the new status is, so concurrent writers (threads,
Celery processes, API replicas) cannot lose or reorder each other's updates. The feed row is
inserted in the same transaction.

SQLite runs in WAL mode with a busy timeout; writes start with ``BEGIN IMMEDIATE`` so that a
writer waits for the lock up front instead of failing half-way with "database is locked".
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Engine,
    Integer,
    RowMapping,
    String,
    and_,
    bindparam,
    case,
    create_engine,
    event,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

from morag_progress.errors import (
    ConfigurationError,
    InvalidInputError,
    JobConflictError,
    StoreError,
)
from morag_progress.keys import ApiKey, Role
from morag_progress.models import (
    TERMINAL_STATUSES,
    FeedEvent,
    Job,
    JobStatus,
    ProgressUpdate,
    UpdateOutcome,
    UpdateResult,
    status_for_percentage,
)
from morag_progress.store.base import NewJob
from morag_progress.store.migrate import current_revision, ensure_schema, upgrade
from morag_progress.store.schema import (
    UTCDateTime,
    api_keys,
    events,
    jobs,
    stream_tokens,
    worker_mappings,
)

__all__ = ["NO_USER", "SQLStore"]

logger = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_TERMINAL = sorted(s.value for s in TERMINAL_STATUSES)
_UNCLAIMED = [JobStatus.PENDING.value, JobStatus.WAITING_FOR_REMOTE_WORKER.value]
_RATE_SMOOTHING = 0.3  # weight of the newest rate, as tqdm's default smoothing
_SYNCHRONOUS = ("NORMAL", "FULL")
_READ_OPTION = "morag_progress_read"
_TOKEN_SWEEP = timedelta(days=1)  # expired stream tokens older than this are deleted
_T = TypeVar("_T")


def _micros(value: datetime) -> int:
    """Microseconds since the epoch, exactly (datetime.timestamp() goes through a float)."""
    return (value - _EPOCH) // _MICROSECOND


class SQLStore:
    """Jobs, change feed and mappings in one SQL database (``sqlite://`` or ``postgresql+psycopg://``).

    ``sqlite_synchronous`` is ``NORMAL`` (survives a killed process) or ``FULL`` (also survives
    power loss, at about half the write throughput).
    """

    def __init__(
        self,
        url: str,
        *,
        sqlite_synchronous: str = "NORMAL",
        busy_timeout_ms: int = 30_000,
        create_tables: bool = True,
    ) -> None:
        if sqlite_synchronous.upper() not in _SYNCHRONOUS:
            raise ConfigurationError(
                "sqlite_synchronous", "must be NORMAL or FULL", sqlite_synchronous
            )
        try:
            parsed = make_url(url)
        except Exception as e:  # SQLAlchemy raises several types for a bad URL
            raise ConfigurationError("database_url", "must be a SQLAlchemy URL", url) from e
        self.url = parsed
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            self._engine = self._sqlite_engine(url, sqlite_synchronous.upper(), busy_timeout_ms)
        elif self.dialect == "postgresql":
            self._engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)
        else:
            raise ConfigurationError(
                "database_url", "must name sqlite or postgresql", parsed.render_as_string()
            )
        self._reader = self._engine.execution_options(**{_READ_OPTION: True})
        if create_tables:
            try:
                ensure_schema(self._engine)
            except StoreError:
                self._engine.dispose()  # nothing of a store that did not open stays open
                raise

    def upgrade(self, revision: str = "head") -> tuple[str | None, str]:
        """Migrate the schema to ``revision`` (``morag-progress db upgrade``); returns the
        revisions before and after."""
        return upgrade(self._engine, revision)

    def revision(self) -> str | None:
        """The schema's revision, or None for a database without tables."""
        with self._read("read schema revision") as conn:
            return current_revision(conn)

    # -- engine set-up -------------------------------------------------------------------------

    @staticmethod
    def _sqlite_engine(url: str, synchronous: str, busy_timeout_ms: int) -> Engine:
        parsed = make_url(url)
        database = parsed.database or ""
        in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
        if in_memory:
            # One shared connection, or every connection would see its own empty database.
            engine = create_engine(
                url, poolclass=StaticPool, connect_args={"check_same_thread": False}
            )
        else:
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(url, connect_args={"check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the driver, issue BEGIN, so that writes can BEGIN IMMEDIATE.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            if not in_memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            # Reads through the OS's page cache (mmap) and a larger private cache: a page of a
            # big table costs the same as a page of a small one.
            cursor.execute("PRAGMA mmap_size=268435456")
            cursor.execute("PRAGMA cache_size=-32768")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            read = conn.get_execution_options().get(_READ_OPTION, False)
            conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")

        return engine

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except SQLAlchemyError as e:
            raise StoreError(f"{what} failed on {self.dialect}: {e}") from e

    @contextmanager
    def _write(self, what: str) -> Iterator[Connection]:
        with self._errors(what), self._engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self, what: str) -> Iterator[Connection]:
        with self._errors(what), self._reader.connect() as conn:
            yield conn

    # Other modules keeping tables of their own in this database (webhooks) use these.
    transaction = _write
    """A write transaction (BEGIN IMMEDIATE on SQLite); errors become StoreError."""
    connection = _read
    """A read-only connection; errors become StoreError."""

    def dialect_insert(self) -> Any:
        """The dialect's INSERT construct, which knows ON CONFLICT."""
        return sqlite.insert if self.dialect == "sqlite" else postgresql.insert

    # -- jobs ----------------------------------------------------------------------------------

    def create_job(self, new: NewJob, *, now: datetime) -> tuple[Job, bool]:
        owner = _db_user(new.user_id)
        row = {
            "id": new.id,
            "user_id": owner,
            "document_name": new.document_name,
            "document_type": new.document_type,
            "document_id": new.document_id,
            "status": new.status.value,
            "percentage": 0,
            "summary": new.summary,
            "attempt": 1,
            "parent_id": new.parent_id,
            "weight": new.weight,
            "metadata": new.metadata,
            "cancel_requested": False,
            "created_at": now,
            "updated_at": now,
            "stall_timeout_s": new.stall_timeout_s,
            "last_seq": 0,
        }
        with self._write("create job") as conn:
            stmt = self.dialect_insert()(jobs).values(row).on_conflict_do_nothing()
            created = conn.execute(stmt.returning(*jobs.c)).mappings().first()
            if created is None:  # the user made it before: the same request twice
                existing = self._fetch(conn, new.id, owner)
                assert existing is not None
                return _job(existing), False
            self._append_event(conn, created, now=now, timestamp=now)
            if new.parent_id is not None:
                self._adopt(conn, created, now)  # raising here undoes the insert too
            return _job(created), True

    def _adopt(self, conn: Connection, child: RowMapping, now: datetime) -> None:
        """Count a new child in its parent's sums (the parent must be the same user's)."""
        j = jobs.c
        conditions = [
            j.id == child["parent_id"],
            j.user_id == child["user_id"],
            j.id != child["id"],
        ]
        parent = (
            conn.execute(
                update(jobs)
                .where(*conditions)
                .values(
                    children=j.children + 1, children_weight=j.children_weight + child["weight"]
                )
                .returning(*jobs.c)
            )
            .mappings()
            .first()
        )
        if parent is None:
            raise InvalidInputError(
                "parent_id", "must name an existing job of the same user", child["parent_id"]
            )
        self._settle_parent(conn, parent, child, now)

    def apply(
        self, update: ProgressUpdate, *, now: datetime, create_missing: bool = False
    ) -> UpdateResult:
        with self._write("apply update") as conn:
            return self._apply_in(conn, update, now, create_missing)

    def apply_many(self, updates: list[ProgressUpdate], *, now: datetime) -> list[UpdateResult]:
        with self._write("apply updates") as conn:
            return [self._apply_in(conn, update, now, False) for update in updates]

    def heartbeat(
        self, job_id: str, *, user_id: str | None, now: datetime, claimant: str | None = None
    ) -> UpdateResult:
        j = jobs.c
        conditions = _scope(claimant=claimant is not None)
        # A worker that is alive runs the job: a STALLED job resumes, a PENDING one starts.
        wake = (
            update(jobs)
            .where(
                *conditions,
                j.status.in_([JobStatus.STALLED.value, JobStatus.PENDING.value]),
            )
            .values(
                status=JobStatus.PROCESSING.value,
                start_date=func.coalesce(j.start_date, literal(now, jobs.c.start_date.type)),
                last_seen_at=now,
                updated_at=now,
            )
            .returning(*jobs.c)
        )
        touch = update(jobs).where(*conditions).values(last_seen_at=now).returning(*jobs.c)
        with self._write("heartbeat") as conn:
            owner = self._owner(conn, job_id, user_id)
            if owner is None:
                return UpdateResult(UpdateOutcome.NOT_FOUND)
            params = {"p_job_id": job_id, "p_user_id": owner, "p_claimant": claimant}
            row = conn.execute(wake, params).mappings().first()
            if row is not None:  # a status change: it belongs in the feed
                event_id = self._append_event(conn, row, now=now, timestamp=now)
                return UpdateResult(UpdateOutcome.APPLIED, _job(row), event_id)
            row = conn.execute(touch, params).mappings().first()
            if row is not None:
                return UpdateResult(UpdateOutcome.APPLIED, _job(row))
            existing = self._fetch(conn, job_id, owner)
            if existing is None or not _visible(existing, claimant):
                return UpdateResult(UpdateOutcome.NOT_FOUND)
            return UpdateResult(UpdateOutcome.TERMINAL, _job(existing))

    def claim(
        self,
        *,
        user_id: str | None,
        worker_id: str,
        claimant: str,
        document_types: list[str] | None,
        now: datetime,
    ) -> Job | None:
        j = jobs.c
        waiting = j.status == JobStatus.WAITING_FOR_REMOTE_WORKER.value
        pick = select(j.id, j.user_id).where(waiting).order_by(j.created_at, j.id).limit(1)
        if user_id is not None:
            pick = pick.where(j.user_id == user_id)
        if document_types:
            pick = pick.where(j.document_type.in_(document_types))
        if self.dialect == "postgresql":
            pick = pick.with_for_update(skip_locked=True)  # concurrent claimers take different jobs
        stmt = (
            update(jobs)
            .where(
                j.id == bindparam("p_job_id", type_=String()),
                j.user_id == bindparam("p_owner", type_=String()),
                waiting,
            )
            .values(
                status=JobStatus.PROCESSING.value,
                worker_id=worker_id,
                claimed_by=claimant,
                # A job claimed before (and returned to the queue) starts a new attempt.
                attempt=case((j.claimed_by.is_(None), j.attempt), else_=j.attempt + 1),
                start_date=func.coalesce(j.start_date, literal(now, j.start_date.type)),
                updated_at=now,
                last_seen_at=now,
                last_ts_us=None,  # the worker's clock orders its own reports from here
                last_seq=0,
                rate=None,
                summary=f"Claimed by {worker_id}",
            )
            .returning(*jobs.c)
        )
        with self._write("claim job") as conn:
            # Pick (and on PostgreSQL lock) the oldest waiting job, then take it: the lock
            # holds it for this transaction, so concurrent claimers pass over it.
            picked = conn.execute(pick).first()
            if picked is None:
                return None
            params = {"p_job_id": picked.id, "p_owner": picked.user_id}
            row = conn.execute(stmt, params).mappings().first()
            if row is None:
                return None
            self._append_event(conn, row, now=now, timestamp=now)
            conn.execute(self._mapping_upsert(worker_id, row["id"], now))
            return _job(row)

    def _apply_in(
        self, conn: Connection, update: ProgressUpdate, now: datetime, create_missing: bool
    ) -> UpdateResult:
        owner = self._owner(conn, update.job_id, update.user_id)
        if owner is None:
            if not create_missing:
                return UpdateResult(UpdateOutcome.NOT_FOUND)
            owner = NO_USER  # an unscoped in-process caller's new job has no user
        shape, params = _prepare(update, now, owner)
        stmt = _update_statement(shape)
        row = conn.execute(stmt, params).mappings().first()
        if row is None:
            existing = self._fetch(conn, update.job_id, owner)
            if existing is None and create_missing:
                self._create_for(conn, update, owner, now)
                row = conn.execute(stmt, params).mappings().first()
            elif existing is None or not _visible(existing, update.claimant):
                return UpdateResult(UpdateOutcome.NOT_FOUND)
            else:
                return UpdateResult(_why_not(existing, update), _job(existing))
        if row is None:  # created a moment ago by us, then refused: report it as it is
            existing = self._fetch(conn, update.job_id, owner)
            assert existing is not None
            return UpdateResult(_why_not(existing, update), _job(existing))
        timestamp = update.timestamp or now
        event_id = self._append_event(conn, row, now=now, timestamp=timestamp)
        return UpdateResult(UpdateOutcome.APPLIED, _job(row), event_id)

    def request_cancel(self, job_id: str, *, user_id: str | None, now: datetime) -> UpdateResult:
        j = jobs.c
        unclaimed = j.status.in_(_UNCLAIMED)
        stmt = (
            update(jobs)
            .where(
                j.id == job_id,
                j.user_id == bindparam("p_owner", type_=String()),
                j.status.not_in(_TERMINAL),
            )
            .values(
                cancel_requested=True,
                status=case((unclaimed, JobStatus.CANCELLED.value), else_=j.status),
                end_date=case((unclaimed, literal(now, jobs.c.end_date.type)), else_=j.end_date),
                updated_at=now,
            )
            .returning(*jobs.c)
        )
        with self._write("request cancel") as conn:
            owner = self._owner(conn, job_id, user_id)
            if owner is None:
                return UpdateResult(UpdateOutcome.NOT_FOUND)
            row = conn.execute(stmt, {"p_owner": owner}).mappings().first()
            if row is None:
                existing = self._fetch(conn, job_id, owner)
                if existing is None:
                    return UpdateResult(UpdateOutcome.NOT_FOUND)
                return UpdateResult(UpdateOutcome.TERMINAL, _job(existing))
            event_id = self._append_event(conn, row, now=now, timestamp=now)
            return UpdateResult(UpdateOutcome.APPLIED, _job(row), event_id)

    def idle_jobs(self, *, statuses: list[JobStatus], seen_before: datetime) -> list[Job]:
        j = jobs.c
        seen = func.coalesce(j.last_seen_at, j.updated_at)
        stmt = (
            select(jobs)
            .where(j.status.in_([JobStatus(s).value for s in statuses]), seen < seen_before)
            .order_by(seen)
            .limit(10_000)
        )
        with self._read("find idle jobs") as conn:
            return [_job(row) for row in conn.execute(stmt).mappings()]

    def shortest_stall_timeout(self) -> float | None:
        j = jobs.c
        stmt = select(func.min(j.stall_timeout_s)).where(j.status == JobStatus.PROCESSING.value)
        with self._read("shortest stall timeout") as conn:
            value = conn.execute(stmt).scalar()
        return None if value is None else float(value)

    def transition(
        self,
        job_id: str,
        *,
        expect: list[JobStatus],
        seen: datetime | None,
        changes: dict[str, Any],
        now: datetime,
        user_id: str | None = None,
    ) -> UpdateResult:
        j = jobs.c
        unknown = set(changes) - _TRANSITION_COLUMNS
        if unknown:
            raise ValueError(f"transition cannot change {sorted(unknown)}")
        # Still as the caller saw it (same status, no sign of life since): exactly one of any
        # number of concurrent sweepers makes the change.
        unchanged = (
            j.last_seen_at.is_(None)
            if seen is None
            else j.last_seen_at == literal(seen, j.last_seen_at.type)
        )
        stmt = (
            update(jobs)
            .where(
                j.id == job_id,
                j.user_id == bindparam("p_owner", type_=String()),
                j.status.in_([JobStatus(s).value for s in expect]),
                unchanged,
            )
            .values({**changes, "updated_at": now})
            .returning(*jobs.c)
        )
        with self._write("change job state") as conn:
            owner = self._owner(conn, job_id, user_id)
            if owner is None:
                return UpdateResult(UpdateOutcome.NOT_FOUND)
            row = conn.execute(stmt, {"p_owner": owner}).mappings().first()
            if row is None:
                existing = self._fetch(conn, job_id, owner)
                if existing is None:
                    return UpdateResult(UpdateOutcome.NOT_FOUND)
                return UpdateResult(UpdateOutcome.STALE, _job(existing))
            event_id = self._append_event(conn, row, now=now, timestamp=now)
            return UpdateResult(UpdateOutcome.APPLIED, _job(row), event_id)

    def get_job(self, job_id: str, *, user_id: str | None = None) -> Job | None:
        with self._read("get job") as conn:
            owner = self._owner(conn, job_id, user_id)
            row = None if owner is None else self._fetch(conn, job_id, owner)
        return None if row is None else _job(row)

    def list_jobs(
        self,
        *,
        user_id: str | None = None,
        status: JobStatus | None = None,
        document_type: str | None = None,
        limit: int = 50,
        after: str | None = None,
        parent_id: str | None = None,
    ) -> list[Job]:
        j = jobs.c
        stmt = select(jobs).order_by(j.created_at.desc(), j.id.desc()).limit(limit)
        if user_id is not None:
            stmt = stmt.where(j.user_id == user_id)
        if parent_id is not None:
            stmt = stmt.where(j.parent_id == parent_id)
        if status is not None:
            stmt = stmt.where(j.status == JobStatus(status).value)
        if document_type is not None:
            stmt = stmt.where(j.document_type == document_type)
        if after is not None:
            # Keyset pagination: strictly before the cursor job in (created_at, id) order.
            # The cursor job, of the user for a user's page (an admin's page takes the newest
            # job of that id: ids are unique per user, not across users).
            cursor_job = select(j.created_at).where(j.id == after)
            if user_id is not None:
                cursor_job = cursor_job.where(j.user_id == user_id)
            cursor_created = cursor_job.order_by(j.created_at.desc()).limit(1).scalar_subquery()
            stmt = stmt.where(
                # The plain bound lets the index seek to the cursor (the OR alone cannot), so a
                # page costs the same whatever its depth.
                j.created_at <= cursor_created,
                or_(
                    j.created_at < cursor_created,
                    and_(j.created_at == cursor_created, j.id < after),
                ),
            )
        with self._read("list jobs") as conn:
            return [_job(row) for row in conn.execute(stmt).mappings()]

    def count_open_jobs(self, user_id: str) -> int:
        """How many of the user's jobs have not ended (an index range per open status)."""
        j = jobs.c
        open_ = sorted(s.value for s in JobStatus if not s.is_terminal)
        stmt = select(func.count()).where(j.status.in_(open_), j.user_id == user_id)
        with self._read("count open jobs") as conn:
            return int(conn.execute(stmt).scalar_one())

    def count_jobs(self, *, user_id: str | None = None) -> dict[tuple[str, str], int]:
        j = jobs.c
        stmt = select(j.status, j.document_type, func.count()).group_by(j.status, j.document_type)
        if user_id is not None:
            stmt = stmt.where(j.user_id == user_id)
        with self._read("count jobs") as conn:
            return {(status, kind): int(n) for status, kind, n in conn.execute(stmt)}

    # -- change feed ---------------------------------------------------------------------------

    def history(
        self, job_id: str, *, user_id: str | None = None, after: int = 0, limit: int = 1000
    ) -> list[FeedEvent]:
        e = events.c
        stmt = (
            select(events)
            .where(
                e.job_id == job_id,
                e.user_id == bindparam("p_owner", type_=String()),
                e.id > after,
            )
            .order_by(e.id)
            .limit(limit)
        )
        with self._read("read history") as conn:
            owner = self._owner(conn, job_id, user_id)
            if owner is None:
                return []
            return [_feed_event(row) for row in conn.execute(stmt, {"p_owner": owner}).mappings()]

    def events_after(
        self, after: int = 0, *, user_id: str | None = None, limit: int = 1000
    ) -> list[FeedEvent]:
        e = events.c
        stmt = select(events).where(e.id > after).order_by(e.id).limit(limit)
        if user_id is not None:
            stmt = stmt.where(e.user_id == user_id)
        with self._read("read feed") as conn:
            return [_feed_event(row) for row in conn.execute(stmt).mappings()]

    def last_event_id(self, job_id: str | None = None, user_id: str | None = None) -> int:
        e = events.c
        stmt = select(func.max(e.id))
        if job_id is not None:
            stmt = stmt.where(e.job_id == job_id)
        if user_id is not None:
            stmt = stmt.where(e.user_id == user_id)
        with self._read("read feed head") as conn:
            return int(conn.execute(stmt).scalar_one_or_none() or 0)

    # -- worker-to-job mappings ----------------------------------------------------------------

    def set_mapping(self, worker_id: str, job_id: str, *, now: datetime) -> None:
        with self._write("set mapping") as conn:
            conn.execute(self._mapping_upsert(worker_id, job_id, now))

    def _mapping_upsert(self, worker_id: str, job_id: str, now: datetime) -> Any:
        stmt = self.dialect_insert()(worker_mappings).values(
            worker_id=worker_id, job_id=job_id, updated_at=now
        )
        return stmt.on_conflict_do_update(
            index_elements=[worker_mappings.c.worker_id],
            set_={"job_id": stmt.excluded.job_id, "updated_at": stmt.excluded.updated_at},
        )

    def get_mapping(self, worker_id: str) -> str | None:
        stmt = select(worker_mappings.c.job_id).where(worker_mappings.c.worker_id == worker_id)
        with self._read("get mapping") as conn:
            return conn.execute(stmt).scalar_one_or_none()

    def delete_mapping(self, worker_id: str) -> None:
        stmt = worker_mappings.delete().where(worker_mappings.c.worker_id == worker_id)
        with self._write("delete mapping") as conn:
            conn.execute(stmt)

    # -- API keys ------------------------------------------------------------------------------

    def create_key(self, key: ApiKey, key_hash: str) -> None:
        row = {
            "id": key.id,
            "name": key.name,
            "user_id": key.user_id,
            "role": key.role.value,
            "key_hash": key_hash,
            "created_at": key.created_at,
        }
        with self._write("create API key") as conn:
            conn.execute(api_keys.insert().values(row))

    def find_key(self, key_hash: str) -> ApiKey | None:
        stmt = select(api_keys).where(api_keys.c.key_hash == key_hash)
        with self._read("find API key") as conn:
            row = conn.execute(stmt).mappings().first()
        return None if row is None else _api_key(row)

    def get_key(self, key_id: str) -> ApiKey | None:
        """The key with this id, revoked or not, or None."""
        stmt = select(api_keys).where(api_keys.c.id == key_id)
        with self._read("read API key") as conn:
            row = conn.execute(stmt).mappings().first()
        return None if row is None else _api_key(row)

    def list_keys(self, *, user_id: str | None = None) -> list[ApiKey]:
        stmt = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
        if user_id is not None:
            stmt = stmt.where(api_keys.c.user_id == user_id)
        with self._read("list API keys") as conn:
            return [_api_key(row) for row in conn.execute(stmt).mappings()]

    def revoke_key(self, key_id: str, *, now: datetime) -> bool:
        stmt = (
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        with self._write("revoke API key") as conn:
            return conn.execute(stmt).rowcount == 1

    def create_stream_token(self, token_hash: str, key_id: str, *, expires_at: datetime) -> None:
        t = stream_tokens.c
        with self._write("create stream token") as conn:
            conn.execute(stream_tokens.delete().where(t.expires_at < expires_at - _TOKEN_SWEEP))
            conn.execute(
                stream_tokens.insert().values(
                    token_hash=token_hash, key_id=key_id, expires_at=expires_at
                )
            )

    def find_stream_token(self, token_hash: str, *, now: datetime) -> ApiKey | None:
        t, k = stream_tokens.c, api_keys.c
        stmt = (
            select(api_keys)
            .join(stream_tokens, t.key_id == k.id)
            .where(t.token_hash == token_hash, t.expires_at > now)
        )
        with self._read("find stream token") as conn:
            row = conn.execute(stmt).mappings().first()
        return None if row is None else _api_key(row)

    # -- housekeeping --------------------------------------------------------------------------

    def ping(self) -> None:
        with self._read("ping") as conn:
            conn.execute(select(literal(1)))

    def close(self) -> None:
        self._engine.dispose()

    # -- internals -----------------------------------------------------------------------------

    @staticmethod
    def _fetch(conn: Connection, job_id: str, owner: str) -> RowMapping | None:
        return conn.execute(_SELECT_JOB, {"p_job_id": job_id, "p_owner": owner}).mappings().first()

    @staticmethod
    def _owner(conn: Connection, job_id: str, user_id: str | None) -> str | None:
        """Whose job ``job_id`` is: ``user_id`` itself for a scoped caller; for an unscoped
        one (in-process, an admin) the one user with a job of that id, or None when there is
        none. Raises JobConflictError when several users have one: ids are unique per user."""
        if user_id is not None:
            return user_id
        owners = conn.execute(_OWNERS, {"p_job_id": job_id}).scalars().all()
        if len(owners) > 1:
            raise JobConflictError(job_id)
        return owners[0] if owners else None

    def _create_for(
        self, conn: Connection, update: ProgressUpdate, owner: str, now: datetime
    ) -> None:
        """Create the job an in-process caller reports on before anyone created it."""
        stmt = self.dialect_insert()(jobs).values(
            id=update.job_id,
            user_id=owner,
            document_name=update.job_id,
            document_type="unknown",
            document_id=update.job_id,
            status=JobStatus.PENDING.value,
            percentage=0,
            attempt=1,
            weight=1.0,
            metadata={},
            cancel_requested=False,
            created_at=now,
            updated_at=now,
            last_seq=0,
        )
        conn.execute(stmt.on_conflict_do_nothing())

    def _append_event(
        self, conn: Connection, row: RowMapping, *, now: datetime, timestamp: datetime
    ) -> int:
        params = {
            "job_id": row["id"],
            "user_id": row["user_id"],
            "status": row["status"],
            "percentage": row["percentage"],
            "message": row["summary"],
            "attempt": row["attempt"],
            "current": row["current"],
            "total": row["total"],
            "stage": row["stage"],
            "timestamp": timestamp,
            "recorded_at": now,
        }
        event_id = int(conn.execute(_INSERT_EVENT, params).scalar_one())
        if row["parent_id"] is not None:
            self._roll_up(conn, row, now)
        return event_id

    def _roll_up(self, conn: Connection, child: RowMapping, now: datetime) -> None:
        """Carry a child's change into its parent's sums, then the parent's state, in the same
        transaction: O(1) per change, whatever the number of children. The parent's change is
        an ordinary applied update, so it has its feed row (and rolls up to its own parent)."""
        done = child["status"] in _TERMINAL
        failed = child["status"] == JobStatus.FAILED.value and not child["rolled_up_done"]
        delta = child["weight"] * (child["percentage"] - child["rolled_up_pct"])
        newly_done = done and not child["rolled_up_done"]
        if not delta and not newly_done:
            return
        j = jobs.c
        conn.execute(
            update(jobs)
            .where(j.id == child["id"], j.user_id == child["user_id"])
            .values(rolled_up_pct=child["percentage"], rolled_up_done=done)
        )
        parent = (
            conn.execute(
                update(jobs)
                .where(j.id == child["parent_id"], j.user_id == child["user_id"])
                .values(
                    children_progress=j.children_progress + delta,
                    children_done=j.children_done + int(newly_done),
                    children_failed=j.children_failed + int(failed),
                )
                .returning(*jobs.c)
            )
            .mappings()
            .first()
        )
        if parent is not None:
            self._settle_parent(conn, parent, child, now)

    def _settle_parent(
        self, conn: Connection, parent: RowMapping, child: RowMapping, now: datetime
    ) -> None:
        """The parent's state from its sums: FAILED when a child failed, FINISHED when all
        ended, otherwise the children's weighted mean (at most 99%)."""
        if parent["status"] in _TERMINAL or not parent["children"]:
            return
        update_: ProgressUpdate
        if parent["children_failed"]:
            update_ = ProgressUpdate.final(
                parent["id"],
                success=False,
                message=f"Child job {child['id']} failed: {child['error'] or child['summary']}",
                user_id=parent["user_id"],
            )
        elif parent["children_done"] >= parent["children"]:
            update_ = ProgressUpdate.final(
                parent["id"],
                success=True,
                message=f"All {parent['children']} child jobs ended",
                user_id=parent["user_id"],
            )
        else:
            mean = parent["children_progress"] / max(parent["children_weight"], 1e-9)
            update_ = ProgressUpdate(
                parent["id"],
                min(99, max(0, math.floor(mean + 1e-9))),
                f"{parent['children_done']} of {parent['children']} child jobs done",
                user_id=parent["user_id"],
            )
        self._apply_in(conn, update_, now, False)


_INSERT_EVENT = events.insert().returning(events.c.id)
_TRANSITION_COLUMNS = frozenset({"status", "summary", "error", "end_date", "worker_id"})
_SELECT_JOB = select(jobs).where(
    jobs.c.id == bindparam("p_job_id"), jobs.c.user_id == bindparam("p_owner")
)
_OWNERS = select(jobs.c.user_id).where(jobs.c.id == bindparam("p_job_id")).limit(2)
NO_USER = ""
"""The owner of jobs made by trusted in-process callers without a user: stored, never shown
(such a job's ``user_id`` reads as None); pass it to scope a call to exactly those jobs."""


def _db_user(user_id: str | None) -> str:
    return NO_USER if user_id is None else user_id


@dataclasses.dataclass(frozen=True, slots=True)
class _Shape:
    """What an update's UPDATE statement looks like; its values travel as bound parameters.

    Building a SQLAlchemy statement costs far more than running it (about 0.7 ms against
    0.2 ms), so each shape is built once and cached (``_update_statement``).
    """

    status: str  # "given": a status known in Python; "keep": no percentage; "zero": 0%
    terminal: bool
    starts: bool
    percentage: bool
    message: bool
    counts: bool
    stage: bool
    error: bool
    worker: bool
    attempt: bool
    seq: bool
    claimant: bool


def _prepare(u: ProgressUpdate, now: datetime, owner: str) -> tuple[_Shape, dict[str, Any]]:
    """The statement shape of ``u`` (on ``owner``'s job) and the parameters to run it with."""
    pct = u.percentage
    explicit = u.status
    if explicit is not None and pct is not None and explicit == status_for_percentage(pct):
        explicit = None  # "status=PROCESSING, 50%" is the derivation, not an override
    known: JobStatus | None
    if explicit is not None:
        mode, known = "given", explicit
    elif pct is None:
        mode, known = "keep", None  # failure/cancel-like: keep the status, wake a stalled job
    elif pct >= 1:
        mode, known = "given", status_for_percentage(pct)
    else:
        mode, known = "zero", None  # 0% leaves a running job running
    shape = _Shape(
        status=mode,
        terminal=known is not None and known in TERMINAL_STATUSES,
        starts=known is not None and known is not JobStatus.PENDING,
        percentage=pct is not None,
        message=u.message is not None,
        counts=u.current is not None or u.total is not None,
        stage=u.stage is not None,
        error=u.error is not None,
        worker=u.worker_id is not None,
        attempt=u.attempt is not None,
        seq=u.seq is not None,
        claimant=u.claimant is not None,
    )
    params: dict[str, Any] = {
        "p_job_id": u.job_id,
        "p_now": now,
        # A worker clock running ahead is ordered at our receive time (its own time stays in
        # the feed row): otherwise one early stamp would make every honest report stale.
        "p_ts": _micros(now if u.timestamp is None or u.timestamp > now else u.timestamp),
        "p_status": known.value if known is not None else None,
        "p_percentage": pct,
        "p_message": u.message,
        "p_current": u.current,
        "p_total": u.total,
        "p_stage": u.stage,
        "p_error": u.error,
        "p_worker_id": u.worker_id,
        "p_attempt": u.attempt,
        "p_seq": u.seq,
        "p_user_id": owner,
        "p_claimant": u.claimant,
    }
    return shape, params


@functools.lru_cache(maxsize=1024)
def _update_statement(shape: _Shape) -> Any:
    """One UPDATE that applies an update only if it is newer, deriving the status in SQL."""
    j = jobs.c
    ts = bindparam("p_ts", type_=BigInteger())
    now = bindparam("p_now", type_=UTCDateTime())
    pct = bindparam("p_percentage", type_=Integer())
    status: Any
    if shape.status == "given":
        status = bindparam("p_status", type_=String())
    elif shape.status == "keep":
        stalled = j.status == JobStatus.STALLED.value
        status = case((stalled, JobStatus.PROCESSING.value), else_=j.status)
    else:
        running = _status_in(JobStatus.PROCESSING, JobStatus.STALLED)
        status = case((running, JobStatus.PROCESSING.value), else_=JobStatus.PENDING.value)

    conditions = _scope(claimant=shape.claimant)
    newer_attempt: ColumnElement[bool] = false()
    attempt = bindparam("p_attempt", type_=Integer())
    seq = bindparam("p_seq", type_=BigInteger())
    if shape.attempt:
        conditions.append(j.attempt <= attempt)
        newer_attempt = j.attempt < attempt
    if not shape.terminal:
        # A final status is not held back by a worker clock running ahead of ours.
        # Same instant: a higher seq wins; without seq, arrival order, except that an exact
        # repeat (a retransmission) changes nothing and is not applied again.
        same_instant = j.last_ts_us == ts
        tie = and_(same_instant, j.last_seq < seq if shape.seq else _changes(shape, status))
        conditions.append(or_(newer_attempt, j.last_ts_us.is_(None), j.last_ts_us < ts, tie))

    values: dict[str, Any] = {
        "status": status,
        "updated_at": now,
        "last_seen_at": now,
        "last_ts_us": ts,
    }
    if shape.attempt:
        values["attempt"] = attempt
    if shape.seq:
        values["last_seq"] = seq
    if shape.percentage:
        values["percentage"] = pct
        same_attempt = j.attempt == attempt if shape.attempt else literal(True)
        moved = and_(same_attempt, j.last_ts_us < ts, j.percentage < pct)
        instant = (pct - j.percentage) * 1_000_000.0 / (ts - j.last_ts_us)
        smoothed = case(
            (j.rate.is_(None), instant),
            else_=_RATE_SMOOTHING * instant + (1 - _RATE_SMOOTHING) * j.rate,
        )
        values["rate"] = case((moved, smoothed), (newer_attempt, None), else_=j.rate)
    for name, value in _optional_values(shape).items():
        values[name] = value
    if shape.starts:
        values["start_date"] = func.coalesce(j.start_date, now)
    if shape.terminal:
        values["end_date"] = now
    return update(jobs).where(*conditions).values(values).returning(*jobs.c)


def _optional_values(shape: _Shape) -> dict[str, Any]:
    """The columns an update sets only when it carries them, as bound parameters."""
    j = jobs.c
    present = {
        "summary": shape.message,
        "current": shape.counts,
        "total": shape.counts,
        "stage": shape.stage,
        "error": shape.error,
        "worker_id": shape.worker,
    }
    names = {"summary": "message"}
    return {
        column: bindparam("p_" + names.get(column, column), type_=j[column].type)
        for column, carried in present.items()
        if carried
    }


def _changes(shape: _Shape, status: Any) -> ColumnElement[bool]:
    """True where applying the update would change the job's reported state."""
    j = jobs.c
    changes = [j.status.is_distinct_from(status)]
    if shape.percentage:
        changes.append(j.percentage.is_distinct_from(bindparam("p_percentage", type_=Integer())))
    changes += [
        j[column].is_distinct_from(value) for column, value in _optional_values(shape).items()
    ]
    return or_(*changes)


def _status_in(*statuses: JobStatus) -> ColumnElement[bool]:
    """``status IN ('A', 'B')`` with the values written into the SQL: an IN list of bound
    parameters is expanded on every execution, which cost the hot UPDATE a fifth of its time."""
    values = sorted(JobStatus(status).value for status in statuses)
    return jobs.c.status.in_([literal_column(f"'{value}'") for value in values])


def _scope(*, claimant: bool) -> list[ColumnElement[bool]]:
    """The job (bound as ``p_job_id`` of ``p_user_id``), if it is not terminal and the caller
    may write to it."""
    j = jobs.c
    conditions: list[ColumnElement[bool]] = [
        j.id == bindparam("p_job_id", type_=String()),
        j.user_id == bindparam("p_user_id", type_=String()),
        ~_status_in(*TERMINAL_STATUSES),
    ]
    if claimant:
        conditions.append(
            or_(j.claimed_by.is_(None), j.claimed_by == bindparam("p_claimant", type_=String()))
        )
    return conditions


def _visible(row: RowMapping, claimant: str | None) -> bool:
    """Whether a worker key (``claimant``) may write to the job: unclaimed, or claimed by it."""
    return claimant is None or row["claimed_by"] in (None, claimant)


def _why_not(row: RowMapping, u: ProgressUpdate) -> UpdateOutcome:
    """Why the conditional UPDATE matched no row, for a job that exists and is visible."""
    if row["status"] in _TERMINAL:
        return UpdateOutcome.TERMINAL
    if u.attempt is not None and row["attempt"] > u.attempt:
        return UpdateOutcome.SUPERSEDED
    return UpdateOutcome.STALE


def _from_row(cls: type[_T], row: RowMapping, **converted: Any) -> _T:
    """Build a dataclass from a row whose column names are its field names."""
    names = (f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    return cls(**{name: converted[name] if name in converted else row[name] for name in names})


def _job(row: RowMapping) -> Job:
    return _from_row(
        Job,
        row,
        user_id=row["user_id"] or None,
        status=JobStatus(row["status"]),
        metadata=dict(row["metadata"] or {}),
        cancel_requested=bool(row["cancel_requested"]),
    )


def _api_key(row: RowMapping) -> ApiKey:
    return _from_row(ApiKey, row, role=Role(row["role"]))


def _feed_event(row: RowMapping) -> FeedEvent:
    return _from_row(
        FeedEvent, row, user_id=row["user_id"] or None, status=JobStatus(row["status"])
    )
