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
from dataclasses import dataclass
from datetime import datetime

__all__ = ["ApiKey", "Role", "generate_key", "hash_key", "matches"]

_PREFIX = "mpk_"
STREAM_TOKEN_PREFIX = "mps_"
SHARE_LINK_PREFIX = "msl_"
"""A share link's token (``api/routes/share.py``): it reads one job, and nothing else."""


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
