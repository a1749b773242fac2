"""Parent jobs: children roll up into their parent in the same transaction (weighted mean,
finished when all end, failed when one fails), also when reported concurrently."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from morag_progress import JobStatus, JobTracker
from morag_progress.errors import InvalidInputError, JobStateError
from morag_progress.store import SQLStore
from tests.conftest import Clock


def test_weighted_mean_and_completion(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock
) -> None:
    """The parent's percentage is its children's weighted mean; it finishes with the last."""
    parent = make_job(document_name="course")
    a = make_job(parent_id=parent, weight=1)
    b = make_job(parent_id=parent, weight=3)
    clock.advance(1)
    tracker.update_progress(a, 100, None, "a done", "alice")
    job = tracker.get_job(parent)
    assert job is not None
    assert (job.percentage, job.status, job.children, job.children_done) == (
        25,
        JobStatus.PROCESSING,
        2,
        1,
    )
    clock.advance(1)
    tracker.update_progress(b, 50, None, "b half", "alice")
    assert tracker.get_job_progress(parent) == 62  # (100 + 3 * 50) / 4 = 62.5, floored
    clock.advance(1)
    tracker.mark_completed(b, "b done", "alice")
    job = tracker.get_job(parent)
    assert job is not None
    assert (job.status, job.percentage, job.summary) == (
        JobStatus.FINISHED,
        100,
        "All 2 child jobs ended",
    )
    assert [e.percentage for e in tracker.history(parent)][-3:] == [25, 62, 100]


def test_one_failed_child_fails_the_parent(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock
) -> None:
    """A failed child fails its parent, naming it; the parent keeps its percentage."""
    parent = make_job()
    a = make_job(parent_id=parent)
    make_job(parent_id=parent)
    clock.advance(1)
    tracker.update_progress(a, 40, None, "a", "alice")
    clock.advance(1)
    tracker.mark_failed(a, "corrupt file", "alice")
    job = tracker.get_job(parent)
    assert job is not None
    assert (job.status, job.percentage) == (JobStatus.FAILED, 20)
    assert job.error == f"Child job {a} failed: corrupt file"


def test_grandparents_roll_up_too(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock
) -> None:
    """A child's change moves its parent, and the parent's change moves the grandparent."""
    top = make_job()
    middle = make_job(parent_id=top)
    leaf = make_job(parent_id=middle)
    clock.advance(1)
    tracker.update_progress(leaf, 60, None, "leaf", "alice")
    assert tracker.get_job_progress(middle) == 60
    assert tracker.get_job_progress(top) == 60


def test_parent_must_be_the_same_users(tracker: JobTracker, make_job: Callable[..., str]) -> None:
    """A parent of another user, or none at all, is refused naming parent_id."""
    bobs = make_job(user_id="bob")
    for parent in (bobs, "no-such-job"):
        with pytest.raises(InvalidInputError) as info:
            make_job(parent_id=parent)
        assert info.value.field == "parent_id"
    job = tracker.get_job(bobs)
    assert job is not None
    assert job.children == 0
    with pytest.raises(InvalidInputError) as info:  # nor is a job its own parent
        make_job(job_id="loop", parent_id="loop")
    assert info.value.field == "parent_id"


def test_a_running_parent_says_how_many_children_are_done(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock
) -> None:
    """While children run, the parent's message counts the ended ones, and its percentage is
    the weighted mean floored: never rounded up past what the children did."""
    parent = make_job()
    a = make_job(parent_id=parent, weight=2)
    make_job(parent_id=parent, weight=1)
    make_job(parent_id=parent, weight=1)
    clock.advance(1)
    tracker.update_progress(a, 37, None, "a", "alice")  # 2 * 37 / 4 = 18.5
    job = tracker.get_job(parent)
    assert job is not None
    assert (job.percentage, job.summary) == (18, "0 of 3 child jobs done")
    tracker.mark_completed(a, "a done", "alice")
    job = tracker.get_job(parent)
    assert job is not None
    assert (job.percentage, job.summary, job.status) == (
        50,
        "1 of 3 child jobs done",
        JobStatus.PROCESSING,
    )


def test_a_mean_a_rounding_error_below_a_whole_percentage_is_that_percentage(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock
) -> None:
    """Weights 0.1 and 0.2, both children at 5%: the sums give 4.999999999999999 in binary
    floating point, and the parent shows 5%, not 4%."""
    parent = make_job()
    children = [make_job(parent_id=parent, weight=w) for w in (0.1, 0.2)]
    for child in children:
        clock.advance(1)
        tracker.update_progress(child, 5, None, "five", "alice")
    assert tracker.get_job_progress(parent) == 5


def test_three_children_reported_concurrently(
    store: SQLStore, tracker: JobTracker, make_job: Callable[..., str]
) -> None:
    """Three workers report their children at once: nothing is lost from the parent's sums."""
    parent = make_job()
    children = [make_job(parent_id=parent, weight=w) for w in (1, 2, 3)]
    barrier = threading.Barrier(3)

    def work(job_id: str) -> None:
        own = JobTracker(store=store)
        barrier.wait()
        for percentage in range(1, 101):
            assert own.update_progress(job_id, percentage, None, f"{percentage}", "alice")

    threads = [threading.Thread(target=work, args=(c,)) for c in children]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    job = tracker.get_job(parent)
    assert job is not None
    assert (job.status, job.percentage, job.children_done) == (JobStatus.FINISHED, 100, 3)
    percentages = [e.percentage for e in tracker.history(parent)]
    assert percentages == sorted(percentages)


def test_parent_chains_are_bounded(tracker: JobTracker) -> None:
    """A job may have at most 16 parents above it: a 17th level is refused by name, and every
    job of the chain still takes reports (a change rolls up through all of them)."""
    from morag_progress.store.rollup import MAX_DEPTH

    chain = [tracker.start_job("root", "doc", user_id="u")]
    for level in range(MAX_DEPTH):
        chain.append(tracker.start_job(f"l{level}", "doc", user_id="u", parent_id=chain[-1]))
    with pytest.raises(InvalidInputError, match="at most 16 levels"):
        tracker.start_job("too deep", "doc", user_id="u", parent_id=chain[-1])
    assert tracker.update_progress(chain[-1], 50, user_id="u")
    assert tracker.get_job_progress(chain[0], "u") == 50


def _course_with_a_cancelled_remote_child(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock, name: str
) -> tuple[str, str, str]:
    """A parent with a local child ``a`` (pending) and a remote child ``b`` claimed, at 60%,
    then cancelled: (parent, a, b)."""
    parent = make_job(document_name=name)
    a = make_job(parent_id=parent)
    b = make_job(parent_id=parent, status=JobStatus.WAITING_FOR_REMOTE_WORKER)
    assert tracker.claim("gpu-01", claimant="k1", user_id="alice") is not None
    clock.advance(1)
    tracker.update_progress(b, 60, None, "b at 60", "alice")
    clock.advance(1)
    tracker.mark_cancelled(b, "alice")
    clock.advance(1)
    return parent, a, b


def test_a_requeued_child_runs_again_in_its_parents_sums(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock
) -> None:
    """A cancelled remote child counts as ended; requeued, it counts as running again (its
    percentage back to 0), and the parent finishes only when it does."""
    parent, a, _ = _course_with_a_cancelled_remote_child(tracker, make_job, clock, "course")
    tracker.mark_completed(a, "a done", "alice")
    job = tracker.get_job(parent)
    assert job is not None
    assert (job.status, job.children_done) == (JobStatus.FINISHED, 2)  # b ended, then a

    parent, a, b = _course_with_a_cancelled_remote_child(tracker, make_job, clock, "course 2")
    assert tracker.get_job(parent).children_done == 1  # type: ignore[union-attr]
    assert tracker.requeue(b, "alice").applied
    job = tracker.get_job(parent)
    assert job is not None
    assert (job.status, job.children_done, job.percentage) == (JobStatus.PROCESSING, 0, 0)
    clock.advance(1)
    tracker.mark_completed(a, "a done", "alice")
    job = tracker.get_job(parent)
    assert job is not None
    assert (job.status, job.children_done, job.percentage) == (JobStatus.PROCESSING, 1, 50)
    assert tracker.claim("gpu-02", claimant="k1", user_id="alice") is not None
    clock.advance(1)
    tracker.mark_completed(b, "b done", "alice")
    assert tracker.get_job(parent).status is JobStatus.FINISHED  # type: ignore[union-attr]


def test_a_child_of_an_ended_parent_is_not_requeued(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock
) -> None:
    """A failed remote child failed its parent; the parent's end is final, so requeueing the
    child is refused, saying so, and nothing changes."""
    parent = make_job(document_name="course")
    child = make_job(parent_id=parent, status=JobStatus.WAITING_FOR_REMOTE_WORKER)
    assert tracker.claim("gpu-01", claimant="k1", user_id="alice") is not None
    tracker.mark_failed(child, "boom", "alice")
    assert tracker.get_job(parent).status is JobStatus.FAILED  # type: ignore[union-attr]
    with pytest.raises(JobStateError, match="a parent's end is final"):
        tracker.requeue(child, "alice")
    assert tracker.get_job(child).status is JobStatus.FAILED  # type: ignore[union-attr]
