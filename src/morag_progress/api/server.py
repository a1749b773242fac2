"""Serving the app with uvicorn, with the connection bounds uvicorn does not have.

uvicorn closes idle keep-alive connections, but a connection that never sends a request,
sends its headers a byte at a time, or never reads its answer is held for ever, and it
accepts as many connections as the process has file descriptors: tens of thousands of idle
sockets then leave none for the database. :class:`GuardedProtocol` adds these bounds to
uvicorn's httptools protocol:

- a cap on open connections (``max_connections``): one more is answered 503 and closed at once;
- a header deadline (``header_timeout``): a connection that has not sent a whole request line
  and headers this long after it opened (or after its previous answer) is closed (408);
- a body deadline (``body_timeout``): a request whose body has not all arrived this long after
  its headers is closed (408), so a body sent a byte at a time holds nothing for long;
- a cap on the size of the request line and headers (``max_header_bytes``): past it, 400;
- a send deadline (``send_timeout``): a client that reads nothing of an answer for this long
  while the connection's send buffer is full (past the transport's high-water mark) is
  dropped, and what was buffered for it with it, so a client that never reads holds neither
  memory nor a stream for long. A slow reader that makes progress is not cut off.

uvicorn has settings for none of these but the cap (its ``limit_concurrency`` answers 503 only
once a request's headers are in, so idle sockets still pile up), so the guard extends its
protocol's callbacks; uvicorn is pinned to a minor version for it, and
``tests/api/test_server.py`` fails on an upgrade that changes what the guard relies on. Behind a
reverse proxy the proxy's own limits come first (``docs/deployment.md``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import fcntl
import gc
import logging
import os
import re
import resource
import socket
import struct
import sys
import termios
from typing import Any, ClassVar
from urllib.parse import unquote

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from morag_progress.api.sse import Streams
from morag_progress.settings import Settings

__all__ = [
    "GuardedProtocol",
    "RedactSecrets",
    "default_max_connections",
    "settle_allocator",
    "settle_collector",
    "uvicorn_config",
]

_OUTQ = getattr(termios, "TIOCOUTQ", None) if sys.platform == "linux" else None
"""The ioctl that reads a TCP socket's unacknowledged bytes (Linux's SIOCOUTQ)."""

_RESET = struct.pack("ii", 1, 0)
"""SO_LINGER on, zero seconds: closing the socket resets it, dropping what is queued."""

_RESERVED_FDS = 128  # for the database, log files, webhook connections and the listening socket


def default_max_connections() -> int:
    """The process's soft limit on open files, less a reserve; at least 64."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 10_000
    return max(64, soft - _RESERVED_FDS)


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a connection cap, a header deadline and a header size
    cap (configured on a subclass made by :func:`uvicorn_config`)."""

    max_connections: ClassVar[int] = 10_000
    header_timeout: ClassVar[float] = 10.0
    body_timeout: ClassVar[float] = 30.0
    max_header_bytes: ClassVar[int] = 64 * 1024
    send_timeout: ClassVar[float] = 30.0
    streams: ClassVar[Streams | None] = None
    """The served app's event streams, ended when the server stops."""

    _deadline: float | None = None  # when (loop time) the current wait ends; None: no wait
    _timer: asyncio.TimerHandle | None = None  # checks the deadline, at or before it
    _send_deadline: asyncio.TimerHandle | None = None
    _unsent = 0  # bytes buffered for the client when its send deadline was (re)armed
    _header_bytes = 0
    _receiving = False  # between a request's headers and the end of its body

    # The rule: a connection always has a deadline, except while the server itself is busy
    # answering a request that has fully arrived. Waiting for headers: header_timeout; for the
    # rest of a body: body_timeout (kept even when the answer came early, as a 404 or 413 may).

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            transport.write(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n"
                b"connection: close\r\nretry-after: 1\r\n\r\n"
            )
            transport.close()
            return
        self._arm(self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._not_sending()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        """The client is not reading as fast as the answer is written: it has
        ``send_timeout`` to read some of it."""
        super().pause_writing()
        self._sending(self._unsent_bytes())

    def resume_writing(self) -> None:
        self._not_sending()
        super().resume_writing()

    def _sending(self, unsent: int) -> None:
        self._not_sending()
        self._unsent = unsent
        self._send_deadline = self.loop.call_later(self.send_timeout, self._check_reading)

    def _not_sending(self) -> None:
        if self._send_deadline is not None:
            self._send_deadline.cancel()
            self._send_deadline = None

    def _unsent_bytes(self) -> int:
        """What the client has not acknowledged yet: the transport's buffer and, on Linux,
        the kernel's send queue (which the transport fills only in large steps, so its own
        buffer alone can stand still for seconds while the client reads steadily)."""
        unsent = self.transport.get_write_buffer_size()
        sock = self.transport.get_extra_info("socket")
        if _OUTQ is not None and sock is not None:
            with contextlib.suppress(OSError, ValueError):
                queued = fcntl.ioctl(sock.fileno(), _OUTQ, b"\0" * 4)
                unsent += int.from_bytes(queued, sys.byteorder, signed=True)
        return unsent

    def _check_reading(self) -> None:
        self._send_deadline = None
        unsent = self._unsent_bytes()
        if unsent < self._unsent:  # it read some: another period to read more
            self._sending(unsent)
        elif not self.transport.is_closing() or unsent:
            # Not close(), which would wait to send the buffer to a client that never reads;
            # and a reset, so that the kernel drops its queue too rather than keep sending it.
            sock = self.transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError, ValueError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            self.transport.abort()

    def shutdown(self) -> None:
        """The server is stopping: open event streams end (each finishes its response, and
        uvicorn then closes its connection), rather than holding the stop until they go."""
        if self.streams is not None:
            self.streams.close()
        super().shutdown()

    def on_message_begin(self) -> None:
        self._header_bytes = 0
        if self._deadline is None:  # a request begins on a connection without one
            self._arm(self.header_timeout)
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._receiving = True
        self._arm(self.body_timeout)  # until the body is in (at once, for a request without)

    def on_message_complete(self) -> None:
        self._receiving = False
        super().on_message_complete()
        if self.cycle is not None and self.cycle.response_complete:
            self._arm(self.header_timeout)  # answered early: now waiting for the next request
        else:
            self._disarm()  # the server is answering

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._receiving or self.transport.is_closing():
            return  # the body deadline runs on
        # The next request's headers get the deadline, unless that request is here already (a
        # pipelined one whose answer has just started).
        if self.cycle is None or self.cycle.response_complete:
            self._arm(self.header_timeout)

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.max_header_bytes:
            # httptools turns a callback's exception into a parser error: uvicorn answers 400
            # and closes the connection.
            raise ValueError(f"request headers over {self.max_header_bytes} bytes")

    # A deadline is moved several times a request (headers, body, answered): it is a time
    # kept on the connection, and one timer checks it. The timer is rescheduled only when a
    # deadline comes before it, or when it fires and finds the deadline moved on: about once
    # per header_timeout per connection, instead of a timer made and cancelled per move.

    def _arm(self, seconds: float) -> None:
        deadline = self._deadline = self.loop.time() + seconds
        timer = self._timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = self.loop.call_at(deadline, self._check_deadline)

    def _disarm(self) -> None:
        self._deadline = None  # a pending check finds no deadline and stops

    def _check_deadline(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None:
            return
        if deadline > self.loop.time():
            self._timer = self.loop.call_at(deadline, self._check_deadline)
            return
        self._too_slow()

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
            self.transport.close()


class RedactSecrets(logging.Filter):
    """A log filter that hides secrets in access log lines: the value of a ``token`` query
    parameter (stream tokens in browser URLs) and the password of URLs with user info."""

    _TOKEN = re.compile(r"((?:^|[?&;])(?:token|api_key|key|access_token)=)[^&\s\"]*", re.I)
    _USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s/]*@", re.I)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            # A URL may come as an object (httpx logs httpx.URL): redact its text.
            record.args = tuple(
                arg if isinstance(arg, int | float) else self.redact(str(arg))
                for arg in record.args
            )
        if isinstance(record.msg, str):
            record.msg = self.redact(record.msg)
        return True

    @classmethod
    def redact(cls, text: str) -> str:
        """``text`` with token values and URL passwords replaced by ``***`` (percent-encoded
        names too: ``?%74oken=`` is ``?token=`` to the server)."""
        if "%" in text:
            text = unquote(text)
        text = cls._TOKEN.sub(r"\1***", text)
        return cls._USERINFO.sub(r"\1***@", text)


_GRACEFUL_STOP_SECONDS = 10
"""How long ``serve`` waits, once stopping, for responses in progress before it ends them."""


def uvicorn_config(app: Any, settings: Settings, **options: Any) -> uvicorn.Config:
    """A uvicorn configuration for ``app`` with the settings' bounds on connections."""
    protocol = type(
        "MoragGuardedProtocol",
        (GuardedProtocol,),
        {
            "max_connections": settings.max_connections or default_max_connections(),
            "header_timeout": settings.header_timeout_seconds,
            "body_timeout": settings.body_timeout_seconds,
            "max_header_bytes": settings.max_header_bytes,
            "send_timeout": settings.send_timeout_seconds,
            "streams": getattr(getattr(app, "state", None), "streams", None),
        },
    )
    options.setdefault("host", settings.host)
    options.setdefault("port", settings.port)
    options.setdefault("timeout_keep_alive", 5)
    options.setdefault("access_log", settings.access_log)
    # A stop is bounded: a client that stays connected but never reads holds it no longer.
    options.setdefault("timeout_graceful_shutdown", _GRACEFUL_STOP_SECONDS)
    # Forwarded headers name the client only when they come from a proxy the operator names:
    # otherwise anyone could claim any address (limits per address, /metrics on loopback).
    if settings.forwarded_allow_ips:
        options.setdefault("proxy_headers", True)
        options.setdefault("forwarded_allow_ips", settings.forwarded_allow_ips)
    else:
        options.setdefault("proxy_headers", False)
    return uvicorn.Config(app, http=protocol, **options)


COLLECT_YOUNG_EVERY = 20_000
"""How many new container objects (net) the server allows before collecting the youngest
generation (Python's default is 700): see ``settle_collector``."""


def settle_collector() -> None:
    """Tune Python's garbage collector for a long-running server, once its app is built.

    Everything made until now (the imported libraries, the app, its routes and schemas: a few
    hundred thousand objects) lives as long as the process, yet every full collection walked
    all of it again: about 90 ms with the interpreter held, about 20 times a minute under
    load, which made most of the progress route's p99. ``gc.freeze`` moves those objects where
    the collector no longer looks. The youngest generation is then collected every
    ``COLLECT_YOUNG_EVERY`` allocations instead of every 700: a request makes and frees a few
    dozen objects, almost none in reference cycles, and walking them 70 times a second found
    next to nothing. What cycles there are still get collected; at most that many more
    objects wait for it. Figures: ``bench/README.md``.
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(COLLECT_YOUNG_EVERY, middle, oldest)


MALLOC_ARENAS = 2
"""How many malloc arenas the server's threads share (glibc's default: eight per core)."""

_M_ARENA_MAX = -8
"""glibc's ``mallopt`` parameter for the arena cap (``M_ARENA_MAX`` in ``malloc.h``)."""


def settle_allocator() -> bool:
    """Cap glibc's malloc arenas at ``MALLOC_ARENAS`` for a long-running server, before its
    threads start; True when the cap was set.

    glibc gives a thread that finds the arenas busy an arena of its own, up to eight per core,
    and keeps what each arena once held: the server's threads (the event loop, the writer, the
    read pool) each grew one, and the soak's memory grew by the freed pages they kept (about
    7 MB of the 10 MB it grew past its first minute; ``bench/README.md``). Two arenas keep
    the writer and the event loop apart. An operator's own ``MALLOC_ARENA_MAX`` (which glibc
    reads at start) is left as it is; another C library has no such cap, and nothing is done.
    """
    if "MALLOC_ARENA_MAX" in os.environ or sys.platform != "linux":
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, MALLOC_ARENAS))
