"""The write path's statements: each rule of docs/architecture.md section 3 written once, in SQL.

An update's conditional ``UPDATE`` (is it newer, may this caller write, what is the new status)
is built once per *shape* (which fields the update carries) from its parameters. The same
builder serves one update, whose parameters are bound (``BOUND``), and a writer's batch, whose
updates of one shape are applied by one statement reading their parameters from a table of
rows (``Rows``): a single JSON parameter read as a table (``json_each`` on SQLite,
``jsonb_to_recordset`` on PostgreSQL), so a statement is compiled once per shape whatever the
batch's size, and the database joins it to ``jobs`` by primary key.

Each statement is built once (per shape, or per dialect) and kept: a builder is a plain
function (``_build_update_statement``) and the name callers use is its cached form
(``update_statement``), so a test can build afresh what an earlier one left cached
(``BUILT``), and a mutation run reaches the builders' code.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    BigInteger,
    ColumnElement,
    Dialect,
    Float,
    FromClause,
    Integer,
    Select,
    String,
    Text,
    and_,
    bindparam,
    case,
    cast,
    column,
    false,
    func,
    insert,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeEngine

from morag_progress.audit import Action
from morag_progress.models import (
    TERMINAL_STATUSES,
    JobStatus,
    ProgressUpdate,
    UpdateOutcome,
    status_for_percentage,
)
from morag_progress.store.engine import Row, checkpoint_text, status_in
from morag_progress.store.prepared import bind_conversion
from morag_progress.store.schema import UTCDateTime, events, jobs

__all__ = [
    "BOUND",
    "BUILT",
    "EVENT_COLUMNS",
    "UPDATE_PARAMETERS",
    "Rows",
    "Shape",
    "feed_copy",
    "job_rows",
    "lock_rows",
    "pace_update",
    "prepare",
    "unchanged",
    "update_statement",
    "update_with_feed",
    "visible",
    "why_not",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

Param = Callable[[str], ColumnElement[Any]]
"""An update's parameter by name (``job_id``, ``ts``, ...), as a SQL expression."""

UPDATE_PARAMETERS: dict[str, TypeEngine[Any]] = {
    "job_id": String(),
    "user_id": String(),
    "now": UTCDateTime(),
    "ts": BigInteger(),
    "status": String(),
    "percentage": Integer(),
    "message": Text(),
    "current": BigInteger(),
    "total": BigInteger(),
    "stage": String(),
    "error": Text(),
    "worker_id": String(),
    "attempt": Integer(),
    "seq": BigInteger(),
    "claimant": String(),
    "event_ts": UTCDateTime(),
    "actor": String(),
    "action": String(),
    "checkpoint": Text(),
}
"""What an update's statement reads, with its SQL types (``prepare`` makes the values)."""


def _bound(name: str) -> ColumnElement[Any]:
    return bindparam("p_" + name, type_=UPDATE_PARAMETERS[name])


BOUND: Param = _bound
"""Parameters bound one by one: one update's statement."""


def _by_name(name: str) -> ColumnElement[Any]:
    """A parameter bound by ``prepare``'s own name: for a statement that sets no column by
    name (an INSERT from a SELECT), whose binds cannot clash with its columns'."""
    return bindparam(name, type_=UPDATE_PARAMETERS[name])


class Rows:
    """A table of rows passed as one JSON parameter (``p_rows``): the parameters of a batch's
    updates, read in SQL as the columns of a table named ``v``."""

    def __init__(self, name: str, columns: Mapping[str, TypeEngine[Any]]) -> None:
        self.name = name
        self.columns = dict(columns)

    def table(self, dialect: str) -> FromClause:
        """The rows as a table for ``dialect`` (``sqlite`` or ``postgresql``), built once."""
        return _table(self, dialect)

    def param(self, dialect: str) -> Param:
        """The rows' columns as an update's parameters (``p_x`` is the column ``x``)."""
        table = self.table(dialect)
        return lambda name: table.c[name]

    def encode(self, dialect: Dialect, rows: Iterable[Mapping[str, Any]]) -> str:
        """The value of ``p_rows`` for ``rows`` (each a mapping of column to value), with each
        value converted as a bound parameter of its column's type would be. A null is left
        out (the column reads as null all the same): an update carries about half of the
        fields, and SQLite reads the row's text once per column it takes."""
        converters = _converters(self, dialect)
        converted = []
        for row in rows:
            kept = {}
            for name, value in row.items():
                if value is not None:
                    convert = converters.get(name)
                    kept[name] = value if convert is None else convert(value)
            converted.append(kept)
        return orjson.dumps(converted).decode()


def _build_table(rows: Rows, dialect: str) -> FromClause:
    """``rows`` as a table for ``dialect`` (``Rows.table``)."""
    values = bindparam("p_rows", type_=Text())
    if dialect == "postgresql":
        typed = [column(name, kind) for name, kind in rows.columns.items()]
        source = func.jsonb_to_recordset(cast(values, JSONB))
        return source.table_valued(*typed).render_derived(name=rows.name, with_types=True)
    each = func.json_each(values).table_valued("value")
    return select(
        *(
            type_coerce(func.json_extract(each.c.value, f"$.{name}"), kind).label(name)
            for name, kind in rows.columns.items()
        )
    ).subquery(rows.name)


_table = functools.cache(_build_table)


@functools.cache
def _converters(rows: Rows, dialect: Dialect) -> Mapping[str, Callable[[Any], Any]]:
    """The columns whose values a bound parameter of their type converts on ``dialect`` (a
    date-time, stored as text on SQLite), each with its conversion (``bind_conversion``)."""
    found = {}
    for name, kind in rows.columns.items():
        convert = bind_conversion(kind, dialect)
        if convert is not None:
            found[name] = convert
    return MappingProxyType(found)


@dataclasses.dataclass(frozen=True, slots=True)
class Shape:
    """What an update's UPDATE statement looks like; its values travel as parameters.

    Building a SQLAlchemy statement costs far more than running it (about 0.7 ms against
    0.2 ms), so each shape is built once and cached (``update_statement``).
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
    checkpoint: bool = False
    unchanged: bool = False
    """Only for jobs already in the given status, which it leaves unset (``unchanged``)."""


def unchanged(shape: Shape) -> Shape | None:
    """``shape`` for the jobs already in its status, which it then does not set (None for a
    shape whose status is not given, or is final). SQLite rewrites the index entries of each
    indexed column an UPDATE sets, changed or not, and a running job's next report is most
    reports: two indexes lead with the status."""
    if shape.status != "given" or shape.terminal:
        return None
    return _unchanged(shape)


@functools.cache
def _unchanged(shape: Shape) -> Shape:
    return dataclasses.replace(shape, unchanged=True)


def _micros(value: datetime) -> int:
    """Microseconds since the epoch, exactly (datetime.timestamp() goes through a float)."""
    return (value - _EPOCH) // _MICROSECOND


def prepare(
    u: ProgressUpdate, now: datetime, owner: str, action: Action
) -> tuple[Shape, dict[str, Any]]:
    """The statement shape of ``u`` (on ``owner``'s job, a change of kind ``action``) and its
    parameters, by name (``UPDATE_PARAMETERS``)."""
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
    shape = _shape(
        mode,
        known is not None and known in TERMINAL_STATUSES,
        known is not None and known is not JobStatus.PENDING,
        pct is not None,
        u.message is not None,
        u.current is not None or u.total is not None,
        u.stage is not None,
        u.error is not None,
        u.worker_id is not None,
        u.attempt is not None,
        u.seq is not None,
        u.claimant is not None,
        u.checkpoint is not None,
    )
    params: dict[str, Any] = {
        "job_id": u.job_id,
        "now": now,
        # A worker clock running ahead is ordered at our receive time (its own time stays in
        # the feed row): otherwise one early stamp would make every honest report stale.
        "ts": _micros(now if u.timestamp is None or u.timestamp > now else u.timestamp),
        "status": known.value if known is not None else None,
        "percentage": pct,
        "message": u.message,
        "current": u.current,
        "total": u.total,
        "stage": u.stage,
        "error": u.error,
        "worker_id": u.worker_id,
        "attempt": u.attempt,
        "seq": u.seq,
        "user_id": owner,
        "claimant": u.claimant,
        "event_ts": u.timestamp or now,  # the feed row keeps the worker's own time
        "actor": u.actor,
        "action": action.value,
        "checkpoint": checkpoint_text(u.checkpoint),
    }
    return shape, params


@functools.cache
def _shape(status: str, *flags: bool) -> Shape:
    """The shape of these flags (``Shape``'s fields in order), made once: there are at most a
    few thousand, and every update has one."""
    return Shape(status, *flags)


def bound(params: Mapping[str, Any]) -> dict[str, Any]:
    """``prepare``'s parameters as a single statement binds them (``p_`` names)."""
    return {"p_" + name: value for name, value in params.items()}


UPDATES = Rows("v", UPDATE_PARAMETERS)
"""A batch's updates of one shape, one row each."""


def _build_update_statement(shape: Shape, source: str | None = None) -> Any:
    """One UPDATE that applies an update only if it is newer, deriving the status in SQL;
    ``source``: the dialect whose ``UPDATES`` rows it reads (a batch), else bound parameters."""
    p = BOUND if source is None else UPDATES.param(source)
    j = jobs.c
    ts, now, pct = p("ts"), p("now"), p("percentage")
    status: Any
    if shape.status == "given":
        status = p("status")
    elif shape.status == "keep":
        stalled = j.status == JobStatus.STALLED.value
        status = case((stalled, JobStatus.PROCESSING.value), else_=j.status)
    else:
        running = status_in(JobStatus.PROCESSING, JobStatus.STALLED)
        status = case((running, JobStatus.PROCESSING.value), else_=JobStatus.PENDING.value)

    conditions = scope(p, claimant=shape.claimant)
    newer_attempt: ColumnElement[bool] = false()
    attempt, seq = p("attempt"), p("seq")
    if shape.attempt:
        conditions.append(j.attempt <= attempt)
        newer_attempt = j.attempt < attempt
    if not shape.terminal:
        # A final status is not held back by a worker clock running ahead of ours.
        # Same instant: a higher seq wins; without seq, arrival order, except that an exact
        # repeat (a retransmission) changes nothing and is not applied again.
        same_instant = j.last_ts_us == ts
        tie = and_(same_instant, j.last_seq < seq if shape.seq else _changes(p, shape, status))
        conditions.append(or_(newer_attempt, j.last_ts_us.is_(None), j.last_ts_us < ts, tie))

    values: dict[str, Any] = {
        "status": status,
        "updated_at": now,
        "last_seen_at": now,
        "last_ts_us": ts,
    }
    if shape.unchanged:
        conditions.append(j.status == status)
        del values["status"]
    if shape.attempt:
        values["attempt"] = attempt
    if shape.seq:
        values["last_seq"] = seq
    if shape.percentage:
        values["percentage"] = pct
    values.update(_optional_values(p, shape))
    if shape.checkpoint:  # saved at the percentage this update leaves
        values["checkpoint_percentage"] = pct if shape.percentage else j.percentage
    if shape.starts:
        values["start_date"] = func.coalesce(j.start_date, now)
    if shape.terminal:
        values["end_date"] = now
    return update(jobs).where(*conditions).values(values).returning(*jobs.c)


update_statement = functools.lru_cache(maxsize=1024)(_build_update_statement)


def _build_update_with_feed(shape: Shape) -> Any:
    """PostgreSQL, one update: the update and, if it applied, its feed row, in one statement
    returning the job's new row and the feed id (``WITH applied AS (UPDATE ...), fed AS
    (INSERT ...)``)."""
    applied = update_statement(shape).cte("applied")
    fed = (
        insert(events)
        .from_select(list(EVENT_COLUMNS), _feed_rows(applied, BOUND))
        .returning(events.c.id)
        .cte("fed")
    )
    return select(applied, select(fed.c.id).scalar_subquery().label("event_id"))


update_with_feed = functools.lru_cache(maxsize=1024)(_build_update_with_feed)


def _optional_values(p: Param, shape: Shape) -> dict[str, Any]:
    """The columns an update sets only when it carries them."""
    present = {
        "summary": shape.message,
        "current": shape.counts,
        "total": shape.counts,
        "stage": shape.stage,
        "error": shape.error,
        "worker_id": shape.worker,
        "checkpoint": shape.checkpoint,
    }
    names = {"summary": "message"}
    values = {name: p(names.get(name, name)) for name, carried in present.items() if carried}
    if "worker_id" in values:
        # A report names the job's worker only while it has none: a claim's name (or the
        # first reporter's) stays until the job is queued again, which forgets it.
        values["worker_id"] = func.coalesce(jobs.c.worker_id, values["worker_id"])
    return values


def _changes(p: Param, shape: Shape, status: Any) -> ColumnElement[bool]:
    """True where applying the update would change the job's reported state."""
    j = jobs.c
    changes = [j.status.is_distinct_from(status)]
    if shape.percentage:
        changes.append(j.percentage.is_distinct_from(p("percentage")))
    changes += [
        j[name].is_distinct_from(value) for name, value in _optional_values(p, shape).items()
    ]
    return or_(*changes)


def scope(p: Param, *, claimant: bool) -> list[ColumnElement[bool]]:
    """The job (``job_id`` of ``user_id``), if it is not terminal and the caller may write to
    it."""
    j = jobs.c
    conditions: list[ColumnElement[bool]] = [
        j.id == p("job_id"),
        j.user_id == p("user_id"),
        ~status_in(*TERMINAL_STATUSES),
    ]
    if claimant:
        conditions.append(or_(j.claimed_by.is_(None), j.claimed_by == p("claimant")))
    return conditions


def visible(row: Row, claimant: str | None) -> bool:
    """Whether a worker key (``claimant``) may write to the job: unclaimed, or claimed by it."""
    return claimant is None or row["claimed_by"] in (None, claimant)


def why_not(row: Row, u: ProgressUpdate) -> UpdateOutcome:
    """Why the conditional UPDATE matched no row, for a job that exists and is visible."""
    if row["status"] in _TERMINAL_VALUES:
        return UpdateOutcome.TERMINAL
    if u.attempt is not None and row["attempt"] > u.attempt:
        return UpdateOutcome.SUPERSEDED
    return UpdateOutcome.STALE


_TERMINAL_VALUES = frozenset(s.value for s in TERMINAL_STATUSES)

EVENT_COLUMNS = tuple(c.key for c in events.c if c.key != "id")


def _feed_rows(job: FromClause, p: Param) -> Select[Any]:
    """The feed row of a change: the job's row as it is after it (``job``: ``jobs``, or an
    UPDATE's returned rows), stamped with the update's time (``event_ts``), when it was
    received (``now``), who made it and how."""
    j = job.c
    return select(
        j.id,
        j.user_id,
        j.status,
        j.percentage,
        j.summary,
        j.attempt,
        j.current,
        j.total,
        j.stage,
        p("event_ts"),
        p("now"),
        p("actor"),
        p("action"),
    )


def _build_feed_copy(source: str | None = None) -> Any:
    """Append the feed rows of changes made in this transaction, copied from their jobs'
    rows (``_feed_rows``). ``source``: the dialect whose ``UPDATES`` rows it reads (on
    PostgreSQL: one statement for a batch, returning each new row's id with its job), else
    parameters bound by the names ``prepare`` gives them (SQLite: run once per change, the
    new ids counted, not returned, as a RETURNING clause costs SQLite more than the rest of
    the row)."""
    p = _by_name if source is None else UPDATES.param(source)
    rows = _feed_rows(jobs, p).where(jobs.c.id == p("job_id"), jobs.c.user_id == p("user_id"))
    statement = insert(events).from_select(list(EVENT_COLUMNS), rows)
    if source is None:
        return statement
    return statement.returning(events.c.id, events.c.job_id, events.c.user_id)


feed_copy = functools.lru_cache(maxsize=4)(_build_feed_copy)


KEYS = Rows("k", {"id": String(), "user_id": String()})
"""Jobs by key, one row each."""


def _build_job_rows(dialect: str) -> Any:
    """The jobs ``KEYS`` names, as they are (one statement for a batch's refused updates)."""
    k = KEYS.table(dialect)
    return select(jobs).join(k, and_(jobs.c.id == k.c.id, jobs.c.user_id == k.c.user_id))


job_rows = functools.cache(_build_job_rows)


def _build_lock_rows(dialect: str) -> Any:
    """PostgreSQL: lock the jobs ``KEYS`` names, in (owner, id) order."""
    k = KEYS.table(dialect)
    return (
        select(jobs.c.id)
        .join(k, and_(jobs.c.id == k.c.id, jobs.c.user_id == k.c.user_id))
        .order_by(jobs.c.user_id, jobs.c.id)
        .with_for_update(of=jobs)
    )


lock_rows = functools.cache(_build_lock_rows)


PACES = Rows("q", {"id": String(), "user_id": String(), "pace": Text(), "rate": Float()})
"""New paces of a batch's jobs (``pace`` as JSON text)."""


def _build_pace_update(dialect: str) -> Any:
    """Every ``PACES`` row written to its job in one statement."""
    q = PACES.table(dialect)
    pace: Any = q.c.pace if dialect == "sqlite" else cast(q.c.pace, JSON)
    return (
        update(jobs)
        .where(jobs.c.id == q.c.id, jobs.c.user_id == q.c.user_id)
        .values(pace=pace, rate=q.c.rate)
    )


pace_update = functools.cache(_build_pace_update)


BUILT = (
    _table,
    update_statement,
    update_with_feed,
    feed_copy,
    job_rows,
    lock_rows,
    pace_update,
)
"""The caches of built statements (each has ``cache_clear``)."""
