"""The one place where errors become HTTP answers, for every route."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import Match

from morag_progress.errors import (
    InvalidInputError,
    JobConflictError,
    JobNotFoundError,
    JobStateError,
    LimitExceededError,
    ProgressError,
    StoreError,
)

__all__ = ["error_answer", "install"]

logger = logging.getLogger(__name__)


class _ErrorResponse(JSONResponse):
    """An error answer, rendered with every non-ASCII character escaped: an error may echo
    input that is not valid Unicode (a lone surrogate), and the answer must still be sent."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, allow_nan=False, default=str).encode()


def _detail(status: int, detail: Any, **extra: Any) -> JSONResponse:
    return _ErrorResponse({"detail": detail, **extra}, status_code=status)


def error_answer(e: ProgressError) -> JSONResponse:
    """The answer to an error of the library's own: 404, 409, 422, 429 or 503."""
    if isinstance(e, JobNotFoundError):
        return _detail(404, str(e))
    if isinstance(e, JobStateError | JobConflictError):
        return _detail(409, str(e))
    if isinstance(e, InvalidInputError):
        error = {
            "loc": ["body", e.field],
            "msg": e.rule,
            "type": "value_error",
            "input": str(e.value),
        }
        return _detail(422, [error], message=str(e))
    if isinstance(e, LimitExceededError):
        response = _detail(429, str(e))
        response.headers["Retry-After"] = str(max(1, math.ceil(e.retry_after)))
        return response
    if isinstance(e, StoreError):
        logger.error("store error: %s", e)
        return _detail(503, "the job store is unavailable; try again")
    raise e


_HANDLED = (
    JobNotFoundError,
    JobStateError,
    JobConflictError,
    InvalidInputError,
    LimitExceededError,
    StoreError,
)


def install(app: FastAPI) -> None:
    """Answer the library's errors, and FastAPI's validation errors, the same way everywhere."""

    async def answer(_: Request, e: Exception) -> JSONResponse:
        assert isinstance(e, ProgressError)
        return error_answer(e)

    for kind in _HANDLED:
        app.add_exception_handler(kind, answer)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException) -> Response:
        if e.status_code == 405:
            # Starlette lists only the first matching route's methods, and GET and POST
            # /api/v1/jobs are two routes: list every method the path supports.
            e = HTTPException(
                405, e.detail, headers={**(e.headers or {}), "Allow": _allow(request)}
            )
        return await http_exception_handler(request, e)

    @app.exception_handler(RequestValidationError)
    async def validation(_: Request, e: RequestValidationError) -> JSONResponse:
        undecodable = _undecodable(e)
        if undecodable is not None:
            return _detail(400, undecodable, message=undecodable)
        # A dependency two others share (a list's filters and its search gate) is solved,
        # and refused, once for each: one error per place and rule is enough.
        unique = {(tuple(error["loc"]), error["type"]): error for error in e.errors()}
        errors = [{**error, "input": _json_safe(error.get("input"))} for error in unique.values()]
        errors = jsonable_encoder(errors)
        message = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" for error in errors
        )
        return _detail(422, errors, message=message)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def _allow(request: Request) -> str:
    """Every method some route of the app serves at the request's path."""
    routes = request.app.routes
    scope = request.scope
    return ", ".join(
        method
        for method in sorted(_METHODS)
        if any(route.matches({**scope, "method": method})[0] is Match.FULL for route in routes)
    )


def _undecodable(e: RequestValidationError) -> str | None:
    """What is wrong with a body that is not JSON text at all (400, as documented, not a
    field's 422), with the line and column to look at; None for any other error."""
    errors = e.errors()
    if not errors or any(error.get("type") != "json_invalid" for error in errors):
        return None
    error = errors[0]
    why = str((error.get("ctx") or {}).get("error", "cannot be decoded"))
    loc = error.get("loc", ())
    if " at line " not in why and len(loc) > 1 and isinstance(loc[1], int):
        # FastAPI's own decoding gives a character offset: say where that is.
        body = e.body if isinstance(e.body, str) else bytes(e.body or b"").decode(errors="replace")
        before = body[: loc[1]]
        line, column = before.count("\n") + 1, loc[1] - (before.rfind("\n") + 1) + 1
        why = f"{why} at line {line} column {column}"
    return f"the body is not valid JSON: {why}"


def _json_safe(value: Any) -> Any:
    """The offending input, as JSON can carry it (NaN and Infinity cannot be sent back as-is)."""
    try:
        json.dumps(value, allow_nan=False, default=str)
    except ValueError:
        return repr(value)
    return value
