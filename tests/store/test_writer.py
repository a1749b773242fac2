"""The writer: set-based batches that answer each update for itself, and the retry of a
transaction PostgreSQL rolled back as a deadlock's victim."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from morag_progress.errors import StoreError
from morag_progress.models import JobStatus, ProgressUpdate, UpdateOutcome
from morag_progress.store import NewJob, SQLStore
from morag_progress.store.schema import jobs
from morag_progress.store.writer import _retry_conflicts
from morag_progress.tracker import JobTracker


class _DriverError(Exception):
    def __init__(self, sqlstate: str) -> None:
        self.sqlstate = sqlstate


class _Wrapped(Exception):
    def __init__(self, sqlstate: str) -> None:
        self.orig = _DriverError(sqlstate)


def _failing(sqlstate: str, times: int) -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def run() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise StoreError("apply updates failed") from _Wrapped(sqlstate)
        return "committed"

    return calls, run


@pytest.mark.parametrize("sqlstate", ["40P01", "40001"])
def test_a_deadlock_victim_is_run_again(sqlstate: str) -> None:
    """A deadlock or serialization failure (rolled back whole) is retried, up to three runs."""
    calls, run = _failing(sqlstate, 2)
    assert _retry_conflicts(run) == "committed"
    assert len(calls) == 3
    calls, run = _failing(sqlstate, 3)
    with pytest.raises(StoreError):
        _retry_conflicts(run)


def test_other_database_errors_are_not_retried() -> None:
    """Anything else (a constraint, the server gone) is raised at once."""
    calls, run = _failing("23505", 1)
    with pytest.raises(StoreError):
        _retry_conflicts(run)
    assert len(calls) == 1


def _job(store: SQLStore, job_id: str, now: datetime, user: str = "u") -> None:
    store.create_job(
        NewJob(id=job_id, document_name="d", document_type="pdf", user_id=user), now=now
    )


def test_a_batch_answers_each_update_for_itself(store: SQLStore) -> None:
    """One batch, many outcomes: applied, stale, terminal, superseded, not found and another
    worker's claim, each update's own, and one feed row per applied update."""
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    for job_id in ("a", "b", "done"):
        _job(store, job_id, now)
    _job(store, "claimed", now, JobStatus.WAITING_FOR_REMOTE_WORKER)
    store.apply(ProgressUpdate("done", 100, user_id="u"), now=now)
    store.apply(ProgressUpdate("b", 30, attempt=2, user_id="u"), now=now)
    store.claim(user_id="u", worker_id="w1", claimant="k1", document_types=None, now=now)
    later = now + timedelta(seconds=1)
    before = store.last_event_id()
    results = store.apply_many(
        [
            ProgressUpdate("a", 10, "ten", user_id="u"),
            ProgressUpdate("a", 5, "older", user_id="u", timestamp=now - timedelta(hours=1)),
            ProgressUpdate("done", 50, user_id="u"),
            ProgressUpdate("b", 40, user_id="u", attempt=1),
            ProgressUpdate("nope", 40, user_id="u"),
            ProgressUpdate("a", 20, "twenty", user_id="u", stage="s", current=2, total=10),
            ProgressUpdate("claimed", 50, user_id="u", claimant="k2"),
            ProgressUpdate("a", 30, user_id="someone-else"),
        ],
        now=later,
    )
    assert [r.outcome for r in results] == [
        UpdateOutcome.APPLIED,
        UpdateOutcome.STALE,
        UpdateOutcome.TERMINAL,
        UpdateOutcome.SUPERSEDED,
        UpdateOutcome.NOT_FOUND,
        UpdateOutcome.APPLIED,
        UpdateOutcome.NOT_FOUND,
        UpdateOutcome.NOT_FOUND,
    ]
    assert results[2].job is not None
    assert results[2].job.status is JobStatus.FINISHED
    # A job's updates apply in the order sent: the last one wins, each in the feed.
    job = store.get_job("a", user_id="u")
    assert job is not None
    assert (job.percentage, job.summary, job.stage, job.current, job.total) == (
        20,
        "twenty",
        "s",
        2,
        10,
    )
    history = store.history("a", user_id="u")
    assert [(e.percentage, e.message) for e in history[-2:]] == [(10, "ten"), (20, "twenty")]
    applied = [r for r in results if r.applied]
    assert [r.event_id for r in applied] == sorted(r.event_id for r in applied)  # type: ignore[type-var]
    assert store.last_event_id() == before + 2


def test_a_batch_of_many_jobs_and_shapes_lands_whole(store: SQLStore) -> None:
    """Reports for many jobs in several shapes, some jobs twice, in one batch: every job ends
    at its last report, with its pace kept, and the feed holds each applied report once."""
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    for i in range(30):
        _job(store, f"j{i}", now)
    updates = []
    for i in range(30):
        updates.append(ProgressUpdate(f"j{i}", 10 + i, user_id="u", timestamp=now))
        if i % 3 == 0:
            updates.append(ProgressUpdate(f"j{i}", 50 + i, f"m{i}", user_id="u", stage="x"))
        if i % 5 == 0:
            updates.append(ProgressUpdate(f"j{i}", 100, "done", user_id="u"))
    before = store.last_event_id()
    results = store.apply_many(updates, now=now + timedelta(seconds=30))
    assert all(r.applied for r in results)
    assert store.last_event_id() - before == len(updates)
    for i in range(30):
        job = store.get_job(f"j{i}", user_id="u")
        assert job is not None
        expected = 100 if i % 5 == 0 else 50 + i if i % 3 == 0 else 10 + i
        assert job.percentage == expected
        assert job.pace is not None  # folded, and written once at the batch's end
    assert store.get_job("j0", user_id="u").status is JobStatus.FINISHED  # type: ignore[union-attr]


def test_one_shape_applies_to_jobs_in_and_out_of_its_status(store: SQLStore) -> None:
    """One statement shape for jobs already running and jobs still waiting (SQLite updates
    the first without setting their status, then the rest): each ends PROCESSING, started,
    with its feed row; a stale report among them is still refused."""
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    for job_id in ("running", "waiting", "stale"):
        _job(store, job_id, now)
    store.apply(ProgressUpdate("running", 10, user_id="u"), now=now)
    store.apply(ProgressUpdate("stale", 10, user_id="u"), now=now)
    later = now + timedelta(seconds=5)
    before = store.last_event_id()
    results = store.apply_many(
        [
            ProgressUpdate("running", 20, "r", user_id="u"),
            ProgressUpdate("waiting", 30, "w", user_id="u"),
            ProgressUpdate("stale", 40, "s", user_id="u", timestamp=now - timedelta(hours=1)),
        ],
        now=later,
    )
    assert [r.outcome for r in results] == [
        UpdateOutcome.APPLIED,
        UpdateOutcome.APPLIED,
        UpdateOutcome.STALE,
    ]
    for job_id, pct in (("running", 20), ("waiting", 30)):
        job = store.get_job(job_id, user_id="u")
        assert job is not None
        assert (job.status, job.percentage, job.updated_at) == (JobStatus.PROCESSING, pct, later)
        assert job.start_date == (now if job_id == "running" else later)
        assert (store.history(job_id, user_id="u")[-1].status, job.summary) == (
            JobStatus.PROCESSING,
            job_id[0],
        )
    assert store.get_job("stale", user_id="u").percentage == 10  # type: ignore[union-attr]
    assert store.last_event_id() == before + 2


def test_rows_bind_date_times_as_the_columns_store_them(store: SQLStore) -> None:
    """A batch's rows carry a date-time as its column stores it: read back, equal."""
    now = datetime(2026, 1, 1, 12, 0, 0, 0, tzinfo=UTC)  # no microseconds: the tricky case
    _job(store, "t", now)
    result = store.apply_many([ProgressUpdate("t", 10, user_id="u")], now=now)[0]
    assert result.job is not None
    assert result.job.updated_at == now
    assert result.job.last_seen_at == now
    [*_, last] = store.history("t", user_id="u")
    assert last.recorded_at == now
    assert last.timestamp == now


def test_a_parent_and_its_child_in_one_batch_roll_up_once(store: SQLStore) -> None:
    """A child's report and its parent's own report in one batch: the grandparent's sums hold
    each child's share once (the parent is read again after its child's roll-up)."""
    tracker = JobTracker(store=store)
    tracker.start_job("n", "t", user_id="u", job_id="top")
    tracker.start_job("n", "t", user_id="u", job_id="zmid", parent_id="top")  # sorts last
    tracker.start_job("n", "t", user_id="u", job_id="aleaf", parent_id="zmid")
    tracker.start_job("n", "t", user_id="u", job_id="other", parent_id="top")
    results = tracker.apply_many(
        [ProgressUpdate("aleaf", 50, user_id="u"), ProgressUpdate("zmid", 10, user_id="u")]
    )
    assert all(r.applied for r in results)
    with store.connection("read sums") as conn:
        rows = {row.id: row for row in conn.execute(select(jobs))}
    children = [row for row in rows.values() if row.parent_id == "top"]
    assert rows["top"].children_progress == sum(c.weight * c.percentage for c in children)


def test_a_missing_job_is_made_in_its_turn(store: SQLStore) -> None:
    """In one batch, a report queued before an in-process report that makes the job is not
    found; the making one applies (the job is not made ahead of its turn)."""
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    first = store.submit(ProgressUpdate("late", 40, "worker", user_id="u"), now=now)
    second = store.submit(
        ProgressUpdate("late", 10, "in-process", user_id="u"), now=now, create_missing=True
    )
    outcomes = [first.result(5).outcome, second.result(5).outcome]
    assert outcomes == [UpdateOutcome.NOT_FOUND, UpdateOutcome.APPLIED]
    job = store.get_job("late", user_id="u")
    assert job is not None
    assert (job.percentage, job.summary) == (10, "in-process")


def test_an_unscoped_update_of_an_id_two_users_have_is_ambiguous(store: SQLStore) -> None:
    """In a batch, an update without a user for an id two users have is answered AMBIGUOUS,
    and the batch's other updates apply; an empty batch applies nothing."""
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    for user in ("u", "v"):
        new = NewJob(id="same", document_name="d", document_type="pdf", user_id=user)
        store.create_job(new, now=now)
    _job(store, "mine", now)
    results = store.apply_many(
        [ProgressUpdate("same", 5), ProgressUpdate("mine", 7, user_id="u")], now=now
    )
    assert [r.outcome for r in results] == [UpdateOutcome.AMBIGUOUS, UpdateOutcome.APPLIED]
    assert store.apply_many([], now=now) == []


def test_the_writer_holds_a_connection_only_while_work_is_queued(tmp_path: Path) -> None:
    """The writer thread keeps one connection from a transaction to the next while updates
    wait, gives it back to the pool once none does, and never uses again one whose
    transaction failed (here: the file locked by another process past the busy timeout)."""
    path = tmp_path / "held.db"
    store = SQLStore(f"sqlite:///{path}", busy_timeout_ms=50)
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    _job(store, "j", now)
    pool = store._engine.pool

    def idle() -> bool:
        deadline = time.monotonic() + 5
        while pool.checkedout() and time.monotonic() < deadline:  # type: ignore[attr-defined]
            time.sleep(0.01)
        return pool.checkedout() == 0  # type: ignore[attr-defined,no-any-return]

    futures = [
        store.submit(ProgressUpdate("j", pct, user_id="u"), now=now + timedelta(seconds=pct))
        for pct in range(1, 60)
    ]
    assert all(future.result(10).applied for future in futures)
    assert idle()
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    with pytest.raises(StoreError, match="database is locked"):
        store.apply(ProgressUpdate("j", 70, user_id="u"), now=now + timedelta(seconds=70))
    locker.execute("ROLLBACK")
    locker.close()
    assert idle()
    result = store.apply(ProgressUpdate("j", 80, user_id="u"), now=now + timedelta(seconds=80))
    assert result.applied
    assert result.job is not None
    assert result.job.percentage == 80
    store.close()
    assert pool.checkedout() == 0  # type: ignore[attr-defined]


def _paced_run(url: str) -> tuple[dict[str, dict[str, Any] | None], SQLStore]:
    """Six jobs reported on in turns over a minute, two of them finished half way; each
    job's stored pace at the end, and the store (left open)."""
    store = SQLStore(url)
    start = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    names = [f"j{i}" for i in range(6)]
    for name in names:
        _job(store, name, start)
    for step in range(1, 13):
        now = start + timedelta(seconds=5 * step)
        for i, name in enumerate(names):
            pct = 100 if i < 2 and step == 6 else min(99, step * (4 + i))
            if i < 2 and step > 6:
                continue
            store.apply(ProgressUpdate(name, pct, user_id="u", timestamp=now), now=now)
    paces: dict[str, dict[str, Any] | None] = {}
    for name in names:
        job = store.get_job(name, user_id="u")
        assert job is not None
        paces[name] = job.pace
    return paces, store


def test_the_writer_keeps_the_paces_of_recent_open_jobs_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer remembers the paces it wrote for at most ``_MAX_PACES`` jobs and none of an
    ended job; a job whose pace it forgot reads it from its row: every stored pace is the one
    a writer that forgets nothing stores."""
    reference, store = _paced_run(f"sqlite:///{tmp_path / 'all.db'}")
    assert set(store._paces or {}) == {("u", f"j{i}") for i in range(2, 6)}  # none ended
    store.close()
    monkeypatch.setattr("morag_progress.store.writer._MAX_PACES", 2)
    forgetful, store = _paced_run(f"sqlite:///{tmp_path / 'two.db'}")
    assert set(store._paces or {}) == {("u", "j4"), ("u", "j5")}  # the last two changed
    store.close()
    assert forgetful == reference
    assert all(pace is not None for pace in reference.values())
