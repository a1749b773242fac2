"""Small steps several tests take."""

from __future__ import annotations

from morag_progress import JobStatus, JobTracker
from morag_progress.models import UpdateResult


def stall(tracker: JobTracker, job_id: str, user_id: str) -> UpdateResult:
    """Mark a PROCESSING job STALLED as the monitor does when it falls silent (the change
    applies only if nobody reported since the job was read)."""
    job = tracker.get_job(job_id, user_id)
    assert job is not None
    return tracker.transition(
        job_id,
        expect=[JobStatus.PROCESSING],
        seen=job.last_seen_at,
        changes={"status": "STALLED"},
        user_id=user_id,
    )
