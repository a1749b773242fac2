"""The web dashboard at ``/``: one static page and its script, no build step."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["DOCS_ASSETS", "FILES", "PAGE_HEADERS", "mount"]

FILES = Path(__file__).resolve().parents[1] / "dashboard"
"""The dashboard's files (and a share link's page), served under ``/dashboard/``."""
# A page loads only its own files and talks only to this server.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


_PAGE = (FILES / "index.html").read_text(encoding="utf-8")
_TRACING_OFF = '<meta name="morag-tracing" content="off">'


@router.get("/")
def dashboard(request: Request) -> HTMLResponse:
    """The dashboard page: sign in with a key, then watch and cancel jobs live. It says
    whether the server exports job spans: a job's trace id is shown only where it leads to
    a trace."""
    page = _PAGE
    if request.app.state.settings.otel_traces:
        page = page.replace(_TRACING_OFF, _TRACING_OFF.replace('"off"', '"on"'))
    return HTMLResponse(page, headers=PAGE_HEADERS)


DOCS_ASSETS = "/docs/assets"
"""Where the documentation pages' scripts and styles are served from."""
_DOCS_FILES = files("fastapi_offline") / "static"
"""Swagger UI's and ReDoc's files as fastapi-offline ships them, served by this server: the
pages work without the internet (FastAPI's own load them from a CDN)."""

_NOT_FRAMED = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'"}
"""The API's documentation pages may not be shown inside another site's frame."""


def mount(app: FastAPI) -> None:
    """Serve the page at ``/`` and its script and style under ``/dashboard/``, and the API's
    documentation (Swagger UI at ``/docs``, ReDoc at ``/redoc``: FastAPI's pages with their
    files served from ``DOCS_ASSETS``, which no other site may frame). The app is made with
    FastAPI's own documentation routes off."""
    app.include_router(router)
    app.mount("/dashboard", StaticFiles(directory=FILES), name="dashboard")
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(_DOCS_FILES)), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    async def swagger_ui() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )
        page.headers.update(_NOT_FRAMED)
        return page

    async def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - API",
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )
        page.headers.update(_NOT_FRAMED)
        return page

    app.add_api_route("/docs", swagger_ui, include_in_schema=False)
    app.add_api_route("/redoc", redoc, include_in_schema=False)
