"""JobTracker: lifecycle API and the rules of docs/architecture.md section 3, on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from morag_progress import JobStatus, JobTracker, ProgressUpdate, UpdateOutcome
from morag_progress.errors import InvalidInputError, JobConflictError
from tests.conftest import Clock

MakeJob = Callable[..., str]


def status_of(tracker: JobTracker, job_id: str) -> tuple[JobStatus | None, int | None]:
    job = tracker.get_job(job_id)
    return (job.status, job.percentage) if job else (None, None)


# -- rule 1: status from percentage -------------------------------------------------------------


@pytest.mark.parametrize(
    ("percentage", "status"),
    [
        (0, JobStatus.PENDING),
        (1, JobStatus.PROCESSING),
        (55, JobStatus.PROCESSING),
        (99, JobStatus.PROCESSING),
        (99.9, JobStatus.PROCESSING),
        (100, JobStatus.FINISHED),
    ],
)
def test_status_follows_percentage(
    tracker: JobTracker, make_job: MakeJob, clock: Clock, percentage: float, status: JobStatus
) -> None:
    """0 is PENDING, 1..99 PROCESSING, 100 FINISHED; floats are floored (99.9 is not 100)."""
    job_id = make_job()
    assert tracker.update_progress(job_id, percentage, summary="step")
    assert status_of(tracker, job_id) == (status, math.floor(percentage))


def test_zero_percent_keeps_a_running_job_running(
    tracker: JobTracker, make_job: MakeJob, clock: Clock
) -> None:
    """A 0% report on a PROCESSING job leaves it PROCESSING."""
    job_id = make_job()
    tracker.update_progress(job_id, 40)
    clock.advance(1)
    assert tracker.update_progress(job_id, 0, summary="restarting the stage")
    assert status_of(tracker, job_id) == (JobStatus.PROCESSING, 0)


def test_explicit_status_wins(tracker: JobTracker, make_job: MakeJob) -> None:
    """An explicit status other than the derived one is applied as given."""
    job_id = make_job()
    assert tracker.update_progress(job_id, 0, JobStatus.PROCESSING, "warming up")
    assert status_of(tracker, job_id) == (JobStatus.PROCESSING, 0)


def test_stalled_job_resumes_on_its_next_report(
    tracker: JobTracker, make_job: MakeJob, clock: Clock
) -> None:
    """A STALLED job becomes PROCESSING again on its next update, even a 0% one."""
    job_id = make_job()
    tracker.update_progress(job_id, 30)
    clock.advance(1)
    tracker.update_progress(job_id, 30, JobStatus.STALLED)
    assert status_of(tracker, job_id) == (JobStatus.STALLED, 30)
    clock.advance(1)
    tracker.update_progress(job_id, 0)
    assert status_of(tracker, job_id) == (JobStatus.PROCESSING, 0)


# -- rule 2: terminal states are sticky ---------------------------------------------------------


@pytest.mark.parametrize("finish", ["completed", "failed", "cancelled"])
def test_terminal_states_are_sticky(
    tracker: JobTracker,
    make_job: MakeJob,
    clock: Clock,
    finish: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """After FINISHED, FAILED or CANCELLED no update is applied, and the caller learns why."""
    job_id = make_job()
    tracker.update_progress(job_id, 60)
    getattr(tracker, f"mark_{finish}")(job_id, *(["boom"] if finish == "failed" else []))
    before = tracker.get_job(job_id)
    clock.advance(1)
    with caplog.at_level(logging.WARNING):
        assert tracker.update_progress(job_id, 70) is False
    assert "terminal" in caplog.text
    result = tracker.apply(ProgressUpdate(job_id, 80))
    assert result.outcome is UpdateOutcome.TERMINAL
    assert result.job == before
    assert tracker.mark_completed(job_id) is False
    assert tracker.get_job(job_id) == before


# -- rule 3: ordering ---------------------------------------------------------------------------


def test_older_update_is_stale(tracker: JobTracker, make_job: MakeJob, clock: Clock) -> None:
    """An update older than the last applied one is not applied, and that is not an error."""
    job_id = make_job()
    t0 = clock.now
    assert tracker.apply(ProgressUpdate(job_id, 60, "newer", timestamp=t0)).applied
    result = tracker.apply(ProgressUpdate(job_id, 30, "older", timestamp=t0 - timedelta(seconds=1)))
    assert result.outcome is UpdateOutcome.STALE
    assert result.job is not None
    assert (result.job.percentage, result.job.summary) == (60, "newer")


def test_seq_breaks_timestamp_ties(tracker: JobTracker, make_job: MakeJob, clock: Clock) -> None:
    """With equal timestamps the higher seq wins; a repeated seq is a duplicate, not applied."""
    job_id = make_job()
    ts = clock.now
    assert tracker.apply(ProgressUpdate(job_id, 20, timestamp=ts, seq=2)).applied
    assert (
        tracker.apply(ProgressUpdate(job_id, 10, timestamp=ts, seq=1)).outcome
        is UpdateOutcome.STALE
    )
    assert (
        tracker.apply(ProgressUpdate(job_id, 20, timestamp=ts, seq=2)).outcome
        is UpdateOutcome.STALE
    )
    assert tracker.apply(ProgressUpdate(job_id, 25, timestamp=ts, seq=3)).applied
    assert len(tracker.history(job_id)) == 3  # created, seq 2, seq 3


def test_without_seq_ties_go_to_arrival_order(
    tracker: JobTracker, make_job: MakeJob, clock: Clock
) -> None:
    """Two updates received at the same instant apply in the order they arrive."""
    job_id = make_job()
    assert tracker.update_progress(job_id, 20)
    assert tracker.update_progress(job_id, 21)
    assert status_of(tracker, job_id) == (JobStatus.PROCESSING, 21)


def test_exact_repeat_is_not_applied_twice(
    tracker: JobTracker, make_job: MakeJob, clock: Clock
) -> None:
    """A retransmitted update (same timestamp, same content, no seq) is a no-op."""
    job_id = make_job()
    update = ProgressUpdate(job_id, 30, "same", timestamp=clock.now)
    assert tracker.apply(update).applied
    assert tracker.apply(update).outcome is UpdateOutcome.STALE
    assert len(tracker.history(job_id)) == 2


def test_progress_may_go_down_when_the_newer_update_says_so(
    tracker: JobTracker, make_job: MakeJob, clock: Clock
) -> None:
    """Within an attempt, a newer update may lower the percentage."""
    job_id = make_job()
    tracker.update_progress(job_id, 80)
    clock.advance(1)
    assert tracker.update_progress(job_id, 40, summary="re-reading")
    assert status_of(tracker, job_id) == (JobStatus.PROCESSING, 40)


def test_attempts(tracker: JobTracker, make_job: MakeJob, clock: Clock) -> None:
    """A newer attempt takes over whatever its timestamp; an older attempt is refused."""
    job_id = make_job()
    assert tracker.apply(ProgressUpdate(job_id, 70, attempt=1)).applied
    clock.advance(1)
    retry = tracker.apply(
        ProgressUpdate(job_id, 5, attempt=2, timestamp=clock.now - timedelta(hours=1))
    )
    assert retry.applied
    assert retry.job is not None
    assert (retry.job.attempt, retry.job.percentage) == (2, 5)
    clock.advance(1)
    late = tracker.apply(ProgressUpdate(job_id, 90, attempt=1))
    assert late.outcome is UpdateOutcome.SUPERSEDED
    assert status_of(tracker, job_id) == (JobStatus.PROCESSING, 5)


def test_replaying_old_logs_into_a_new_job_applies_them(
    tracker: JobTracker, make_job: MakeJob, clock: Clock
) -> None:
    """Timestamps are compared with earlier updates, never with the job's creation time."""
    job_id = make_job()
    old = clock.now - timedelta(days=400)
    for i, pct in enumerate([30, 60]):
        assert tracker.apply(
            ProgressUpdate(job_id, pct, timestamp=old + timedelta(seconds=i))
        ).applied
    assert status_of(tracker, job_id) == (JobStatus.PROCESSING, 60)


def test_future_timestamp_is_refused(tracker: JobTracker, make_job: MakeJob, clock: Clock) -> None:
    """More than 5 minutes in the future is an error that names the field; 4 minutes is fine."""
    job_id = make_job()
    with pytest.raises(InvalidInputError, match="timestamp must not be more than 5 minutes"):
        tracker.apply(ProgressUpdate(job_id, 10, timestamp=clock.now + timedelta(minutes=6)))
    assert tracker.update_progress(job_id, 10, timestamp=clock.now + timedelta(minutes=6)) is False
    assert tracker.update_progress(job_id, 10, timestamp=clock.now + timedelta(minutes=4))


def test_final_status_is_not_held_back_by_a_fast_worker_clock(
    tracker: JobTracker, make_job: MakeJob, clock: Clock
) -> None:
    """A worker whose clock runs ahead cannot make the server's completion look stale."""
    job_id = make_job()
    tracker.apply(ProgressUpdate(job_id, 90, timestamp=clock.now + timedelta(minutes=2)))
    assert tracker.mark_completed(job_id, "done")
    assert status_of(tracker, job_id) == (JobStatus.FINISHED, 100)


def test_a_fast_worker_clock_cannot_freeze_a_job(
    tracker: JobTracker, make_job: MakeJob, clock: Clock
) -> None:
    """A report stamped minutes ahead is ordered at the server's receive time: the next honest
    report applies, and the feed keeps the worker's own time."""
    job_id = make_job()
    ahead = clock.now + timedelta(minutes=4)
    assert tracker.apply(ProgressUpdate(job_id, 30, "ahead", timestamp=ahead)).applied
    clock.advance(1)
    honest = tracker.apply(ProgressUpdate(job_id, 40, "honest", timestamp=clock.now))
    assert honest.applied
    assert status_of(tracker, job_id) == (JobStatus.PROCESSING, 40)
    stamps = {event.message: event.timestamp for event in tracker.history(job_id)}
    assert stamps["ahead"] == ahead
    clock.advance(1)
    older = tracker.apply(ProgressUpdate(job_id, 35, "late", timestamp=clock.now - timedelta(5)))
    assert not older.applied  # an honest but older report is still stale


# -- rule 4: failure keeps the percentage --------------------------------------------------------


def test_failure_keeps_percentage_and_records_error(
    tracker: JobTracker, make_job: MakeJob, clock: Clock
) -> None:
    """mark_failed keeps the last percentage and records the error."""
    job_id = make_job()
    tracker.update_progress(job_id, 64)
    clock.advance(1)
    assert tracker.mark_failed(job_id, "decoder crashed")
    job = tracker.get_job(job_id)
    assert job is not None
    assert (job.status, job.percentage, job.error) == (JobStatus.FAILED, 64, "decoder crashed")
    assert job.end_date == clock.now


# -- rule 5/6: liveness and cancel ---------------------------------------------------------------


def test_every_update_sets_last_seen(tracker: JobTracker, make_job: MakeJob, clock: Clock) -> None:
    """last_seen_at and updated_at are the time of the last update; start_date the first run."""
    job_id = make_job()
    started = clock.advance(5)
    tracker.update_progress(job_id, 10)
    clock.advance(5)
    tracker.update_progress(job_id, 20)
    job = tracker.get_job(job_id)
    assert job is not None
    assert job.last_seen_at == job.updated_at == clock.now
    assert job.start_date == started


def test_cancel_of_an_unclaimed_job_is_immediate(tracker: JobTracker, make_job: MakeJob) -> None:
    """A job nobody runs yet is CANCELLED at once."""
    job_id = make_job()
    result = tracker.request_cancel(job_id)
    assert result.applied
    assert status_of(tracker, job_id) == (JobStatus.CANCELLED, 0)


def test_cancel_of_a_running_job_reaches_the_worker(
    tracker: JobTracker, make_job: MakeJob, clock: Clock
) -> None:
    """A running job keeps running with cancel_requested set, which its next report returns."""
    job_id = make_job()
    tracker.update_progress(job_id, 50)
    assert tracker.request_cancel(job_id).applied
    assert status_of(tracker, job_id) == (JobStatus.PROCESSING, 50)
    clock.advance(1)
    reply = tracker.apply(ProgressUpdate(job_id, 55))
    assert reply.applied
    assert reply.cancel_requested
    assert tracker.mark_cancelled(job_id)
    assert status_of(tracker, job_id) == (JobStatus.CANCELLED, 55)
    assert tracker.request_cancel(job_id).outcome is UpdateOutcome.TERMINAL


# -- rule 8: the change feed ---------------------------------------------------------------------


def test_one_feed_row_per_applied_change(
    tracker: JobTracker, make_job: MakeJob, clock: Clock
) -> None:
    """Creation and each applied update append one feed row; stale and refused ones do not."""
    job_id = make_job()
    tracker.update_progress(job_id, 10, summary="a")
    tracker.apply(ProgressUpdate(job_id, 5, timestamp=clock.now - timedelta(seconds=1)))  # stale
    clock.advance(1)
    tracker.update_progress(job_id, 100, summary="b")
    tracker.update_progress(job_id, 50)  # terminal
    rows = tracker.history(job_id)
    assert [(r.status, r.percentage, r.message) for r in rows] == [
        (JobStatus.PENDING, 0, "Processing audio document: talk.mp3"),
        (JobStatus.PROCESSING, 10, "a"),
        (JobStatus.FINISHED, 100, "b"),
    ]
    assert rows[0].id < rows[1].id < rows[2].id


# -- rate and ETA --------------------------------------------------------------------------------


def test_rate_and_eta(tracker: JobTracker, make_job: MakeJob, clock: Clock) -> None:
    """The rate is measured over windows of at least a second: reports milliseconds apart
    make none; the ETA is null until one supports it, then follows the pace."""
    job_id = make_job()
    tracker.update_progress(job_id, 10)
    clock.advance(0.013)
    tracker.update_progress(job_id, 12)  # 13 ms later: no rate of 154 %/s
    first = tracker.get_job(job_id)
    assert first is not None
    assert first.rate is None
    assert first.estimate(clock()) is None
    clock.advance(10)
    tracker.update_progress(job_id, 30)
    job = tracker.get_job(job_id)
    assert job is not None
    assert job.rate == pytest.approx(20 / 10.013)
    eta = job.estimate(clock())
    assert eta is not None
    assert eta.basis == "live"
    assert eta.seconds == pytest.approx(70 / (20 / 10.013), rel=0.01)
    clock.advance(10)
    tracker.update_progress(job_id, 40)  # 1 %/s now: the smoothed rate moves toward it
    job = tracker.get_job(job_id)
    assert job is not None
    assert job.rate is not None
    assert 1.0 < job.rate < 1.5


def test_an_idle_jobs_eta_grows(tracker: JobTracker, make_job: MakeJob, clock: Clock) -> None:
    """While a running job is silent its ETA grows instead of counting down."""
    job_id = make_job()
    for pct in range(10, 51, 10):
        tracker.update_progress(job_id, pct)
        clock.advance(5)
    job = tracker.get_job(job_id)
    assert job is not None
    etas = [job.estimate(clock.advance(seconds)) for seconds in (0, 30, 300)]
    seconds = [eta.seconds for eta in etas if eta is not None]
    assert len(seconds) == 3
    assert seconds[0] < seconds[1] < seconds[2]


# -- jobs ----------------------------------------------------------------------------------------


def test_start_job_fields(tracker: JobTracker, clock: Clock) -> None:
    """A started job holds what it was given, PENDING at 0%."""
    job_id = tracker.start_job(
        "talk.mp3", "audio", "doc-1", "alice", metadata={"lang": "de"}, stall_timeout_s=30
    )
    job = tracker.get_job(job_id)
    assert job is not None
    assert (job.document_name, job.document_type, job.document_id, job.user_id) == (
        "talk.mp3",
        "audio",
        "doc-1",
        "alice",
    )
    assert (job.status, job.percentage, job.attempt) == (JobStatus.PENDING, 0, 1)
    assert job.metadata == {"lang": "de"}
    assert job.created_at == clock.now
    assert job.created_at.tzinfo is not None
    assert job.to_dict()["status"] == "PENDING"


def test_client_given_id_is_idempotent_per_user(tracker: JobTracker) -> None:
    """Starting a job twice with the same id returns it; another user's identical id is a
    job of its own, and each user reads and writes only theirs."""
    assert tracker.start_job("a", "pdf", user_id="alice", job_id="job-1") == "job-1"
    assert tracker.start_job("a", "pdf", user_id="alice", job_id="job-1") == "job-1"
    assert tracker.start_job("b", "pdf", user_id="bob", job_id="job-1") == "job-1"
    assert len(tracker.list_jobs()) == 2
    assert tracker.update_progress("job-1", 40, user_id="bob")
    alices, bobs = tracker.get_job("job-1", "alice"), tracker.get_job("job-1", "bob")
    assert alices is not None
    assert bobs is not None
    assert (alices.document_name, alices.percentage) == ("a", 0)
    assert (bobs.document_name, bobs.percentage) == ("b", 40)
    assert [e.percentage for e in tracker.history("job-1", "alice")] == [0]


def test_an_unscoped_caller_must_not_guess_between_users(tracker: JobTracker) -> None:
    """In-process (unscoped) calls on an id that two users have are refused, not applied to
    either; an id one user has works unscoped as before."""
    tracker.start_job("a", "pdf", user_id="alice", job_id="shared")
    tracker.start_job("b", "pdf", user_id="bob", job_id="shared")
    result = tracker.apply(ProgressUpdate("shared", 50))
    assert result.outcome is UpdateOutcome.AMBIGUOUS
    with pytest.raises(JobConflictError, match="names jobs of several users"):
        result.raise_for_outcome("shared")
    with pytest.raises(JobConflictError):
        tracker.get_job("shared")
    assert tracker.update_progress("shared", 50) is False
    assert tracker.get_job_progress("shared", "alice") == 0
    only = tracker.start_job("c", "pdf", user_id="alice", job_id="only-alice")
    assert tracker.update_progress(only, 30)
    assert tracker.get_job_progress(only) == 30


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"document_name": ""}, "document_name"),
        ({"document_name": "x" * 256}, "document_name"),
        ({"document_type": None}, "document_type"),
        ({"metadata": [1]}, "metadata"),
        ({"weight": 0}, "weight"),
        ({"stall_timeout_s": -1}, "stall_timeout_s"),
    ],
)
def test_start_job_validates(
    sqlite_tracker: JobTracker, kwargs: dict[str, object], field: str
) -> None:
    """Bad job fields raise an error that names the field."""
    args: dict[str, object] = {"document_name": "a", "document_type": "pdf", **kwargs}
    with pytest.raises(InvalidInputError, match=f"^{field} "):
        sqlite_tracker.start_job(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize("percentage", [150, -1, float("nan"), float("inf"), "abc", True, None])
def test_bad_percentage_is_refused_without_raising(
    sqlite_tracker: JobTracker, percentage: object, caplog: pytest.LogCaptureFixture
) -> None:
    """update_progress returns False for a bad percentage and logs why; nothing is written."""
    job_id = sqlite_tracker.start_job("a", "pdf")
    before = sqlite_tracker.get_job(job_id)
    if percentage is None:  # None means "unchanged" to apply(); update_progress needs a number
        assert sqlite_tracker.update_progress(job_id, percentage) is True  # type: ignore[arg-type]
        return
    assert sqlite_tracker.update_progress(job_id, percentage) is False  # type: ignore[arg-type]
    assert "percentage" in caplog.text
    assert sqlite_tracker.get_job(job_id) == before


def test_other_users_job_is_not_found(tracker: JobTracker, make_job: MakeJob) -> None:
    """A job of another user is not found for reads or writes, and is left untouched."""
    job_id = make_job(user_id="alice")
    assert tracker.get_job(job_id, "bob") is None
    assert (
        tracker.apply(ProgressUpdate(job_id, 50, user_id="bob")).outcome is UpdateOutcome.NOT_FOUND
    )
    assert tracker.request_cancel(job_id, "bob").outcome is UpdateOutcome.NOT_FOUND
    assert tracker.history(job_id, "bob") == []
    assert status_of(tracker, job_id) == (JobStatus.PENDING, 0)
    assert tracker.update_progress(job_id, 50, user_id="alice")


def test_unknown_job(tracker: JobTracker) -> None:
    """apply() reports an unknown job; the in-process update_progress creates it."""
    assert tracker.apply(ProgressUpdate("nope", 5)).outcome is UpdateOutcome.NOT_FOUND
    assert tracker.get_job_status("nope") is None
    assert tracker.get_job_progress("nope") is None
    assert tracker.update_progress("task-7", 5, user_id="carol")
    job = tracker.get_job("task-7")
    assert job is not None
    assert (job.user_id, job.percentage, job.status) == ("carol", 5, JobStatus.PROCESSING)


def test_list_jobs_filters_and_pages(tracker: JobTracker, make_job: MakeJob, clock: Clock) -> None:
    """list_jobs filters by user, status and type and pages by cursor, newest first."""
    ids = []
    for i in range(5):
        clock.advance(1)
        ids.append(
            make_job(
                user_id="alice" if i % 2 == 0 else "bob", document_type="pdf" if i < 3 else "audio"
            )
        )
    tracker.update_progress(ids[0], 50)
    assert [j.id for j in tracker.list_jobs("alice")] == [ids[4], ids[2], ids[0]]
    assert [j.id for j in tracker.list_jobs(status=JobStatus.PROCESSING)] == [ids[0]]
    assert [j.id for j in tracker.list_jobs(document_type="audio")] == [ids[4], ids[3]]
    page1 = tracker.list_jobs(limit=2)
    page2 = tracker.list_jobs(limit=2, after=page1[-1].id)
    page3 = tracker.list_jobs(limit=2, after=page2[-1].id)
    assert [j.id for j in page1 + page2 + page3] == ids[::-1]


def test_lifecycle_helpers(tracker: JobTracker, make_job: MakeJob) -> None:
    """mark_waiting_for_remote and mark_processing set their statuses without moving progress."""
    job_id = make_job()
    assert tracker.mark_waiting_for_remote(job_id)
    assert status_of(tracker, job_id) == (JobStatus.WAITING_FOR_REMOTE_WORKER, 0)
    assert tracker.mark_processing(job_id)
    assert status_of(tracker, job_id) == (JobStatus.PROCESSING, 0)
    assert tracker.get_job_status(job_id) is JobStatus.PROCESSING


# -- callbacks -----------------------------------------------------------------------------------


def test_progress_callbacks(tracker: JobTracker, make_job: MakeJob, clock: Clock) -> None:
    """A registered callback sees each applied change; a failing one does not fail the update."""
    job_id = make_job()
    seen = []
    tracker.register_progress_callback(job_id, lambda *args: seen.append(args))
    tracker.update_progress(job_id, 10, summary="x")
    tracker.apply(ProgressUpdate(job_id, 5, timestamp=clock.now - timedelta(seconds=9)))  # stale
    assert seen == [(job_id, 10, JobStatus.PROCESSING, "x")]

    def broken(*_: object) -> None:
        raise RuntimeError("callback bug")

    tracker.register_progress_callback(job_id, broken)
    clock.advance(1)
    assert tracker.update_progress(job_id, 20)
    tracker.unregister_progress_callback(job_id)
    clock.advance(1)
    assert tracker.update_progress(job_id, 30)


# -- a database that is down --------------------------------------------------------------------


def test_store_down_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    """With the database unreachable, the bool API logs and returns False."""
    tracker = JobTracker("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    assert tracker.update_progress("job-1", 10) is False
    assert tracker.mark_completed("job-1") is False
    assert tracker.mark_failed("job-1", "x") is False
    assert "not recorded" in caplog.text


def test_tracker_opens_its_store_lazily(tmp_path: object) -> None:
    """Constructing a tracker touches no database; the first use opens it."""
    tracker = JobTracker("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    tracker.close()  # nothing opened, nothing to close
    default = JobTracker()
    assert default.update_progress("j", 1)
    default.close()


# -- the invariant -------------------------------------------------------------------------------

update_plans = st.integers(min_value=1, max_value=12).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(min_value=1, max_value=99), min_size=n, max_size=n),
        st.sampled_from([None, "completed", "failed", "cancelled"]),
        st.permutations(list(range(n + 1))),
        st.lists(st.integers(min_value=0, max_value=n), max_size=4),
    )
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(plan=update_plans)
def test_any_order_ends_in_the_latest_state(
    tracker: JobTracker, clock: Clock, plan: tuple[list[int], str | None, list[int], list[int]]
) -> None:
    """Any permutation or duplication of a job's updates ends in its latest update's state,
    and a terminal state, once reached, is never left."""
    percentages, final, order, duplicates = plan
    job_id = tracker.start_job("doc", "pdf")
    base = clock.now - timedelta(seconds=60)  # worker times in the past: they order the updates
    updates = [
        ProgressUpdate(job_id, pct, f"step {i}", timestamp=base + timedelta(seconds=i))
        for i, pct in enumerate(percentages)
    ]
    end = base + timedelta(seconds=len(percentages))
    if final == "completed":
        updates.append(ProgressUpdate(job_id, 100, "done", timestamp=end))
    elif final == "failed":
        updates.append(
            ProgressUpdate(job_id, None, "boom", JobStatus.FAILED, timestamp=end, error="boom")
        )
    elif final == "cancelled":
        updates.append(ProgressUpdate(job_id, None, "stop", JobStatus.CANCELLED, timestamp=end))
    sequence = [updates[i] for i in order if i < len(updates)] + [
        updates[i] for i in duplicates if i < len(updates)
    ]
    terminal_seen = None
    applied_count = 0
    for update in sequence:
        result = tracker.apply(update)
        applied_count += result.applied
        job = tracker.get_job(job_id)
        assert job is not None
        if terminal_seen is not None:
            assert not result.applied
            assert job == terminal_seen
        elif job.status.is_terminal:
            terminal_seen = job
    job = tracker.get_job(job_id)
    assert job is not None
    latest = updates[-1]
    if final is None or final == "completed":
        assert (job.percentage, job.summary) == (latest.percentage, latest.message)
        assert job.status is (JobStatus.FINISHED if final else JobStatus.PROCESSING)
    else:
        assert job.status is (JobStatus.FAILED if final == "failed" else JobStatus.CANCELLED)
        assert job.summary == latest.message
    assert applied_count <= len(updates)  # a repeated update is never applied twice
    assert len(tracker.history(job_id)) == 1 + applied_count  # creation + one row per applied


# -- claiming ------------------------------------------------------------------------------------


def test_claim_takes_the_oldest_waiting_job(tracker: JobTracker, clock: Clock) -> None:
    """Claim gives the oldest waiting job of the user (and type), stores the worker mapping,
    and starts a new attempt when the job had been claimed before."""
    older = tracker.start_job(
        "a", "audio", user_id="alice", status=JobStatus.WAITING_FOR_REMOTE_WORKER
    )
    clock.advance(1)
    newer = tracker.start_job(
        "b", "video", user_id="alice", status=JobStatus.WAITING_FOR_REMOTE_WORKER
    )
    tracker.start_job("c", "audio", user_id="bob", status=JobStatus.WAITING_FOR_REMOTE_WORKER)
    tracker.start_job("d", "audio", user_id="alice")  # PENDING: not queued for remote workers
    video = tracker.claim("gpu-1", claimant="k1", user_id="alice", document_types=["video"])
    assert video is not None
    assert video.id == newer
    job = tracker.claim("gpu-2", claimant="k2", user_id="alice")
    assert job is not None
    assert (job.id, job.status, job.worker_id, job.claimed_by, job.attempt) == (
        older,
        JobStatus.PROCESSING,
        "gpu-2",
        "k2",
        1,
    )
    assert tracker.store.get_mapping("gpu-2") == older
    assert tracker.claim("gpu-3", claimant="k3", user_id="alice") is None
    assert tracker.mark_waiting_for_remote(older)  # returned to the queue
    again = tracker.claim("gpu-3", claimant="k3", user_id="alice")
    assert again is not None
    assert (again.id, again.attempt, again.claimed_by) == (older, 2, "k3")


def test_only_the_claiming_worker_reports(tracker: JobTracker) -> None:
    """After a claim, another worker's reports find no job; the claimer's apply."""
    job_id = tracker.start_job(
        "a", "audio", user_id="alice", status=JobStatus.WAITING_FOR_REMOTE_WORKER
    )
    tracker.claim("gpu-1", claimant="k1", user_id="alice")
    other = tracker.apply(ProgressUpdate(job_id, 50, user_id="alice", claimant="k2"))
    assert other.outcome is UpdateOutcome.NOT_FOUND
    assert tracker.heartbeat(job_id, "alice", claimant="k2").outcome is UpdateOutcome.NOT_FOUND
    assert tracker.apply(ProgressUpdate(job_id, 50, user_id="alice", claimant="k1")).applied
    assert tracker.heartbeat(job_id, "alice", claimant="k1").applied


def test_concurrent_claims_never_share_a_job(database_url: str) -> None:
    """Eight threads with their own stores claim twenty jobs: each job goes to exactly one."""
    from concurrent.futures import ThreadPoolExecutor

    setup = JobTracker(database_url)
    ids = {
        setup.start_job(f"d{i}", "pdf", user_id="u", status=JobStatus.WAITING_FOR_REMOTE_WORKER)
        for i in range(20)
    }

    def worker(n: int) -> list[str]:
        tracker = JobTracker(database_url)
        taken = []
        while (job := tracker.claim(f"w{n}", claimant=f"k{n}", user_id="u")) is not None:
            taken.append(job.id)
        tracker.close()
        return taken

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(worker, range(8)))
    taken = [job_id for result in results for job_id in result]
    assert sorted(taken) == sorted(ids)
    setup.close()


def test_wakers_and_listeners_hear_of_applied_changes_only(tracker: JobTracker) -> None:
    """A waker is called once per applied change, without a job; a listener gets the job; a
    stale report wakes neither."""
    woken: list[int] = []
    heard: list[tuple[str, int]] = []
    tracker.add_waker(lambda: woken.append(1))
    job_id = tracker.start_job("a.pdf", "pdf", user_id="u")
    woken.clear()
    tracker.apply(ProgressUpdate(job_id, 10, user_id="u"))
    assert woken == [1]
    tracker.add_listener(lambda job: heard.append((job.id, job.percentage)))
    tracker.apply(ProgressUpdate(job_id, 20, user_id="u"))
    assert (woken, heard) == ([1, 1], [(job_id, 20)])
    stale = tracker.apply(ProgressUpdate(job_id, 5, user_id="u", timestamp=_long_ago()))
    assert stale.outcome is UpdateOutcome.STALE
    assert (woken, heard) == ([1, 1], [(job_id, 20)])


def _long_ago() -> datetime:
    return datetime(2020, 1, 1, tzinfo=UTC)
