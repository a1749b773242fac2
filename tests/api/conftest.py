"""API fixtures: an app over a real store (SQLite and PostgreSQL), a client, keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI

from morag_progress.api import create_app
from morag_progress.keys import Role
from morag_progress.models import utcnow
from morag_progress.settings import Settings
from morag_progress.store import SQLStore

Auth = dict[str, str]


@pytest.fixture
def settings() -> Settings:
    """No rate limit and no key cache, unless a test asks for them."""
    return Settings(rate_limit_per_second=0, key_cache_seconds=0)


@pytest.fixture
def app(store: SQLStore, settings: Settings) -> FastAPI:
    return create_app(settings, store=store)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest.fixture
def key(store: SQLStore) -> Callable[..., Auth]:
    """Factory: a new key's Authorization header for a user and role."""

    def make(user: str = "alice", role: Role = Role.USER) -> Auth:
        _, secret = store.create_key(user_id=user, role=role, name=None, now=utcnow())
        return {"Authorization": f"Bearer {secret}"}

    return make


@pytest.fixture
def alice(key: Callable[..., Auth]) -> Auth:
    return key("alice", Role.USER)


@pytest.fixture
def alice_worker(key: Callable[..., Auth]) -> Auth:
    return key("alice", Role.WORKER)


@pytest.fixture
def bob(key: Callable[..., Auth]) -> Auth:
    return key("bob", Role.USER)


@pytest.fixture
def admin(key: Callable[..., Auth]) -> Auth:
    return key("root", Role.ADMIN)


@pytest.fixture
def new_job(client: httpx.AsyncClient) -> Callable[..., object]:
    """Factory: create a job over HTTP and return its id."""

    async def make(auth: Auth, **fields: object) -> str:
        body = {"document_name": "talk.mp3", "document_type": "audio", **fields}
        response = await client.post("/api/v1/jobs", json=body, headers=auth)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    return make
