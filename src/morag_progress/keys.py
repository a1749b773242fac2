"""API keys: random bearer secrets, stored only as hashes, each with a user and a role.

Roles (docs/architecture.md section 4): ``admin`` sees and does everything; ``user`` creates,
reads, reports on and cancels its own jobs; ``worker`` belongs to a user and reads and reports on
that user's jobs, but creates nothing.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from morag_progress.errors import InvalidInputError

if TYPE_CHECKING:
    from morag_progress.store import SQLStore

__all__ = ["ApiKey", "Role", "create_key", "generate_key", "hash_key", "matches"]

_PREFIX = "mpk_"
STREAM_TOKEN_PREFIX = "mps_"


class Role(enum.StrEnum):
    """What a key may do."""

    ADMIN = "admin"
    """Everything, on every user's jobs."""
    USER = "user"
    """Its own jobs: create, read, report, cancel."""
    WORKER = "worker"
    """Its user's jobs: read and report."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key: who it is for and what it may do (never the secret itself)."""

    id: str
    name: str | None
    user_id: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        """True until the key is revoked."""
        return self.revoked_at is None


def generate_key(prefix: str = _PREFIX) -> str:
    """A new secret: 256 random bits, URL-safe, with a recognisable prefix."""
    return prefix + secrets.token_urlsafe(32)


def hash_key(secret: str) -> str:
    """The stored form of a secret."""
    return hashlib.sha256(secret.encode("utf-8", errors="surrogateescape")).hexdigest()


def matches(secret: str, stored_hash: str) -> bool:
    """Compare a presented secret with a stored hash in constant time."""
    return hmac.compare_digest(hash_key(secret), stored_hash)


def create_key(
    store: SQLStore, *, user_id: str, role: Role | str, name: str | None, now: datetime
) -> tuple[ApiKey, str]:
    """Create and store a key; returns it and its secret, which is shown once and never stored."""
    if not isinstance(user_id, str) or not user_id.strip() or len(user_id) > 128:
        raise InvalidInputError(
            "user", "must be a non-empty string of at most 128 characters", user_id
        )
    try:
        role = Role(role)
    except ValueError as e:
        raise InvalidInputError("role", "must be admin, user or worker", role) from e
    secret = generate_key()
    key = ApiKey(id=uuid.uuid4().hex[:16], name=name, user_id=user_id, role=role, created_at=now)
    store.create_key(key, hash_key(secret))
    return key, secret
