"""What finished jobs of each kind took (``eta.History``, one row per user and document type):
learned in the writer's transaction as a job finishes, read (cached briefly) for estimates."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, select, tuple_, update

from morag_progress.eta import History, Pace
from morag_progress.store.engine import Row
from morag_progress.store.schema import eta_history

__all__ = ["MAX_KINDS_PER_USER", "learn", "read_histories"]

MAX_KINDS_PER_USER = 1000
"""The most kinds (document types) one user's histories hold; later kinds are not learned."""


def learn(
    conn: Connection,
    job: Row,
    pace: Pace | None,
    *,
    ended_s: float,
    dialect_insert: Any,
    lock: bool,
) -> None:
    """Teach the history of ``job``'s kind how long it took (from its start to now), with its
    last run's ``pace``: one read and one write of a few numbers, in the caller's transaction."""
    started, ended = job["start_date"], job["end_date"]
    if started is None or ended is None:
        return
    seconds = (ended - started).total_seconds()
    h = eta_history.c
    owner, kind = job["user_id"], job["document_type"]
    key = (h.user_id == owner, h.document_type == kind)
    exists = select(h.user_id).where(*key)
    if conn.execute(exists).first() is None:
        kinds = select(func.count()).select_from(eta_history).where(h.user_id == owner)
        if conn.execute(kinds).scalar_one() >= MAX_KINDS_PER_USER:
            return
        # The row first (a concurrent first finish of the kind inserts nothing), then the
        # locked read: two replicas' folds follow one another, neither is lost.
        conn.execute(
            dialect_insert(eta_history)
            .values(user_id=owner, document_type=kind, history={}, updated_at=ended)
            .on_conflict_do_nothing()
        )
    read = select(h.history).where(*key)
    if lock:
        read = read.with_for_update()
    found = conn.execute(read).scalar_one()
    history = History.from_json(found).learn(
        seconds, total=job["total"], pace=pace, ended_s=ended_s
    )
    conn.execute(
        update(eta_history).where(*key).values(history=history.to_json(), updated_at=ended)
    )


def read_histories(conn: Connection, keys: set[tuple[str, str]]) -> dict[tuple[str, str], History]:
    """The histories of ``keys`` ((user id, document type)); kinds with none are left out."""
    if not keys:
        return {}
    h = eta_history.c
    stmt = select(h.user_id, h.document_type, h.history).where(
        tuple_(h.user_id, h.document_type).in_(sorted(keys))
    )
    return {(u, t): History.from_json(data) for u, t, data in conn.execute(stmt)}
