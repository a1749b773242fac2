"""Marks of jobs at risk in the store: conditional on the mark read, on running jobs only,
with one feed row when a job is marked and none when it is cleared."""

from __future__ import annotations

from collections.abc import Callable

from morag_progress import JobStatus, JobTracker
from morag_progress.deadlines import Risk, Verdict
from morag_progress.store import SQLStore
from tests.conftest import Clock

LATE = Verdict(Risk.DEADLINE, "Likely to miss its deadline")


def test_a_mark_is_made_once_from_what_was_read(
    tracker: JobTracker, store: SQLStore, make_job: Callable[..., str], clock: Clock
) -> None:
    """Two sweepers read the same job; the first marks it, the second's mark (made from the
    older read) changes nothing and adds no row."""
    job_id = make_job()
    tracker.update_progress(job_id, 10, None, "working", "alice")
    seen = tracker.get_job(job_id)
    assert seen is not None
    assert store.mark_risk(seen, LATE, now=clock())
    rows = len(tracker.history(job_id))
    assert not store.mark_risk(seen, Verdict(Risk.LONG, "long"), now=clock())
    assert len(tracker.history(job_id)) == rows
    marked = tracker.get_job(job_id)
    assert marked is not None
    assert (marked.at_risk, marked.summary) == ("deadline", "Likely to miss its deadline")
    assert store.count_at_risk() == {"deadline": 1}
    assert store.mark_risk(marked, None, now=clock())  # cleared: no row
    assert len(tracker.history(job_id)) == rows
    assert store.count_at_risk() == {}


def test_only_running_jobs_are_read_and_marked(
    tracker: JobTracker, store: SQLStore, make_job: Callable[..., str], clock: Clock
) -> None:
    pending = make_job()
    running = make_job(user_id="bob")
    tracker.update_progress(running, 10, None, "", "bob")
    ended = make_job()
    tracker.update_progress(ended, 10, None, "", "alice")
    old = tracker.get_job(ended)
    tracker.mark_completed(ended, "done", "alice")
    assert [job.id for job in store.running_jobs()] == [running]
    assert store.running_jobs(limit=0) == []
    assert old is not None
    assert not store.mark_risk(old, LATE, now=clock())
    waiting = tracker.get_job(pending)
    assert waiting is not None
    assert not store.mark_risk(waiting, LATE, now=clock())
    assert store.count_at_risk() == {}


def test_running_jobs_are_read_oldest_first_without_their_checkpoints(
    tracker: JobTracker, store: SQLStore, make_job: Callable[..., str], clock: Clock
) -> None:
    from morag_progress.models import ProgressUpdate

    first = make_job()
    clock.advance(1)
    second = make_job()
    tracker.apply(ProgressUpdate(second, 10, user_id="alice", checkpoint={"step": 1}))
    clock.advance(1)
    tracker.apply(ProgressUpdate(first, 10, user_id="alice"))
    tracker.transition(
        first,
        expect=[JobStatus.PROCESSING],
        seen=tracker.get_job(first).last_seen_at,  # type: ignore[union-attr]
        changes={"status": "STALLED"},
        user_id="alice",
    )
    running = store.running_jobs()
    assert [(job.id, job.status) for job in running] == [
        (first, JobStatus.STALLED),  # the oldest, stalled or not
        (second, JobStatus.PROCESSING),
    ]
    assert running[1].checkpoint is None
    assert running[1].checkpoint_percentage == 10
