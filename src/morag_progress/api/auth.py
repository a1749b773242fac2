"""Bearer API keys: who is calling, and whose jobs they may see.

A missing or wrong key is 401 with ``WWW-Authenticate: Bearer``. Another user's job is reported as
not found (404), never forbidden, so that job ids do not leak; a role that may not do a thing at
all (a worker creating jobs) is 403.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from fastapi import HTTPException, Request, status
from starlette.concurrency import run_in_threadpool

from morag_progress.keys import STREAM_TOKEN_PREFIX, ApiKey, Role, hash_key, matches
from morag_progress.models import utcnow
from morag_progress.store.base import Store

__all__ = ["Authenticator", "Principal", "principal", "require", "stream_principal"]


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller, as its key says."""

    key_id: str
    user_id: str
    role: Role

    @property
    def scope(self) -> str | None:
        """The user whose jobs the caller may touch; None (every user's) for an admin."""
        return None if self.role is Role.ADMIN else self.user_id

    @property
    def claimant(self) -> str | None:
        """For a worker key, its id: a job claimed by another worker is not its to touch."""
        return self.key_id if self.role is Role.WORKER else None


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


class Authenticator:
    """Checks bearer keys against the store, trusting a checked key for ``cache_seconds``
    (a revoked key stops working within that time)."""

    def __init__(self, store: Store, *, cache_seconds: float = 5.0) -> None:
        self._store = store
        self._ttl = cache_seconds
        self._cache: dict[str, tuple[float, ApiKey]] = {}
        self._lock = threading.Lock()

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller of a bearer key; the store is read (in a worker thread) only when the
        key is not in the cache, so most requests authenticate without leaving the loop."""
        if not authorization:
            raise _unauthorized("missing Authorization: Bearer <API key>")
        scheme, _, secret = authorization.partition(" ")
        secret = secret.strip()
        if scheme.lower() != "bearer" or not secret:
            raise _unauthorized("Authorization must be: Bearer <API key>")
        digest = hash_key(secret)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            key = cached[1]
        else:
            found = await run_in_threadpool(self._store.find_key, digest)
            if found is None or not found.active or not matches(secret, digest):
                raise _unauthorized("invalid or revoked API key")
            key = found
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[digest] = (now + self._ttl, key)
        return Principal(key_id=key.id, user_id=key.user_id, role=key.role)


async def _token_principal(request: Request, token: str) -> Principal:
    store: Store = request.app.state.store
    key = await run_in_threadpool(store.find_stream_token, hash_key(token), now=utcnow())
    if key is None or not key.active:
        raise _unauthorized("invalid or expired stream token")
    return Principal(key_id=key.id, user_id=key.user_id, role=key.role)


async def stream_principal(request: Request) -> Principal:
    """FastAPI dependency for event streams: a bearer key, or a ``token`` query parameter
    from ``POST /api/v1/stream-tokens`` (browsers' EventSource cannot send headers)."""
    token = request.query_params.get("token")
    if token is None:
        return await principal(request)
    return await _token_principal(request, token)


async def principal(request: Request) -> Principal:
    """FastAPI dependency: the authenticated caller, within its rate limit. A stream token
    (``Bearer mst_...``) is a read token: it authenticates GET requests only."""
    authorization = request.headers.get("authorization") or ""
    secret = authorization.partition(" ")[2].strip()
    if secret.startswith(STREAM_TOKEN_PREFIX):
        if request.method not in ("GET", "HEAD"):
            raise _unauthorized("a stream token only reads; this needs an API key")
        caller = await _token_principal(request, secret)
    else:
        authenticator: Authenticator = request.app.state.authenticator
        caller = await authenticator.authenticate(authorization or None)
    await request.app.state.rate_limiter.acquire(caller.key_id)
    return caller


def require(caller: Principal, *roles: Role) -> None:
    """403 unless the caller's role is one of ``roles``."""
    if caller.role not in roles:
        allowed = " or ".join(r.value for r in roles)
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail=f"this needs a {allowed} key, not {caller.role.value}"
        )
