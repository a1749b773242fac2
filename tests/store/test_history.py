"""Learned durations per kind (``store/history.py``): kept in the database, folded once per
finished job, and not lost when two writers finish the first jobs of a kind at once."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from morag_progress.store import SQLStore
from morag_progress.store.history import MAX_KINDS_PER_USER, learn, read_histories

START = datetime(2026, 1, 1, tzinfo=UTC)


def _job(kind: str, seconds: float) -> dict[str, object]:
    return {
        "user_id": "alice",
        "document_type": kind,
        "start_date": START,
        "end_date": START + timedelta(seconds=seconds),
        "total": None,
    }


def _learn(store: SQLStore, kind: str, seconds: float, hold: float = 0.0) -> None:
    with store.transaction("learn") as conn:
        learn(
            conn,
            _job(kind, seconds),
            None,
            ended_s=seconds,
            dialect_insert=store.dialect_insert(),
            lock=store.dialect == "postgresql",
        )
        time.sleep(hold)  # hold the transaction open: the other writer must wait, not overwrite


def test_two_first_finishes_of_a_kind_at_once_are_both_learned(database_url: str) -> None:
    """Two stores (two replicas) fold the first two jobs of a new kind concurrently: the
    history counts both."""
    first, second = SQLStore(database_url), SQLStore(database_url)
    try:
        slow = threading.Thread(target=_learn, args=(first, "audio", 100.0, 0.5))
        slow.start()
        time.sleep(0.1)
        _learn(second, "audio", 120.0)
        slow.join(10)
        with first.connection("read") as conn:
            histories = read_histories(conn, {("alice", "audio")})
        assert histories[("alice", "audio")].count == 2
    finally:
        first.close()
        second.close()


def test_a_user_learns_a_bounded_number_of_kinds(store: SQLStore) -> None:
    """Past MAX_KINDS_PER_USER kinds, a new kind is not learned (known ones still are)."""
    with store.transaction("fill") as conn:
        for i in range(MAX_KINDS_PER_USER):
            learn(
                conn,
                _job(f"kind-{i}", 10),
                None,
                ended_s=10,
                dialect_insert=store.dialect_insert(),
                lock=False,
            )
    _learn(store, "one-too-many", 10)
    _learn(store, "kind-0", 10)
    with store.connection("read") as conn:
        found = read_histories(conn, {("alice", "one-too-many"), ("alice", "kind-0")})
    assert set(found) == {("alice", "kind-0")}
    assert found[("alice", "kind-0")].count == 2
