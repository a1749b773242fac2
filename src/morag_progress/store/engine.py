"""The database under the store: the engine and its connections, and what every part of the
store shares (reading one job, finding its owner, turning rows into value objects).

SQLite runs in WAL mode with a busy timeout; writes start with ``BEGIN IMMEDIATE`` so that a
writer waits for the lock up front instead of failing half-way with "database is locked".
PostgreSQL gets a pool of connections that are checked before use.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import operator
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    RowMapping,
    bindparam,
    create_engine,
    event,
    literal,
    literal_column,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

from morag_progress.errors import ConfigurationError, JobConflictError, StoreError
from morag_progress.keys import ApiKey, Role
from morag_progress.models import TERMINAL_STATUSES, FeedEvent, Job, JobStatus
from morag_progress.settings import default_database_url
from morag_progress.store.migrate import current_revision, ensure_schema, upgrade
from morag_progress.store.prepared import Prepared
from morag_progress.store.schema import jobs, worker_mappings

__all__ = [
    "NO_USER",
    "TERMINAL_VALUES",
    "Database",
    "Row",
    "api_key_from_row",
    "checkpoint_text",
    "db_user",
    "feed_event_from_row",
    "job_fields",
    "job_from_row",
    "mapping_upsert",
    "status_in",
]

_SYNCHRONOUS = ("NORMAL", "FULL")
_MAX_PREPARED = 4096
Row = Mapping[Any, Any]
"""A row by column name: SQLAlchemy's RowMapping, or a prepared statement's dict."""
_READ_OPTION = "morag_progress_read"
_T = TypeVar("_T")
TERMINAL_VALUES = sorted(s.value for s in TERMINAL_STATUSES)
NO_USER = ""
"""The owner of jobs made by trusted in-process callers without a user: stored, never shown
(such a job's ``user_id`` reads as None); pass it to scope a call to exactly those jobs."""


def json_loads(text: str | bytes) -> Any:
    """A JSON column's value: orjson's parser (several times the standard library's), and
    the standard library's for the text only it reads (``NaN``, ``Infinity``)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def checkpoint_text(checkpoint: dict[str, Any] | None) -> str | None:
    """How a job's checkpoint is stored: compact JSON text (one value to bind, the same on
    both databases and in a batch's rows); ``job_fields`` reads it back."""
    return None if checkpoint is None else orjson.dumps(checkpoint).decode()


def db_user(user_id: str | None) -> str:
    """The stored owner of a job of ``user_id`` (None: no user)."""
    return NO_USER if user_id is None else user_id


_SELECT_JOB = select(jobs).where(
    jobs.c.id == bindparam("p_job_id"), jobs.c.user_id == bindparam("p_owner")
)
_OWNERS = select(jobs.c.user_id).where(jobs.c.id == bindparam("p_job_id")).limit(2)


class Database:
    """One SQL database (``sqlite://`` or ``postgresql+psycopg://``): the engine, read and write
    transactions, and the lookups every part of the store shares.

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
            self._engine = create_engine(
                url,
                pool_pre_ping=True,
                pool_size=10,
                max_overflow=20,
                json_deserializer=json_loads,
            )
        else:
            raise ConfigurationError(
                "database_url", "must name sqlite or postgresql", parsed.render_as_string()
            )
        self._reader = self._engine.execution_options(**{_READ_OPTION: True})
        self._compiled: dict[Any, Prepared] = {}
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

    @staticmethod
    def _sqlite_engine(url: str, synchronous: str, busy_timeout_ms: int) -> Engine:
        parsed = make_url(url)
        database = parsed.database or ""
        in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
        if in_memory:
            # One shared connection, or every connection would see its own empty database.
            engine = create_engine(
                url,
                poolclass=StaticPool,
                connect_args={"check_same_thread": False},
                json_deserializer=json_loads,
            )
        else:
            _ensure_directory(Path(database).expanduser().parent, url)
            engine = create_engine(
                url, connect_args={"check_same_thread": False}, json_deserializer=json_loads
            )

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

    def ping(self) -> None:
        with self._read("ping") as conn:
            conn.execute(select(literal(1)))

    def close(self) -> None:
        self._engine.dispose()

    def prepared(self, statement: Any, column_keys: tuple[str, ...] | None = None) -> Prepared:
        """``statement`` compiled for this database once (``prepared.py``); statements are
        module-level or cached by shape, so this holds a bounded number of them."""
        key = (statement, column_keys)
        found = self._compiled.get(key)
        if found is None:
            found = Prepared(statement, self._engine.dialect, column_keys=column_keys)
            if len(self._compiled) >= _MAX_PREPARED:  # shapes rebuilt after an eviction
                self._compiled.clear()
            self._compiled[key] = found
        return found

    def _fetch(self, conn: Connection, job_id: str, owner: str) -> Row | None:
        return self.prepared(_SELECT_JOB).first(conn, {"p_job_id": job_id, "p_owner": owner})

    def _owner(self, conn: Connection, job_id: str, user_id: str | None) -> str | None:
        """Whose job ``job_id`` is: ``user_id`` itself for a scoped caller; for an unscoped
        one (in-process, an admin) the one user with a job of that id, or None when there is
        none. Raises JobConflictError when several users have one: ids are unique per user."""
        if user_id is not None:
            return user_id
        owners = self.prepared(_OWNERS).all(conn, {"p_job_id": job_id})
        if len(owners) > 1:
            raise JobConflictError(job_id)
        return owners[0]["user_id"] if owners else None


def _ensure_directory(directory: Path, url: str) -> None:
    """The SQLite file's directory must exist, except the default data directory, which is
    made on first use (a typo in a path should not quietly make directories)."""
    if directory.is_dir():
        return
    default = Path(make_url(default_database_url()).database or "").parent
    if directory != default:
        raise ConfigurationError(
            "database_url", f"names a directory that does not exist: {directory}", url
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigurationError(
            "database_url", f"cannot make {directory}: {e.strerror}", url
        ) from e


def mapping_upsert(
    insert: Any, worker_id: str, job_id: str, now: datetime, user_id: str = NO_USER
) -> Any:
    """The statement that maps ``user_id``'s ``worker_id`` to ``job_id``, replacing that
    user's earlier mapping (never another user's)."""
    stmt = insert(worker_mappings).values(
        worker_id=worker_id, user_id=user_id, job_id=job_id, updated_at=now
    )
    return stmt.on_conflict_do_update(
        index_elements=[worker_mappings.c.worker_id, worker_mappings.c.user_id],
        set_={"job_id": stmt.excluded.job_id, "updated_at": stmt.excluded.updated_at},
    )


def status_in(*statuses: JobStatus) -> ColumnElement[bool]:
    """``status IN ('A', 'B')`` with the values written into the SQL: an IN list of bound
    parameters is expanded on every execution, which cost the hot UPDATE a fifth of its time."""
    values = sorted(JobStatus(status).value for status in statuses)
    return jobs.c.status.in_([literal_column(f"'{value}'") for value in values])


def _from_row(cls: type[_T], row: Row, **converted: Any) -> _T:
    """Build a dataclass from a row whose column names are its field names."""
    names = _field_names(cls)  # type: ignore[arg-type]  # a class is hashable
    return cls(**{name: converted[name] if name in converted else row[name] for name in names})


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


_JOB_FIELDS = _field_names(Job)
_job_columns = operator.itemgetter(*_JOB_FIELDS)
_USER, _STATUS, _METADATA, _CANCEL, _CHECKPOINT, _STRAGGLER = (
    _JOB_FIELDS.index(name)
    for name in ("user_id", "status", "metadata", "cancel_requested", "checkpoint", "straggler")
)
_STATUSES = {status.value: status for status in JobStatus}


def job_from_row(row: Row) -> Job:
    """The job a row of ``jobs`` holds. Every listed job is one: its fields are taken in
    order and passed by position (``job_fields``; a keyword per field cost twice as much)."""
    return Job(*job_fields(row))


def job_fields(row: Row) -> list[Any]:
    """The fields of the job a row of ``jobs`` holds, in ``Job``'s order, the six that need
    it converted (an applied update's result holds these: ``UpdateResult.of_fields``)."""
    values = list(_job_columns(row))
    values[_USER] = values[_USER] or None
    values[_STATUS] = _STATUSES.get(values[_STATUS]) or JobStatus(values[_STATUS])
    values[_METADATA] = dict(values[_METADATA] or {})
    values[_CANCEL] = bool(values[_CANCEL])
    values[_STRAGGLER] = bool(values[_STRAGGLER])
    if values[_CHECKPOINT] is not None:  # stored as JSON text (``checkpoint_text``)
        values[_CHECKPOINT] = json_loads(values[_CHECKPOINT])
    return values


def api_key_from_row(row: RowMapping) -> ApiKey:
    return _from_row(ApiKey, row, role=Role(row["role"]))


def feed_event_from_row(row: RowMapping) -> FeedEvent:
    return _from_row(
        FeedEvent, row, user_id=row["user_id"] or None, status=JobStatus(row["status"])
    )
