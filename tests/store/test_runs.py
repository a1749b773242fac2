"""Distributed runs in the store: a parent that expects its ranks, and the straggler sweep."""

from __future__ import annotations

from collections.abc import Callable

from morag_progress import JobStatus, JobTracker
from morag_progress.store import SQLStore
from tests.conftest import Clock


def _run(make_job: Callable[..., str], ranks: int, expected: int | None = None) -> list[str]:
    run = make_job(job_id="run-1", document_name="train", expected_children=expected or ranks)
    return [run] + [make_job(job_id=f"run-1:rank-{r}", parent_id=run) for r in range(ranks)]


def _report(tracker: JobTracker, clock: Clock, pcts: dict[str, int]) -> None:
    clock.advance(1)
    for job_id, pct in pcts.items():
        tracker.update_progress(job_id, pct, None, f"{pct}%", "alice")


def _sweep(store: SQLStore, clock: Clock) -> list[str]:
    return [s.job_id for s in store.sweep_stragglers(now=clock(), share=0.1, hold=60)]


def test_a_run_expecting_ranks_counts_the_missing_ones_and_waits_for_them(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock
) -> None:
    """Two of four ranks have started: the run is at their progress over four, and it does not
    finish when both end, only when all four have."""
    run, a, b = _run(make_job, 2, expected=4)
    _report(tracker, clock, {a: 60, b: 20})
    job = tracker.get_job(run)
    assert job is not None
    assert (job.percentage, job.summary, job.expected_children) == (20, "0 of 4 child jobs done", 4)
    tracker.mark_completed(a, "done", "alice")
    tracker.mark_completed(b, "done", "alice")
    job = tracker.get_job(run)
    assert job is not None
    assert (job.status, job.percentage, job.summary) == (
        JobStatus.PROCESSING,
        50,
        "2 of 4 child jobs done",
    )
    c = make_job(job_id="run-1:rank-2", parent_id=run)
    d = make_job(job_id="run-1:rank-3", parent_id=run)
    tracker.mark_completed(c, "done", "alice")
    assert tracker.get_job_progress(run) == 75
    tracker.mark_completed(d, "done", "alice")
    job = tracker.get_job(run)
    assert job is not None
    assert (job.status, job.summary) == (JobStatus.FINISHED, "All 4 child jobs ended")


def test_more_children_than_expected_count_as_they_are(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock
) -> None:
    run, a, b, c = _run(make_job, 3, expected=2)
    for rank in (a, b):
        tracker.mark_completed(rank, "done", "alice")
    job = tracker.get_job(run)
    assert job is not None
    assert (job.status, job.summary) == (JobStatus.PROCESSING, "2 of 3 child jobs done")
    tracker.mark_completed(c, "done", "alice")
    assert tracker.get_job(run).status is JobStatus.FINISHED  # type: ignore[union-attr]


def test_a_rank_behind_for_the_hold_is_flagged_once_on_its_run(
    tracker: JobTracker, store: SQLStore, make_job: Callable[..., str], clock: Clock
) -> None:
    run, *ranks = _run(make_job, 4)
    slow = ranks[3]
    _report(tracker, clock, {r: 50 for r in ranks[:3]} | {slow: 40})
    assert _sweep(store, clock) == []  # first seen behind: noted, not flagged
    clock.advance(59)
    assert _sweep(store, clock) == []
    clock.advance(1)
    flagged = store.sweep_stragglers(now=clock(), share=0.1, hold=60)
    assert [(s.run_id, s.job_id, s.percentage, s.median) for s in flagged] == [
        (run, slow, 40, 50.0)
    ]
    assert flagged[0].behind_seconds == 60
    assert _sweep(store, clock) == []  # once, while it stays behind
    job = tracker.get_job(run)
    assert job is not None
    assert (job.stragglers, job.status) == (1, JobStatus.PROCESSING)
    assert (
        job.summary == f"Straggler: {slow} at 40% against its siblings' median 50%, behind for 60 s"
    )
    rank = tracker.get_job(slow)
    assert rank is not None
    assert rank.straggler
    assert not tracker.get_job(ranks[0]).straggler  # type: ignore[union-attr]
    last = tracker.history(run)[-1]
    assert (last.action, last.message, last.actor) == ("straggler", job.summary, "server")
    assert store.count_stragglers() == 1


def test_a_rank_that_catches_up_is_cleared_and_may_be_flagged_again(
    tracker: JobTracker, store: SQLStore, make_job: Callable[..., str], clock: Clock
) -> None:
    run, *ranks = _run(make_job, 3)
    _report(tracker, clock, {ranks[0]: 50, ranks[1]: 50, ranks[2]: 30})
    _sweep(store, clock)
    clock.advance(60)
    assert _sweep(store, clock) == [ranks[2]]
    _report(tracker, clock, {ranks[2]: 48})  # within 10% of the median: caught up
    assert _sweep(store, clock) == []
    assert (tracker.get_job(run).stragglers, tracker.get_job(ranks[2]).straggler) == (  # type: ignore[union-attr]
        0,
        False,
    )
    assert store.count_stragglers() == 0
    _report(tracker, clock, {ranks[0]: 80, ranks[1]: 80})  # behind again: a new hold
    assert _sweep(store, clock) == []
    clock.advance(30)
    _report(tracker, clock, {ranks[2]: 49})  # a brief rally that stays behind keeps its time
    clock.advance(30)
    assert _sweep(store, clock) == [ranks[2]]


def test_a_rank_caught_up_before_the_hold_starts_over(
    tracker: JobTracker, store: SQLStore, make_job: Callable[..., str], clock: Clock
) -> None:
    _run_id, *ranks = _run(make_job, 3)
    _report(tracker, clock, {ranks[0]: 50, ranks[1]: 50, ranks[2]: 30})
    _sweep(store, clock)
    clock.advance(50)
    _report(tracker, clock, {ranks[2]: 50})
    assert _sweep(store, clock) == []
    _report(tracker, clock, {ranks[2]: 30})
    assert _sweep(store, clock) == []
    clock.advance(59)
    assert _sweep(store, clock) == []  # 59 s since it fell behind again, not 110


def test_an_ended_straggler_is_cleared(
    tracker: JobTracker, store: SQLStore, make_job: Callable[..., str], clock: Clock
) -> None:
    run, *ranks = _run(make_job, 3)
    _report(tracker, clock, {ranks[0]: 90, ranks[1]: 90, ranks[2]: 10})
    _sweep(store, clock)
    clock.advance(60)
    assert _sweep(store, clock) == [ranks[2]]
    tracker.mark_completed(ranks[2], "done", "alice")
    _sweep(store, clock)
    assert tracker.get_job(run).stragglers == 0  # type: ignore[union-attr]
    assert not tracker.get_job(ranks[2]).straggler  # type: ignore[union-attr]


def test_a_balanced_run_and_an_ordinary_parent_are_never_flagged(
    tracker: JobTracker, store: SQLStore, make_job: Callable[..., str], clock: Clock
) -> None:
    """Ranks within 10% of each other stay unflagged however long; a parent that expects no
    children (a batch of documents of different sizes) is not a run: its children differ."""
    _run_id, *ranks = _run(make_job, 4)
    batch = make_job(job_id="batch")
    docs = [make_job(job_id=f"doc-{i}", parent_id=batch) for i in range(3)]
    for step in range(1, 10):
        _report(tracker, clock, {r: 10 * step - i % 2 for i, r in enumerate(ranks)})
        _report(tracker, clock, {docs[0]: 90, docs[1]: 90, docs[2]: step})
        clock.advance(30)
        assert _sweep(store, clock) == []
    assert not tracker.get_job(docs[2]).straggler  # type: ignore[union-attr]


def test_runs_of_other_users_are_swept_apart(
    tracker: JobTracker, store: SQLStore, make_job: Callable[..., str], clock: Clock
) -> None:
    """Two users with a run of the same id: each run's ranks are its own user's."""
    for user in ("alice", "bob"):
        make_job(user_id=user, job_id="run", expected_children=2)
        for r in range(2):
            make_job(user_id=user, job_id=f"run:rank-{r}", parent_id="run")
    clock.advance(1)
    tracker.update_progress("run:rank-0", 50, None, "", "alice")
    tracker.update_progress("run:rank-1", 50, None, "", "alice")
    tracker.update_progress("run:rank-0", 50, None, "", "bob")
    tracker.update_progress("run:rank-1", 10, None, "", "bob")
    _sweep(store, clock)
    clock.advance(60)
    flagged = store.sweep_stragglers(now=clock(), share=0.1, hold=60)
    assert [(s.user_id, s.job_id) for s in flagged] == [("bob", "run:rank-1")]
    assert tracker.get_job("run", user_id="alice").stragglers == 0  # type: ignore[union-attr]
    assert tracker.get_job("run", user_id="bob").stragglers == 1  # type: ignore[union-attr]
