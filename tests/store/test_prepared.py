"""Prepared statements: compiled once by SQLAlchemy, run on the driver's cursor, with the
column types' conversions; and the parts of SQLAlchemy's compiler they rely on (SQLAlchemy is
pinned to a minor version for them: these fail on an upgrade that changes them)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import DateTime, Integer, String, bindparam, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler

from morag_progress.errors import StoreError
from morag_progress.store import SQLStore
from morag_progress.store.prepared import Prepared, bind_conversion, result_conversion
from morag_progress.store.schema import UTCDateTime, events, jobs


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.dialect()], ids=["sqlite", "pg"])
def test_the_compiler_exposes_what_prepared_reads(dialect: object) -> None:
    """A compiled statement names its binds with their types, its constants as parameters,
    and (for a positional paramstyle) the order of its placeholders."""
    stmt = select(jobs.c.id, literal(3, Integer()).label("three")).where(
        jobs.c.id == bindparam("p_id", type_=String())
    )
    compiled = stmt.compile(dialect=dialect)  # type: ignore[arg-type]
    assert isinstance(compiled, SQLCompiler)
    assert "p_id" in compiled.binds
    assert isinstance(compiled.binds["p_id"].type, String)
    assert 3 in compiled.params.values()
    if dialect.paramstyle in ("qmark", "numeric"):  # type: ignore[attr-defined]
        assert compiled.positiontup is not None
        assert "p_id" in compiled.positiontup
    assert [c.key for c in stmt.exported_columns] == ["id", "three"]
    insert = str(events.insert().compile(dialect=dialect, column_keys=["job_id"]))  # type: ignore[arg-type]
    assert "job_id" in insert
    assert "status" not in insert  # only the columns named are set


def test_a_statement_runs_with_its_conversions(store: SQLStore) -> None:
    """Bound date-times and results come back converted as the column types say."""
    now = datetime(2026, 1, 1, 12, 0, 0, 5, tzinfo=UTC)
    stmt = select(literal(now, jobs.c.created_at.type).label("at"), jobs.c.id).where(
        jobs.c.id == bindparam("p_id", type_=String())
    )
    prepared = Prepared(stmt, store._engine.dialect)
    with store.transaction("test") as conn:
        assert prepared.first(conn, {"p_id": "none"}) is None
        assert prepared.all(conn, {"p_id": "none"}) == []
        found = Prepared(
            select(literal(now, jobs.c.created_at.type).label("at")), store._engine.dialect
        )
        assert found.first(conn, {}) == {"at": now}
        assert found.scalar(conn, {}) == now


def test_a_driver_error_is_sqlalchemys(store: SQLStore) -> None:
    """A failing statement raises SQLAlchemy's DBAPIError, as any other statement would."""
    prepared = Prepared(events.insert().returning(events.c.id), store._engine.dialect)
    with pytest.raises(DBAPIError), store._engine.begin() as conn:
        prepared.scalar(conn, {"job_id": None})  # NOT NULL columns missing


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_rows_inserted_many_get_their_ids_in_order(store: SQLStore) -> None:
    """SQLite: ``insert_many`` returns each new row's id, in the rows' order (read back and
    compared), and a failing row fails the call with SQLAlchemy's error."""
    row = {
        "user_id": "u", "status": "PROCESSING", "percentage": 1, "message": None, "attempt": 1,
        "current": None, "total": None, "stage": None, "actor": None, "action": "report",
        "timestamp": datetime(2026, 1, 1, tzinfo=UTC), "recorded_at": datetime(2026, 1, 1, tzinfo=UTC),
    }  # fmt: skip
    columns = tuple(c.key for c in events.c if c.key != "id")
    prepared = Prepared(events.insert(), store._engine.dialect, column_keys=columns)
    with store.transaction("test") as conn:
        assert list(prepared.insert_many(conn, [])) == []
        first = prepared.insert_many(conn, [{**row, "job_id": "a"}])
        ids = prepared.insert_many(conn, [{**row, "job_id": name} for name in "bcd"])
        assert list(ids) == [first[0] + 1, first[0] + 2, first[0] + 3]
        read = Prepared(
            select(events.c.id, events.c.job_id)
            .where(events.c.user_id == bindparam("p_user", type_=String()))
            .order_by(events.c.id),
            store._engine.dialect,
        )
        assert [(r["id"], r["job_id"]) for r in read.all(conn, {"p_user": "u"})][-3:] == list(
            zip(ids, "bcd", strict=True)
        )
    with pytest.raises(DBAPIError), store._engine.begin() as conn:
        prepared.insert_many(conn, [{**row, "job_id": "e"}, {**row, "job_id": None}])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_rows_inserted_many_must_each_add_one(store: SQLStore) -> None:
    """SQLite: ``insert_many`` counts the new ids from the last one, so a run that adds no
    row (an INSERT ... SELECT that selects none) fails it rather than misnaming the ids."""
    source = select(
        jobs.c.id, jobs.c.user_id, jobs.c.status, jobs.c.percentage, jobs.c.summary,
        jobs.c.attempt, jobs.c.current, jobs.c.total, jobs.c.stage, jobs.c.created_at,
        jobs.c.created_at, jobs.c.created_by, literal("report"),
    ).where(jobs.c.id == bindparam("p_id", type_=String()))  # fmt: skip
    columns = [c.key for c in events.c if c.key != "id"]
    prepared = Prepared(events.insert().from_select(columns, source), store._engine.dialect)
    with pytest.raises(StoreError, match="1 rows were to be added, 0 were"):  # noqa: SIM117
        with store.transaction("test") as conn:
            prepared.insert_many(conn, [{"p_id": "no-such-job"}])


def test_date_time_conversions_are_shared_and_follow_the_type(store: SQLStore) -> None:
    """One conversion per date-time type and dialect, whichever statement binds it (an
    update's instant is converted once, not once per statement); other types keep their
    own, and a date-time type with other arguments gets its own."""
    dialect = store._engine.dialect
    a, b = bind_conversion(UTCDateTime(), dialect), bind_conversion(UTCDateTime(), dialect)
    assert a is not None
    assert a is b
    assert bind_conversion(DateTime(timezone=False), dialect) is not a
    now = datetime(2026, 1, 1, 12, 0, 0, 5, tzinfo=UTC)
    text = a(now)
    result = result_conversion(UTCDateTime(), dialect, None)
    assert result is not None
    assert result(text) == now
    assert bind_conversion(String(), dialect) is None
