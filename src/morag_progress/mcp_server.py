"""``morag-progress mcp``: jobs as tools for agents, over the Model Context Protocol (stdio or
streamable HTTP), on the official SDK (the ``mcp`` extra).

The tools (``list_jobs``, ``show_job``, ``watch_job``, ``cancel_job``, ``requeue_job``,
``job_history``) are a client of the server's HTTP API, with the API key they run with: over
stdio the key given to the command (``--api-key`` or ``MORAG_PROGRESS_API_KEY``); over HTTP the
bearer key of each request (the MCP server holds none of its own). So a tool reads and changes
exactly what its key may through the API, and refuses another user's job as the API does, in the
API's words.

``watch_job`` waits until a job ends or reaches a percentage, reading the job's event stream and
sending an MCP progress notification at each change (progress: the job's percentage, total 100,
message: its status and message). While the job does not move, it sends the same percentage
again every ``keepalive`` seconds (a millionth higher: the protocol wants every notification's
progress higher than the last), so a client or a proxy that drops a call silent for minutes keeps
a call that waits for half an hour. Bounded: at most ``max_watches`` watches at once in this
process, each for at most a day; a dropped stream is resumed from its last event.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import quote

import httpx
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import AfterValidator, Field

from morag_progress.bounds import MAX_ID, check_id
from morag_progress.client.events import ServerEvent, aread_events

__all__ = ["MAX_WATCHES", "build_server"]

MAX_WATCHES = 100
"""Watches one MCP server runs at once, by default (each holds one event stream of the API)."""
MAX_WATCHES_PER_KEY = 10
"""Watches of one API key at once, by default: one caller cannot take every slot."""

TERMINAL = ("FINISHED", "FAILED", "CANCELLED")
_NUDGE = 1e-6
"""How much higher a keep-alive's progress is than the last notification's."""
_RECONNECT = (0.5, 1.0, 2.0, 5.0)
"""Seconds before each new try of a stream that dropped (the last repeats)."""

_Ctx = Context[httpx.AsyncClient, Any]


def _job_id(value: str) -> str:
    check_id("job_id", value)  # letters, digits and _ . : @ -: an id never reaches another route
    return value


JobId = Annotated[
    str,
    Field(min_length=1, max_length=MAX_ID, description="The job's id."),
    AfterValidator(_job_id),
]
Status = Literal[
    "PENDING",
    "WAITING_FOR_REMOTE_WORKER",
    "PROCESSING",
    "STALLED",
    "FINISHED",
    "FAILED",
    "CANCELLED",
]


@dataclass(frozen=True, slots=True)
class _Api:
    """The HTTP API, with one caller's key."""

    client: httpx.AsyncClient
    headers: Mapping[str, str]

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = await self.client.request(method, path, headers=self.headers, **kwargs)
        except httpx.HTTPError as e:
            raise ToolError(f"the morag-progress server did not answer ({type(e).__name__})") from e
        if response.status_code >= 300:
            raise ToolError(_refusal(response))
        return response.json()


def _refusal(response: httpx.Response) -> str:
    """The API's reason for refusing, as it said it."""
    try:
        said = response.json()
    except ValueError:
        said = None
    message = said.get("message") or said.get("detail") if isinstance(said, dict) else None
    if not isinstance(message, str):
        message = f"HTTP {response.status_code}"
    return f"the server refused ({response.status_code}): {message}"[:2000]


class _Progress:
    """A watch's notifications: each higher than the last, the job's state in words."""

    def __init__(self, ctx: _Ctx, keepalive: float) -> None:
        self.ctx = ctx
        self.keepalive = keepalive
        self.sent = -1.0
        self.at = time.monotonic()
        self.job: dict[str, Any] = {}

    async def tell(self, job: Mapping[str, Any]) -> None:
        self.job = {**self.job, **job}
        if isinstance(job.get("message"), str):  # a change's message: the job's summary now
            self.job["summary"] = job["message"]
        percentage = float(self.job.get("percentage") or 0)
        await self._send(max(percentage, self.sent + _NUDGE))

    async def still(self) -> None:
        await self._send(self.sent + _NUDGE)

    async def _send(self, progress: float) -> None:
        self.sent, self.at = progress, time.monotonic()
        job = self.job
        message = f"{job.get('percentage', 0)}% {job.get('status', '')}"
        if job.get("summary") or job.get("message"):
            message += f": {job.get('summary') or job.get('message')}"
        await self.ctx.report_progress(progress, 100, message[:500])


def build_server(
    api_url: str,
    api_key: str | None,
    *,
    keepalive: float = 15.0,
    max_watches: int = MAX_WATCHES,
    max_watches_per_key: int = MAX_WATCHES_PER_KEY,
    timeout: float = 10.0,
) -> MCPServer:
    """The MCP server, calling the API at ``api_url``: with ``api_key`` (stdio), or, when it is
    None, with each HTTP request's own bearer key."""
    watches = asyncio.Semaphore(max_watches)
    by_key: Counter[str] = Counter()  # running watches by caller (a hash of the key)

    @asynccontextmanager
    async def lifespan(_: MCPServer[httpx.AsyncClient]) -> AsyncIterator[httpx.AsyncClient]:
        limits = httpx.Limits(max_connections=max_watches + 20, max_keepalive_connections=20)
        # A stream's read waits at most twice the server's keep-alive interval.
        timeouts = httpx.Timeout(timeout, read=60.0)
        headers = {"User-Agent": "morag-progress-mcp"}
        async with httpx.AsyncClient(
            base_url=api_url, timeout=timeouts, limits=limits, headers=headers
        ) as client:
            yield client

    server: MCPServer[httpx.AsyncClient] = MCPServer(
        "morag-progress",
        instructions=(
            "Jobs tracked by morag-progress: long ingestions and other work with a percentage, "
            "a status, a message and an ETA. list_jobs and show_job read them, watch_job waits "
            "for one to end (with progress as it moves), cancel_job and requeue_job act on one, "
            "job_history lists its changes."
        ),
        lifespan=lifespan,
    )

    def api(ctx: _Ctx) -> _Api:
        key = api_key if api_key is not None else _bearer(ctx.headers)
        if not key:
            raise ToolError("send your morag-progress API key as a bearer token (Authorization)")
        client: httpx.AsyncClient = ctx.request_context.lifespan_context
        return _Api(client, {"Authorization": f"Bearer {key}"})

    @server.tool()
    async def list_jobs(
        ctx: _Ctx,
        status: Status | None = None,
        document_type: Annotated[str | None, Field(max_length=64)] = None,
        search: Annotated[str | None, Field(max_length=200)] = None,
        limit: Annotated[int, Field(ge=1, le=100)] = 20,
    ) -> dict[str, Any]:
        """The caller's jobs, newest first: status, percentage, message and ETA of each."""
        params: dict[str, Any] = {"limit": limit}
        for name, value in (("status", status), ("document_type", document_type), ("q", search)):
            if value is not None:
                params[name] = value
        found: dict[str, Any] = await api(ctx).call("GET", "/api/v1/jobs", params=params)
        return found

    @server.tool()
    async def show_job(ctx: _Ctx, job_id: JobId) -> dict[str, Any]:
        """One job: its status, percentage, message, stage, ETA, children and times."""
        job: dict[str, Any] = await api(ctx).call("GET", _path(job_id))
        return job

    @server.tool()
    async def cancel_job(ctx: _Ctx, job_id: JobId) -> dict[str, Any]:
        """Ask a job to stop: its worker is told at its next report. The job as it is now."""
        job: dict[str, Any] = await api(ctx).call("POST", _path(job_id, "cancel"))
        return job

    @server.tool()
    async def requeue_job(ctx: _Ctx, job_id: JobId) -> dict[str, Any]:
        """Put a failed, cancelled or stalled job back in the queue (it resumes from its last
        checkpoint, if it saved one). The job as it is now."""
        job: dict[str, Any] = await api(ctx).call("POST", _path(job_id, "requeue"))
        return job

    @server.tool()
    async def job_history(
        ctx: _Ctx, job_id: JobId, limit: Annotated[int, Field(ge=1, le=1000)] = 50
    ) -> dict[str, Any]:
        """A job's last changes, oldest first: who made each, its status and percentage."""
        params = {"order": "desc", "limit": limit}
        path = _path(job_id, "history")
        events: list[Any] = await api(ctx).call("GET", path, params=params)
        return {"job_id": job_id, "events": events[::-1]}

    @server.tool()
    async def watch_job(
        ctx: _Ctx,
        job_id: JobId,
        until_percentage: Annotated[
            int | None,
            Field(ge=1, le=100, description="Return once the job reaches it (default: its end)."),
        ] = None,
        timeout_seconds: Annotated[
            float, Field(gt=0, le=86_400, description="Return after this long at most.")
        ] = 1800,
    ) -> dict[str, Any]:
        """Wait until a job ends (or reaches ``until_percentage``), with a progress notification
        at each change. Returns the job and why the wait ended: ended, reached or timeout."""
        caller = api(ctx)
        mine = hashlib.sha256(caller.headers["Authorization"].encode()).hexdigest()
        if watches.locked():
            raise ToolError(f"this server runs {max_watches} watches already; try again later")
        if by_key[mine] >= max_watches_per_key:
            raise ToolError(f"this key runs {max_watches_per_key} watches already; end one first")
        by_key[mine] += 1
        try:
            async with watches:
                return await watch(caller, job_id, until_percentage, timeout_seconds, ctx)
        finally:
            by_key[mine] -= 1
            if not by_key[mine]:
                del by_key[mine]

    async def watch(
        caller: _Api,
        job_id: str,
        until_percentage: int | None,
        timeout_seconds: float,
        ctx: _Ctx,
    ) -> dict[str, Any]:
        """One watch: the job at each change, until it ends, reaches the percentage, or the
        deadline."""
        deadline = time.monotonic() + timeout_seconds
        progress = _Progress(ctx, keepalive)
        job: dict[str, Any] = await caller.call("GET", _path(job_id))
        await progress.tell(job)

        def outcome() -> str | None:
            if progress.job.get("status") in TERMINAL:
                return "ended"
            percentage = int(progress.job.get("percentage") or 0)
            if until_percentage is not None and percentage >= until_percentage:
                return "reached"
            return None

        why = outcome() or await _follow(caller, job_id, progress, outcome, deadline)
        final: dict[str, Any] = await caller.call("GET", _path(job_id))
        return {"outcome": why, "job": final}

    return server


def _path(job_id: str, *rest: str) -> str:
    """A job's address in the API, its id escaped: an id never reaches another route."""
    return "/".join(("/api/v1/jobs", quote(job_id, safe=""), *rest))


def _bearer(headers: Mapping[str, str] | None) -> str | None:
    """The bearer token of an HTTP request's headers, if it has one."""
    for name, value in (headers or {}).items():
        if name.lower() == "authorization" and value[:7].lower() == "bearer ":
            return value[7:].strip() or None
    return None


async def _follow(
    api: _Api,
    job_id: str,
    progress: _Progress,
    outcome: Any,
    deadline: float,
) -> str:
    """Read the job's stream until ``outcome()`` says why to stop, or the deadline: each change
    told, a keep-alive while nothing changes, a dropped stream resumed from its last event."""
    last_id: str | None = None
    failures = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return "timeout"
        headers = dict(api.headers)
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        events: asyncio.Queue[ServerEvent | None] = asyncio.Queue(maxsize=64)
        reader = asyncio.create_task(_read(api, job_id, headers, events))
        try:
            while True:
                wait = min(progress.keepalive - (time.monotonic() - progress.at), left)
                try:
                    event = await asyncio.wait_for(events.get(), timeout=max(0.0, wait))
                except TimeoutError:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return "timeout"
                    await progress.still()
                    continue
                if event is None:
                    break  # the stream ended or dropped: resumed below
                failures = 0
                if event.id:
                    last_id = event.id
                if event.event in ("snapshot", "progress"):
                    data = event.json()
                    await progress.tell(data if isinstance(data, dict) else {})
                    why = outcome()
                    if why is not None:
                        return str(why)
                left = deadline - time.monotonic()
        finally:
            reader.cancel()
            await asyncio.wait([reader])  # a cancel of this watch itself still ends it
            if not reader.cancelled() and isinstance(reader.exception(), ToolError):
                raise reader.exception()  # type: ignore[misc]
        pause = _RECONNECT[min(failures, len(_RECONNECT) - 1)]
        failures += 1
        await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))


async def _read(
    api: _Api,
    job_id: str,
    headers: dict[str, str],
    events: asyncio.Queue[ServerEvent | None],
) -> None:
    """Put the stream's events in ``events``, then None when it ends or drops. A refusal
    for good (a key revoked, a job gone) is raised; a busy or restarting server is a drop."""
    try:
        async with api.client.stream("GET", _path(job_id, "events"), headers=headers) as response:
            if response.status_code != 200:
                await response.aread()
                if response.status_code != 429 and response.status_code < 500:
                    raise ToolError(_refusal(response))
                return
            async for event in aread_events(response):
                if event.event != "comment":
                    await events.put(event)
    except httpx.HTTPError:
        pass
    finally:
        # Never waits: a watch that stopped reading (its end reached) must not hold this.
        with contextlib.suppress(asyncio.QueueFull):
            events.put_nowait(None)
