"""The API's routers, one module per resource."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from morag_progress.api.auth import Principal, principal, stream_principal
from morag_progress.errors import JobNotFoundError
from morag_progress.models import Job
from morag_progress.tracker import JobTracker

__all__ = ["Caller", "JobIdPath", "StreamCaller", "tracker_of", "visible_job"]

Caller = Annotated[Principal, Depends(principal)]
StreamCaller = Annotated[Principal, Depends(stream_principal)]
JobIdPath = Annotated[str, Path(min_length=1, max_length=128, description="The job's id.")]


def tracker_of(request: Request) -> JobTracker:
    """The app's tracker."""
    tracker: JobTracker = request.app.state.tracker
    return tracker


def visible_job(request: Request, job_id: str, caller: Principal) -> Job:
    """The job, if the caller may see it; otherwise JobNotFoundError (404, never 403)."""
    job = tracker_of(request).get_job(job_id, caller.scope)
    if job is None:
        raise JobNotFoundError(job_id)
    return job
