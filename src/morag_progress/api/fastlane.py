"""The fast lane: the single progress report served without FastAPI's per-request machinery.

``PUT /api/v1/remote-jobs/{job_id}/progress`` is what every remote worker calls, many times a
second. Through FastAPI a request crosses the middlewares, the router and dependency solving,
which cost several times the update itself (docs/architecture.md, section 5). This ASGI
middleware, outermost in the app, serves the route's ordinary case directly: a key already in
the authenticator's cache, within its rate, a body that validates. It uses the route's own
functions (decode, build the update, the reply), so the answers are the same bytes.

Anything else passes to the app unchanged, its body replayed: an unknown or revoked key, a
stream token, a refused rate, a body without ``Content-Length`` or over the limit, a body or
job id that does not validate. FastAPI then answers exactly as the route always has (401, 413,
422, 429), so the lane never has an error answer of its own before the write. After the write,
an outcome that is an error (not found, final, superseded) is answered through the same
mapping the app's exception handlers use.
"""

from __future__ import annotations

import re
import time
from typing import Any

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from morag_progress.api.answers import error_answer
from morag_progress.api.auth import Authenticator
from morag_progress.api.metrics import Metrics
from morag_progress.api.routes.remote_jobs import (
    PROGRESS_ROUTE,
    decode_progress,
    progress_reply,
    progress_update,
)
from morag_progress.bounds import check_id
from morag_progress.errors import ProgressError
from morag_progress.tracker import JobTracker

__all__ = ["FastLane"]

_PATH = re.compile(r"/api/v1/remote-jobs/([^/]+)/progress")


class FastLane:
    """ASGI middleware serving the progress route's ordinary case (see the module's text)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        tracker: JobTracker,
        authenticator: Authenticator,
        rate_limiter: Any,
        metrics: Metrics,
        max_body: int,
    ) -> None:
        self.app = app
        self._tracker = tracker
        self._authenticator = authenticator
        self._rate_limiter = rate_limiter
        self._metrics = metrics
        self._max_body = max_body
        self.served = 0
        """Requests the lane answered itself (the rest passed to the app)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "PUT"
            or scope.get("root_path")
            or (match := _PATH.fullmatch(scope["path"])) is None
        ):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        authorizations, lengths = [], []
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorizations.append(value)
            elif name == b"content-length":
                lengths.append(value)
        # Exactly one of each (sent twice, the app decides which counts, and answers so).
        caller = None
        if len(authorizations) == 1 and len(lengths) == 1 and lengths[0].isdigit():
            caller = self._authenticator.cached(authorizations[0].decode("latin-1"))
        if caller is None:
            await self.app(scope, receive, send)
            return
        length = lengths[0]
        if int(length) > self._max_body:
            await self.app(scope, receive, send)  # the body limit answers 413 unread
            return
        raw = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            raw += message.get("body", b"")
            if len(raw) > self._max_body:  # more than it declared: not the ordinary case
                await self.app(scope, _replay(raw, receive, more=True), send)
                return
            if not message.get("more_body", False):
                break
        try:
            check_id("job_id", match.group(1))
            body = decode_progress(raw)
            update = progress_update(match.group(1), body, caller)
            self._tracker.check_timestamp(update)  # before the rate is charged, as the app does
        except (RequestValidationError, ProgressError):
            await self.app(scope, _replay(raw, receive), send)
            return
        try:
            # Last, as the app charges a request that it then refuses: a body that does not
            # validate is not charged twice.
            await self._rate_limiter.acquire(caller.key_id)
        except HTTPException:
            await self.app(scope, _replay(raw, receive), send)
            return
        try:
            result = await self._tracker.apply_async(update)
            self._metrics.count("http", result.outcome)
            answer = progress_reply(result.raise_for_outcome(update.job_id), "Progress updated")
        except ProgressError as e:
            answer = error_answer(e)
        await answer(scope, receive, send)
        self.served += 1
        self._metrics.latency.labels("PUT", PROGRESS_ROUTE, str(answer.status_code)).observe(
            time.perf_counter() - start
        )


def _replay(body: bytes, receive: Receive, *, more: bool = False) -> Receive:
    """A ``receive`` that gives the body already read (``more``: and that more follows),
    then the client's own messages."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": more}
        return await receive()

    return replayed
