"""The one feed cursor: a low-water mark and one gap rule, for stored readers and the tail."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from morag_progress.store import SQLStore
from morag_progress.store.cursor import FeedCursor

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
YOUNG = NOW - timedelta(seconds=1)
OLD = NOW - timedelta(seconds=10)


def test_a_stored_reader_stops_at_a_young_gap_and_passes_an_old_one() -> None:
    """Without reading ahead: the rows up to a gap whose next row is young; past a gap whose
    next row is older than the timeout (a rolled-back insert)."""
    cursor = FeedCursor(1)
    assert cursor.advance([(2, YOUNG), (4, YOUNG), (5, YOUNG)], NOW) == [2]
    assert cursor.low == 2
    assert cursor.advance([(4, OLD), (5, OLD)], NOW) == [4, 5]
    assert cursor.low == 5
    assert cursor.seen == set()


def test_the_tail_reads_ahead_and_hands_out_each_id_once() -> None:
    """Reading ahead: rows above a young gap are handed out at once and not again; the mark
    waits below the gap, and passes it once the missing id commits."""
    cursor = FeedCursor(0, gap_seconds=5)
    assert cursor.advance([(1, YOUNG), (3, YOUNG), (4, YOUNG)], NOW, ahead=True) == [1, 3, 4]
    assert (cursor.low, cursor.seen) == (1, {3, 4})
    assert cursor.advance([(3, YOUNG), (4, YOUNG)], NOW, ahead=True) == []
    assert cursor.advance([(2, YOUNG), (3, YOUNG), (4, YOUNG)], NOW, ahead=True) == [2]
    assert (cursor.low, cursor.seen) == (4, set())


def test_a_stored_cursor_is_saved_and_loaded(store: SQLStore) -> None:
    """A cursor's mark is stored by name, and read back (None before it was ever saved)."""
    insert = store.dialect_insert()
    with store.transaction("cursor") as conn:
        assert FeedCursor.load(conn, "test", lock=False) is None
        FeedCursor(41).save(conn, "test", insert=insert)
        FeedCursor(42).save(conn, "test", insert=insert)
    with store.transaction("cursor") as conn:
        loaded = FeedCursor.load(conn, "test", lock=store.dialect == "postgresql")
    assert loaded is not None
    assert loaded.low == 42


@given(st.permutations(list(range(1, 30))), st.integers(1, 6))
def test_out_of_order_commits_are_each_read_once_in_full(order: list[int], step: int) -> None:
    """Ids committing in any order, read a few at a time: the tail hands out every id exactly
    once and its mark ends at the last; a stored reader hands out each id once, in order."""
    tail, stored = FeedCursor(0), FeedCursor(0)
    committed: list[int] = []
    handed: list[int] = []
    in_order: list[int] = []
    for i in range(0, len(order), step):
        committed += order[i : i + step]
        for cursor, out, ahead in ((tail, handed, True), (stored, in_order, False)):
            marks = [(n, YOUNG) for n in sorted(committed) if n > cursor.low]
            out += cursor.advance(marks, NOW, ahead=ahead)
    assert sorted(handed) == list(range(1, 30))
    assert len(handed) == len(set(handed))
    assert in_order == list(range(1, 30))
    assert tail.low == stored.low == 29
