"""The jobs that ended, taken from the change feed once each (for their spans)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from morag_progress.models import JobStatus, ProgressUpdate
from morag_progress.store import SQLStore
from morag_progress.store.spans import EndedJobs
from morag_progress.tracker import JobTracker
from tests.conftest import Clock


def _finished(tracker: JobTracker, name: str, *, success: bool = True) -> str:
    job_id = tracker.start_job(name, "pdf", user_id="alice")
    tracker.apply(ProgressUpdate(job_id, 50, user_id="alice"))
    tracker.apply(ProgressUpdate.final(job_id, success=success, user_id="alice"))
    return job_id


def test_the_first_take_starts_at_the_feeds_end(
    store: SQLStore, tracker: JobTracker, clock: Clock
) -> None:
    """Without ``begin``, a take makes the cursor at the feed's end and takes nothing; what
    ended before is never taken, what ends after is, once, with its feed row."""
    _finished(tracker, "before.pdf")
    ended = EndedJobs(store)
    assert ended.take(now=clock()).ended == []
    after = _finished(tracker, "after.pdf", success=False)
    taken = ended.take(now=clock())
    [(job, end, previous)] = taken.ended
    assert (job.id, job.status, end.job_id, end.status) == (
        after,
        JobStatus.FAILED,
        after,
        JobStatus.FAILED,
    )
    assert previous is None
    assert (taken.behind, taken.skipped) == (False, 0)
    assert ended.take(now=clock()).ended == []
    # Another process (a replica) shares the stored cursor: nothing twice.
    assert EndedJobs(store).take(now=clock()).ended == []


def test_begin_is_idempotent_and_ends_are_taken_in_feed_order(
    store: SQLStore, tracker: JobTracker, clock: Clock
) -> None:
    ended = EndedJobs(store)
    ended.begin()
    first = _finished(tracker, "one.pdf")
    ended.begin()  # the cursor exists: not moved to the end
    second = _finished(tracker, "two.pdf")
    tracker.start_job("open.pdf", "pdf", user_id="alice")  # a job that has not ended
    taken = ended.take(now=clock())
    assert [job.id for job, _, _ in taken.ended] == [first, second]
    ids = [end.id for _, end, _ in taken.ended]
    assert ids == sorted(ids)


def test_a_requeued_jobs_later_end_names_its_earlier_one(
    store: SQLStore, tracker: JobTracker, clock: Clock
) -> None:
    """A job that ended, was requeued and ended again: its second end carries the feed id of
    its first (taken earlier), and only an end after ``begin`` counts as an earlier one."""
    ended = EndedJobs(store)
    ended.begin()
    job_id = tracker.start_job(
        "clip.mov", "video", user_id="alice", status=JobStatus.WAITING_FOR_REMOTE_WORKER
    )
    assert tracker.claim("gpu-1", claimant="k1", user_id="alice") is not None
    tracker.apply(ProgressUpdate.final(job_id, success=False, message="OOM", user_id="alice"))
    [(_, first_end, previous)] = ended.take(now=clock()).ended
    assert previous is None
    tracker.requeue(job_id, "alice")
    assert tracker.claim("gpu-2", claimant="k1", user_id="alice") is not None
    tracker.apply(ProgressUpdate(job_id, 40, user_id="alice"))
    tracker.apply(ProgressUpdate.final(job_id, success=True, user_id="alice"))
    [(job, second_end, previous)] = ended.take(now=clock()).ended
    assert (job.attempt, second_end.status, previous) == (2, JobStatus.FINISHED, first_end.id)


def test_an_end_before_begin_is_not_an_earlier_end(
    store: SQLStore, tracker: JobTracker, clock: Clock
) -> None:
    """A job whose first end came before tracing began: its later end has no earlier one
    (the first was never exported), so it is the job's own span."""
    job_id = tracker.start_job(
        "clip.mov", "video", user_id="alice", status=JobStatus.WAITING_FOR_REMOTE_WORKER
    )
    assert tracker.claim("gpu-1", claimant="k1", user_id="alice") is not None
    tracker.apply(ProgressUpdate.final(job_id, success=False, user_id="alice"))
    ended = EndedJobs(store)
    ended.begin()
    tracker.requeue(job_id, "alice")
    assert tracker.claim("gpu-2", claimant="k1", user_id="alice") is not None
    tracker.apply(ProgressUpdate.final(job_id, success=True, user_id="alice"))
    [(job, _, previous)] = ended.take(now=clock()).ended
    assert (job.attempt, previous) == (2, None)


def test_old_ends_are_counted_and_passed_over(
    store: SQLStore, tracker: JobTracker, clock: Clock
) -> None:
    """An end recorded longer than ``max_age`` before the take is skipped (counted), one just
    within it is taken, and the cursor moves past both."""
    ended = EndedJobs(store, max_age=timedelta(minutes=10))
    ended.begin()
    _finished(tracker, "old.pdf")
    clock.advance(5 * 60)
    recent = _finished(tracker, "recent.pdf")
    taken = ended.take(now=clock() + timedelta(minutes=6))
    assert [job.id for job, _, _ in taken.ended] == [recent]
    assert taken.skipped == 1
    assert ended.take(now=clock()).skipped == 0


def test_a_take_stops_at_its_batch_and_says_it_is_behind(
    store: SQLStore, tracker: JobTracker, clock: Clock
) -> None:
    """Three ends, a batch of two: two are taken and the take is behind; the next take
    finds the third, and is not."""
    ended = EndedJobs(store)
    ended.begin()
    jobs = [_finished(tracker, f"{i}.pdf") for i in range(3)]
    first = ended.take(now=clock(), batch=2)
    assert ([job.id for job, _, _ in first.ended], first.behind) == (jobs[:2], True)
    second = ended.take(now=clock(), batch=2)
    assert ([job.id for job, _, _ in second.ended], second.behind) == (jobs[2:], False)


def test_a_take_looks_at_a_bounded_stretch_of_the_feed(
    store: SQLStore, tracker: JobTracker, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At most ``_SCAN`` feed rows a take: a take that used all of them is behind, and the
    end past them is found by the next."""
    monkeypatch.setattr("morag_progress.store.spans._SCAN", 10)
    ended = EndedJobs(store)
    ended.begin()
    busy = tracker.start_job("busy.pdf", "pdf", user_id="alice")
    tracker.apply_many([ProgressUpdate(busy, 1, f"m{i}", user_id="alice") for i in range(12)])
    done = _finished(tracker, "done.pdf")
    first = ended.take(now=clock())
    assert (first.ended, first.behind) == ([], True)
    second = ended.take(now=clock())
    assert [job.id for job, _, _ in second.ended] == [done]
    assert second.behind is False
