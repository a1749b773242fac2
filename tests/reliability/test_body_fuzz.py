"""Arbitrary bytes and arbitrary JSON at the write routes: always a documented 4xx (or 200),
never a 5xx or an exception, and never slow."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from morag_progress.api import create_app
from morag_progress.keys import Role
from morag_progress.models import utcnow
from morag_progress.settings import Settings
from morag_progress.store import SQLStore
from morag_progress.tracker import JobTracker

ALLOWED = {200, 201, 400, 404, 409, 413, 422}
ROUTES = [
    ("PUT", "/api/v1/remote-jobs/fuzz-job/progress"),
    ("POST", "/api/v1/remote-jobs/progress"),
    ("POST", "/api/v1/remote-jobs/fuzz-job/logs"),
    ("PUT", "/api/v1/remote-jobs/fuzz-job/result"),
    ("POST", "/api/v1/jobs"),
    ("POST", "/api/v1/webhooks"),
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.sampled_from(
                [
                    "percentage",
                    "message",
                    "timestamp",
                    "seq",
                    "attempt",
                    "updates",
                    "job_id",
                    "success",
                    "document_name",
                    "document_type",
                    "url",
                    "events",
                    "current",
                    "x",
                ]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=20,
)


class Target:
    """An app over its own store, an admin key, and the job the routes name."""

    def __init__(self, directory: Path) -> None:
        self.store = SQLStore(f"sqlite:///{directory / 'bodies.db'}")
        _, key = self.store.create_key(user_id="alice", role=Role.ADMIN, name=None, now=utcnow())
        self.headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        settings = Settings(rate_limit_per_second=0, key_cache_seconds=60)
        self.app = create_app(settings, store=self.store)
        # The job exists, so bodies get past "not found" to the validation.
        JobTracker(store=self.store).start_job("fuzz", "doc", job_id="fuzz-job", user_id="alice")
        # The log parser's worker process starts with the first upload (a second or more on a
        # busy machine): started here, so the checks time the bodies, not the start.
        warm = self.send("POST", "/api/v1/remote-jobs/fuzz-job/logs", b"warming up")
        assert warm.status_code == 200, warm.text

    def send(self, method: str, path: str, body: bytes) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                return await client.request(method, path, content=body, headers=self.headers)

        return asyncio.run(go())


def check(target: Target, method: str, path: str, body: bytes) -> None:
    started = time.perf_counter()
    response = target.send(method, path, body)
    elapsed = time.perf_counter() - started
    assert response.status_code in ALLOWED, (response.status_code, body[:200], response.text)
    assert elapsed < 2.0, f"{elapsed:.2f} s for a {len(body)}-byte body"


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    made = Target(tmp_path_factory.mktemp("bodies"))
    yield made
    made.store.close()


@settings(max_examples=150, deadline=None)
@given(route=st.sampled_from(ROUTES), body=st.binary(max_size=2000))
def test_arbitrary_bytes(target: Target, route: tuple[str, str], body: bytes) -> None:
    """Any bytes as a body: a 4xx naming the problem, never a 5xx."""
    check(target, *route, body)


@settings(max_examples=300, deadline=None)
@given(route=st.sampled_from(ROUTES), value=json_values)
def test_arbitrary_json(target: Target, route: tuple[str, str], value: Any) -> None:
    """Any JSON document, including the right field names with wrong values."""
    check(target, *route, json.dumps(value, allow_nan=True).encode())
