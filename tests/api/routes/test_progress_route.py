"""The progress route, served ahead of FastAPI's router, answers as a FastAPI route would.

Two apps over one store: one whose key cache is on (its keys are checked without the store),
one whose key cache is off (every request reads its key). Each case is played on both, on jobs
in the same state, and the answers must match (status, headers that matter, body) and be the
documented ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from morag_progress.api import create_app
from morag_progress.keys import Role
from morag_progress.models import utcnow
from morag_progress.settings import Settings
from morag_progress.store import SQLStore

_VOLATILE = {
    "created_at",
    "updated_at",
    "start_date",
    "end_date",
    "last_seen_at",
    "id",
    "rate",
    "traceparent",  # each job its own span
}


def _comparable(response: httpx.Response) -> tuple[int, str | None, str | None, Any]:
    body = response.json()
    job = body.get("job") if isinstance(body, dict) else None
    if isinstance(job, dict):
        body = {**body, "job": {k: v for k, v in job.items() if k not in _VOLATILE}}
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        body = {**body, "detail": body["detail"].replace(response.url.path.split("/")[4], "J")}
    return (
        response.status_code,
        response.headers.get("content-type"),
        response.headers.get("www-authenticate"),
        body,
    )


Auth = dict[str, str]
Play = Callable[[httpx.AsyncClient, Auth, str], Awaitable[httpx.Response]]


class Pair:
    """The same case on the app with the key cache and on the app without."""

    def __init__(self, store: SQLStore) -> None:
        self.store = store
        self.cached_app = create_app(
            Settings(rate_limit_per_second=0, key_cache_seconds=60), store=store
        )
        self.plain_app = create_app(
            Settings(rate_limit_per_second=0, key_cache_seconds=0), store=store
        )
        key, secret = store.create_key(user_id="alice", role=Role.USER, name=None, now=utcnow())
        self.alice = {"Authorization": f"Bearer {secret}"}
        self.actor = f"user:{key.id}"
        self.clients = [
            httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://t")
            for a in (self.cached_app, self.plain_app)
        ]

    async def job(self, client: httpx.AsyncClient, **fields: Any) -> str:
        body = {"document_name": "talk.mp3", "document_type": "audio", **fields}
        response = await client.post("/api/v1/jobs", json=body, headers=self.alice)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def both(
        self, play: Play, setup: Callable[[httpx.AsyncClient, str], Awaitable[None]] | None = None
    ) -> tuple[httpx.Response, httpx.Response]:
        answers = []
        for client in self.clients:
            job = await self.job(client)
            if setup is not None:
                await setup(client, job)
            answers.append(await play(client, self.alice, job))
        cached, plain = answers
        assert _comparable(cached) == _comparable(plain), (cached.text, plain.text)
        return cached, plain


@pytest.fixture
async def pair(store: SQLStore) -> AsyncIterator[Pair]:
    p = Pair(store)
    yield p
    for client in p.clients:
        await client.aclose()


def _put(body: Any = None, *, content: bytes | None = None, **headers: str) -> Play:
    async def play(client: httpx.AsyncClient, auth: dict[str, str], job: str) -> httpx.Response:
        url = f"/api/v1/remote-jobs/{job}/progress"
        if content is not None:
            return await client.put(url, content=content, headers={**auth, **headers})
        return await client.put(url, json=body, headers={**auth, **headers})

    return play


async def test_an_ordinary_report_is_applied_and_recorded_with_its_actor(pair: Pair) -> None:
    """A report is applied (200, the job in the reply) and its feed row names the key."""
    first, _ = await pair.both(_put({"percentage": 40, "message": "Transcribing", "stage": "asr"}))
    assert first.status_code == 200
    assert first.json()["applied"] is True
    assert first.json()["job"]["stage"] == "asr"
    answers = await pair.both(_put({"percentage": 100}))
    assert answers[0].json()["job"]["status"] == "FINISHED"
    for answer in answers:
        [*_, last] = pair.store.history(answer.json()["job"]["id"], user_id="alice")
        assert (last.action, last.actor) == ("report", pair.actor)


async def test_a_stale_report_answers_as_the_route(pair: Pair) -> None:
    """An older report is answered 200 with ``applied: false`` and the job as it is."""
    now = utcnow()

    async def newer(client: httpx.AsyncClient, job: str) -> None:
        body = {"percentage": 50, "timestamp": now.isoformat()}
        url = f"/api/v1/remote-jobs/{job}/progress"
        assert (await client.put(url, json=body, headers=pair.alice)).json()["applied"]

    older = (now - timedelta(seconds=5)).isoformat()
    answer, _ = await pair.both(_put({"percentage": 10, "timestamp": older}), newer)
    assert answer.json()["applied"] is False
    assert answer.json()["job"]["percentage"] == 50


async def test_error_outcomes_after_the_write_answer_as_the_route(pair: Pair) -> None:
    """A finished job is 409, an unknown one 404, from either app."""

    async def finish(client: httpx.AsyncClient, job: str) -> None:
        url = f"/api/v1/remote-jobs/{job}/result"
        response = await client.put(url, json={"success": True}, headers=pair.alice)
        assert response.status_code == 200

    answer, _ = await pair.both(_put({"percentage": 10}), finish)
    assert answer.status_code == 409

    async def unknown(client: httpx.AsyncClient, auth: dict[str, str], job: str) -> httpx.Response:
        return await client.put(
            "/api/v1/remote-jobs/nope/progress", json={"percentage": 1}, headers=auth
        )

    answer, _ = await pair.both(unknown)
    assert answer.status_code == 404
    assert answer.json() == {"detail": "job 'nope' not found"}


@pytest.mark.parametrize(
    ("play", "status"),
    [
        (_put({"percentage": 101}), 422),
        (_put({"percentage": 10, "colour": "red"}), 422),
        (_put(content=b"{not json", **{"content-type": "application/json"}), 400),
        (_put({"percentage": 10, "timestamp": "2999-01-01T00:00:00Z"}), 422),
        (_put({"percentage": 10, "message": "a\x00b"}), 422),
    ],
    ids=["range", "unknown-field", "not-json", "future", "nul"],
)
async def test_bodies_that_do_not_validate_get_the_routes_answer(
    pair: Pair, play: Play, status: int
) -> None:
    """A body that breaks a rule is 422 naming the field (400 for text that is not JSON)."""
    answer, _ = await pair.both(play)
    assert answer.status_code == status
    detail = answer.json()["detail"]
    if status == 422 and isinstance(detail, list):
        assert all(error["loc"][0] == "body" for error in detail)


async def test_keys_tokens_chunks_limits_and_ids(pair: Pair) -> None:
    """A key not yet checked is read and then cached; a stream token is refused (401); a
    chunked body is read whole; a body over the limit is 413; a bad id is 422 on the path."""
    _, secret = pair.store.create_key(user_id="alice", role=Role.USER, name=None, now=utcnow())
    fresh = {"Authorization": f"Bearer {secret}"}
    client = pair.clients[0]
    job = await pair.job(client)
    url = f"/api/v1/remote-jobs/{job}/progress"

    assert (await client.put(url, json={"percentage": 5}, headers=fresh)).status_code == 200
    assert (await client.put(url, json={"percentage": 6}, headers=fresh)).status_code == 200

    token = (await client.post("/api/v1/stream-tokens", headers=fresh)).json()["token"]
    bearer_token = {"Authorization": f"Bearer {token}"}
    assert (await client.put(url, json={"percentage": 7}, headers=bearer_token)).status_code == 401

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"percentage": '
        yield b"8}"

    chunked = await client.put(
        url, content=chunks(), headers={**fresh, "content-type": "application/json"}
    )
    assert chunked.status_code == 200
    assert chunked.json()["job"]["percentage"] == 8

    huge = b'{"percentage": 9, "message": "' + b"x" * 200_000 + b'"}'
    assert (await client.put(url, content=huge, headers=fresh)).status_code == 413

    async def huge_chunks() -> AsyncIterator[bytes]:  # no length to refuse it by: counted
        for _ in range(20):
            yield b"x" * 20_000

    endless = await client.put(url, content=huge_chunks(), headers=fresh)
    assert endless.status_code == 413

    bad_id = await client.put(
        "/api/v1/remote-jobs/a%20b/progress", json={"percentage": 1}, headers=fresh
    )
    assert bad_id.status_code == 422
    [error] = bad_id.json()["detail"]
    assert error["loc"] == ["path", "job_id"]


@contextlib.asynccontextmanager
async def _rated(
    store: SQLStore, rate: float
) -> AsyncIterator[tuple[httpx.AsyncClient, str, Auth]]:
    """A client of an app with the key cache on and ``rate`` requests a second per key, a
    key, and a job made with it (the request that put the key in the cache)."""
    app = create_app(Settings(rate_limit_per_second=rate, key_cache_seconds=60), store=store)
    _, secret = store.create_key(user_id="alice", role=Role.USER, name=None, now=utcnow())
    auth = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        created = await c.post(
            "/api/v1/jobs", json={"document_name": "a", "document_type": "b"}, headers=auth
        )
        assert created.status_code == 201
        yield c, f"/api/v1/remote-jobs/{created.json()['id']}/progress", auth


async def test_the_route_keeps_the_keys_rate(store: SQLStore) -> None:
    """Past the key's rate the route answers 429 with Retry-After, for a cached key too."""
    async with _rated(store, 0.01) as (client, url, auth):  # one token per 100 s: spent
        limited = await client.put(url, json={"percentage": 1}, headers=auth)
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1


async def test_a_body_that_does_not_validate_is_charged_once(store: SQLStore) -> None:
    """A request is charged once, when its key is checked: a bad body is the route's 422, not
    429."""
    async with _rated(store, 2) as (client, url, auth):  # two tokens: one left
        bad = await client.put(url, json={"percentage": 101}, headers=auth)
    assert bad.status_code == 422


async def test_a_second_authorization_header_is_not_read(pair: Pair) -> None:
    """Two Authorization headers, the cached key last: the first is read, as for every route."""

    async def twice(client: httpx.AsyncClient, auth: dict[str, str], job: str) -> httpx.Response:
        headers = [("Authorization", "Bearer mpk_wrong"), ("Authorization", auth["Authorization"])]
        return await client.put(
            f"/api/v1/remote-jobs/{job}/progress", json={"percentage": 3}, headers=headers
        )

    answer, _ = await pair.both(twice)
    assert answer.status_code == 401


async def test_middleware_an_embedder_adds_covers_the_hot_route(store: SQLStore) -> None:
    """The progress route, served ahead of FastAPI, still runs inside the app's middleware,
    including middleware added after create_app (here CORS)."""
    from fastapi.middleware.cors import CORSMiddleware

    app = create_app(Settings(rate_limit_per_second=0), store=store)
    app.add_middleware(CORSMiddleware, allow_origins=["*"])
    _, secret = store.create_key(user_id="alice", role=Role.USER, name=None, now=utcnow())
    auth = {"Authorization": f"Bearer {secret}", "Origin": "https://dash.example"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        created = await c.post(
            "/api/v1/jobs", json={"document_name": "a", "document_type": "b"}, headers=auth
        )
        job = created.json()["id"]
        put = await c.put(
            f"/api/v1/remote-jobs/{job}/progress", json={"percentage": 5}, headers=auth
        )
    assert put.status_code == 200
    assert put.headers["access-control-allow-origin"] == "*"


async def test_an_embedders_handler_answers_the_hot_routes_errors(store: SQLStore) -> None:
    """An exception handler the embedder registers (a plain function, as Starlette allows)
    answers the progress route's errors as it answers every route's."""
    from fastapi.responses import JSONResponse

    from morag_progress.errors import JobNotFoundError

    app = create_app(Settings(rate_limit_per_second=0), store=store)

    def not_found(_: Any, e: Exception) -> JSONResponse:
        return JSONResponse({"gone": str(e)}, status_code=410)

    app.add_exception_handler(JobNotFoundError, not_found)
    _, secret = store.create_key(user_id="alice", role=Role.USER, name=None, now=utcnow())
    auth = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        put = await c.put(
            "/api/v1/remote-jobs/ghost/progress", json={"percentage": 5}, headers=auth
        )
        read = await c.get("/api/v1/jobs/ghost", headers=auth)
    assert (put.status_code, put.json()) == (410, {"gone": "job 'ghost' not found"})
    assert read.status_code == 410
