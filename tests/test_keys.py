"""API keys: secrets are random, stored hashed, compared in constant time."""

from __future__ import annotations

import pytest

from morag_progress.errors import InvalidInputError
from morag_progress.keys import Role, generate_key, hash_key, matches
from morag_progress.models import utcnow
from morag_progress.store import SQLStore


def test_secrets_are_long_and_random() -> None:
    """A key carries at least 256 random bits and no two are alike."""
    keys = {generate_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(len(k.removeprefix("mpk_")) >= 43 for k in keys)  # 32 bytes in URL-safe base64


def test_only_the_hash_is_stored(store: SQLStore) -> None:
    """The store holds the key's hash and role, never the secret."""
    key, secret = store.create_key(user_id="alice", role="worker", name="gpu-01", now=utcnow())
    assert key.role is Role.WORKER
    found = store.find_key(hash_key(secret))
    assert found == key
    assert matches(secret, hash_key(secret))
    assert not matches(secret + "x", hash_key(secret))
    with store._engine.connect() as conn:
        dump = str(conn.exec_driver_sql("SELECT * FROM api_keys").fetchall())
    assert secret not in dump


def test_list_and_revoke(store: SQLStore) -> None:
    """Keys are listed per user and revoked once."""
    a, _ = store.create_key(user_id="alice", role=Role.USER, name=None, now=utcnow())
    store.create_key(user_id="bob", role=Role.USER, name=None, now=utcnow())
    assert [k.id for k in store.list_keys(user_id="alice")] == [a.id]
    assert store.revoke_key(a.id, now=utcnow())
    assert not store.revoke_key(a.id, now=utcnow())
    assert not store.list_keys(user_id="alice")[0].active


@pytest.mark.parametrize(
    ("user", "role", "field"),
    [
        ("", "user", "user"),
        ("*", "user", "user"),  # stands for every user: an admin's webhooks
        ("alice\x1b[2J", "user", "user"),
        (" alice", "user", "user"),
        ("..", "user", "user"),
        ("a" * 129, "user", "user"),
        ("alice", "root", "role"),
    ],
)
def test_bad_key_fields(store: SQLStore, user: str, role: str, field: str) -> None:
    """A bad user or role is refused, naming it."""
    with pytest.raises(InvalidInputError, match=f"^{field} "):
        store.create_key(user_id=user, role=role, name=None, now=utcnow())
