"""Request limits: body size (413) and a per-key rate (429 with Retry-After)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import HTTPException, status
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from morag_progress.errors import ConfigurationError

__all__ = ["BodyLimit", "RateLimiter", "SharedRateLimiter"]

logger = logging.getLogger(__name__)


def _too_many(rate: float, retry_after: float, what: str | None = None) -> HTTPException:
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        detail=what or f"rate limit of {rate:g} requests per second per key exceeded",
        headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
    )


_MAX_BUCKETS = 100_000  # keys (or client addresses) tracked at once


@dataclass(slots=True)
class _UserReads:
    slots: asyncio.Semaphore
    users: int = 0
    """Reads of the user holding a slot or waiting for one."""


class ReadGate:
    """Expensive reads (a search, counts, a stream's resume through missed changes): at most
    ``per_user`` of one user's at a time and ``total`` of everyone's. Past them a read waits
    its turn, at most ``wait`` seconds and behind at most ``max_waiting`` of the same user's,
    then 429: one user's expensive reads at his full rate hold at most his share of the
    server, and another user's reads are not queued behind them. Waiting holds no thread."""

    def __init__(
        self, *, per_user: int, total: int, wait: float = 10.0, max_waiting: int = 16
    ) -> None:
        self.per_user = per_user
        self.total = total
        self.wait = wait
        self.max_waiting = max_waiting
        self._total: asyncio.Semaphore | None = None
        self._users: dict[str, _UserReads] = {}

    @contextlib.asynccontextmanager
    async def slot(self, user: str, wait: float | None = None) -> AsyncIterator[None]:
        """Hold one of ``user``'s slots (and one of everyone's) while the read runs, waiting
        at most ``wait`` seconds for them (default ``self.wait``; 429 past it)."""
        wait = self.wait if wait is None else wait
        if self._total is None:
            self._total = asyncio.Semaphore(self.total)
        entry = self._users.get(user)
        if entry is None:
            entry = self._users[user] = _UserReads(asyncio.Semaphore(self.per_user))
        if entry.users >= self.per_user + self.max_waiting:
            raise _busy(self.per_user)
        entry.users += 1
        try:
            try:
                async with asyncio.timeout(wait):
                    await entry.slots.acquire()
            except TimeoutError:
                raise _busy(self.per_user) from None
            try:
                try:
                    async with asyncio.timeout(wait):
                        await self._total.acquire()
                except TimeoutError:
                    raise _busy(self.per_user) from None
                try:
                    yield
                finally:
                    self._total.release()
            finally:
                entry.slots.release()
        finally:
            entry.users -= 1
            if entry.users == 0:
                self._users.pop(user, None)


def _busy(per_user: int) -> HTTPException:
    return HTTPException(
        status.HTTP_429_TOO_MANY_REQUESTS,
        detail=f"too many expensive reads (searches, counts, resumes) at once: {per_user} a "
        "user runs at a time, the rest wait their turn; try again",
        headers={"Retry-After": "1"},
    )


class RateLimiter:
    """A token bucket per key: ``rate`` requests a second on average, bursts up to ``burst``.

    In-process: with several server replicas each holds its own buckets (see
    :class:`SharedRateLimiter` for one budget across replicas).
    """

    def __init__(self, rate: float, *, burst: float | None = None, what: str | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self.what = what
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        """Take a token for ``key`` or raise 429 saying when to come back."""
        if self.rate <= 0:
            return
        self.check_room(key)
        self.spend(key)

    def check_room(self, key: str) -> None:
        """Raise 429 if ``key`` has no token left, without taking one."""
        if self.rate <= 0:
            return
        tokens, _ = self._refilled(key)
        if tokens < 1:
            raise _too_many(self.rate, (1 - tokens) / self.rate, self.what)

    def spend(self, key: str) -> None:
        """Take a token for ``key`` (the bucket may go below zero, which waits longer)."""
        if self.rate <= 0:
            return
        with self._lock:
            tokens, now = self._refilled(key)
            if len(self._buckets) >= _MAX_BUCKETS and key not in self._buckets:
                self._forget_full(now)
            self._buckets[key] = (max(tokens - 1, -self.burst), now)

    def _refilled(self, key: str) -> tuple[float, float]:
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + (now - last) * self.rate), now

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have refilled (they hold nothing a new one would not); if
        none has, drop them all rather than grow without bound."""
        full = [
            k
            for k, (t, last) in self._buckets.items()
            if t + (now - last) * self.rate >= self.burst
        ]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= _MAX_BUCKETS:
            self._buckets.clear()

    async def acquire(self, key: str) -> None:
        """The same, as the request path calls it."""
        self.check(key)

    async def close(self) -> None:
        """Nothing to release."""


# One token bucket per key in Redis, updated atomically on Redis's own clock, so replicas on
# different machines share one budget. Returns {allowed, seconds until a token is back}.
_BUCKET = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or t
tokens = math.min(burst, tokens + math.max(0, t - ts) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'ts', t)
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return {allowed, tostring((1 - tokens) / rate)}
"""


class SharedRateLimiter:
    """The per-key token bucket kept in Redis (``MORAG_PROGRESS_REDIS_URL``): one budget for
    every replica. If Redis cannot be reached the request is let through (logged): the limit
    protects the service, and a Redis outage should not take reporting down with it."""

    def __init__(self, url: str, rate: float, *, burst: float | None = None) -> None:
        try:
            import redis.asyncio
        except ImportError as e:
            raise ConfigurationError(
                "MORAG_PROGRESS_REDIS_URL", "needs pip install 'morag-progress[redis]'", url
            ) from e

        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._redis = redis.asyncio.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._script = self._redis.register_script(_BUCKET)
        self._warned_at = 0.0

    async def acquire(self, key: str) -> None:
        if self.rate <= 0:
            return
        import redis

        try:
            allowed, wait = await self._script(
                keys=[f"morag-progress:rate:{key}"], args=[self.rate, self.burst]
            )
        except redis.RedisError:
            if time.monotonic() - self._warned_at > 60:
                self._warned_at = time.monotonic()
                logger.warning("rate limit store unreachable: requests are not limited")
            return
        if not int(allowed):
            raise _too_many(self.rate, float(wait))

    async def close(self) -> None:
        await self._redis.aclose()


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
        # HTTP/1 frames a body by Content-Length, or has none without Transfer-Encoding: the
        # server reads no more than that. Otherwise (chunked, HTTP/2) the body is counted.
        length = chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > limit:
                    await _too_large(send, limit)
                    return
                length = True
            elif name == b"transfer-encoding":
                chunked = True
        if not chunked and (length or scope.get("http_version") in ("1.0", "1.1")):
            # Nothing to count: every request here and every stream's send is passed as is.
            await self.app(scope, receive, send)
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
