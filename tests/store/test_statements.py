"""The write path's statements: an update's shape and parameters (``prepare``), and each rule
of its conditional UPDATE, run on a real database: which report is newer, what status it
leaves, which columns it sets, and why one that matched nothing did not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import Integer, String, select
from sqlalchemy.dialects import postgresql, sqlite

from morag_progress.audit import Action
from morag_progress.models import JobStatus, ProgressUpdate, UpdateOutcome
from morag_progress.store import NewJob, SQLStore
from morag_progress.store.schema import UTCDateTime, events, jobs
from morag_progress.store.statements import (
    KEYS,
    UPDATES,
    Rows,
    bound,
    job_rows,
    lock_rows,
    prepare,
    unchanged,
    visible,
    why_not,
)
from tests.conftest import fresh_postgres_database
from tests.services import PostgresServer

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
EPOCH_US = int(NOW.timestamp()) * 1_000_000


def _shape(**fields: Any) -> Any:
    return prepare(ProgressUpdate("j", **fields), NOW, "alice", Action.REPORT)


@pytest.mark.parametrize(
    ("fields", "status", "mode", "terminal", "starts"),
    [
        ({"percentage": 40}, "PROCESSING", "given", False, True),
        ({"percentage": 1}, "PROCESSING", "given", False, True),
        ({"percentage": 100}, "FINISHED", "given", True, True),
        ({"percentage": 0}, None, "zero", False, False),
        ({"percentage": 0.5}, None, "zero", False, False),
        ({"message": "only a message"}, None, "keep", False, False),
        ({"percentage": 50, "status": JobStatus.PROCESSING}, "PROCESSING", "given", False, True),
        ({"percentage": 50, "status": JobStatus.FAILED}, "FAILED", "given", True, True),
        ({"status": JobStatus.CANCELLED}, "CANCELLED", "given", True, True),
        ({"status": JobStatus.PENDING}, "PENDING", "given", False, False),
        ({"percentage": 0, "status": JobStatus.PENDING}, None, "zero", False, False),
    ],
)
def test_an_updates_status_is_given_kept_or_left_to_sql(
    fields: dict[str, Any], status: str | None, mode: str, terminal: bool, starts: bool
) -> None:
    """A percentage from 1 derives the status in Python; 0% and a report without a
    percentage leave it to the statement (which knows the job's status); an explicit status
    that is not the derivation wins."""
    shape, params = _shape(**fields)
    assert (shape.status, shape.terminal, shape.starts, params["status"]) == (
        mode,
        terminal,
        starts,
        status,
    )


def test_a_shape_says_which_fields_the_update_carries() -> None:
    bare, _ = _shape(percentage=10)
    assert not any(
        getattr(bare, name)
        for name in ("message", "counts", "stage", "error", "worker", "attempt", "seq")
    )
    assert (bare.percentage, bare.claimant, bare.unchanged) == (True, False, False)
    full, params = _shape(
        percentage=10,
        message="m",
        total=9,
        stage="s",
        error="e",
        worker_id="w",
        attempt=2,
        seq=3,
        claimant="k",
        actor="key:k",
    )
    assert all(
        getattr(full, name)
        for name in ("message", "counts", "stage", "error", "worker", "attempt", "seq")
    )
    assert full.claimant
    assert (params["total"], params["current"], params["claimant"]) == (9, None, "k")
    assert (params["actor"], params["action"], params["user_id"]) == ("key:k", "report", "alice")
    current_only, _ = _shape(percentage=10, current=1)
    assert current_only.counts
    assert _shape(percentage=10)[0] is _shape(percentage=20)[0]  # made once, shared


def test_the_order_key_is_the_reports_time_never_ahead_of_ours() -> None:
    """``ts`` is the report's time in exact microseconds; a time ahead of the server's is
    ordered at the server's (the feed row keeps the worker's own, ``event_ts``)."""
    earlier = NOW - timedelta(seconds=1, microseconds=1)
    _, params = _shape(percentage=10, timestamp=earlier)
    assert params["ts"] == EPOCH_US - 1_000_001
    assert params["event_ts"] == earlier
    ahead = NOW + timedelta(seconds=3)
    _, params = _shape(percentage=10, timestamp=ahead)
    assert (params["ts"], params["event_ts"]) == (EPOCH_US, ahead)
    _, params = _shape(percentage=10)
    assert (params["ts"], params["event_ts"], params["now"]) == (EPOCH_US, NOW, NOW)
    far = datetime(2262, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC)  # past float's exact range
    _, params = prepare(ProgressUpdate("j", 1, timestamp=far), far, "u", Action.REPORT)
    assert params["ts"] % 1_000_000 == 999_999


def test_bound_names_each_parameter_as_the_single_statement_binds_it() -> None:
    assert bound({"job_id": "j", "ts": 5}) == {"p_job_id": "j", "p_ts": 5}


def test_only_a_running_given_status_has_an_unchanged_form() -> None:
    """SQLite: a running job's next report need not rewrite the status (two indexes lead
    with it); a final status, a kept one or 0% has no such form."""
    running, _ = _shape(percentage=40)
    same = unchanged(running)
    assert same is not None
    assert (same.unchanged, same.status, same.percentage) == (True, "given", True)
    assert unchanged(running) is same
    for fields in ({"percentage": 100}, {"percentage": 0}, {"message": "m"}):
        assert unchanged(_shape(**fields)[0]) is None


def test_rows_leave_nulls_out_and_convert_date_times_as_their_columns_do() -> None:
    """A batch's rows as one JSON value: a null field is left out; a date-time is the text
    SQLite stores, and PostgreSQL's driver takes it as it is."""
    _, params = _shape(percentage=10)
    on_sqlite = orjson.loads(UPDATES.encode(sqlite.dialect(), [params]))
    assert "message" not in on_sqlite[0]
    assert on_sqlite[0]["percentage"] == 10
    assert on_sqlite[0]["now"] == "2026-01-01 12:00:00.000000"
    assert KEYS.encode(postgresql.dialect(), [{"id": "a", "user_id": None}]) == '[{"id":"a"}]'
    assert UPDATES.table("sqlite") is UPDATES.table("sqlite")
    assert UPDATES.table("sqlite") is not UPDATES.table("postgresql")


def test_why_an_update_matched_nothing() -> None:
    """A job that ended is TERMINAL; an older attempt's report is SUPERSEDED (a newer one's
    or an unnumbered one's is not); otherwise the report was older: STALE."""
    running = {"status": "PROCESSING", "attempt": 2}
    for status in ("FINISHED", "FAILED", "CANCELLED"):
        ended = {"status": status, "attempt": 2}
        assert why_not(ended, ProgressUpdate("j", 5, attempt=1)) is UpdateOutcome.TERMINAL
    assert why_not(running, ProgressUpdate("j", 5, attempt=1)) is UpdateOutcome.SUPERSEDED
    assert why_not(running, ProgressUpdate("j", 5, attempt=2)) is UpdateOutcome.STALE
    assert why_not(running, ProgressUpdate("j", 5)) is UpdateOutcome.STALE
    stalled = {"status": "STALLED", "attempt": 1}
    assert why_not(stalled, ProgressUpdate("j", 5)) is UpdateOutcome.STALE


def test_a_claimed_job_is_visible_to_its_claimant_only() -> None:
    assert visible({"claimed_by": None}, "k1")
    assert visible({"claimed_by": "k1"}, "k1")
    assert not visible({"claimed_by": "k1"}, "k2")
    assert visible({"claimed_by": "k1"}, None)  # a trusted in-process caller


# -- the statement's rules, on a real database -----------------------------------------------


def _job(store: SQLStore, status: JobStatus = JobStatus.PENDING, job_id: str = "j") -> None:
    new = NewJob(id=job_id, document_name="d", document_type="t", user_id="u", status=status)
    store.create_job(new, now=NOW)


def _apply(store: SQLStore, at: float, **fields: Any) -> UpdateOutcome:
    """Apply a report of job ``j`` stamped ``at`` seconds after NOW (received then)."""
    when = NOW + timedelta(seconds=at)
    fields.setdefault("timestamp", when)
    update = ProgressUpdate(fields.pop("job_id", "j"), user_id="u", **fields)
    return store.apply(update, now=when).outcome


def _state(store: SQLStore, job_id: str = "j") -> Any:
    job = store.get_job(job_id, user_id="u")
    assert job is not None
    return job


@pytest.mark.parametrize(
    ("start", "fields", "after"),
    [
        (JobStatus.PENDING, {"percentage": 0}, JobStatus.PENDING),
        (JobStatus.PROCESSING, {"percentage": 0}, JobStatus.PROCESSING),
        (JobStatus.STALLED, {"percentage": 0}, JobStatus.PROCESSING),
        (JobStatus.PENDING, {"message": "m"}, JobStatus.PENDING),
        (JobStatus.STALLED, {"message": "m"}, JobStatus.PROCESSING),
        (
            JobStatus.WAITING_FOR_REMOTE_WORKER,
            {"message": "m"},
            JobStatus.WAITING_FOR_REMOTE_WORKER,
        ),
        (JobStatus.PENDING, {"percentage": 30}, JobStatus.PROCESSING),
        (JobStatus.PROCESSING, {"percentage": 30, "status": JobStatus.PENDING}, JobStatus.PENDING),
    ],
)
def test_the_status_a_report_leaves(
    store: SQLStore, start: JobStatus, fields: dict[str, Any], after: JobStatus
) -> None:
    """0% keeps a running job running (a stalled one wakes) and a waiting one waiting; a
    report without a percentage keeps the status, waking a stalled job; from 1% it runs."""
    _job(store, start)
    assert _apply(store, 1, **fields) is UpdateOutcome.APPLIED
    assert _state(store).status is after


def test_only_a_newer_report_applies(store: SQLStore) -> None:
    _job(store)
    assert _apply(store, 2, percentage=20) is UpdateOutcome.APPLIED
    assert _apply(store, 1, percentage=10) is UpdateOutcome.STALE
    assert _apply(store, 3, percentage=30) is UpdateOutcome.APPLIED
    assert _state(store).percentage == 30


def test_at_the_same_instant_a_higher_seq_wins(store: SQLStore) -> None:
    _job(store)
    assert _apply(store, 1, percentage=10, seq=5) is UpdateOutcome.APPLIED
    assert _apply(store, 1, percentage=11, seq=5) is UpdateOutcome.STALE
    assert _apply(store, 1, percentage=12, seq=4) is UpdateOutcome.STALE
    assert _apply(store, 1, percentage=13, seq=6) is UpdateOutcome.APPLIED
    assert _state(store).percentage == 13


@pytest.mark.parametrize(
    "change",
    [
        {"percentage": 11},
        {"message": "other"},
        {"stage": "other"},
        {"current": 2, "total": 9},
        {"status": JobStatus.PENDING, "percentage": 10},
    ],
)
def test_at_the_same_instant_without_seq_a_change_applies_and_a_repeat_does_not(
    store: SQLStore, change: dict[str, Any]
) -> None:
    """Without seq, arrival order decides, except that an exact repeat (a retransmission)
    changes nothing and is not applied (nor fed) again."""
    _job(store)
    first = {"percentage": 10, "message": "m", "stage": "s", "current": 1, "total": 9}
    assert _apply(store, 1, **first) is UpdateOutcome.APPLIED
    fed = store.last_event_id()
    assert _apply(store, 1, **first) is UpdateOutcome.STALE
    assert store.last_event_id() == fed
    assert _apply(store, 1, **{**first, **change}) is UpdateOutcome.APPLIED


def test_a_newer_attempt_applies_whatever_its_time(store: SQLStore) -> None:
    """A requeued job's new attempt is not held back by the old attempt's later clock; the
    old attempt's reports are SUPERSEDED from then on."""
    _job(store)
    assert _apply(store, 10, percentage=70, attempt=1) is UpdateOutcome.APPLIED
    assert _apply(store, 5, percentage=5, attempt=2) is UpdateOutcome.APPLIED
    assert _apply(store, 20, percentage=80, attempt=1) is UpdateOutcome.SUPERSEDED
    job = _state(store)
    assert (job.attempt, job.percentage) == (2, 5)
    assert _apply(store, 21, percentage=6, attempt=2) is UpdateOutcome.APPLIED
    assert _apply(store, 4, percentage=4, attempt=2) is UpdateOutcome.STALE  # same attempt


def test_a_final_status_is_not_held_back_by_a_clock_ahead(store: SQLStore) -> None:
    """A worker clock ahead of ours stamped the job's last report; the final report, from a
    clock behind it, still ends the job; after it nothing applies."""
    _job(store)
    assert _apply(store, 10, percentage=50) is UpdateOutcome.APPLIED
    assert _apply(store, 5, status=JobStatus.FAILED, error="boom") is UpdateOutcome.APPLIED
    job = _state(store)
    assert (job.status, job.error, job.percentage) == (JobStatus.FAILED, "boom", 50)
    assert job.end_date == NOW + timedelta(seconds=5)
    assert _apply(store, 30, percentage=60) is UpdateOutcome.TERMINAL


def test_a_report_sets_only_what_it_carries(store: SQLStore) -> None:
    """Fields a report leaves out keep their values; its times are set; the job starts at
    its first running report and keeps that start; a worker's name is taken only while the
    job has none."""
    _job(store)
    _apply(store, 1, percentage=10, message="m", stage="s", current=1, total=9, worker_id="w1")
    _apply(store, 2, percentage=20, worker_id="w2")
    job = _state(store)
    assert (job.summary, job.stage, job.current, job.total) == ("m", "s", 1, 9)
    assert (job.percentage, job.worker_id) == (20, "w1")
    assert job.start_date == NOW + timedelta(seconds=1)
    assert job.updated_at == NOW + timedelta(seconds=2)
    assert job.end_date is None
    _apply(store, 3, message="only")
    assert (_state(store).percentage, _state(store).summary) == (20, "only")


def test_a_claimed_job_refuses_another_workers_report(store: SQLStore) -> None:
    _job(store, JobStatus.WAITING_FOR_REMOTE_WORKER)
    _job(store, JobStatus.PENDING, "unclaimed")
    # A job no worker claimed takes any worker key's report.
    assert _apply(store, 1, percentage=5, claimant="k9", job_id="unclaimed").name == "APPLIED"
    assert store.claim(user_id="u", worker_id="gpu", claimant="k1", document_types=None, now=NOW)
    assert _apply(store, 1, percentage=10, claimant="k2") is UpdateOutcome.NOT_FOUND
    assert _apply(store, 2, percentage=20, claimant="k1") is UpdateOutcome.APPLIED
    assert _apply(store, 3, percentage=30) is UpdateOutcome.APPLIED  # in-process: trusted
    assert _state(store).percentage == 30


def test_a_report_is_scoped_to_its_users_job(store: SQLStore) -> None:
    _job(store)
    other = NewJob(id="j", document_name="d", document_type="t", user_id="v")
    store.create_job(other, now=NOW)
    update = ProgressUpdate("j", 40, user_id="v", timestamp=NOW + timedelta(seconds=1))
    assert store.apply(update, now=NOW + timedelta(seconds=1)).applied
    assert (_state(store).percentage, store.get_job("j", user_id="v").percentage) == (0, 40)  # type: ignore[union-attr]


def test_each_applied_report_is_fed_as_the_job_became(store: SQLStore) -> None:
    """A feed row per applied report: the job's state after it, the worker's own time, when
    it was received, and who sent it."""
    _job(store)
    ahead = NOW + timedelta(seconds=90)
    update = ProgressUpdate(
        "j", 40, "m", user_id="u", timestamp=ahead, stage="s", actor="key:k", current=4, total=10
    )
    assert store.apply(update, now=NOW + timedelta(seconds=1)).applied
    [*_, last] = store.history("j", user_id="u")
    assert (last.percentage, last.message, last.stage, last.status) == (
        40,
        "m",
        "s",
        JobStatus.PROCESSING,
    )
    assert (last.current, last.total, last.action, last.attempt) == (4, 10, "report", 1)
    assert (last.timestamp, last.recorded_at, last.actor) == (
        ahead,
        NOW + timedelta(seconds=1),
        "key:k",
    )


def test_a_parents_roll_up_is_applied_and_fed_as_the_servers_change(store: SQLStore) -> None:
    """A parent's state follows its child's report in the same transaction (one update with
    bound parameters): its percentage, its start, and its feed row made by the server as a
    roll-up."""
    for job_id, parent in (("p", None), ("c", "p")):
        new = NewJob(id=job_id, document_name="d", document_type="t", user_id="u", parent_id=parent)
        store.create_job(new, now=NOW)
    assert _apply(store, 1, percentage=40, job_id="c") is UpdateOutcome.APPLIED
    parent = _state(store, "p")
    assert (parent.percentage, parent.status, parent.summary) == (
        40,
        JobStatus.PROCESSING,
        "0 of 1 child jobs done",
    )
    assert (parent.start_date, parent.updated_at) == (NOW + timedelta(seconds=1),) * 2
    _found_by_time(store, "p", NOW + timedelta(seconds=1))
    [*_, fed] = store.history("p", user_id="u")
    assert (fed.percentage, fed.action, fed.actor, fed.recorded_at) == (
        40,
        "rollup",
        "server",
        NOW + timedelta(seconds=1),
    )
    assert _apply(store, 2, percentage=100, job_id="c") is UpdateOutcome.APPLIED
    ended = _state(store, "p")
    assert (ended.status, ended.end_date) == (JobStatus.FINISHED, NOW + timedelta(seconds=2))


def _found_by_time(store: SQLStore, job_id: str, at: datetime) -> None:
    """The job's row and its feed rows at ``at`` are found by a query on that time: each
    date-time is stored as its column stores every other (SQLite compares them as text)."""
    with store.connection("by time") as conn:
        updated = select(jobs.c.id).where(jobs.c.updated_at >= at, jobs.c.id == job_id)
        assert conn.execute(updated).scalars().all() == [job_id]
        fed = select(events.c.job_id).where(
            events.c.recorded_at >= at, events.c.timestamp >= at, events.c.job_id == job_id
        )
        assert conn.execute(fed).scalars().all() == [job_id]


def test_every_date_time_a_report_writes_is_stored_as_its_column_stores_it(
    store: SQLStore,
) -> None:
    _job(store)
    assert _apply(store, 1, percentage=10) is UpdateOutcome.APPLIED
    _found_by_time(store, "j", NOW + timedelta(seconds=1))


def test_a_table_of_rows_reads_back_each_column_as_its_type(store: SQLStore) -> None:
    """A batch's rows, passed as one JSON value, read in SQL as a table with typed columns:
    a date-time comes back as a date-time, a missing value as null."""
    rows = Rows("r", {"n": Integer(), "at": UTCDateTime(), "s": String()})
    value = rows.encode(store._engine.dialect, [{"n": 1, "at": NOW, "s": "x"}, {"n": 2}])
    table = rows.table(store.dialect)
    with store.connection("rows") as conn:
        read = conn.execute(select(table).order_by(table.c.n), {"p_rows": value}).all()
    assert [tuple(row) for row in read] == [(1, NOW, "x"), (2, None, None)]


def _keys(store: SQLStore, keys: list[tuple[str, str]]) -> str:
    return KEYS.encode(store._engine.dialect, [{"id": i, "user_id": u} for u, i in keys])


def test_job_rows_reads_exactly_the_jobs_named(store: SQLStore) -> None:
    """By (owner, id): another user's job of the same id, and the owner's other jobs, are
    not read."""
    for user, job_id in (("u", "a"), ("u", "b"), ("v", "a"), ("v", "c")):
        new = NewJob(id=job_id, document_name="d", document_type="t", user_id=user)
        store.create_job(new, now=NOW)
    with store.connection("read") as conn:
        rows = store.prepared(job_rows(store.dialect)).all(
            conn, {"p_rows": _keys(store, [("u", "a"), ("v", "c")])}
        )
    assert sorted((row["user_id"], row["id"]) for row in rows) == [("u", "a"), ("v", "c")]


def test_paces_are_written_to_their_own_jobs_only(store: SQLStore) -> None:
    """A batch's new paces land on the jobs they are for: a job of the same user that did
    not change keeps none, and each changed job keeps its own rate."""
    for job_id in ("fast", "slow", "idle"):
        _job(store, job_id=job_id)
    twin = NewJob(id="fast", document_name="d", document_type="t", user_id="v")
    store.create_job(twin, now=NOW)  # another user's job of the same id
    for step in range(1, 8):
        _apply(store, 10 * step, percentage=10 * step, job_id="fast")
        _apply(store, 10 * step, percentage=step, job_id="slow")
    fast, slow, idle = (_state(store, job_id) for job_id in ("fast", "slow", "idle"))
    assert (idle.pace, idle.rate) == (None, None)
    other = store.get_job("fast", user_id="v")
    assert other is not None
    assert (other.pace, other.rate) == (None, None)
    assert fast.pace is not None
    assert slow.pace is not None
    assert fast.rate is not None
    assert slow.rate is not None
    assert fast.rate == pytest.approx(1.0, rel=0.2)  # 10% every 10 s
    assert slow.rate == pytest.approx(0.1, rel=0.2)


@pytest.mark.postgres
def test_lock_rows_locks_exactly_the_jobs_named_in_owner_order(postgres: PostgresServer) -> None:
    """PostgreSQL (SQLite's writer takes the whole database): the jobs a batch names are
    locked, in (owner, id) order, so two batches never wait on each other in a cycle; others,
    of the same user or id, are not."""
    store = SQLStore(fresh_postgres_database(postgres))
    try:
        for user, job_id in (("v", "b"), ("u", "b"), ("u", "a"), ("u", "c"), ("v", "a")):
            new = NewJob(id=job_id, document_name="d", document_type="t", user_id=user)
            store.create_job(new, now=NOW)
        named = [("v", "b"), ("u", "b"), ("v", "a")]
        with store.transaction("lock") as conn:
            locked = store.prepared(lock_rows("postgresql")).all(
                conn, {"p_rows": _keys(store, named)}
            )
            assert [row["id"] for row in locked] == ["b", "a", "b"]  # u/b, v/a, v/b
            with store.transaction("try") as other:
                other.exec_driver_sql("SET LOCAL lock_timeout = '50ms'")
                free = other.exec_driver_sql(
                    "SELECT user_id, id FROM jobs WHERE (user_id, id) IN "
                    "(('u', 'c'), ('u', 'a')) FOR UPDATE NOWAIT"
                ).all()
                assert sorted(free) == [("u", "a"), ("u", "c")]
            with store.transaction("try again") as other, pytest.raises(Exception, match="lock"):
                other.exec_driver_sql(
                    "SELECT id FROM jobs WHERE user_id = 'v' AND id = 'b' FOR UPDATE NOWAIT"
                ).all()
    finally:
        store.close()


def test_a_report_keeps_its_checkpoint_at_the_percentage_it_leaves(store: SQLStore) -> None:
    """A report's checkpoint is kept with the job, at the report's percentage; one without a
    percentage saves it at the job's; a report without one keeps the one the job has."""
    _job(store)
    assert _apply(store, 1, percentage=30, checkpoint={"step": 3}) is UpdateOutcome.APPLIED
    job = _state(store)
    assert (job.checkpoint, job.checkpoint_percentage) == ({"step": 3}, 30)
    assert _apply(store, 2, percentage=40) is UpdateOutcome.APPLIED
    assert (_state(store).checkpoint, _state(store).checkpoint_percentage) == ({"step": 3}, 30)
    assert _apply(store, 3, message="saving", checkpoint={"step": 4}) is UpdateOutcome.APPLIED
    job = _state(store)
    assert (job.checkpoint, job.checkpoint_percentage, job.percentage) == ({"step": 4}, 40, 40)
    _, params = _shape(percentage=50, checkpoint={"b": [1, 2]})
    assert params["checkpoint"] == '{"b":[1,2]}'
    assert _shape(percentage=50, checkpoint={"b": 1})[0].checkpoint
    assert not _shape(percentage=50)[0].checkpoint
    assert _shape(percentage=50)[1]["checkpoint"] is None  # nothing serialized for nothing
