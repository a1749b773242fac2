"""Reading a server's event stream (``text/event-stream``): one parser, fed a line at a time,
behind a blocking reader (the CLI's ``watch``) and an asynchronous one (the MCP server's
``watch_job``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

__all__ = ["MAX_EVENT_CHARS", "EventParser", "ServerEvent", "aread_events", "read_events"]

MAX_EVENT_CHARS = 4 * 1024 * 1024
"""Characters of one event's data kept at most: a longer event is dropped, not buffered."""


@dataclass
class ServerEvent:
    """One server-sent event."""

    event: str = "message"
    data: str = ""
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


class EventParser:
    """Server-sent events from a stream's lines. Comments (keep-alives) come as events named
    ``comment``, so readers can look at the clock."""

    def __init__(self) -> None:
        self._event = ServerEvent()
        self._lines: list[str] = []
        self._size = 0

    def feed(self, line: str) -> ServerEvent | None:
        """The event ``line`` completes, if any."""
        if line == "":
            event, lines, size = self._event, self._lines, self._size
            self._event, self._lines, self._size = ServerEvent(), [], 0
            if not lines or size > MAX_EVENT_CHARS:
                return None
            event.data = "\n".join(lines)
            return event
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "":
            return ServerEvent(event="comment", data=value)
        if name == "data":
            self._size += len(value) + 1
            if self._size <= MAX_EVENT_CHARS:
                self._lines.append(value)
        elif name == "event":
            self._event.event = value
        elif name == "id":
            self._event.id = value
        return None


def read_events(response: httpx.Response) -> Iterator[ServerEvent]:
    """The events of a streaming response, as they come."""
    parser = EventParser()
    for line in response.iter_lines():
        event = parser.feed(line)
        if event is not None:
            yield event


async def aread_events(response: httpx.Response) -> AsyncIterator[ServerEvent]:
    """The events of an asynchronous streaming response, as they come."""
    parser = EventParser()
    async for line in response.aiter_lines():
        event = parser.feed(line)
        if event is not None:
            yield event
