"""The web dashboard at ``/``: one static page and its script, no build step."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["mount"]

_FILES = Path(__file__).resolve().parents[1] / "dashboard"
# The page loads only its own files and talks only to this server.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
def dashboard() -> FileResponse:
    """The dashboard page: sign in with a key, then watch and cancel jobs live."""
    return FileResponse(_FILES / "index.html", media_type="text/html", headers=_HEADERS)


def mount(app: FastAPI) -> None:
    """Serve the page at ``/`` and its script and style under ``/dashboard/``."""
    app.include_router(router)
    app.mount("/dashboard", StaticFiles(directory=_FILES), name="dashboard")
