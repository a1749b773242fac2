"""Keys, stream tokens and worker mappings, as the store keeps them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from morag_progress.errors import InvalidInputError, JobConflictError
from morag_progress.keys import Role, hash_key
from morag_progress.store import SQLStore
from morag_progress.store.engine import mapping_upsert
from morag_progress.store.schema import stream_tokens, worker_mappings

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_a_key_is_stored_by_its_hash_and_found_by_it(store: SQLStore) -> None:
    """A new key's secret is returned once; the store finds the key by the secret's hash and
    by its id, with every field it was made with."""
    key, secret = store.create_key(user_id="alice", role="worker", name="gpu-1", now=NOW)
    assert secret.startswith("mpk_")
    assert (key.user_id, key.role, key.name, key.created_at) == ("alice", Role.WORKER, "gpu-1", NOW)
    assert key.revoked_at is None
    assert len(key.id) == 16
    assert store.find_key(hash_key(secret)) == key
    assert store.find_key(hash_key(secret + "x")) is None
    assert store.find_key(secret) is None  # the secret itself is not what is stored
    assert store.get_key(key.id) == key
    assert store.get_key("nope") is None


@pytest.mark.parametrize(
    ("user", "role", "field"),
    [
        ("*", "user", "user"),
        ("", "user", "user"),
        ("bob\x1b[2J", "user", "user"),
        ("bob", "root", "role"),
        ("bob", "", "role"),
    ],
)
def test_a_key_for_a_bad_user_or_role_is_refused(
    store: SQLStore, user: str, role: str, field: str
) -> None:
    """A user's name follows the id rule (not ``*``, which means every user; not blank; no
    control characters); a role is admin, user or worker. Nothing is stored."""
    with pytest.raises(InvalidInputError) as e:
        store.create_key(user_id=user, role=role, name=None, now=NOW)
    assert e.value.field == field
    assert store.list_keys() == []


def test_keys_are_listed_in_creation_order_and_by_user(store: SQLStore) -> None:
    """Oldest first (ties by id); a user's list holds only theirs; by id, the ones that exist."""
    a, _ = store.create_key(user_id="alice", role=Role.USER, name=None, now=NOW)
    b, _ = store.create_key(user_id="bob", role=Role.ADMIN, name=None, now=NOW - timedelta(1))
    c, _ = store.create_key(user_id="alice", role=Role.WORKER, name="w", now=NOW + timedelta(1))
    assert store.list_keys() == [b, a, c]
    assert store.list_keys(user_id="alice") == [a, c]
    assert store.list_keys(user_id="carol") == []
    assert store.keys_by_id({a.id, c.id, "missing"}) == {a.id: a, c.id: c}
    assert store.keys_by_id(set()) == {}


def test_a_key_is_revoked_once_and_stays_readable(store: SQLStore) -> None:
    """Revoking answers True the first time only; the key keeps its revocation time, and is
    still read by id and by hash (the caller refuses it: it is revoked, not unknown)."""
    key, secret = store.create_key(user_id="alice", role="user", name=None, now=NOW)
    later = NOW + timedelta(minutes=5)
    assert store.revoke_key(key.id, now=later) is True
    assert store.revoke_key(key.id, now=later + timedelta(1)) is False
    assert store.revoke_key("missing", now=later) is False
    revoked = store.get_key(key.id)
    assert revoked is not None
    assert revoked.revoked_at == later
    assert store.find_key(hash_key(secret)) == revoked


def _tokens(store: SQLStore) -> int:
    with store.connection("count tokens") as conn:
        return int(conn.execute(select(func.count()).select_from(stream_tokens)).scalar_one())


def test_a_stream_token_reads_as_its_key_until_it_expires(store: SQLStore) -> None:
    """A token stands for the key that made it, strictly before its expiry; an unknown token
    stands for nothing."""
    key, _ = store.create_key(user_id="alice", role="user", name=None, now=NOW)
    store.create_stream_token("t1", key.id, expires_at=NOW + timedelta(minutes=10))
    assert store.find_stream_token("t1", now=NOW) == key
    assert store.find_stream_token("t1", now=NOW + timedelta(minutes=10)) is None
    assert store.find_stream_token("t2", now=NOW) is None


def test_expired_tokens_are_swept_a_day_after_they_expire(store: SQLStore) -> None:
    """Making a token deletes those that expired more than a day before its own expiry (so
    the table stays the size of a day's tokens); younger ones stay."""
    key, _ = store.create_key(user_id="alice", role="user", name=None, now=NOW)
    store.create_stream_token("a", key.id, expires_at=NOW - timedelta(hours=36))
    store.create_stream_token("b", key.id, expires_at=NOW - timedelta(hours=30))
    assert _tokens(store) == 2  # six hours apart: both kept
    store.create_stream_token("c", key.id, expires_at=NOW)
    assert _tokens(store) == 1  # both expired more than a day before "c" does
    store.create_stream_token("d", key.id, expires_at=NOW + timedelta(days=1))
    assert _tokens(store) == 2  # "c" expires exactly a day before "d": kept


def test_a_token_is_revoked_only_by_its_own_user(store: SQLStore) -> None:
    """A user revokes their own keys' tokens; another user's attempt changes nothing; an
    admin (no user) revokes any. Each answers whether a token was deleted."""
    alice, _ = store.create_key(user_id="alice", role="user", name=None, now=NOW)
    store.create_stream_token("ta", alice.id, expires_at=NOW + timedelta(hours=1))
    store.create_stream_token("tb", alice.id, expires_at=NOW + timedelta(hours=1))
    assert store.revoke_stream_token("ta", user_id="bob") is False
    assert store.find_stream_token("ta", now=NOW) == alice
    assert store.revoke_stream_token("ta", user_id="alice") is True
    assert store.find_stream_token("ta", now=NOW) is None
    assert store.revoke_stream_token("ta", user_id="alice") is False
    assert store.revoke_stream_token("tb", user_id=None) is True
    assert _tokens(store) == 0


def test_a_worker_mapping_is_set_replaced_and_forgotten(store: SQLStore) -> None:
    """The in-process mapping of a worker id names one job; setting it again replaces it;
    deleting it forgets it (and deleting what is not there is no error)."""
    assert store.get_mapping("w1") is None
    store.set_mapping("w1", "job-a", now=NOW)
    assert store.get_mapping("w1") == "job-a"
    store.set_mapping("w1", "job-b", now=NOW + timedelta(seconds=1))
    assert store.get_mapping("w1") == "job-b"
    store.delete_mapping("w1")
    assert store.get_mapping("w1") is None
    store.delete_mapping("w1")


def _claimed(store: SQLStore, user: str, worker: str, job_id: str) -> None:
    """A mapping as a user's worker's claim leaves it."""
    with store.transaction("claim mapping") as conn:
        conn.execute(mapping_upsert(store.dialect_insert(), worker, job_id, NOW, user_id=user))


def test_a_users_worker_mapping_is_found_unless_two_users_share_the_name(
    store: SQLStore,
) -> None:
    """A worker id one user's worker claimed under maps to that job; when two users' workers
    share the id, the in-process mapping decides, and without one the answer is a conflict
    (each user names their own workers). Deleting the in-process mapping leaves the users'."""
    _claimed(store, "alice", "gpu", "a-job")
    assert store.get_mapping("gpu") == "a-job"
    _claimed(store, "bob", "gpu", "b-job")
    with pytest.raises(JobConflictError):
        store.get_mapping("gpu")
    store.set_mapping("gpu", "local-job", now=NOW)
    assert store.get_mapping("gpu") == "local-job"
    store.delete_mapping("gpu")
    with pytest.raises(JobConflictError):
        store.get_mapping("gpu")
    with store.connection("count mappings") as conn:
        users = conn.execute(select(worker_mappings.c.user_id).order_by(worker_mappings.c.user_id))
        assert [row.user_id for row in users] == ["alice", "bob"]
