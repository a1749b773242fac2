"""Routes for people and programs: create, read, list, cancel jobs, read their history."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Query, Request, Response, status

from morag_progress.api.auth import require
from morag_progress.api.routes import (
    SEARCH_READ,
    Caller,
    JobFilters,
    JobIdPath,
    errors,
    estimates_of,
    tracker_of,
    visible_job,
    within_bytes,
)
from morag_progress.api.schemas import (
    FeedEventOut,
    JobCreate,
    JobId,
    JobList,
    JobOut,
)
from morag_progress.keys import Role
from morag_progress.models import FeedEvent, Job, JobStatus, utcnow

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=JobOut,
    responses=errors(400, 401, 403, 409, 422, 429),
)
def create_job(body: JobCreate, caller: Caller, request: Request, response: Response) -> JobOut:
    """Create a job for the caller's user (an admin's: the one it names with ``user``, or its
    own). Creating with the same ``id`` again returns the job.

    A W3C ``traceparent`` header makes the caller's span the parent of the job's span; the job's
    own context comes back as ``traceparent``, for its worker's spans."""
    require(caller, Role.USER, Role.ADMIN)
    tracker = tracker_of(request)
    # 429 past the user's creation rate; making an id that exists again costs nothing (each
    # rank of a run makes the run's job: thousands of ranks must not spend the user's rate).
    if body.id is None or tracker.get_job(body.id, caller.owner) is None:
        request.app.state.job_quota.check(caller.owner)
    job_id = tracker.start_job(
        body.document_name,
        body.document_type,
        body.document_id,
        caller.owner,
        body.summary,
        job_id=body.id,
        parent_id=body.parent_id,
        metadata=body.metadata,
        weight=body.weight,
        stall_timeout_s=body.stall_timeout_s,
        status=JobStatus.WAITING_FOR_REMOTE_WORKER if body.remote else JobStatus.PENDING,
        actor=caller.actor,
        # The creator's span (W3C Trace Context) is the job span's parent; an invalid header
        # is ignored, as the standard says, and the job starts a trace of its own.
        parent_trace=request.headers.get("traceparent"),
        max_open=_max_open(request),
        expected_children=body.expected_children,
        deadline=(
            utcnow() + timedelta(seconds=body.deadline_seconds)
            if body.deadline_seconds is not None
            else body.deadline
        ),
    )
    job = tracker.get_job(job_id, caller.owner)
    assert job is not None
    response.headers["Location"] = f"/api/v1/jobs/{job.id}"
    return estimates_of(request).job_out(job, caller)


def _max_open(request: Request) -> int | None:
    """The most jobs not yet ended a user may have (the store checks it as it writes)."""
    most: int | None = request.app.state.settings.max_open_jobs_per_user
    return most


@router.get("/{job_id}", response_model=JobOut, responses=errors(401, 404, 409, 422, 429))
def get_job(job_id: JobIdPath, caller: Caller, request: Request) -> JobOut:
    """One job."""
    return estimates_of(request).job_out(visible_job(request, job_id, caller), caller)


@router.get("", response_model=JobList, responses=errors(401, 422, 429), dependencies=[SEARCH_READ])
def list_jobs(
    caller: Caller,
    request: Request,
    filters: JobFilters,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[JobId | None, Query(description="next_cursor of the previous page")] = None,
) -> JobList:
    """The caller's jobs (an admin's: everyone's), newest first, a page at a time (ending
    early past about a megabyte: ``next_cursor`` goes on)."""
    jobs = tracker_of(request).list_jobs(
        caller.scope, status=status_, limit=limit + 1, after=cursor, **filters
    )
    page = within_bytes(jobs[:limit], _job_size)
    next_cursor = page[-1].id if len(jobs) > len(page) else None
    return JobList(jobs=estimates_of(request).jobs_out(page, caller), next_cursor=next_cursor)


@router.post(
    "/{job_id}/cancel",
    response_model=JobOut,
    responses=errors(401, 403, 404, 409, 429),
)
def cancel_job(job_id: JobIdPath, caller: Caller, request: Request) -> JobOut:
    """Cancel a job: one not yet running is CANCELLED now; a running one gets
    ``cancel_requested``, which its worker sees in its next progress reply."""
    require(caller, Role.USER, Role.ADMIN)
    result = tracker_of(request).request_cancel(job_id, caller.scope, actor=caller.actor)
    result.raise_for_outcome(job_id)
    assert result.job is not None
    return estimates_of(request).job_out(result.job, caller)


@router.post(
    "/{job_id}/requeue",
    response_model=JobOut,
    responses=errors(401, 403, 404, 409, 429),
)
def requeue_job(job_id: JobIdPath, caller: Caller, request: Request) -> JobOut:
    """Put a remote job that failed, was cancelled or stalled back in the queue: it waits for
    a remote worker again at 0%, and its next claim starts a new attempt (a late report from
    the old attempt is refused as superseded). 409 for a job in another state, or one no
    remote worker ever claimed (an in-process job is retried by its own task queue)."""
    require(caller, Role.USER, Role.ADMIN)
    result = tracker_of(request).requeue(
        job_id, caller.scope, actor=caller.actor, max_open=_max_open(request)
    )
    result.raise_for_outcome(job_id)
    assert result.job is not None
    return estimates_of(request).job_out(result.job, caller)


@router.get(
    "/{job_id}/history",
    response_model=list[FeedEventOut],
    responses=errors(401, 404, 409, 422, 429),
)
def job_history(
    job_id: JobIdPath,
    caller: Caller,
    request: Request,
    after: Annotated[
        int, Query(ge=0, le=2**63 - 1, description="Only changes with a larger id.")
    ] = 0,
    before: Annotated[
        int | None, Query(ge=1, le=2**63 - 1, description="Only changes with a smaller id.")
    ] = None,
    order: Annotated[
        Literal["asc", "desc"], Query(description="asc: oldest first; desc: newest first.")
    ] = "asc",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[FeedEventOut]:
    """The job's applied changes, oldest first (or newest first: page back with ``before``).
    A page ends early past about a megabyte: ask again after (or before) its last id."""
    visible_job(request, job_id, caller)
    events = tracker_of(request).history(
        job_id, caller.scope, after=after, before=before, newest_first=order == "desc", limit=limit
    )
    page = within_bytes(events, _event_size)
    names = estimates_of(request).names((event.actor for event in page), caller)
    return [FeedEventOut.of(event, names) for event in page]


def _job_size(job: Job) -> int:
    """About the bytes a job takes in a reply (its metadata may be 16 KiB)."""
    texts = (job.summary, job.error, job.document_name, job.stage)
    return 600 + len(orjson.dumps(job.metadata)) + sum(len(t or "") for t in texts)


def _event_size(event: FeedEvent) -> int:
    """About the bytes a history row takes in a reply."""
    return 300 + len(event.message or "") + len(event.stage or "")
