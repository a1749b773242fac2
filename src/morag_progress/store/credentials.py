"""What the store keeps besides jobs: API keys (their hashes), browsers' stream tokens, and the
worker-to-job mappings of ``ProgressHandler``."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import func, select, update

from morag_progress.bounds import check_id
from morag_progress.errors import InvalidInputError, JobConflictError, LimitExceededError
from morag_progress.keys import ApiKey, Role, generate_key, hash_key
from morag_progress.store.engine import NO_USER, Database, api_key_from_row, mapping_upsert
from morag_progress.store.schema import api_keys, share_links, stream_tokens, worker_mappings

__all__ = ["Credentials"]

MAX_SHARE_LINKS = 1_000
"""The most share links that work one user may have (each is a row until it expires)."""
_TOKEN_SWEEP = timedelta(days=1)  # expired stream tokens older than this are deleted


class Credentials(Database):
    """Keys, stream tokens and worker mappings."""

    def set_mapping(self, worker_id: str, job_id: str, *, now: datetime) -> None:
        with self._write("set mapping") as conn:
            conn.execute(mapping_upsert(self.dialect_insert(), worker_id, job_id, now))

    def get_mapping(self, worker_id: str) -> str | None:
        """The job a worker id maps to: the in-process mapping (``set_mapping``) if there is
        one, else the one user's whose worker claimed a job under that name; None when none
        does. Raises JobConflictError when workers of several users have that id and no
        in-process mapping says which (each user names its own workers)."""
        m = worker_mappings.c
        stmt = (
            select(m.user_id, m.job_id)
            .where(m.worker_id == worker_id)
            .order_by(m.user_id)  # the in-process mapping (empty user) first
            .limit(2)
        )
        with self._read("get mapping") as conn:
            found = conn.execute(stmt).all()
        if not found:
            return None
        if found[0].user_id != NO_USER and len(found) > 1:
            raise JobConflictError(worker_id, "worker id")
        return str(found[0].job_id)

    def delete_mapping(self, worker_id: str) -> None:
        """Forget the in-process mapping of a worker id (users' workers' mappings stay)."""
        m = worker_mappings.c
        stmt = worker_mappings.delete().where(m.worker_id == worker_id, m.user_id == NO_USER)
        with self._write("delete mapping") as conn:
            conn.execute(stmt)

    def create_key(
        self, *, user_id: str, role: Role | str, name: str | None, now: datetime
    ) -> tuple[ApiKey, str]:
        """Make and store a key; returns it and its secret, which is shown once and never
        stored (only its hash is)."""
        # A user's name is an id (the job id's rule): no "*", which stands for every user
        # (an admin's webhooks), no blank, no control characters for a terminal to obey.
        check_id("user", user_id)
        try:
            role = Role(role)
        except ValueError as e:
            raise InvalidInputError("role", "must be admin, user or worker", role) from e
        secret = generate_key()
        key = ApiKey(
            id=uuid.uuid4().hex[:16], name=name, user_id=user_id, role=role, created_at=now
        )
        row = {
            "id": key.id,
            "name": key.name,
            "user_id": key.user_id,
            "role": key.role.value,
            "key_hash": hash_key(secret),
            "created_at": key.created_at,
        }
        with self._write("create API key") as conn:
            conn.execute(api_keys.insert().values(row))
        return key, secret

    def find_key(self, key_hash: str) -> ApiKey | None:
        stmt = select(api_keys).where(api_keys.c.key_hash == key_hash)
        with self._read("find API key") as conn:
            row = conn.execute(stmt).mappings().first()
        return None if row is None else api_key_from_row(row)

    def get_key(self, key_id: str) -> ApiKey | None:
        """The key with this id, revoked or not, or None."""
        stmt = select(api_keys).where(api_keys.c.id == key_id)
        with self._read("read API key") as conn:
            row = conn.execute(stmt).mappings().first()
        return None if row is None else api_key_from_row(row)

    def keys_by_id(self, key_ids: Collection[str]) -> dict[str, ApiKey]:
        """The keys with these ids (revoked or not) that exist, by id."""
        if not key_ids:
            return {}
        stmt = select(api_keys).where(api_keys.c.id.in_(sorted(key_ids)))
        with self._read("read API keys") as conn:
            return {row["id"]: api_key_from_row(row) for row in conn.execute(stmt).mappings()}

    def list_keys(self, *, user_id: str | None = None) -> list[ApiKey]:
        stmt = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
        if user_id is not None:
            stmt = stmt.where(api_keys.c.user_id == user_id)
        with self._read("list API keys") as conn:
            return [api_key_from_row(row) for row in conn.execute(stmt).mappings()]

    def revoke_key(self, key_id: str, *, now: datetime) -> bool:
        stmt = (
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        with self._write("revoke API key") as conn:
            return conn.execute(stmt).rowcount == 1

    def create_stream_token(self, token_hash: str, key_id: str, *, expires_at: datetime) -> None:
        t = stream_tokens.c
        with self._write("create stream token") as conn:
            conn.execute(stream_tokens.delete().where(t.expires_at < expires_at - _TOKEN_SWEEP))
            conn.execute(
                stream_tokens.insert().values(
                    token_hash=token_hash, key_id=key_id, expires_at=expires_at
                )
            )

    def revoke_stream_token(self, token_hash: str, *, user_id: str | None) -> bool:
        """Delete a stream token made by a key of ``user_id`` (None: any user's); whether one
        was."""
        t, k = stream_tokens.c, api_keys.c
        stmt = stream_tokens.delete().where(t.token_hash == token_hash)
        if user_id is not None:
            stmt = stmt.where(t.key_id.in_(select(k.id).where(k.user_id == user_id)))
        with self._write("revoke stream token") as conn:
            return conn.execute(stmt).rowcount == 1

    def create_share_link(
        self, token_hash: str, *, user_id: str, job_id: str, now: datetime, expires_at: datetime
    ) -> None:
        """Keep a share link to ``user_id``'s job ``job_id`` until ``expires_at`` (and forget
        links expired a while ago). LimitExceededError, nothing kept, when the user already
        has ``MAX_SHARE_LINKS`` links that work (a SQLite write is one at a time; on
        PostgreSQL two creates at once may both pass at the cap, one link over it)."""
        s = share_links.c
        live = select(func.count()).where(s.user_id == user_id, s.expires_at > now)
        with self._write("create share link") as conn:
            conn.execute(share_links.delete().where(s.expires_at < now - _TOKEN_SWEEP))
            if int(conn.execute(live).scalar_one()) >= MAX_SHARE_LINKS:
                raise LimitExceededError(
                    f"this user has {MAX_SHARE_LINKS} share links that work, the most it may; "
                    "revoke some first",
                    retry_after=60,
                )
            conn.execute(
                share_links.insert().values(
                    token_hash=token_hash,
                    user_id=user_id,
                    job_id=job_id,
                    created_at=now,
                    expires_at=expires_at,
                )
            )

    def find_share_link(self, token_hash: str, *, now: datetime) -> tuple[str, str] | None:
        """The (user id, job id) a share link reads, while it has not expired or been revoked."""
        s = share_links.c
        stmt = select(s.user_id, s.job_id).where(s.token_hash == token_hash, s.expires_at > now)
        with self._read("find share link") as conn:
            row = conn.execute(stmt).first()
        return None if row is None else (row.user_id, row.job_id)

    def revoke_share_link(self, token_hash: str, *, user_id: str | None) -> bool:
        """Delete a share link to a job of ``user_id`` (None: any user's); whether one was."""
        s = share_links.c
        stmt = share_links.delete().where(s.token_hash == token_hash)
        if user_id is not None:
            stmt = stmt.where(s.user_id == user_id)
        with self._write("revoke share link") as conn:
            return conn.execute(stmt).rowcount == 1

    def find_stream_token(self, token_hash: str, *, now: datetime) -> ApiKey | None:
        t, k = stream_tokens.c, api_keys.c
        stmt = (
            select(api_keys)
            .join(stream_tokens, t.key_id == k.id)
            .where(t.token_hash == token_hash, t.expires_at > now)
        )
        with self._read("find stream token") as conn:
            row = conn.execute(stmt).mappings().first()
        return None if row is None else api_key_from_row(row)
