"""The one feed cursor: a low-water mark and one gap rule, for stored readers and the tail."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from morag_progress.store import SQLStore
from morag_progress.store.cursor import FeedCursor


def test_a_stored_reader_stops_at_a_gap_until_it_has_been_missing_long_enough() -> None:
    """Without reading ahead: the rows up to a missing id; past it once this reader has seen it
    missing for the timeout (a rolled-back insert), by its own clock."""
    cursor = FeedCursor(1, gap_seconds=5)
    assert cursor.advance([2, 4, 5], now=100.0) == [2]
    assert cursor.low == 2
    assert cursor.advance([4, 5], now=104.9) == []  # 3 missing for 4.9 s: it may still commit
    assert cursor.advance([4, 5], now=105.0) == [4, 5]
    assert cursor.low == 5
    assert (cursor.seen, cursor.missing_since) == (set(), {})


def test_a_late_commit_inside_the_timeout_is_read_in_order() -> None:
    """An id that commits after a higher one, within the timeout, is read before it."""
    cursor = FeedCursor(0, gap_seconds=5)
    assert cursor.advance([2], now=0.0) == []
    assert cursor.advance([1, 2], now=3.0) == [1, 2]


def test_the_tail_reads_ahead_and_hands_out_each_id_once() -> None:
    """Reading ahead: rows above an open gap are handed out at once and not again; the mark
    waits below the gap, and passes it once the missing id commits."""
    cursor = FeedCursor(0, gap_seconds=5)
    assert cursor.advance([1, 3, 4], now=0.0, ahead=True) == [1, 3, 4]
    assert (cursor.low, cursor.seen) == (1, {3, 4})
    assert cursor.advance([3, 4], now=1.0, ahead=True) == []
    assert cursor.advance([2, 3, 4], now=2.0, ahead=True) == [2]
    assert (cursor.low, cursor.seen) == (4, set())


def test_the_tail_gives_a_gap_up_after_the_timeout() -> None:
    """A missing id the tail has waited for long enough is given up; what it had read ahead
    is not handed out again."""
    cursor = FeedCursor(0, gap_seconds=5)
    assert cursor.advance([2, 3], now=0.0, ahead=True) == [2, 3]
    assert cursor.advance([2, 3], now=6.0, ahead=True) == []
    assert cursor.low == 3


def test_a_stored_cursor_is_saved_and_loaded(store: SQLStore) -> None:
    """A cursor's mark is stored by name and read back; none before it was ever saved."""
    insert = store.dialect_insert()
    reader = FeedCursor()
    with store.transaction("cursor") as conn:
        assert reader.load(conn, "test", lock=False) is False
        FeedCursor(41).save(conn, "test", insert=insert)
        FeedCursor(42).save(conn, "test", insert=insert)
    with store.transaction("cursor") as conn:
        assert reader.load(conn, "test", lock=store.dialect == "postgresql") is True
    assert reader.low == 42


@given(st.permutations(list(range(1, 30))), st.integers(1, 6))
def test_out_of_order_commits_are_each_read_once_in_full(order: list[int], step: int) -> None:
    """Ids committing in any order, read a few at a time within the timeout: the tail hands
    out every id exactly once and its mark ends at the last; a stored reader hands out each id
    once, in order."""
    tail, stored = FeedCursor(0), FeedCursor(0)
    committed: list[int] = []
    handed: list[int] = []
    in_order: list[int] = []
    for i in range(0, len(order), step):
        committed += order[i : i + step]
        for cursor, out, ahead in ((tail, handed, True), (stored, in_order, False)):
            ids = [n for n in sorted(committed) if n > cursor.low]
            out += cursor.advance(ids, now=float(i) / 100, ahead=ahead)
    assert sorted(handed) == list(range(1, 30))
    assert len(handed) == len(set(handed))
    assert in_order == list(range(1, 30))
    assert tail.low == stored.low == 29
