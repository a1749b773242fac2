"""Retention (``store/retention.py``, ``monitor.Pruner``, ``db prune``): what ended long ago
goes, with its feed, in small batches; what runs or ended lately stays; two pruners at once
delete each row once."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from morag_progress import JobTracker
from morag_progress.monitor import Pruner
from morag_progress.store import SQLStore
from morag_progress.store.retention import ROWS_PER_BATCH, Pruned
from morag_progress.store.webhooks import WebhookStore
from tests.conftest import Clock

MakeJob = Callable[..., str]


def _ended(tracker: JobTracker, make_job: MakeJob, changes: int = 3) -> str:
    job_id = make_job()
    for pct in range(1, changes):
        tracker.update_progress(job_id, pct, None, f"at {pct}", "alice")
    tracker.mark_completed(job_id, "done", "alice")
    return job_id


def test_old_ended_jobs_go_with_their_feed_and_the_rest_stays(
    tracker: JobTracker, make_job: MakeJob, clock: Clock, store: SQLStore
) -> None:
    """Jobs ended 100 days ago are deleted with their feed rows; a job that ended yesterday,
    and one still running since long ago, stay with theirs."""
    old = [_ended(tracker, make_job) for _ in range(3)]
    failed = make_job()
    tracker.mark_failed(failed, "boom", "alice")
    running = make_job()
    tracker.update_progress(running, 10, None, "working", "alice")
    clock.advance(99 * 86400)
    recent = _ended(tracker, make_job)
    clock.advance(86400)
    pruned = Pruner(store, days=30, clock=clock).prune()
    assert (pruned.jobs, pruned.events) == (4, 3 * 4 + 2)  # 3 x (create, 1, 2, done) + 2
    for job_id in [*old, failed]:
        assert tracker.get_job(job_id) is None
        assert tracker.history(job_id) == []
    for job_id in (running, recent):
        assert tracker.get_job(job_id) is not None
        assert tracker.history(job_id)
    assert Pruner(store, days=30, clock=clock).prune() == Pruned()  # nothing left
    assert Pruner(store, days=0, clock=clock).prune() == Pruned()  # retention off


def test_a_long_feed_is_pruned_over_several_batches(
    tracker: JobTracker, make_job: MakeJob, clock: Clock, store: SQLStore
) -> None:
    """A job with more feed rows than one batch deletes: the job row goes first (nothing can
    reopen a half-pruned job), its feed over the next batches; a new job given the same id
    meanwhile keeps its own feed."""
    job_id = make_job(job_id="nightly")
    for i in range(ROWS_PER_BATCH + 50):
        clock.advance(0.001)
        tracker.update_progress(job_id, 1 + i % 98, None, f"step {i}", "alice")
    tracker.mark_completed(job_id, "done", "alice")
    clock.advance(40 * 86400)
    before = clock() - timedelta(days=30)
    first = store.prune_batch(before=before)
    assert (first.jobs, first.events) == (1, 0)
    assert tracker.get_job(job_id) is None
    again = make_job(job_id="nightly")  # a new job of the same id, while the old feed goes
    tracker.update_progress(again, 5, None, "new run", "alice")
    second = store.prune_batch(before=before)
    assert (second.jobs, second.events) == (0, ROWS_PER_BATCH)
    rest = store.prune(before=before)
    assert rest.events == ROWS_PER_BATCH + 50 + 2 - ROWS_PER_BATCH  # creation and the end
    assert [e.message for e in tracker.history(again, "alice")][-1] == "new run"
    assert len(tracker.history(again, "alice")) == 2  # its creation and its 5%


def test_a_parent_with_a_child_still_running_is_kept(
    tracker: JobTracker, make_job: MakeJob, clock: Clock, store: SQLStore
) -> None:
    """A parent that failed (one child failed) while another child still runs is not pruned:
    the running child's roll-up must still find it."""
    parent = make_job(document_name="course")
    failing = make_job(parent_id=parent)
    running = make_job(parent_id=parent)
    tracker.update_progress(running, 10, None, "working", "alice")
    tracker.mark_failed(failing, "boom", "alice")
    assert tracker.get_job(parent).status.is_terminal  # type: ignore[union-attr]
    clock.advance(40 * 86400)
    pruned = Pruner(store, days=30, clock=clock).prune()
    assert pruned.jobs == 1  # the failed child only
    assert tracker.get_job(parent) is not None
    assert tracker.get_job(running) is not None


def test_an_open_grandchild_keeps_every_ancestor_and_leaves_go_first(
    tracker: JobTracker, make_job: MakeJob, clock: Clock, store: SQLStore
) -> None:
    """P -> C -> G: with G still open, neither its parent C (failed) nor C's parent P (failed
    too) is pruned; once G has ended long ago, the three go, leaves first."""
    parent = make_job(document_name="course")
    child = make_job(parent_id=parent)
    grandchild = make_job(parent_id=child)
    sibling = make_job(parent_id=child)
    tracker.update_progress(grandchild, 10, None, "working", "alice")
    tracker.mark_failed(sibling, "boom", "alice")  # C fails, and so P
    assert tracker.get_job(parent).status.is_terminal  # type: ignore[union-attr]
    clock.advance(40 * 86400)
    assert Pruner(store, days=30, clock=clock).prune().jobs == 1  # the failed sibling only
    for job_id in (parent, child, grandchild):
        assert tracker.get_job(job_id) is not None
    tracker.mark_failed(grandchild, "stopped", "alice")
    clock.advance(40 * 86400)
    assert Pruner(store, days=30, clock=clock).prune().jobs == 3
    for job_id in (parent, child, grandchild):
        assert tracker.get_job(job_id) is None


def test_old_webhook_deliveries_go_but_pending_ones_stay(
    tracker: JobTracker, make_job: MakeJob, clock: Clock, store: SQLStore
) -> None:
    """Deliveries made before the cut that are delivered or failed are deleted; pending
    ones are kept (they still have to go out)."""
    hooks = WebhookStore(store)
    hook, _ = hooks.create(
        user_id="alice",
        url="https://example.com/hook",
        event_types=["job.finished"],
        progress_interval_s=10,
    )
    _ended(tracker, make_job)
    _ended(tracker, make_job)
    assert hooks.fill(now=clock()) == 2
    first, second = sorted(hooks.deliveries(hook.id), key=lambda d: d.id)
    hooks.record(first, status=200, error=None, now=clock(), max_attempts=3)
    clock.advance(40 * 86400)
    pruned = Pruner(store, days=30, clock=clock).prune()
    assert pruned.deliveries == 1
    assert [d.id for d in hooks.deliveries(hook.id)] == [second.id]


def test_two_pruners_at_once_delete_each_row_once(
    tracker: JobTracker, make_job: MakeJob, clock: Clock, database_url: str
) -> None:
    """Two stores (two replicas) prune the same old jobs at the same time: every job and
    feed row goes, and their counts add up to what there was."""
    ended = [_ended(tracker, make_job) for _ in range(40)]
    clock.advance(40 * 86400)
    results: list[Pruned] = []
    stores = [SQLStore(database_url), SQLStore(database_url)]
    try:
        threads = [
            threading.Thread(
                target=lambda s=s: results.append(Pruner(s, days=30, clock=clock).prune())
            )
            for s in stores
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        for s in stores:
            s.close()
    assert sum(r.jobs for r in results) == 40
    assert sum(r.events for r in results) == 40 * 4
    assert all(tracker.get_job(job_id) is None for job_id in ended)


def test_db_prune_command(tmp_path: Path, clock: Clock) -> None:
    """``morag-progress db prune --older-than-days N`` prunes and says what it deleted."""
    url = f"sqlite:///{tmp_path / 'prune.db'}"
    store = SQLStore(url)
    try:
        tracker = JobTracker(store=store, clock=clock)
        job_id = tracker.start_job("a.pdf", "pdf", user_id="alice")
        tracker.mark_completed(job_id, "done", "alice")  # ended in 2026-01 (the test clock)
    finally:
        store.close()
    done = subprocess.run(
        [sys.executable, "-m", "morag_progress.cli", "db", "prune", "--older-than-days", "1",
         "--database-url", url],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("pruned 1 jobs, 2 feed rows and 0 webhook deliveries")
    off = subprocess.run(
        [sys.executable, "-m", "morag_progress.cli", "db", "prune", "--older-than-days", "0",
         "--database-url", url],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "retention is off" in off.stdout
