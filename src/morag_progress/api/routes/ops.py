"""Operations: liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from morag_progress.errors import StoreError

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "The job store does not answer."}})
def readyz(request: Request) -> JSONResponse:
    """The process can serve: its job store answers."""
    try:
        request.app.state.store.ping()
    except StoreError as e:
        return JSONResponse({"status": "unavailable", "detail": str(e)}, status_code=503)
    return JSONResponse({"status": "ok"})
