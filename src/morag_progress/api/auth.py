"""Bearer API keys: who is calling, and whose jobs they may see.

A missing or wrong key is 401 with ``WWW-Authenticate: Bearer``. Another user's job is reported as
not found (404), never forbidden, so that job ids do not leak; a role that may not do a thing at
all (a worker creating jobs) is 403.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace

from fastapi import HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool

from morag_progress._threads import SharedReads
from morag_progress.api.limits import RateLimiter
from morag_progress.audit import key_actor
from morag_progress.bounds import check_id
from morag_progress.errors import InvalidInputError
from morag_progress.keys import STREAM_TOKEN_PREFIX, ApiKey, Role, hash_key, matches
from morag_progress.models import utcnow
from morag_progress.store import SQLStore

__all__ = [
    "Authenticator",
    "Principal",
    "client_address",
    "key_principal",
    "named_user",
    "principal",
    "require",
    "stream_principal",
]


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller, as its key says."""

    key_id: str
    user_id: str
    role: Role
    token_hash: str | None = None
    """Set when the caller signed in with a stream token (its hash), not the key itself."""
    acting_for: str | None = None
    """The user an admin names with ``?user=`` (``as_user``): this request's jobs are theirs."""

    @property
    def scope(self) -> str | None:
        """The user whose jobs the caller may touch; None (every user's) for an admin, unless
        it names one."""
        return self.acting_for if self.role is Role.ADMIN else self.user_id

    @property
    def owner(self) -> str:
        """The user whose jobs the caller makes: the one an admin names, else its own."""
        return self.acting_for or self.user_id

    def as_user(self, user: str | None) -> Principal:
        """The caller acting for ``user`` (a ``?user=`` query parameter, already checked
        against the user name rule): an admin acts for anyone, any other caller only for
        itself (403 for another user)."""
        if user is None or (user == self.user_id and self.role is not Role.ADMIN):
            return self
        if self.role is not Role.ADMIN:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail="only an admin key may name another user (user)",
            )
        return replace(self, acting_for=user)

    @property
    def actor(self) -> str:
        """Who the caller's changes are recorded as made by (``audit.py``): role and key id."""
        return key_actor(self.role.value, self.key_id)

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
    (a revoked key stops working within that time), and refuses clients (by address) that
    failed to sign in more than ``failures_per_minute`` times (0: no limit)."""

    def __init__(
        self, store: SQLStore, *, cache_seconds: float = 5.0, failures_per_minute: float = 0
    ) -> None:
        self._store = store
        self._ttl = cache_seconds
        self._cache: dict[str, tuple[float, ApiKey]] = {}
        self._active: dict[str, tuple[float, bool]] = {}
        self._lock = threading.Lock()
        self._failures = RateLimiter(failures_per_minute / 60, burst=failures_per_minute)
        self._keys: SharedReads[str, ApiKey | None] = SharedReads()
        self._states: SharedReads[str, ApiKey | None] = SharedReads()

    async def authenticate(self, authorization: str | None, client: str = "") -> Principal:
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
            self._failures.check_room(client)  # a client guessing keys stops here
            found = await self._keys.read(digest, lambda: self._store.find_key(digest))
            if found is None or not found.active or not matches(secret, digest):
                self.failed(client)
                raise _unauthorized("invalid or revoked API key")
            key = found
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[digest] = (now + self._ttl, key)
        return Principal(key_id=key.id, user_id=key.user_id, role=key.role)

    def cached(self, authorization: str) -> Principal | None:
        """The caller of a bearer key checked within ``cache_seconds``, without reading the
        store or counting anything; None for any other header (the full check decides)."""
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        found = self._cache.get(hash_key(secret.strip()))
        if found is None or found[0] <= time.monotonic():
            return None
        key = found[1]
        return Principal(key_id=key.id, user_id=key.user_id, role=key.role)

    def failed(self, client: str) -> None:
        """Count a failed sign-in against the client's address."""
        self._failures.spend(client)

    def check_client(self, client: str) -> None:
        """429 for a client that has failed to sign in too often lately."""
        self._failures.check_room(client)

    async def still_signed_in(self, caller: Principal) -> bool:
        """Whether the caller's key still works (not revoked, not deleted) and, for a stream
        token, the token too (not expired, not revoked); read at most once per
        ``cache_seconds`` per key or token however many streams ask."""
        if caller.token_hash is None:
            what, read = caller.key_id, lambda: self._store.get_key(caller.key_id)
        else:
            token_hash = caller.token_hash
            what, read = token_hash, lambda: self._store.find_stream_token(token_hash, now=utcnow())
        now = time.monotonic()
        cached = self._active.get(what)
        if cached is not None and cached[0] > now:
            return cached[1]
        key = await self._states.read(what, read)
        active = key is not None and key.active
        with self._lock:
            if len(self._active) > 10_000:
                self._active.clear()
            self._active[what] = (now + self._ttl, active)
        return active


def client_address(request: Request) -> str:
    """The calling client's address (the proxy's, unless the server trusts forwarded headers)."""
    return request.client.host if request.client is not None else ""


async def _token_principal(request: Request, token: str) -> Principal:
    authenticator: Authenticator = request.app.state.authenticator
    client = client_address(request)
    authenticator.check_client(client)
    store: SQLStore = request.app.state.store
    token_hash = hash_key(token)
    key = await run_in_threadpool(store.find_stream_token, token_hash, now=utcnow())
    if key is None or not key.active:
        authenticator.failed(client)
        raise _unauthorized("invalid, expired or revoked stream token")
    return Principal(key_id=key.id, user_id=key.user_id, role=key.role, token_hash=token_hash)


async def stream_principal(request: Request) -> Principal:
    """FastAPI dependency for event streams: a bearer key, or a ``token`` query parameter
    from ``POST /api/v1/stream-tokens`` (browsers' EventSource cannot send headers); either
    within the key's rate limit."""
    token = request.query_params.get("token")
    if token is None:
        return await principal(request)
    caller = await _token_principal(request, token)
    await request.app.state.rate_limiter.acquire(caller.key_id)
    return caller.as_user(named_user(request))


def named_user(request: Request) -> str | None:
    """The ``user`` query parameter (an admin's way to name whose job an id is), checked
    against the user name rule (422 naming it); None without one."""
    if not request.scope.get("query_string"):
        return None  # the usual request: no query to parse
    user = request.query_params.get("user")
    if user is not None:
        try:
            check_id("user", user)
        except InvalidInputError as e:
            problem = {"type": "value_error", "loc": ("query", "user"), "msg": e.rule}
            raise RequestValidationError([{**problem, "input": user}]) from e
    return user


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
        caller = await authenticator.authenticate(authorization or None, client_address(request))
    await request.app.state.rate_limiter.acquire(caller.key_id)
    return caller.as_user(named_user(request))


async def key_principal(request: Request) -> Principal:
    """FastAPI dependency: ``principal``, signed in with an API key itself. A stream token
    (a dashboard link anyone holding it may use) reads jobs and their streams only: not, for
    instance, webhooks, whose URLs may hold secrets (a chat's posting token)."""
    caller = await principal(request)
    if caller.token_hash is not None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail="a stream token reads jobs only; this needs an API key",
        )
    return caller


def require(caller: Principal, *roles: Role) -> None:
    """403 unless the caller's role is one of ``roles``."""
    if caller.role not in roles:
        allowed = " or ".join(r.value for r in roles)
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, detail=f"this needs a {allowed} key, not {caller.role.value}"
        )
