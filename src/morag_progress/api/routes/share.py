"""Share links: a read-only link to one job for people without a key, and its badge.

The owner of a job makes a link (``POST /api/v1/jobs/{id}/share-links``): a random token (256
bits, kept as its hash) that expires and can be revoked. The link opens a page
(``/share/{token}``) that shows that job's name, progress, ETA and final state and nothing else:
no key, no other job, no action. It reads ``/share/{token}/job`` (the job in brief) and
``/share/{token}/badge.svg`` (an embeddable badge). A token that is unknown, expired or revoked
answers 404, and counts against its client's failed sign-ins like a wrong key.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any
from xml.sax.saxutils import escape

from fastapi import APIRouter, HTTPException, Path, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from morag_progress.api.auth import Authenticator, Principal, client_address, require
from morag_progress.api.routes import Caller, JobIdPath, errors, estimates_of, visible_job
from morag_progress.api.routes.dashboard import FILES, PAGE_HEADERS
from morag_progress.api.schemas import JobOut
from morag_progress.keys import SHARE_LINK_PREFIX, Role, generate_key, hash_key
from morag_progress.models import JobStatus, utcnow
from morag_progress.store import SQLStore

__all__ = ["router"]

router = APIRouter()

MAX_SHARE_SECONDS = 30 * 86_400
"""The longest a share link may live (30 days)."""
_Token = Annotated[str, Path(min_length=1, max_length=100, description="The link's token.")]


class ShareLinkIn(BaseModel):
    """How long a new link works."""

    model_config = {"extra": "forbid"}

    expires_in: int = Field(
        default=7 * 86_400,
        ge=60,
        le=MAX_SHARE_SECONDS,
        strict=True,
        description="Seconds until the link stops working (60 to 30 days; default 7 days).",
    )


class ShareLinkOut(BaseModel):
    """A new share link: shown once (the server keeps only its hash)."""

    token: str = Field(description="The link's secret; revoke it with this.")
    url: str = Field(description="The page that shows the job, on this server.")
    badge_url: str = Field(description="An SVG badge of the job's progress.")
    expires_at: datetime


class ShareLinkRevoke(BaseModel):
    """The link to revoke."""

    model_config = {"extra": "forbid"}

    token: str = Field(min_length=1, max_length=100, description="The link's token.")


class SharedJob(BaseModel):
    """What a share link shows of its job: its name, progress, estimate and final state."""

    document_name: str
    document_type: str
    status: JobStatus
    percentage: int
    summary: str | None
    created_at: datetime
    start_date: datetime | None
    end_date: datetime | None
    updated_at: datetime
    eta_seconds: float | None
    eta_low_seconds: float | None
    eta_high_seconds: float | None

    @classmethod
    def of(cls, job: JobOut) -> SharedJob:
        return cls.model_validate(job.model_dump(include=set(cls.model_fields)))


@router.post(
    "/api/v1/jobs/{job_id}/share-links",
    response_model=ShareLinkOut,
    status_code=201,
    responses=errors(400, 401, 403, 404, 409, 422, 429),
)
def create_share_link(
    job_id: JobIdPath, caller: Caller, request: Request, body: ShareLinkIn | None = None
) -> ShareLinkOut:
    """A read-only link to one of the caller's jobs (an admin's: anyone's) for people without
    a key: its page shows that job's progress, ETA and final state, and nothing else
    (docs/dashboard.md). It works until ``expires_in`` seconds from now or until revoked."""
    require(caller, Role.USER, Role.ADMIN)
    job = visible_job(request, job_id, caller)
    ttl = (body or ShareLinkIn()).expires_in
    token = generate_key(SHARE_LINK_PREFIX)
    now = utcnow()
    expires_at = now + timedelta(seconds=ttl)
    store: SQLStore = request.app.state.store
    store.create_share_link(
        hash_key(token),
        user_id=job.user_id or "",
        job_id=job.id,
        now=now,
        expires_at=expires_at,
    )
    return ShareLinkOut(
        token=token,
        url=f"/share/{token}",
        badge_url=f"/share/{token}/badge.svg",
        expires_at=expires_at,
    )


@router.post(
    "/api/v1/share-links/revoke", status_code=204, responses=errors(400, 401, 403, 404, 422, 429)
)
def revoke_share_link(body: ShareLinkRevoke, caller: Caller, request: Request) -> Response:
    """Revoke a link to one of the caller's user's jobs (an admin: anyone's): its page and
    badge stop working at once."""
    require(caller, Role.USER, Role.ADMIN)
    store: SQLStore = request.app.state.store
    if not store.revoke_share_link(hash_key(body.token), user_id=caller.scope):
        raise HTTPException(404, "no such share link (expired, revoked, or not yours)")
    return Response(status_code=204)


async def _link(request: Request, token: str) -> tuple[str, str]:
    """The (user id, job id) a link reads, within the link's rate; 404 for a link that does
    not work (and a failed sign-in for its client)."""
    authenticator: Authenticator = request.app.state.authenticator
    client = client_address(request)
    authenticator.check_client(client)  # 429 for a client guessing tokens
    store: SQLStore = request.app.state.store
    token_hash = hash_key(token)
    found = await run_in_threadpool(store.find_share_link, token_hash, now=utcnow())
    if found is None:
        authenticator.failed(client)
        raise HTTPException(404, "this link does not work: it expired, was revoked, or never was")
    await request.app.state.rate_limiter.acquire(f"share:{token_hash[:32]}")
    return found


async def _shared(request: Request, token: str) -> JobOut:
    """The job a link reads, with its estimates; 404 as ``_link``, or when the job is gone."""
    user_id, job_id = await _link(request, token)
    job = await run_in_threadpool(request.app.state.tracker.get_job, job_id, user_id)
    if job is None:
        raise HTTPException(404, "the shared job is gone")
    # Read as its owner would (no key's name is written out: a SharedJob has none).
    owner = Principal(key_id="", user_id=user_id, role=Role.USER)
    return await run_in_threadpool(estimates_of(request).job_out, job, owner)


_PAGE = (FILES / "share.html").read_text(encoding="utf-8")
_NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


@router.get("/share/{token}", include_in_schema=False)
async def share_page(token: _Token, request: Request) -> HTMLResponse:
    """The page of a shared job (its script reads ``/share/{token}/job``): the link is
    checked here, the job read only by the script."""
    await _link(request, token)
    return HTMLResponse(_PAGE, headers={**PAGE_HEADERS, **_NO_STORE})


@router.get("/share/{token}/job", response_model=SharedJob, responses=errors(404, 429))
async def shared_job(token: _Token, request: Request, response: Response) -> SharedJob:
    """The job a share link reads, in brief: no key needed, no other job reachable."""
    response.headers.update(_NO_STORE)
    return SharedJob.of(await _shared(request, token))


_COLOURS = {
    JobStatus.FINISHED: "#2e7d32",
    JobStatus.FAILED: "#c62828",
    JobStatus.CANCELLED: "#6a1b9a",
    JobStatus.STALLED: "#b26a00",
}


@router.get(
    "/share/{token}/badge.svg",
    responses={200: {"content": {"image/svg+xml": {}}}, **errors(404, 429)},
)
async def shared_badge(token: _Token, request: Request) -> Response:
    """An SVG badge of the shared job: its percentage, or how it ended."""
    job = await _shared(request, token)
    value = job.status.value.lower() if job.status.is_terminal else f"{job.percentage}%"
    if job.status is JobStatus.FINISHED:
        value = "done"
    svg = badge("progress", value, _COLOURS.get(job.status, "#1565c0"))
    headers = {"Cache-Control": "max-age=10", "Content-Security-Policy": "default-src 'none'"}
    return Response(svg, media_type="image/svg+xml", headers=headers)


def badge(label: str, value: str, colour: str) -> str:
    """A flat two-part badge (label on grey, value on ``colour``), its text escaped."""
    left, right = 6 * len(label) + 12, 7 * len(value) + 12
    width = left + right
    label_text, value_text = escape(label), escape(value)
    parts: list[Any] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" '
        f'aria-label="{label_text}: {value_text}">',
        f"<title>{label_text}: {value_text}</title>",
        f'<rect width="{left}" height="20" fill="#555"/>',
        f'<rect x="{left}" width="{right}" height="20" fill="{colour}"/>',
        '<g fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11">',
        f'<text x="6" y="14">{label_text}</text>',
        f'<text x="{left + 6}" y="14">{value_text}</text>',
        "</g></svg>",
    ]
    return "".join(parts)
