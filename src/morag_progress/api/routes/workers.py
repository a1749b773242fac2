"""Workers: who has been reporting, what each runs now, how many jobs each ended lately."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request

from morag_progress.api.routes import Caller, errors, estimates_of
from morag_progress.api.schemas import WorkerList, WorkerOut
from morag_progress.models import utcnow

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/workers", tags=["workers"])


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
    since = utcnow() - timedelta(seconds=window)
    activity = request.app.state.store.workers(user_id=caller.scope, since=since)
    current = estimates_of(request).jobs_out([a.current_job for a in activity if a.current_job])
    by_id = {(job.user_id, job.id): job for job in current}  # ids are unique per user
    return WorkerList(
        window_seconds=window,
        workers=[
            WorkerOut(
                worker_id=a.worker_id,
                user_id=a.user_id,
                last_seen=a.last_seen,
                current_job=(
                    None
                    if a.current_job is None
                    else by_id[(a.current_job.user_id, a.current_job.id)]
                ),
                finished=a.finished,
                failed=a.failed,
            )
            for a in activity
        ],
    )
