"""The API's routers, one module per resource."""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from morag_progress.api.auth import Principal, key_principal, principal, stream_principal
from morag_progress.api.estimates import Estimates
from morag_progress.api.limits import ReadGate
from morag_progress.api.schemas import DocumentType, JobId, SearchText
from morag_progress.bounds import ID_PATTERN, MAX_ID
from morag_progress.errors import JobNotFoundError
from morag_progress.models import Job
from morag_progress.tracker import JobTracker

__all__ = [
    "EXPENSIVE_READ",
    "JOB_ID_PARAMETER",
    "PAGE_BYTES",
    "SEARCH_READ",
    "USER_PARAMETER",
    "Caller",
    "JobFilters",
    "JobIdPath",
    "KeyCaller",
    "StreamCaller",
    "decoded",
    "errors",
    "estimates_of",
    "hot_route",
    "read_gate",
    "tracker_of",
    "visible_job",
    "within_bytes",
]

_T = TypeVar("_T")

_USER_HELP = (
    "An admin key acts for this user: ids are unique per user, so this names whose job an id "
    "is (without it, an id several users have is a 409). Other keys may name only their own "
    "user."
)
_User = Annotated[
    str | None,
    Query(
        description=_USER_HELP,
        json_schema_extra={"minLength": 1, "maxLength": MAX_ID, "pattern": ID_PATTERN},
    ),
]
USER_PARAMETER = {
    "name": "user",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID, "pattern": ID_PATTERN},
    "description": _USER_HELP,
}
"""The ``user`` query parameter as OpenAPI shows it (for routes declared by hand)."""


# Each takes ``user`` for the schema only: the authentication reads and checks it
# (``auth.named_user``), for the hot route too.
async def _caller(request: Request, user: _User = None) -> Principal:
    return await principal(request)


async def _key_caller(request: Request, user: _User = None) -> Principal:
    return await key_principal(request)


async def _stream_caller(request: Request, user: _User = None) -> Principal:
    return await stream_principal(request)


Caller = Annotated[Principal, Depends(_caller)]
KeyCaller = Annotated[Principal, Depends(_key_caller)]
"""A caller signed in with an API key, not a stream token (webhooks: their URLs are secrets)."""
StreamCaller = Annotated[Principal, Depends(_stream_caller)]
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


def read_gate(request: Request) -> ReadGate:
    """The app's gate for expensive reads (``limits.ReadGate``)."""
    gate: ReadGate = request.app.state.read_gate
    return gate


async def _expensive(request: Request, caller: Caller) -> AsyncIterator[None]:
    async with read_gate(request).slot(caller.user_id):
        yield


async def _searching(request: Request, caller: Caller, filters: JobFilters) -> AsyncIterator[None]:
    if not filters["search"]:
        yield  # a page of the keyset index: cheap at any depth
        return
    async with read_gate(request).slot(caller.user_id):
        yield


EXPENSIVE_READ = Depends(_expensive)
"""A route's dependency: it reads much of a user's jobs (counts), so it holds one of the
user's expensive-read slots while it runs (``limits.ReadGate``)."""
SEARCH_READ = Depends(_searching)
"""A job list's dependency: with a search, it holds an expensive-read slot."""


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
    409: (
        "The job is finished, failed or cancelled, or runs a newer attempt; or the id is taken;"
        " or (an admin key) the id names jobs of several users."
    ),
    413: "The body is over the size limit.",
    422: "A field breaks a rule; the error names the field and the rule.",
    429: "Too many requests for this key; see Retry-After.",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The documented error answers of a route, for OpenAPI."""
    return {code: {"description": _ERRORS[code]} for code in codes}


_JOB_ID = TypeAdapter(JobId)
JOB_ID_PARAMETER = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {**_JOB_ID.json_schema(), "title": "Job Id"},
    "description": "The job's id.",
}
"""The ``job_id`` path parameter as OpenAPI shows it (for routes declared by hand)."""


def hot_route(
    router: APIRouter,
    path: str,
    endpoint: Callable[[Request], Awaitable[Response]],
    *,
    method: str,
    **declared: Any,
) -> Route:
    """Declare ``endpoint`` on ``router`` for the OpenAPI schema (``declared``: what FastAPI
    cannot read from its signature), and return the plain Starlette route that serves it
    ahead of FastAPI's router (docs/architecture.md, section 5).

    The endpoint is the route's only code: it authenticates (``principal``), decodes
    (``decoded``) and answers itself, raising the same exceptions every route raises, which
    the app's handlers answer. Served by FastAPI it would behave the same; it is mounted
    outside FastAPI's routing only because dependency solving costs more than the update.
    """
    router.add_api_route(path, endpoint, methods=[method], **declared)
    return _HotRoute(router.prefix + path, endpoint, methods=[method])


class _HotRoute(Route):
    """A Starlette route that serves its endpoint itself: the request, the endpoint's
    response, or the app's own handler's answer to what it raised (as Starlette's exception
    middleware looks it up), without the per-request wrappers of Starlette's
    ``request_response`` and exception middleware. It names itself in the request's scope,
    as FastAPI's routes do (the request timer labels latencies with ``scope["route"].path``).
    """

    def __init__(
        self, path: str, endpoint: Callable[[Request], Awaitable[Response]], *, methods: list[str]
    ) -> None:
        super().__init__(path, endpoint, methods=methods)
        self._endpoint = endpoint
        self.app = self._serve

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is not Match.NONE:
            child["route"] = self
        return match, child

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await self._endpoint(request)
        except Exception as exc:
            handler = _handler(scope["app"], exc)
            if handler is None:
                raise  # the server error middleware answers 500
            # As Starlette calls handlers: a plain function (an embedder's) in a thread.
            if inspect.iscoroutinefunction(handler):
                response = await handler(request, exc)
            else:
                response = await run_in_threadpool(handler, request, exc)
        await response(scope, receive, send)


def _handler(app: Starlette, exc: Exception) -> Callable[[Request, Exception], Any] | None:
    """The app's handler for ``exc``: by status code for an HTTP error, else by its class
    or the nearest base class that has one (Starlette's own order)."""
    handlers: dict[Any, Callable[[Request, Exception], Any]] = app.exception_handlers
    if isinstance(exc, StarletteHTTPException) and exc.status_code in handlers:
        return handlers[exc.status_code]
    for kind in type(exc).__mro__:
        if kind in handlers:
            return handlers[kind]
    return None


PAGE_BYTES = 1024 * 1024
"""About the most one page of a listing (jobs, a job's history) holds: past it, the page ends
early (its next cursor, or the last id, says where to go on), so a reply and what a client
that does not read it holds up stay small whatever the rows hold."""


def within_bytes(items: Sequence[_T], size: Callable[[_T], int]) -> list[_T]:
    """The longest prefix of ``items`` whose ``size`` adds up to at most ``PAGE_BYTES``
    (at least one item: a page always moves on)."""
    kept: list[_T] = []
    total = 0
    for item in items:
        total += size(item)
        if kept and total > PAGE_BYTES:
            break
        kept.append(item)
    return kept


async def decoded(request: Request, body: TypeAdapter[_T]) -> _T:
    """The request's body validated as ``body`` (and its ``job_id`` path parameter, if it has
    one), with FastAPI's errors: 400 for text that is not JSON, 422 naming each field."""
    try:
        raw = await _body(request)
    except ClientDisconnect as e:  # gone, or cut off by the body limit, which has answered 413
        raise HTTPException(400, "the request body was cut off") from e
    problems: list[dict[str, Any]] = []
    job_id = request.path_params.get("job_id")
    if job_id is not None:
        try:
            _JOB_ID.validate_python(job_id)
        except ValidationError as e:
            problems += _located(e, "path", "job_id")
    try:
        value = _validated(body, raw)
    except ValidationError as e:
        problems += _located(e, "body")
    if problems:
        raise RequestValidationError(problems, body=raw)
    return value


async def _body(request: Request) -> bytes:
    """The request's whole body, read from the server's messages (not through Starlette's
    ``Request.stream``, an async generator the event loop registers and tracks per request)."""
    chunks = []
    while True:
        message = await request.receive()
        if message["type"] != "http.request":
            raise ClientDisconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks) if len(chunks) > 1 else chunks[0]


def _validated(adapter: TypeAdapter[_T], raw: bytes) -> _T:
    """``raw`` parsed and validated in one call (about half of ``json.loads`` then
    validation)."""
    try:
        return adapter.validate_json(raw)
    except ValidationError as e:
        if any(item["type"] != "json_invalid" for item in e.errors()):
            raise
        # pydantic's parser refuses some text that is JSON to the standard library (a lone
        # surrogate escape): decode it as every other route does, so that the field's own
        # rule answers (422), and only text that is not JSON at all is a 400.
        try:
            data = json.loads(raw)
        except ValueError:
            raise e from None
    return adapter.validate_python(data)


def _located(error: ValidationError, *where: str) -> list[dict[str, Any]]:
    return [
        {**item, "loc": (*where, *item["loc"]), "input": _shown(item.get("input"))}
        for item in error.errors(include_url=False)
    ]


def _shown(value: object) -> object:
    """An input as an error may echo it: the raw body of a JSON error as (cut) text."""
    if isinstance(value, bytes):
        return value[:200].decode("utf-8", errors="replace")
    return value
