"""The event-stream response, driven as an ASGI server drives it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest

from morag_progress.api.sse import EventStream, Streams, encode


def test_encode_writes_each_line_of_data_as_its_own_field() -> None:
    assert encode('{"a":1}', event="progress", id=7) == (
        b'event: progress\r\nid: 7\r\ndata: {"a":1}\r\n\r\n'
    )
    assert encode("two\nlines") == b"data: two\r\ndata: lines\r\n\r\n"
    assert encode("") == b"data: \r\n\r\n"


class Client:
    """The server's side of one request: what the app sent, and the client leaving."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.gone = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.sent.append(dict(message))

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent[1:])

    @property
    def complete(self) -> bool:
        return bool(self.sent) and not self.sent[-1].get("more_body", False)


def _scope(method: str = "GET") -> dict[str, Any]:
    return {"type": "http", "method": method, "path": "/events", "headers": []}


async def _source(
    *batches: list[bytes], then: asyncio.Event | None = None
) -> AsyncIterator[list[bytes]]:
    for batch in batches:
        yield batch
    if then is not None:
        await then.wait()


async def test_batches_go_out_as_one_chunk_each_and_the_response_completes() -> None:
    ended: list[bool] = []
    stream = EventStream(
        _source([b"a\r\n\r\n", b"b\r\n\r\n"], [], [b"c\r\n\r\n"]),
        streams=Streams(),
        ping=60,
        after=lambda: ended.append(True),
    )
    client = Client()
    await stream(_scope(), client.receive, client.send)
    start = client.sent[0]
    assert (start["status"], dict(start["headers"])[b"content-type"]) == (
        200,
        b"text/event-stream; charset=utf-8",
    )
    # One chunk a batch; an empty batch with no keep-alive due writes nothing.
    assert [m["body"] for m in client.sent[1:-1]] == [
        b"a\r\n\r\nb\r\n\r\n",
        b"c\r\n\r\n",
    ]
    assert client.complete
    assert ended == [True]


async def test_an_empty_batch_writes_a_keep_alive_once_the_stream_was_quiet() -> None:
    async def quiet() -> AsyncIterator[list[bytes]]:
        yield []
        await asyncio.sleep(0.06)
        yield []

    client = Client()
    await EventStream(quiet(), streams=Streams(), ping=0.1)(_scope(), client.receive, client.send)
    assert client.body == b": ping\r\n\r\n"


async def test_the_client_leaving_ends_the_stream_and_its_source() -> None:
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[list[bytes]]:
        try:
            yield [b"x\r\n\r\n"]
            await asyncio.Event().wait()
            yield []
        finally:
            closed.set()

    client = Client()
    ended: list[bool] = []
    running = asyncio.create_task(
        EventStream(endless(), streams=Streams(), ping=60, after=lambda: ended.append(True))(
            _scope(), client.receive, client.send
        )
    )
    await asyncio.sleep(0.01)
    client.gone.set()
    await asyncio.wait_for(running, 2)
    assert closed.is_set()
    assert ended == [True]
    assert client.body == b"x\r\n\r\n"


async def test_closing_the_streams_ends_each_open_one_and_any_opened_after() -> None:
    streams = Streams()
    forever = asyncio.Event()
    clients = [Client(), Client()]
    running = [
        asyncio.create_task(
            EventStream(_source([b"x\r\n\r\n"], then=forever), streams=streams, ping=60)(
                _scope(), c.receive, c.send
            )
        )
        for c in clients
    ]
    await asyncio.sleep(0.01)
    assert len(streams) == 2
    streams.close()
    await asyncio.wait_for(asyncio.gather(*running), 2)
    assert all(c.complete and c.body == b"x\r\n\r\n" for c in clients)
    late = Client()
    await asyncio.wait_for(
        EventStream(_source(then=forever), streams=streams, ping=60)(
            _scope(), late.receive, late.send
        ),
        2,
    )
    assert late.complete
    assert late.body == b""
    assert len(streams) == 0


async def test_head_answers_the_headers_alone() -> None:
    client = Client()
    ended: list[bool] = []
    await EventStream(
        _source([b"x"]), streams=Streams(), ping=60, after=lambda: ended.append(True)
    )(_scope("HEAD"), client.receive, client.send)
    assert client.sent[0]["status"] == 200
    assert client.body == b""
    assert client.complete
    assert ended == [True]


async def test_a_failing_source_fails_the_response_after_cleaning_up() -> None:
    async def broken() -> AsyncIterator[list[bytes]]:
        yield [b"x\r\n\r\n"]
        raise RuntimeError("the store went away")

    client = Client()
    ended: list[bool] = []
    with pytest.raises(RuntimeError, match="the store went away"):
        await EventStream(broken(), streams=Streams(), ping=60, after=lambda: ended.append(True))(
            _scope(), client.receive, client.send
        )
    assert ended == [True]


async def test_streams_open_again_after_a_stop() -> None:
    """An app started again after a stop (an embedder's tests) takes streams again."""
    streams = Streams()
    streams.close()
    streams.open()
    client = Client()
    await EventStream(_source([b"x\r\n\r\n"]), streams=streams, ping=60)(
        _scope(), client.receive, client.send
    )
    assert client.body == b"x\r\n\r\n"
