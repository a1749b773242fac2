"""The tables' types: SQLite's date-times, converted fast, as the text SQLAlchemy writes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite

from morag_progress.store.schema import SQLiteDateTime

_DIALECT = sqlite.dialect()
_THEIRS = sqlite.DATETIME()
_OURS = SQLiteDateTime()


def _processors(kind: sqlite.DATETIME) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    write, read = kind.bind_processor(_DIALECT), kind.result_processor(_DIALECT, None)
    assert write is not None
    assert read is not None
    return write, read


@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)))
def test_date_times_are_written_and_read_as_sqlalchemy_does(value: datetime) -> None:
    """The same text as SQLAlchemy's SQLite DATETIME writes, and the same value read back
    from either's text (fails if an upgrade of SQLAlchemy changes the storage format)."""
    (write, read), (their_write, their_read) = _processors(_OURS), _processors(_THEIRS)
    text = write(value)
    assert text == their_write(value)
    assert read(text) == their_read(text) == value


def test_nothing_is_none_both_ways() -> None:
    """None stays None (a NULL column)."""
    write, read = _processors(_OURS)
    assert write(None) is None
    assert read(None) is None


def test_text_written_without_microseconds_is_read() -> None:
    """Text without a fraction (as SQLite's own functions write) reads as SQLAlchemy reads it."""
    _, read = _processors(_OURS)
    assert read("2026-01-01 12:00:00") == datetime(2026, 1, 1, 12, 0)
