"""Request limits: body size (413) and a per-key rate (429 with Retry-After)."""

from __future__ import annotations

import math
import threading
import time

from fastapi import HTTPException, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimit", "RateLimiter"]


class RateLimiter:
    """A token bucket per key: ``rate`` requests a second on average, bursts up to ``burst``.

    In-process: with several server replicas each holds its own buckets.
    """

    def __init__(self, rate: float, *, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        """Take a token for ``key`` or raise 429 saying when to come back."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1:
                self._buckets[key] = (tokens, now)
                retry_after = math.ceil((1 - tokens) / self.rate)
                raise HTTPException(
                    status.HTTP_429_TOO_MANY_REQUESTS,
                    detail=f"rate limit of {self.rate:g} requests per second per key exceeded",
                    headers={"Retry-After": str(max(1, retry_after))},
                )
            self._buckets[key] = (tokens - 1, now)


class BodyLimit:
    """ASGI middleware: refuse a request body over the limit with 413, before it is parsed.

    Paths ending in one of ``large_suffixes`` get ``large_limit`` (raw log uploads).
    """

    def __init__(
        self, app: ASGIApp, *, limit: int, large_limit: int, large_suffixes: tuple[str, ...]
    ) -> None:
        self.app = app
        self.limit = limit
        self.large_limit = large_limit
        self.large_suffixes = large_suffixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        limit = self.large_limit if path.endswith(self.large_suffixes) else self.limit
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                await _too_large(send, limit)
                return
        received = 0
        answered = False

        async def guarded_send(message: Message) -> None:
            if not answered:  # once we answered 413, whatever the app says is dropped
                await send(message)

        async def limited_receive() -> Message:
            # Raising here would not work: FastAPI turns errors while reading a body into 400.
            # So answer 413 ourselves and tell the app the client went away.
            nonlocal received, answered
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if not answered:
                        answered = True
                        await _too_large(send, limit)
                    return {"type": "http.disconnect"}
            return message

        await self.app(scope, limited_receive, guarded_send)


async def _too_large(send: Send, limit: int) -> None:
    body = f'{{"detail":"request body is over the limit of {limit} bytes"}}'.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
