"""The API's routers, one module per resource."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path, Query, Request

from morag_progress.api.auth import Principal, principal, stream_principal
from morag_progress.api.estimates import Estimates
from morag_progress.api.schemas import DocumentType, JobId, SearchText
from morag_progress.errors import JobNotFoundError
from morag_progress.models import Job
from morag_progress.tracker import JobTracker

__all__ = [
    "Caller",
    "JobFilters",
    "JobIdPath",
    "StreamCaller",
    "errors",
    "estimates_of",
    "tracker_of",
    "visible_job",
]

Caller = Annotated[Principal, Depends(principal)]
StreamCaller = Annotated[Principal, Depends(stream_principal)]
JobIdPath = Annotated[JobId, Path(description="The job's id.")]


def _job_filters(
    document_type: Annotated[DocumentType | None, Query()] = None,
    parent_id: Annotated[JobId | None, Query(description="Only this job's children.")] = None,
    top_level: Annotated[
        bool, Query(description="Only jobs without a parent (ignored with parent_id).")
    ] = False,
    q: Annotated[
        SearchText | None,
        Query(description="Only jobs whose name, id or message holds this text (any case)."),
    ] = None,
) -> dict[str, Any]:
    return {
        "document_type": document_type,
        "parent_id": parent_id,
        "top_level": top_level,
        "search": q or None,
    }


JobFilters = Annotated[dict[str, Any], Depends(_job_filters)]
"""The filters a job list and its counts share, as the store's keyword arguments."""


def tracker_of(request: Request) -> JobTracker:
    """The app's tracker."""
    tracker: JobTracker = request.app.state.tracker
    return tracker


def estimates_of(request: Request) -> Estimates:
    """The app's estimates (how jobs are written out with their ETAs and start forecasts)."""
    estimates: Estimates = request.app.state.estimates
    return estimates


def visible_job(request: Request, job_id: str, caller: Principal) -> Job:
    """The job, if the caller may see it; otherwise JobNotFoundError (404, never 403)."""
    job = tracker_of(request).get_job(job_id, caller.scope)
    if job is None:
        raise JobNotFoundError(job_id)
    return job


_ERRORS: dict[int, str] = {
    400: "The body is not JSON text (not UTF-8, or cut off).",
    401: "No API key, or a wrong or revoked one.",
    403: "This key's role may not do this (a worker key creating or cancelling jobs).",
    404: "No such job, or not one of this key's user.",
    409: "The job is finished, failed or cancelled, or runs a newer attempt; or the id is taken.",
    413: "The body is over the size limit.",
    422: "A field breaks a rule; the error names the field and the rule.",
    429: "Too many requests for this key; see Retry-After.",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The documented error answers of a route, for OpenAPI."""
    return {code: {"description": _ERRORS[code]} for code in codes}
