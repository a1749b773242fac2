"""The examples run as written: the remote worker against a real server, the Celery app's
task through Celery's own task runner (eagerly, in this process) on a real store."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from morag_progress import JobStatus, JobTracker, ProgressUpdate
from tests.live import Remote
from tests.services import reap

ROOT = Path(__file__).resolve().parents[1]


def test_remote_worker_claims_reports_and_finishes(remote: Remote) -> None:
    """The example claims the waiting job, reports its converter's progress and finishes it."""
    job_id = remote.tracker.start_job(
        "talk.mp3", "audio", user_id="alice", status=JobStatus.WAITING_FOR_REMOTE_WORKER
    )
    env = remote.env()
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "remote_worker.py"), "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Processing progress: Transcribing talk.mp3 (50%)" in done.stderr
    job = remote.job(job_id)
    assert (job.status, job.percentage, job.worker_id) == (
        JobStatus.FINISHED,
        100,
        "remote-worker-gpu-01",
    )
    assert len(remote.tracker.history(job_id)) > 3


def test_remote_worker_resumes_a_requeued_job_from_its_checkpoint(remote: Remote) -> None:
    """A job whose first worker saved a checkpoint at 75% and died is requeued: the example
    claims it and transcribes only the rest, from 75% on, to FINISHED."""
    job_id = remote.tracker.start_job(
        "talk.mp3", "audio", user_id="alice", status=JobStatus.WAITING_FOR_REMOTE_WORKER
    )
    assert remote.tracker.claim("gpu-00", claimant="k0", user_id="alice") is not None
    saved = ProgressUpdate(job_id, 75, user_id="alice", checkpoint={"segment": 15})
    assert remote.tracker.apply(saved).applied
    remote.tracker.apply(ProgressUpdate.final(job_id, success=False, user_id="alice"))
    remote.tracker.requeue(job_id, "alice")
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "remote_worker.py"), "--once"],
        env=remote.env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "(50%)" not in done.stderr  # the first three quarters are not done again
    assert "Processing progress: Transcribing talk.mp3 (80%)" in done.stderr
    assert remote.job(job_id).status is JobStatus.FINISHED
    second = [e.percentage for e in remote.tracker.history(job_id) if e.attempt == 2]
    assert min(second) == 75


def test_remote_worker_follows_a_cancel_request(remote: Remote) -> None:
    """A job cancelled while it runs ends CANCELLED by the worker itself."""
    job_id = remote.tracker.start_job(
        "talk.mp3", "audio", user_id="alice", status=JobStatus.WAITING_FOR_REMOTE_WORKER
    )
    env = remote.env()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "remote_worker.py"), "--once"],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while remote.job(job_id).percentage < 10:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        remote.tracker.request_cancel(job_id)
        assert process.wait(30) == 0
    finally:
        reap(process, grace=0)
    job = remote.job(job_id)
    assert job.status is JobStatus.CANCELLED
    assert 10 <= job.percentage < 100


def test_celery_example_maps_the_seed_callback(tmp_path: Path) -> None:
    """The ingest task runs through Celery's tracer: PROCESSING, 10..70% from the callback,
    then FINISHED; the job's id is the task's."""
    sys.path.insert(0, str(ROOT))
    try:
        from examples.celery_app import ingest_file
    finally:
        sys.path.remove(str(ROOT))
    ingest_file.progress_min_interval = 0  # every callback written, to check the mapping
    result = ingest_file.apply(args=("talk.pdf", "document"), task_id="ingest-1")
    assert result.successful(), result.traceback
    tracker = JobTracker()
    job = tracker.get_job("ingest-1")
    assert job is not None
    assert (job.status, job.percentage) == (JobStatus.FINISHED, 100)
    middle = [e.percentage for e in tracker.history("ingest-1") if 5 < e.percentage < 90]
    assert middle
    assert all(10 <= p <= 70 for p in middle)
    tracker.close()
