"""The fast lane answers the progress route exactly as the FastAPI route does.

Two apps over one store: one whose key cache is on (its ordinary reports take the lane), one
whose key cache is off (every request goes through FastAPI). Each case is played on both, on
jobs in the same state, and the answers must match: status, headers that matter, body.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from morag_progress.api import create_app
from morag_progress.api.fastlane import FastLane
from morag_progress.keys import Role, create_key
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


def _lane(app: FastAPI) -> FastLane:
    """The app's fast lane (its outermost middleware of our own), to count what it served."""
    app.middleware_stack = layer = app.build_middleware_stack()
    while not isinstance(layer, FastLane):
        layer = layer.app  # type: ignore[attr-defined]
    return layer


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
    """The same case on the lane's app and on the plain app."""

    def __init__(self, store: SQLStore) -> None:
        self.store = store
        self.lane_app = create_app(
            Settings(rate_limit_per_second=0, key_cache_seconds=60), store=store
        )
        self.plain_app = create_app(
            Settings(rate_limit_per_second=0, key_cache_seconds=0), store=store
        )
        self.lane = _lane(self.lane_app)
        key, secret = create_key(store, user_id="alice", role=Role.USER, name=None, now=utcnow())
        self.alice = {"Authorization": f"Bearer {secret}"}
        self.actor = f"user:{key.id}"
        self.clients = [
            httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://t")
            for a in (self.lane_app, self.plain_app)
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
        lane, plain = answers
        assert _comparable(lane) == _comparable(plain), (lane.text, plain.text)
        return lane, plain


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


async def test_an_ordinary_report_takes_the_lane_and_answers_as_the_route(pair: Pair) -> None:
    await pair.both(_put({"percentage": 40, "message": "Transcribing", "stage": "asr"}))
    answers = await pair.both(_put({"percentage": 100}))
    assert pair.lane.served == 2
    for answer in answers:  # the lane records who reported, as the route does
        [*_, last] = pair.store.history(answer.json()["job"]["id"], user_id="alice")
        assert (last.action, last.actor) == ("report", pair.actor)


async def test_a_stale_report_answers_as_the_route(pair: Pair) -> None:
    now = utcnow()

    async def newer(client: httpx.AsyncClient, job: str) -> None:
        body = {"percentage": 50, "timestamp": now.isoformat()}
        url = f"/api/v1/remote-jobs/{job}/progress"
        assert (await client.put(url, json=body, headers=pair.alice)).json()["applied"]

    older = (now - timedelta(seconds=5)).isoformat()
    lane, _ = await pair.both(_put({"percentage": 10, "timestamp": older}), newer)
    assert lane.json()["applied"] is False
    assert lane.json()["job"]["percentage"] == 50


async def test_error_outcomes_after_the_write_answer_as_the_route(pair: Pair) -> None:
    async def finish(client: httpx.AsyncClient, job: str) -> None:
        url = f"/api/v1/remote-jobs/{job}/result"
        response = await client.put(url, json={"success": True}, headers=pair.alice)
        assert response.status_code == 200

    lane, _ = await pair.both(_put({"percentage": 10}), finish)
    assert lane.status_code == 409

    async def unknown(client: httpx.AsyncClient, auth: dict[str, str], job: str) -> httpx.Response:
        return await client.put(
            "/api/v1/remote-jobs/nope/progress", json={"percentage": 1}, headers=auth
        )

    lane, _ = await pair.both(unknown)
    assert lane.status_code == 404
    assert pair.lane.served >= 2  # the lane answered them, after the write found nothing to do


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
    lane, _ = await pair.both(play)
    assert lane.status_code == status
    assert pair.lane.served == 0


async def test_what_the_lane_does_not_take_is_served_by_the_app(pair: Pair) -> None:
    """A key not yet checked, a stream token, a chunked body, a body over the limit and a bad
    id pass to the app, which answers as always."""
    _, secret = create_key(pair.store, user_id="alice", role=Role.USER, name=None, now=utcnow())
    fresh = {"Authorization": f"Bearer {secret}"}
    lane_client = pair.clients[0]
    job = await pair.job(lane_client)
    url = f"/api/v1/remote-jobs/{job}/progress"

    assert (await lane_client.put(url, json={"percentage": 5}, headers=fresh)).status_code == 200
    assert pair.lane.served == 0  # the app checked the key, and cached it
    assert (await lane_client.put(url, json={"percentage": 6}, headers=fresh)).status_code == 200
    assert pair.lane.served == 1

    token = (await lane_client.post("/api/v1/stream-tokens", headers=fresh)).json()["token"]
    bearer_token = {"Authorization": f"Bearer {token}"}
    assert (
        await lane_client.put(url, json={"percentage": 7}, headers=bearer_token)
    ).status_code == 401

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"percentage": '
        yield b"8}"

    chunked = await lane_client.put(
        url, content=chunks(), headers={**fresh, "content-type": "application/json"}
    )
    assert chunked.status_code == 200
    assert chunked.json()["job"]["percentage"] == 8

    huge = b'{"percentage": 9, "message": "' + b"x" * 200_000 + b'"}'
    assert (await lane_client.put(url, content=huge, headers=fresh)).status_code == 413

    bad_id = await lane_client.put(
        "/api/v1/remote-jobs/a%20b/progress", json={"percentage": 1}, headers=fresh
    )
    assert bad_id.status_code == 422
    assert pair.lane.served == 1


@contextlib.asynccontextmanager
async def _rated(
    store: SQLStore, rate: float
) -> AsyncIterator[tuple[httpx.AsyncClient, str, Auth]]:
    """A client of an app with the key cache on and ``rate`` requests a second per key, a
    key, and a job made with it (the request that put the key in the cache)."""
    app = create_app(Settings(rate_limit_per_second=rate, key_cache_seconds=60), store=store)
    _, secret = create_key(store, user_id="alice", role=Role.USER, name=None, now=utcnow())
    auth = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        created = await c.post(
            "/api/v1/jobs", json={"document_name": "a", "document_type": "b"}, headers=auth
        )
        assert created.status_code == 201
        yield c, f"/api/v1/remote-jobs/{created.json()['id']}/progress", auth


async def test_the_lane_keeps_the_keys_rate(store: SQLStore) -> None:
    """Past the key's rate the app answers 429 with Retry-After, lane or not."""
    async with _rated(store, 0.25) as (client, url, auth):  # one token for the next 4 s: spent
        limited = await client.put(url, json={"percentage": 1}, headers=auth)
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1


async def test_a_body_that_does_not_validate_is_charged_once(store: SQLStore) -> None:
    """The lane takes the rate's token last: a report it passes to the app (which charges it)
    is not charged twice, so the answer is the route's 422, not 429."""
    async with _rated(store, 2) as (client, url, auth):  # two tokens: one left
        bad = await client.put(url, json={"percentage": 101}, headers=auth)
    assert bad.status_code == 422


async def test_a_second_authorization_header_is_the_apps_to_judge(pair: Pair) -> None:
    """Two Authorization headers, the cached key last: the app reads the first, as always."""

    async def twice(client: httpx.AsyncClient, auth: dict[str, str], job: str) -> httpx.Response:
        headers = [("Authorization", "Bearer mpk_wrong"), ("Authorization", auth["Authorization"])]
        return await client.put(
            f"/api/v1/remote-jobs/{job}/progress", json={"percentage": 3}, headers=headers
        )

    lane, _ = await pair.both(twice)
    assert lane.status_code == 401
    assert pair.lane.served == 0
