"""Live streams (server-sent events): one job, or every job of the caller's user.

Each stream starts with a ``snapshot`` event, then sends a ``progress`` event per change, its
``id:`` the change-feed id. A client that reconnects with ``Last-Event-ID`` gets exactly the
changes it missed (from the table), then the live ones: nothing missed, nothing repeated. One
that missed more than a replay holds (``JOB_REPLAY_LIMIT``, ``ALL_REPLAY_LIMIT``) gets a
``gap`` event and a fresh snapshot instead, so the latest state, a final one included, always
arrives. A slow client gets the latest state of each job rather than every intermediate one.
Keep-alive comments keep proxies from closing an idle stream; a job's stream ends after its
terminal event.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Header, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

from morag_progress._threads import SharedReads
from morag_progress.api.auth import Authenticator, Principal
from morag_progress.api.routes import (
    Caller,
    JobIdPath,
    StreamCaller,
    errors,
    estimates_of,
    read_gate,
    tracker_of,
)
from morag_progress.api.schemas import FeedEventOut, StreamTokenIn, StreamTokenOut
from morag_progress.api.sse import EventStream, encode
from morag_progress.errors import JobNotFoundError
from morag_progress.feed import FeedHub, Subscription
from morag_progress.keys import STREAM_TOKEN_PREFIX, generate_key, hash_key
from morag_progress.models import FeedEvent, Job, utcnow
from morag_progress.store import NO_USER

__all__ = ["router"]

router = APIRouter(tags=["watching"])
_T = TypeVar("_T")

LastEventId = Annotated[
    str | None,
    Header(alias="Last-Event-ID", description="Resume after this feed id (sent by browsers)."),
]
_TOKEN_QUERY = {
    "parameters": [
        {
            "name": "token",
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": "A stream token from POST /api/v1/stream-tokens, instead of a key.",
        }
    ]
}
_STREAM: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "An event stream."},
    **errors(401, 404, 409, 429),
}


JOB_REPLAY_LIMIT = 1000
"""A resumed job stream replays at most this many missed changes; past it, it starts afresh."""
ALL_REPLAY_LIMIT = 10_000
"""A resumed stream of every job reads at most this many missed changes; past it, afresh."""
_RESUME_WAIT = 1.0
"""Seconds a resume of every job waits for an expensive-read slot before it starts afresh."""


def _gap(after: int, limit: int) -> bytes:
    """The event that says a resume missed more than the replay limit: a snapshot follows."""
    data = json.dumps({"after": after, "missed_more_than": limit, "next": "snapshot"})
    return encode(data, event="gap")


@functools.lru_cache(maxsize=1024)
def _progress(event: FeedEvent) -> bytes:
    """A feed row as an encoded event, built once however many subscribers send it. The
    subscribers of a row send it within moments of each other, so the cache need only hold the
    latest rows: 1,024 of them (about 1 MB with the rows they keep alive; 8,192 held 8-10 MB,
    which a server filled over its first minutes, looking like growth)."""
    return encode(FeedEventOut.of(event).model_dump_json(), event="progress", id=event.id)


def _shared(request: Request, key: tuple[Any, ...], func: Callable[[], _T]) -> Awaitable[_T]:
    """``func()`` in a worker thread, shared with concurrent streams asking for the same
    ``key`` (``SharedReads``: many streams opening at once cost one read)."""
    reads: SharedReads[tuple[Any, ...], Any] = request.app.state.shared_reads
    return reads.read(key, func)


def _hub(request: Request) -> FeedHub:
    hub: FeedHub = request.app.state.hub
    return hub


@contextlib.asynccontextmanager
async def _open(request: Request, subscription: Subscription) -> AsyncIterator[None]:
    """A stream's lifetime: counted as open while it runs, unsubscribed when it ends."""
    gauge = request.app.state.metrics.open_streams
    gauge.inc()
    try:
        yield
    finally:
        _hub(request).unsubscribe(subscription)
        gauge.dec()


async def _subscribe(request: Request, caller: Principal, job: Job | None = None) -> Subscription:
    """A subscription to the caller's rows, or to ``job``'s alone (its owner's: ids are unique
    per user), within the key's cap on open streams (429 past it)."""
    return await _hub(request).subscribe(
        user_id=caller.scope if job is None else job.user_id,
        job_id=None if job is None else job.id,
        key_id=caller.key_id,
        max_per_key=request.app.state.settings.max_streams_per_key,
        exact_owner=job is not None,
    )


async def _until_streaming(request: Request, subscription: Subscription, step: Awaitable[_T]) -> _T:
    """``step``, unsubscribing if it fails: the stream that would have done so never starts."""
    try:
        return await step
    except BaseException:
        _hub(request).unsubscribe(subscription)
        raise


def _response(
    request: Request, stream: AsyncIterator[list[bytes]], subscription: Subscription
) -> EventStream:
    """The stream as SSE; the subscription ends with the response even when the client left
    before the stream began (unsubscribing twice is harmless)."""
    hub = _hub(request)
    return EventStream(
        stream,
        streams=request.app.state.streams,
        ping=request.app.state.settings.sse_ping_seconds,
        after=lambda: hub.unsubscribe(subscription),
    )


async def _live(
    request: Request, caller: Principal, subscription: Subscription
) -> AsyncIterator[list[FeedEvent]]:
    """The subscription's batches of rows (an empty one when the hub pokes: a stream may
    write a keep-alive then), until the caller's key, or stream token, stops working: it is
    checked every ``stream_recheck_seconds``, so the streams of a revoked key, or of a token
    revoked or expired, close within about that."""
    settings = request.app.state.settings
    authenticator: Authenticator = request.app.state.authenticator
    # The hub pokes every stream each stream_recheck_seconds; half of that apart, each poke
    # is a check, and a burst of rows is not.
    spacing = settings.stream_recheck_seconds / 2
    check_at = time.monotonic() + spacing
    while True:
        batch = await subscription.next()
        if time.monotonic() >= check_at:
            if not await authenticator.still_signed_in(caller):
                return
            check_at = time.monotonic() + spacing
        yield batch


async def _resume_point(request: Request, last_event_id: str | None) -> int | None:
    """The feed id to resume after; None (a fresh start, with a snapshot) for anything but a
    feed id the feed has reached (one past its head would stay silent until it got there)."""
    text = (last_event_id or "").strip()
    if not text.isascii() or not text.isdigit() or len(text) > 18:  # ids fit 63 bits
        return None
    resume = int(text)
    head = await _shared(request, ("head",), tracker_of(request).store.last_event_id)
    return resume if resume <= head else None


@router.post("/api/v1/stream-tokens", response_model=StreamTokenOut, status_code=201)
def create_stream_token(caller: Caller, request: Request) -> StreamTokenOut:
    """A short-lived read token for the caller: it opens event streams (``?token=...``, for
    browsers, whose EventSource cannot send an Authorization header) and authenticates GET
    requests as ``Bearer <token>``; it cannot change anything. The key itself never goes into
    a URL."""
    ttl = request.app.state.settings.stream_token_seconds
    token = generate_key(STREAM_TOKEN_PREFIX)
    expires_at = utcnow() + timedelta(seconds=ttl)
    request.app.state.store.create_stream_token(
        hash_key(token), caller.key_id, expires_at=expires_at
    )
    return StreamTokenOut(token=token, expires_at=expires_at, expires_in=ttl)


@router.post(
    "/api/v1/stream-tokens/revoke", status_code=204, responses=errors(400, 401, 404, 422, 429)
)
def revoke_stream_token(body: StreamTokenIn, caller: Caller, request: Request) -> Response:
    """Revoke a stream token made by one of the caller's user's keys (an admin: anyone's):
    it stops authenticating at once, and its open streams end within
    ``stream_recheck_seconds`` (a shared dashboard link stops working)."""
    store = request.app.state.store
    if not store.revoke_stream_token(hash_key(body.token), user_id=caller.scope):
        raise HTTPException(404, "no such stream token (expired, revoked, or not yours)")
    return Response(status_code=204)


@router.get(
    "/api/v1/jobs/{job_id}/events",
    response_class=EventStream,
    status_code=200,
    responses=_STREAM,
    openapi_extra=_TOKEN_QUERY,
)
async def job_events(
    job_id: JobIdPath, caller: StreamCaller, request: Request, last_event_id: LastEventId = None
) -> EventStream:
    """One job's changes, live, ending after its terminal one."""
    tracker = tracker_of(request)
    found = await _shared(
        request, ("job", job_id, caller.scope), lambda: tracker.get_job(job_id, caller.scope)
    )
    if found is None:
        raise JobNotFoundError(job_id)
    job = found
    # From here on, this job of this owner: another user's job of the same id made later
    # (ids are unique per user) never leaks into an admin's stream.
    owner = job.user_id if job.user_id is not None else NO_USER
    subscription = await _subscribe(request, caller, job)
    resume = await _until_streaming(request, subscription, _resume_point(request, last_event_id))

    def snapshot() -> tuple[int, Job | None]:
        # The feed's position first, then the state: a change in between is sent again
        # rather than missed.
        return tracker.store.last_event_id(job_id, owner), tracker.get_job(job_id, owner)

    async def stream() -> AsyncIterator[list[bytes]]:
        async with _open(request, subscription):
            limit = JOB_REPLAY_LIMIT
            missed = None
            if resume is not None:
                missed = await run_in_threadpool(
                    lambda: tracker.history(job_id, owner, after=resume, limit=limit + 1)
                )
            if missed is not None and len(missed) <= limit:
                sent = resume or 0
                replay = []
                for event in missed:
                    replay.append(_progress(event))
                    sent = event.id
                    if event.status.is_terminal:
                        yield replay
                        return
                yield replay
            else:
                # A fresh start, or a resume that missed too much to replay: the job as it
                # is now. Read after subscribing (shared only with streams that subscribed
                # before it began): nothing committed after it is missed.
                sent, current = await _shared(request, ("snapshot", job_id, owner), snapshot)
                assert current is not None
                out = await run_in_threadpool(estimates_of(request).job_out, current, caller)
                head = [] if missed is None else [_gap(resume or 0, limit)]
                yield [*head, encode(out.model_dump_json(), event="snapshot", id=sent)]
                if current.status.is_terminal:
                    return
            async for batch in _live(request, caller, subscription):
                written = []
                for event in batch:
                    if event.id <= sent:
                        continue
                    written.append(_progress(event))
                    sent = event.id
                    if event.status.is_terminal:
                        yield written
                        return
                yield written

    return _response(request, stream(), subscription)


@router.get(
    "/api/v1/events",
    response_class=EventStream,
    status_code=200,
    responses=_STREAM,
    openapi_extra=_TOKEN_QUERY,
)
async def all_events(
    caller: StreamCaller, request: Request, last_event_id: LastEventId = None
) -> EventStream:
    """Every change to the caller's jobs (an admin's: everyone's), live, latest per job."""
    tracker = tracker_of(request)
    subscription = await _subscribe(request, caller)
    resume = await _until_streaming(request, subscription, _resume_point(request, last_event_id))

    def snapshot() -> tuple[int, list[Job]]:
        # The position in the caller's own rows (an admin's: everyone's): the server-wide
        # head would tell a user how busy everyone else is.
        return (
            tracker.store.last_event_id(user_id=caller.scope),
            tracker.list_jobs(caller.scope, limit=100),
        )

    async def stream() -> AsyncIterator[list[bytes]]:
        async with _open(request, subscription):
            # Rows of different jobs may commit out of id order (PostgreSQL), so a live row
            # below the last id sent may still be new: only rows sent already are skipped.
            already: set[int] = set()
            limit = ALL_REPLAY_LIMIT
            missed = None
            gap = False
            if resume is not None:
                # Up to ten thousand rows: an expensive read, one of the user's at a time. A
                # user whose other expensive reads hold his share gets the snapshot instead
                # (cheap), with a gap event, as a resume past the replay limit does.
                try:
                    async with read_gate(request).slot(caller.user_id, wait=_RESUME_WAIT):
                        missed = await run_in_threadpool(
                            lambda: tracker.store.events_after(
                                resume, user_id=caller.scope, limit=limit + 1
                            )
                        )
                except HTTPException:
                    gap = True
                gap = gap or (missed is not None and len(missed) > limit)
            if missed is not None and len(missed) <= limit:
                already = {event.id for event in missed}
                latest = {event.job_id: event for event in missed}  # latest per job
                yield [_progress(event) for event in sorted(latest.values(), key=lambda e: e.id)]
            else:  # a fresh start, or a resume that missed too much: the jobs as they are
                sent, jobs = await _shared(request, ("all", caller.scope), snapshot)
                written = await run_in_threadpool(estimates_of(request).jobs_out, jobs, caller)
                data = json.dumps([json.loads(job.model_dump_json()) for job in written])
                head = [_gap(resume or 0, limit)] if gap else []
                yield [*head, encode(data, event="snapshot", id=sent)]
            async for batch in _live(request, caller, subscription):
                yield [_progress(event) for event in batch if event.id not in already]

    return _response(request, stream(), subscription)
