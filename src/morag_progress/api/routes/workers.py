"""Workers: who has been reporting, what each runs now, how many jobs each ended lately."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request

from morag_progress.api.routes import Caller, errors, estimates_of
from morag_progress.api.schemas import JobOut, WorkerList, WorkerOut
from morag_progress.models import Job, utcnow

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/workers", tags=["workers"])

DEFAULT_OFFLINE_SECONDS = 300.0
"""How long a worker running nothing is idle before it is shown offline, when stall detection
is off (otherwise: the stall timeout, the same silence that makes a job STALLED)."""


@router.get("", response_model=WorkerList, responses=errors(401, 422, 429))
def list_workers(
    caller: Caller,
    request: Request,
    window: Annotated[
        int, Query(ge=60, le=7 * 86400, description="Seconds back to count ended jobs.")
    ] = 3600,
) -> WorkerList:
    """The caller's workers (an admin's: everyone's, one row per user's worker): each worker
    running or stalled on a job now, or that ended one in the window; when it was last seen,
    its current job, and how many jobs it finished and failed in the window (default: the
    last hour)."""
    now = utcnow()
    since = now - timedelta(seconds=window)
    activity = request.app.state.store.workers(user_id=caller.scope, since=since)
    shown = [job for a in activity for job in (a.current_job, a.stalled_job) if job is not None]
    by_id = {(job.user_id, job.id): job for job in estimates_of(request).jobs_out(shown, caller)}

    def out(job: Job | None) -> JobOut | None:
        return None if job is None else by_id[(job.user_id, job.id)]  # ids: unique per user

    stall_timeout = request.app.state.settings.stall_timeout_seconds
    offline_after = timedelta(seconds=stall_timeout or DEFAULT_OFFLINE_SECONDS)
    return WorkerList(
        window_seconds=window,
        workers=[
            WorkerOut(
                worker_id=a.worker_id,
                user_id=a.user_id,
                last_seen=a.last_seen,
                current_job=out(a.current_job),
                finished=a.finished,
                failed=a.failed,
                state=a.state(now, offline_after),
                stalled_job=out(a.stalled_job),
            )
            for a in activity
        ],
    )
