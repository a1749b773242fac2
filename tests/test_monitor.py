"""Stall detection and abandoned jobs, with a clock the tests move: transitions, recovery,
per-job timeouts, policies, and two sweepers racing (each change happens once)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from morag_progress import JobStatus, JobTracker
from morag_progress.models import UpdateOutcome
from morag_progress.monitor import Monitor
from morag_progress.store import SQLStore
from tests.conftest import Clock


def running(tracker: JobTracker, make_job: Callable[..., str], **kwargs: object) -> str:
    job_id = make_job(**kwargs)
    assert tracker.update_progress(job_id, 30, None, "working", "alice")
    return job_id


def test_silent_job_stalls_and_recovers(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock
) -> None:
    """Silent past the timeout: STALLED with one feed row, the worker's last message kept (the
    views show the silence beside it); the next report: PROCESSING."""
    job_id = running(tracker, make_job)
    monitor = Monitor(tracker, stall_timeout=60, clock=clock)
    clock.advance(59)
    assert monitor.sweep() == []
    clock.advance(2)
    [stalled] = monitor.sweep()
    assert (stalled.id, stalled.status, stalled.percentage) == (job_id, JobStatus.STALLED, 30)
    assert stalled.summary == "working"
    assert stalled.estimate(clock()) is None
    assert tracker.history(job_id)[-1].status is JobStatus.STALLED
    assert monitor.sweep() == []  # once
    assert tracker.update_progress(job_id, 35, None, "back", "alice")
    job = tracker.get_job(job_id)
    assert job is not None
    assert job.status is JobStatus.PROCESSING


def test_heartbeat_keeps_a_job_alive_and_wakes_a_stalled_one(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock
) -> None:
    """A heartbeat counts as a sign of life."""
    job_id = running(tracker, make_job)
    monitor = Monitor(tracker, stall_timeout=60, clock=clock)
    clock.advance(50)
    tracker.heartbeat(job_id)
    clock.advance(50)
    assert monitor.sweep() == []
    clock.advance(61)
    assert len(monitor.sweep()) == 1
    assert tracker.heartbeat(job_id).job.status is JobStatus.PROCESSING  # type: ignore[union-attr]


def test_a_jobs_own_timeout_wins(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock
) -> None:
    """stall_timeout_s on the job beats the server's; without either nothing stalls."""
    quick = running(tracker, make_job, stall_timeout_s=5)
    slow = running(tracker, make_job)
    clock.advance(10)
    assert [j.id for j in Monitor(tracker, stall_timeout=None, clock=clock).sweep()] == [quick]
    clock.advance(1000)
    assert Monitor(tracker, stall_timeout=None, clock=clock).sweep() == []
    assert [j.id for j in Monitor(tracker, stall_timeout=600, clock=clock).sweep()] == [slow]


def test_only_processing_jobs_stall(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock
) -> None:
    """Pending, finished and failed jobs are left alone."""
    pending = make_job()
    done = running(tracker, make_job)
    tracker.mark_completed(done)
    clock.advance(10_000)
    assert Monitor(tracker, stall_timeout=60, clock=clock).sweep() == []
    assert tracker.get_job_status(pending) is JobStatus.PENDING


def test_abandoned_job_fails(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock
) -> None:
    """Past the abandon timeout a running (or stalled) job fails, keeping its percentage."""
    job_id = running(tracker, make_job)
    monitor = Monitor(tracker, stall_timeout=60, abandon_timeout=600, clock=clock)
    clock.advance(120)
    assert monitor.sweep()[0].status is JobStatus.STALLED
    clock.advance(600)
    [failed] = monitor.sweep()
    assert (failed.id, failed.status, failed.percentage) == (job_id, JobStatus.FAILED, 30)
    assert failed.error == "Worker gone: no report or heartbeat for 720 s"
    assert failed.end_date == clock.now


def test_abandoned_claimed_job_is_requeued_for_another_worker(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock
) -> None:
    """requeue: a claimed job goes back to the queue; the next claim is a new attempt, and the
    lost worker can no longer report on it."""
    job_id = make_job(status=JobStatus.WAITING_FOR_REMOTE_WORKER)
    first = tracker.claim("gpu-01", claimant="key-1", user_id="alice")
    assert first is not None
    assert first.id == job_id
    monitor = Monitor(
        tracker, stall_timeout=None, abandon_timeout=300, abandon_policy="requeue", clock=clock
    )
    clock.advance(301)
    [requeued] = monitor.sweep()
    assert requeued.status is JobStatus.WAITING_FOR_REMOTE_WORKER
    assert requeued.worker_id is None
    second = tracker.claim("gpu-02", claimant="key-2", user_id="alice")
    assert second is not None
    assert (second.id, second.attempt, second.worker_id) == (job_id, 2, "gpu-02")
    from morag_progress import ProgressUpdate

    lost = tracker.apply(ProgressUpdate(job_id, 50, user_id="alice", claimant="key-1"))
    assert lost.outcome is UpdateOutcome.NOT_FOUND


def test_an_abandoned_job_with_a_checkpoint_resumes_from_it(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock
) -> None:
    """requeue of a job whose lost worker saved a checkpoint at 60% (and reported 64%): back in
    the queue at 60%, its pace paused there, and the next claim hands the checkpoint back."""
    from morag_progress import ProgressUpdate

    job_id = make_job(status=JobStatus.WAITING_FOR_REMOTE_WORKER)
    assert tracker.claim("gpu-01", claimant="key-1", user_id="alice") is not None
    for pct in range(1, 65):
        clock.advance(1)
        saved = {"step": pct} if pct == 60 else None
        tracker.apply(ProgressUpdate(job_id, pct, user_id="alice", checkpoint=saved))
    monitor = Monitor(
        tracker, stall_timeout=None, abandon_timeout=300, abandon_policy="requeue", clock=clock
    )
    clock.advance(301)
    [requeued] = monitor.sweep()
    assert (requeued.status, requeued.percentage) == (JobStatus.WAITING_FOR_REMOTE_WORKER, 60)
    assert (requeued.summary or "").endswith("to resume from its checkpoint at 60%")
    assert requeued.pace is not None
    assert requeued.pace["resumes_at"] == 60
    second = tracker.claim("gpu-02", claimant="key-2", user_id="alice")
    assert second is not None
    assert (second.attempt, second.percentage, second.checkpoint) == (2, 60, {"step": 60})


def test_unclaimed_job_is_failed_under_requeue(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock
) -> None:
    """Only a claimed job can go back to the queue; a local one fails."""
    running(tracker, make_job)
    clock.advance(400)
    monitor = Monitor(
        tracker, stall_timeout=None, abandon_timeout=300, abandon_policy="requeue", clock=clock
    )
    assert monitor.sweep()[0].status is JobStatus.FAILED


def test_two_sweepers_change_a_job_once(
    store: SQLStore, make_job: Callable[..., str], tracker: JobTracker, clock: Clock
) -> None:
    """Replicas sweeping at the same moment: each stalled job changes once, with one row."""
    jobs = [running(tracker, make_job) for _ in range(20)]
    clock.advance(100)
    results: list[list[object]] = []
    barrier = threading.Barrier(2)

    def sweep() -> None:
        monitor = Monitor(JobTracker(store=store, clock=clock), stall_timeout=60, clock=clock)
        barrier.wait()
        results.append(list(monitor.sweep()))

    threads = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sum(len(r) for r in results) == 20
    for job_id in jobs:
        stalled = [e for e in tracker.history(job_id) if e.status is JobStatus.STALLED]
        assert len(stalled) == 1


def test_eta_survives_a_pause(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock
) -> None:
    """No ETA until a window of time supports one; after an hour's pause and one more
    percent the ETA reflects the slow hour (larger), bounded by the pace measured before."""
    job_id = make_job()
    tracker.update_progress(job_id, 10, None, "a", "alice")
    job = tracker.get_job(job_id)
    assert job is not None
    assert (job.rate, job.estimate(clock())) == (None, None)
    clock.advance(10)
    tracker.update_progress(job_id, 20, None, "b", "alice")
    job = tracker.get_job(job_id)
    assert job is not None
    assert job.rate == 1.0
    eta = job.estimate(clock())
    assert eta is not None
    assert eta.seconds == pytest.approx(80)
    clock.advance(3600)
    tracker.update_progress(job_id, 21, None, "c", "alice")
    job = tracker.get_job(job_id)
    assert job is not None
    eta = job.estimate(clock())
    assert eta is not None
    assert 80 < eta.seconds < 79 * 3601  # slower than before the pause, not the hour's pace
