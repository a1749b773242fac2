"""Reading an event stream: names, ids, multi-line data, comments as keep-alives, the same
blocking and asynchronous, and an event past the size limit dropped rather than buffered."""

from __future__ import annotations

import asyncio

import httpx
from hypothesis import given
from hypothesis import strategies as st

from morag_progress.client.events import (
    MAX_EVENT_CHARS,
    EventParser,
    ServerEvent,
    aread_events,
    read_events,
)

BODY = b": ping\r\n\r\nevent: snapshot\r\nid: 7\r\ndata: [1,\r\ndata: 2]\r\n\r\ndata: x\r\n\r\n"


def test_read_events_parses_the_stream() -> None:
    """Events with names, ids and multi-line data; comments come as 'comment' events."""
    events = list(read_events(httpx.Response(200, content=BODY)))
    assert [(e.event, e.id) for e in events] == [
        ("comment", None),
        ("snapshot", "7"),
        ("message", None),
    ]
    assert events[1].json() == [1, 2]


def test_the_asynchronous_reader_reads_the_same() -> None:
    async def read() -> list[ServerEvent]:
        response = httpx.Response(200, stream=httpx.ByteStream(BODY))
        return [event async for event in aread_events(response)]

    assert asyncio.run(read()) == list(read_events(httpx.Response(200, content=BODY)))


def test_an_event_past_the_limit_is_dropped_and_the_next_read() -> None:
    parser = EventParser()
    chunk = "x" * (MAX_EVENT_CHARS // 2)
    assert parser.feed(f"data: {chunk}") is None
    assert parser.feed(f"data: {chunk}") is None
    assert parser.feed("") is None  # 2 lines of half the limit, with their newline: too long
    assert parser.feed("data: small") is None
    assert parser.feed("") == ServerEvent(data="small")


@given(st.lists(st.text(max_size=50), max_size=30))
def test_any_lines_parse_without_raising(lines: list[str]) -> None:
    parser = EventParser()
    for line in lines:
        parser.feed(line)
