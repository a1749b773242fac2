"""Operations: liveness, readiness, metrics, and job statistics."""

from __future__ import annotations

import ipaddress

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from morag_progress.api.auth import client_address, principal, require
from morag_progress.api.routes import EXPENSIVE_READ, Caller, JobFilters, errors
from morag_progress.errors import StoreError
from morag_progress.keys import Role

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@router.get("/readyz", responses={503: {"description": "The job store does not answer."}})
def readyz(request: Request) -> JSONResponse:
    """The process can serve: its job store answers."""
    try:
        request.app.state.store.ping()
    except StoreError as e:
        return JSONResponse({"status": "unavailable", "detail": str(e)}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        401: {"description": "MORAG_PROGRESS_METRICS_ACCESS=key and no admin key."},
        403: {"description": "Not an admin key, or not from loopback (the default)."},
        404: {"description": "MORAG_PROGRESS_METRICS_ACCESS=off."},
    },
)
async def metrics(request: Request) -> Response:
    """Prometheus metrics (text exposition format): counts by route, outcome and status,
    never by user. Who may read them is ``MORAG_PROGRESS_METRICS_ACCESS``: ``loopback``
    (default: clients on this machine), ``key`` (an admin key), ``open`` or ``off``."""
    access = request.app.state.settings.metrics_access
    if access == "off":
        raise HTTPException(404, detail="metrics are turned off (MORAG_PROGRESS_METRICS_ACCESS)")
    if access == "loopback" and not _loopback(client_address(request)):
        raise HTTPException(
            403,
            detail="metrics are served to loopback clients only; set "
            "MORAG_PROGRESS_METRICS_ACCESS=key to scrape them with an admin key",
        )
    if access == "key":
        require(await principal(request), Role.ADMIN)
    registry = request.app.state.metrics.registry
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


class Stats(BaseModel):
    """How many of the caller's jobs (an admin's: all) there are, by status and by type."""

    total: int
    by_status: dict[str, int]
    by_document_type: dict[str, int]


@router.get(
    "/api/v1/stats",
    response_model=Stats,
    tags=["jobs"],
    responses=errors(401, 422, 429),
    dependencies=[EXPENSIVE_READ],
)
def stats(
    caller: Caller,
    request: Request,
    filters: JobFilters,
) -> Stats:
    """Counts of jobs by status and by document type, filtered as the job list is (all but
    its status, which the counts are by)."""
    counts = request.app.state.store.count_jobs(user_id=caller.scope, **filters)
    by_status: dict[str, int] = {}
    by_type: dict[str, int] = {}
    for (status, kind), n in counts.items():
        by_status[status] = by_status.get(status, 0) + n
        by_type[kind] = by_type.get(kind, 0) + n
    return Stats(total=sum(counts.values()), by_status=by_status, by_document_type=by_type)
