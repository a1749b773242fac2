"""Server-sent events: the encoding, and a streaming response that costs one send per batch.

A stream serves a long-lived subscriber: per delivered event it should cost about what writing
the bytes costs. So the response is one task looping over its source (``batches``: lists of
encoded events, each batch written as one body chunk), plus one task waiting for the client to
leave; keep-alive comments are written when the source is silent for ``ping`` seconds. There is
no lock and no timer per event: the source is the only writer, and a client that does not read
holds up only its own stream (the ASGI server's flow control), while the subscription behind it
keeps the latest state per job (``feed.Subscription``).

A stream ends when its source ends, when the client leaves, or when ``Streams.close`` is called:
the server stopping (uvicorn waits for open responses before it runs the lifespan's shutdown, so
``morag-progress serve`` tells the streams to end as it begins to stop; see
``server.GuardedProtocol.shutdown``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

__all__ = ["HEADERS", "EventStream", "Streams", "encode"]

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    # nginx buffers responses unless told not to: events would arrive in bursts.
    (b"x-accel-buffering", b"no"),
]
"""Every stream's response headers."""

_PING = b": ping\r\n\r\n"


def encode(data: str, *, event: str | None = None, id: str | int | None = None) -> bytes:
    """One event as the wire carries it (``event:``, ``id:``, one ``data:`` line per line of
    ``data``, a blank line). ``id`` and ``event`` must not hold line breaks (they are ours)."""
    parts = []
    if event is not None:
        parts.append(f"event: {event}\r\n")
    if id is not None:
        parts.append(f"id: {id}\r\n")
    for line in data.splitlines() or [""]:
        parts.append(f"data: {line}\r\n")
    parts.append("\r\n")
    return "".join(parts).encode()


class Streams:
    """The open streams of one app, so that the server stopping can end them all."""

    def __init__(self) -> None:
        self._open: set[asyncio.Event] = set()
        self.closing = False

    def open(self) -> None:
        """Take streams (the app is starting, perhaps again after a stop)."""
        self.closing = False

    def close(self) -> None:
        """End every open stream (each sends what it holds and finishes its response); streams
        opened from now on end at once, until ``open``."""
        self.closing = True
        for stop in self._open:
            stop.set()

    @contextlib.contextmanager
    def tracking(self, stop: asyncio.Event) -> Iterator[None]:
        """Count a stream as open while the block runs; ``stop`` is set when the streams are
        closed (at once, if they are closed already)."""
        if self.closing:
            stop.set()
        self._open.add(stop)
        try:
            yield
        finally:
            self._open.discard(stop)

    def __len__(self) -> int:
        return len(self._open)


class EventStream(Response):
    """A response streaming ``batches`` (each a list of encoded events, written as one
    body chunk) as ``text/event-stream``. An empty batch (the source yields one at least every
    half ``ping``) writes a keep-alive comment when nothing was written for half ``ping``: an
    idle stream is never silent for ``ping`` seconds. ``after`` runs when the stream has ended,
    however it ended."""

    media_type = "text/event-stream"

    def __init__(  # Response's own arguments do not apply: a stream is always a 200
        self,
        batches: AsyncIterator[list[bytes]],
        *,
        streams: Streams,
        ping: float,
        after: Callable[[], None] | None = None,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.raw_headers = list(HEADERS)
        self.batches = batches
        self.streams = streams
        self.ping = ping
        self.after = after

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            if scope["method"] != "HEAD":
                await self._run(receive, send)
            await send({"type": "http.response.body", "body": b""})
        finally:
            with contextlib.suppress(Exception):
                await self.batches.aclose()  # type: ignore[attr-defined]
            if self.after is not None:
                self.after()

    async def _run(self, receive: Receive, send: Send) -> None:
        """Write until the source ends, the client leaves or the streams are closed."""
        stop = asyncio.Event()
        with self.streams.tracking(stop):
            if stop.is_set():
                return
            writing = asyncio.create_task(self._write(send))
            ends = {writing, asyncio.create_task(_left(receive)), asyncio.create_task(stop.wait())}
            try:
                await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in ends:
                    task.cancel()
                await asyncio.wait(ends)
            if not writing.cancelled() and writing.exception() is not None:
                raise writing.exception()  # type: ignore[misc]

    async def _write(self, send: Send) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        async for batch in self.batches:
            if batch:
                body = batch[0] if len(batch) == 1 else b"".join(batch)
            elif loop.time() - last >= self.ping / 2:  # asked every half ``ping`` at least
                body = _PING
            else:
                continue
            await send({"type": "http.response.body", "body": body, "more_body": True})
            last = loop.time()


async def _left(receive: Receive) -> None:
    """Return once the client has gone."""
    while (await receive())["type"] != "http.disconnect":
        pass
