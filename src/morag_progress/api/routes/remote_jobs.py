"""Routes remote workers call: report progress, read status, report the result."""

from __future__ import annotations

from fastapi import APIRouter, Request

from morag_progress.api.routes import Caller, JobIdPath, tracker_of
from morag_progress.api.schemas import JobOut, ProgressIn, ProgressOut, ResultIn
from morag_progress.errors import JobNotFoundError
from morag_progress.models import JobStatus, ProgressUpdate

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/remote-jobs", tags=["remote workers"])

_ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "No API key, or a wrong or revoked one."},
    404: {"description": "No such job, or not one of this key's user."},
    409: {"description": "The job is finished, failed or cancelled, or runs a newer attempt."},
    413: {"description": "The body is over the size limit."},
    422: {"description": "A field breaks a rule; the error names the field and the rule."},
    429: {"description": "Too many requests for this key; see Retry-After."},
}


def _reply(applied: bool, job: JobOut, what: str) -> ProgressOut:
    return ProgressOut(
        success=True,
        message=what if applied else "Not applied: older than the job's last update",
        applied=applied,
        cancel_requested=job.cancel_requested,
        job=job,
    )


@router.put("/{job_id}/progress", response_model=ProgressOut, responses=_ERRORS)
def report_progress(
    job_id: JobIdPath, body: ProgressIn, caller: Caller, request: Request
) -> ProgressOut:
    """Report a job's progress. The reply is sent once the update is committed.

    ``applied`` is false for a report older than the job's last one (not an error: it lost a
    race). ``cancel_requested`` tells the worker to stop.
    """
    update = ProgressUpdate(
        job_id,
        body.percentage,
        body.message,
        timestamp=body.timestamp,
        current=body.current,
        total=body.total,
        stage=body.stage,
        attempt=body.attempt,
        seq=body.seq,
        user_id=caller.scope,
    )
    result = tracker_of(request).apply(update).raise_for_outcome(job_id)
    assert result.job is not None
    return _reply(result.applied, JobOut.of(result.job), "Progress updated")


@router.get("/{job_id}/status", response_model=JobOut, responses=_ERRORS)
def job_status(job_id: JobIdPath, caller: Caller, request: Request) -> JobOut:
    """The job as it is now."""
    job = tracker_of(request).get_job(job_id, caller.scope)
    if job is None:
        raise JobNotFoundError(job_id)
    return JobOut.of(job)


@router.put("/{job_id}/result", response_model=ProgressOut, responses=_ERRORS)
def report_result(
    job_id: JobIdPath, body: ResultIn, caller: Caller, request: Request
) -> ProgressOut:
    """Finish the job (``success``: 100%, FINISHED) or fail it (FAILED, percentage kept)."""
    if body.success:
        update = ProgressUpdate(
            job_id,
            100,
            body.message or "Processing completed successfully",
            JobStatus.FINISHED,
            user_id=caller.scope,
        )
    else:
        error = body.message or "Processing failed"
        update = ProgressUpdate(
            job_id, None, error, JobStatus.FAILED, error=error, user_id=caller.scope
        )
    result = tracker_of(request).apply(update).raise_for_outcome(job_id)
    assert result.job is not None
    return _reply(result.applied, JobOut.of(result.job), "Result recorded")
