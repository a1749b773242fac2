"""Reads the store serves beyond a job and its history: here, what a worker is doing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from morag_progress.models import Job, JobStatus, utcnow
from morag_progress.store.reads import WorkerActivity


@pytest.mark.parametrize(
    ("running", "stalled", "silent_for", "state"),
    [
        (True, False, 3600, "running"),  # running wins, however long since its last report
        (True, True, 0, "running"),  # running one job while another is stalled
        (False, True, 0, "stalled"),
        (False, False, 299, "idle"),
        (False, False, 301, "offline"),
    ],
)
def test_a_workers_state(running: bool, stalled: bool, silent_for: int, state: str) -> None:
    """running a job; stalled on one; idle while seen within the offline time; else offline."""
    now = utcnow()
    job = Job(
        id="j", user_id="alice", document_name="d", document_type="t", document_id=None,
        status=JobStatus.PROCESSING, percentage=1, summary=None, current=None, total=None,
        stage=None, worker_id="gpu-01", claimed_by=None, attempt=1, parent_id=None, weight=1.0,
        metadata={}, error=None, cancel_requested=False, created_at=now, start_date=now,
        updated_at=now, end_date=None, last_seen_at=now, stall_timeout_s=None, rate=None,
    )  # fmt: skip
    activity = WorkerActivity(
        worker_id="gpu-01",
        user_id="alice",
        last_seen=now - timedelta(seconds=silent_for),
        current_job=job if running else None,
        finished=0,
        failed=0,
        stalled_job=job if stalled else None,
    )
    assert activity.state(now, timedelta(seconds=300)) == state
