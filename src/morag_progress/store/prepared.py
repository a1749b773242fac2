"""Statements compiled once and run on the driver's own connection.

The write path runs a handful of statement shapes thousands of times a second. Through
SQLAlchemy each execution costs about 0.2 ms of Python (an execution context, parameter
processing, a result object) on top of the SQL itself; here a statement is compiled once per
dialect with SQLAlchemy, and each execution is one call to the driver's cursor, with the column
types' own bind and result conversions applied by hand. It runs inside the caller's SQLAlchemy
transaction (the same driver connection), and driver errors become SQLAlchemy's, so the store
handles them as any other (docs/architecture.md, section 5).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, DateTime, Dialect, TypeDecorator
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import TypeEngine

from morag_progress.errors import StoreError

__all__ = ["Prepared", "bind_conversion", "result_conversion"]

_Processor = Callable[[Any], Any] | None


class Prepared:
    """One statement compiled for ``dialect``: run it with parameters by name."""

    __slots__ = (
        "_columns",
        "_defaults",
        "_dialect",
        "_positional",
        "_processors",
        "_results",
        "_returned",
        "sql",
    )

    def __init__(
        self,
        statement: ClauseElement,
        dialect: Dialect,
        *,
        column_keys: Sequence[str] | None = None,
    ) -> None:
        # ``column_keys``: the columns an INSERT sets (others get their defaults).
        compiled: SQLCompiler = statement.compile(  # type: ignore[assignment]
            dialect=dialect, column_keys=None if column_keys is None else list(column_keys)
        )
        self._dialect = dialect
        self.sql = str(compiled)
        # Constants SQLAlchemy turned into parameters (``literal(True)``, ``0.3 * rate``).
        self._defaults = dict(compiled.params)
        processors = (
            (name, bind_conversion(bind.type, dialect)) for name, bind in compiled.binds.items()
        )
        self._processors = tuple(
            (name, process) for name, process in processors if process is not None
        )
        # Positional paramstyles (SQLite's ``?``) list a name per placeholder, in order.
        names = compiled.positiontup
        self._positional: Callable[[Mapping[str, Any]], tuple[Any, ...]] | None = None
        if names is not None:
            # itemgetter of one name returns the value, not a tuple: always ask for one more.
            self._positional = operator.itemgetter(*names, "")
            self._defaults[""] = None
        self._returned = list(getattr(statement, "exported_columns", ()))
        self._columns = tuple(column.key for column in self._returned)
        self._results: tuple[tuple[int, str, _Processor], ...] | None = None  # at the first run

    def _bound(self, params: Mapping[str, Any]) -> Any:
        values = {**self._defaults, **params}
        for name, process in self._processors:
            value = values.get(name)
            if value is not None:
                values[name] = process(value)
        if self._positional is None:
            return values
        return self._positional(values)[:-1]

    def _row(self, raw: Sequence[Any], cursor: Any) -> dict[str, Any]:
        if self._results is None:
            # Some conversions depend on the type the driver reports (PostgreSQL's numerics).
            described = cursor.description
            processors = (
                (i, column.key, result_conversion(column.type, self._dialect, described[i][1]))
                for i, column in enumerate(self._returned)
            )
            self._results = tuple(
                (i, name, process) for i, name, process in processors if process is not None
            )
        row = dict(zip(self._columns, raw, strict=True))
        for i, name, process in self._results:
            value = raw[i]
            if value is not None:
                row[name] = process(value)  # type: ignore[misc]
        return row

    @contextmanager
    def _cursor(self, conn: Connection, bound: Any) -> Iterator[Any]:
        """A driver cursor on ``conn``, closed afterwards; a driver error raised while it is
        used (by a run, or a fetch: SQLite steps the statement on fetch) becomes
        SQLAlchemy's, naming this statement and ``bound``."""
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        error = self._dialect.loaded_dbapi.Error
        try:
            yield cursor
        except error as e:
            raise DBAPIError.instance(self.sql, bound, e, error) from e
        finally:
            cursor.close()

    @contextmanager
    def _run(self, conn: Connection, params: Mapping[str, Any]) -> Iterator[Any]:
        """A cursor that has run the statement (``_cursor``)."""
        bound = self._bound(params)
        with self._cursor(conn, bound) as cursor:
            cursor.execute(self.sql, bound)
            yield cursor

    def first(self, conn: Connection, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """Run it; its first returned row by column name (converted), or None."""
        with self._run(conn, params) as cursor:
            raw = cursor.fetchone()
            return None if raw is None else self._row(raw, cursor)

    def all(self, conn: Connection, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Run it; every returned row."""
        with self._run(conn, params) as cursor:
            return [self._row(raw, cursor) for raw in cursor.fetchall()]

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> None:
        """Run it, for a statement that returns no rows."""
        with self._run(conn, params):
            pass

    def insert_many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> range:
        """SQLite: run an INSERT that adds one row per run once per row of ``rows`` (the
        driver's ``executemany``: one compiled statement stepped per row; rows it returns are
        not read) and return the new rows' ids, in order. They are consecutive: SQLite gives
        a new row the largest id yet plus one, and the caller holds the database's write lock
        for the whole transaction, so nobody inserts between two of its rows. A run that
        added no row, or several, would break that count: StoreError, and the caller's
        transaction is rolled back."""
        if not rows:
            return range(0)
        bound = [self._bound(row) for row in rows]
        driver = conn.connection.dbapi_connection
        before = driver.total_changes  # type: ignore[union-attr]
        with self._cursor(conn, bound) as cursor:
            cursor.executemany(self.sql, bound)
            (last,) = cursor.execute("SELECT last_insert_rowid()").fetchone()
        added = driver.total_changes - before  # type: ignore[union-attr]
        if added != len(rows):
            raise StoreError(f"{len(rows)} rows were to be added, {added} were: {self.sql}")
        return range(last - len(rows) + 1, last + 1)

    def scalar(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """Run it; the first column of its first row (None without a row)."""
        row = self.first(conn, params)
        return None if row is None else next(iter(row.values()))


def bind_conversion(kind: TypeEngine[Any], dialect: Dialect) -> _Processor:
    """``kind``'s bind conversion on ``dialect`` (None: the driver takes the value as is).
    A date-time's is shared by every statement and table of rows (``statements.Rows``) that
    binds its type, and remembers recent values: an update's instant is bound several times
    (its UPDATE's ``now``, its feed row's two times), and converting a date-time costs more
    than looking it up."""
    process = kind.dialect_impl(dialect).bind_processor(dialect)
    return _shared(("bind", kind, dialect), process) if _is_datetime(kind) else process


def result_conversion(kind: TypeEngine[Any], dialect: Dialect, coltype: object) -> _Processor:
    """``kind``'s result conversion on ``dialect`` for a column the driver describes as
    ``coltype``. A date-time's is shared and remembers recent values, as binds do: a job's
    dates repeat in every row of it (its creation, its start), and a batch's rows share
    their ``now``."""
    process = kind.dialect_impl(dialect).result_processor(dialect, coltype)
    return _shared(("result", kind, dialect, coltype), process) if _is_datetime(kind) else process


_SHARED: dict[tuple[Any, ...], Callable[[Any], Any]] = {}


def _shared(key: tuple[Any, ...], process: _Processor) -> _Processor:
    """One remembering ``process`` per conversion: ``key`` names it by the type's class and
    arguments (its repr), never by the instance, and by the dialect's database and driver.
    A few exist per process (one per date-time type and direction)."""
    if process is None:
        return None
    direction, kind, dialect, *rest = key
    name = (direction, type(kind), repr(kind), dialect.name, dialect.driver, *rest)
    found = _SHARED.get(name)
    if found is None:
        found = _SHARED[name] = functools.lru_cache(maxsize=256)(process)
    return found


def _is_datetime(kind: Any) -> bool:
    """A date-time column or parameter (``UTCDateTime`` included): immutable values, so one
    converted value may be handed to several rows."""
    return isinstance(kind, DateTime) or (
        isinstance(kind, TypeDecorator) and isinstance(kind.impl, DateTime)
    )
