"""Routes remote workers call: report progress, read status, report the result."""

from __future__ import annotations

from collections import Counter

import orjson
from fastapi import APIRouter, Request, Response, status
from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool

from morag_progress.api.auth import Principal, principal
from morag_progress.api.metrics import Metrics
from morag_progress.api.routes import (
    JOB_ID_PARAMETER,
    USER_PARAMETER,
    Caller,
    JobIdPath,
    decoded,
    errors,
    estimates_of,
    hot_route,
    tracker_of,
    visible_job,
)
from morag_progress.api.schemas import (
    BatchIn,
    BatchItemOut,
    BatchOut,
    ClaimIn,
    HeartbeatIn,
    JobOut,
    LogsOut,
    ProgressIn,
    ProgressOut,
    ResultIn,
)
from morag_progress.api.uploads import ParsedUpload, UploadParser, log_update
from morag_progress.errors import InvalidInputError, JobNotFoundError, ProgressError
from morag_progress.models import (
    ProgressUpdate,
    UpdateOutcome,
    UpdateResult,
    utcnow,
)
from morag_progress.tracker import MAX_CLOCK_SKEW, JobTracker

__all__ = ["PROGRESS_ROUTE", "hot_routes", "progress_reply", "progress_update", "router"]

router = APIRouter(prefix="/api/v1/remote-jobs", tags=["remote workers"])

_ERRORS = errors(400, 401, 404, 409, 413, 422, 429)
PROGRESS_ROUTE = "/api/v1/remote-jobs/{job_id}/progress"
"""The hot route: every remote worker calls it, many times a second."""


def progress_update(job_id: str, body: ProgressIn, caller: Principal) -> ProgressUpdate:
    return ProgressUpdate(
        job_id,
        body.percent,
        body.message,
        timestamp=body.timestamp,
        current=body.current,
        total=body.total,
        stage=body.stage,
        worker_id=body.worker_id,
        attempt=body.attempt,
        seq=body.seq,
        user_id=caller.scope,
        claimant=caller.claimant,
        actor=caller.actor,
        checkpoint=body.checkpoint,
    )


def progress_reply(result: UpdateResult, what: str) -> Response:
    """A ProgressOut as JSON (one builder for every route that answers with one), without a
    second validation of what the store just returned. The job is written as everywhere, but
    without an estimate (null): a worker has no use for its own ETA, and this is the hot path;
    reads of the job carry it."""
    job = result.job_dict()
    assert job is not None
    body = {
        "success": True,
        "message": what if result.applied else "Not applied: older than the job's last update",
        "applied": result.applied,
        "cancel_requested": result.cancel_requested,
        "job": job,
    }
    return Response(orjson.dumps(body), media_type="application/json")


def _metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


def _counted(request: Request, source: str, result: UpdateResult) -> UpdateResult:
    _metrics(request).count(source, result.outcome)
    return result


_PROGRESS_IN = TypeAdapter(ProgressIn)


async def report_progress(request: Request) -> Response:
    """Report a job's progress. The reply is sent once the update is committed.

    ``applied`` is false for a report older than the job's last one (not an error: it lost a
    race). ``cancel_requested`` tells the worker to stop.
    """
    caller = await principal(request)
    body = await decoded(request, _PROGRESS_IN)
    job_id: str = request.path_params["job_id"]
    # The commit is the writer thread's (shared with concurrent reports); this request waits
    # for it on the event loop, holding no thread.
    result = await tracker_of(request).apply_async(progress_update(job_id, body, caller))
    _counted(request, "http", result).raise_for_outcome(job_id)
    return progress_reply(result, "Progress updated")


hot_routes = [
    hot_route(
        router,
        PROGRESS_ROUTE.removeprefix(router.prefix),
        report_progress,
        method="PUT",
        response_model=ProgressOut,
        responses=_ERRORS,
        openapi_extra={
            "parameters": [JOB_ID_PARAMETER, USER_PARAMETER],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ProgressIn.model_json_schema()}},
            },
        },
    )
]
"""The routes served ahead of FastAPI's router (``hot_route``)."""


@router.get("/{job_id}/status", response_model=JobOut, responses=_ERRORS)
def job_status(job_id: JobIdPath, caller: Caller, request: Request) -> JobOut:
    """The job as it is now."""
    return estimates_of(request).job_out(visible_job(request, job_id, caller), caller)


@router.put("/{job_id}/result", response_model=ProgressOut, responses=_ERRORS)
def report_result(job_id: JobIdPath, body: ResultIn, caller: Caller, request: Request) -> Response:
    """Finish the job (``success``: 100%, FINISHED), fail it (FAILED, percentage kept), or
    end it as CANCELLED (``cancelled``: the worker stopped on a cancel request)."""
    update = ProgressUpdate.final(
        job_id,
        success=body.success,
        message=body.message,
        cancelled=body.cancelled,
        user_id=caller.scope,
        worker_id=body.worker_id,
        claimant=caller.claimant,
        actor=caller.actor,
    )
    result = _counted(request, "result", tracker_of(request).apply(update))
    result.raise_for_outcome(job_id)
    return progress_reply(result, "Result recorded")


def _item(job_id: str, result: UpdateResult) -> BatchItemOut:
    try:
        result.raise_for_outcome(job_id)
        detail = None
    except ProgressError as e:
        detail = str(e)
    return BatchItemOut(
        job_id=job_id,
        status=result.outcome.http_status,
        applied=result.applied,
        cancel_requested=result.cancel_requested,
        detail=detail,
    )


@router.post("/progress", response_model=BatchOut, responses=_ERRORS)
async def report_batch(body: BatchIn, caller: Caller, request: Request) -> BatchOut:
    """Report progress for many jobs at once: applied in order, all committed before the
    answer, with one result per report (an unknown or finished job fails its item, not the
    batch)."""
    tracker = tracker_of(request)
    results: list[BatchItemOut | None] = [None] * len(body.updates)
    valid: list[tuple[int, ProgressUpdate]] = []
    for i, item in enumerate(body.updates):
        update = progress_update(item.job_id, item, caller)
        try:
            tracker.check_timestamp(update)
        except InvalidInputError as e:
            _metrics(request).count("batch", "invalid")
            results[i] = BatchItemOut(
                job_id=item.job_id, status=422, applied=False, cancel_requested=False, detail=str(e)
            )
            continue
        valid.append((i, update))
    applied = await tracker.apply_many_async([update for _, update in valid])
    metrics = _metrics(request)
    for outcome, n in Counter(result.outcome for result in applied).items():
        metrics.count("batch", outcome, n)  # once per outcome: a label lookup costs ~5 us
    for (i, update), result in zip(valid, applied, strict=True):
        results[i] = _item(update.job_id, result)
    return BatchOut(results=[r for r in results if r is not None])


@router.post("/{job_id}/heartbeat", response_model=ProgressOut, responses=_ERRORS)
def heartbeat(
    job_id: JobIdPath, caller: Caller, request: Request, body: HeartbeatIn | None = None
) -> Response:
    """The worker is alive (a STALLED job is PROCESSING again); the reply says whether to stop.
    The body is optional: ``{"worker_id": ..., "checkpoint": {...}, "checkpoint_percentage":
    70}`` names the worker and keeps a checkpoint, saved at the percentage given (default: the
    job's now)."""
    tracker = tracker_of(request)
    result = tracker.heartbeat(
        job_id,
        caller.scope,
        worker_id=None if body is None else body.worker_id,
        claimant=caller.claimant,
        actor=caller.actor,
        checkpoint=None if body is None else body.checkpoint,
        checkpoint_percentage=None if body is None else body.checkpoint_percentage,
    )
    result.raise_for_outcome(job_id)
    return progress_reply(result, "Heartbeat recorded")


@router.post(
    "/{job_id}/logs",
    response_model=LogsOut,
    responses=_ERRORS,
    openapi_extra={
        "requestBody": {
            "description": "Raw log lines: plain text or NDJSON (structlog), up to 1 MiB.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
async def upload_logs(job_id: JobIdPath, caller: Caller, request: Request) -> LogsOut:
    """Parse raw log lines on the server and apply the progress they carry, in order
    (the seed's "Remote Worker -> Progress Logs -> Progress Parser" path)."""
    tracker = tracker_of(request)
    # The job first: an upload to a job that is not the caller's is not even parsed.
    await run_in_threadpool(visible_job, request, job_id, caller)
    uploads: UploadParser = request.app.state.uploads
    parsed = await uploads.parse(await request.body(), caller.owner)
    logs = await run_in_threadpool(_apply_logs, tracker, job_id, parsed, caller)
    metrics = _metrics(request)
    metrics.count("logs", UpdateOutcome.APPLIED, logs.applied)
    metrics.count("logs", UpdateOutcome.STALE, logs.events - logs.coalesced - logs.applied)
    metrics.count("logs", "coalesced", logs.coalesced)
    return logs


def _apply_logs(
    tracker: JobTracker, job_id: str, parsed: ParsedUpload, caller: Principal
) -> LogsOut:
    latest = utcnow() + MAX_CLOCK_SKEW
    updates = [log_update(job_id, seq, event, caller, latest) for seq, event in parsed.chosen]
    results = tracker.apply_many(updates) if updates else []
    if any(r.outcome is UpdateOutcome.NOT_FOUND for r in results):
        raise JobNotFoundError(job_id)
    job = tracker.get_job(job_id, caller.scope)
    if job is None:
        raise JobNotFoundError(job_id)
    return LogsOut(
        lines=parsed.lines,
        events=parsed.events,
        coalesced=parsed.events - len(updates),
        applied=sum(r.applied for r in results),
        cancel_requested=job.cancel_requested,
        job=JobOut.of(job, eta=False),  # a worker's reply: no estimate, as progress replies
    )


@router.post(
    "/claim",
    response_model=JobOut,
    responses={**_ERRORS, 204: {"description": "No job is waiting."}},
)
def claim_job(body: ClaimIn, caller: Caller, request: Request) -> JobOut | Response:
    """Take the oldest job waiting for a remote worker (of the caller's user). The job becomes
    PROCESSING (a new attempt if it ran before), mapped to ``worker_id``, and only this key may
    report on it from now on. A requeued job's answer holds the checkpoint its last worker
    saved (``checkpoint``) and the percentage it resumes at. 204 when nothing waits."""
    job = tracker_of(request).claim(
        body.worker_id,
        claimant=caller.key_id,
        user_id=caller.scope,
        document_types=body.document_types,
        actor=caller.actor,
    )
    if job is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    return JobOut.of(job, checkpoint=True)
