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
    key = (h.user_id == job["user_id"], h.document_type == job["document_type"])
    read = select(h.history).where(*key)
    if lock:
        read = read.with_for_update()  # two replicas finishing jobs of one kind: no lost fold
    found = conn.execute(read).scalar_one_or_none()
    if found is None:
        kinds = select(func.count()).select_from(eta_history).where(h.user_id == job["user_id"])
        if conn.execute(kinds).scalar_one() >= MAX_KINDS_PER_USER:
            return
    history = History.from_json(found).learn(
        seconds, total=job["total"], pace=pace, ended_s=ended_s
    )
    values = {"history": history.to_json(), "updated_at": ended}
    if found is None:
        stmt = dialect_insert(eta_history).values(
            user_id=job["user_id"], document_type=job["document_type"], **values
        )
        conn.execute(
            stmt.on_conflict_do_update(index_elements=["user_id", "document_type"], set_=values)
        )
    else:
        conn.execute(update(eta_history).where(*key).values(values))


def read_histories(conn: Connection, keys: set[tuple[str, str]]) -> dict[tuple[str, str], History]:
    """The histories of ``keys`` ((user id, document type)); kinds with none are left out."""
    if not keys:
        return {}
    h = eta_history.c
    stmt = select(h.user_id, h.document_type, h.history).where(
        tuple_(h.user_id, h.document_type).in_(sorted(keys))
    )
    return {(u, t): History.from_json(data) for u, t, data in conn.execute(stmt)}
