"""Log uploads: parsed apart from the server's event loop, coalesced to a bounded number of
updates.

A 1 MiB upload carries about 30,000 progress lines. Parsing them is pure Python work of about
75 ms (each line is only *sighted*, its percentage and its own time read; events are built for
the few lines kept). In the server's process it would hold the GIL, and four uploads at once
starved every other request (another user's report waited seconds). So uploads are parsed in a
small pool of worker processes (``MORAG_PROGRESS_LOG_PARSE_PROCESSES``, 1 by default; 0 parses
in a thread), and what comes back is already coalesced (:func:`coalesce`): at most 50 updates,
so the write that follows holds the lock for milliseconds.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from starlette.concurrency import run_in_threadpool

from morag_progress.api.auth import Principal
from morag_progress.bounds import MIN_TIMESTAMP
from morag_progress.errors import LimitExceededError
from morag_progress.models import ProgressEvent, ProgressUpdate
from morag_progress.parser import ProgressEventParser, Sighting

__all__ = ["LOG_UPDATES", "ParsedUpload", "UploadParser", "coalesce", "log_update", "parse_upload"]

logger = logging.getLogger(__name__)

_parser = ProgressEventParser()
LOG_UPDATES = 50
"""The most updates one log upload applies: a 1 MiB upload holds the write lock for
milliseconds, not for the 30,000 updates its lines may carry."""


class Seen(Protocol):
    """What ``coalesce`` reads of a line's progress: a ``Sighting`` or a ``ProgressEvent``."""

    @property
    def percentage(self) -> int: ...

    @property
    def source_timestamp(self) -> datetime | None: ...


_Seen = TypeVar("_Seen", bound=Seen)


def coalesce(
    events: Iterable[_Seen], limit: int = LOG_UPDATES
) -> tuple[list[tuple[int, _Seen]], int]:
    """The events of one upload worth applying, with their line order (``seq``), and how
    many events there were. Kept: the last of each run of equal percentage, thinned evenly to
    at most ``limit`` (in one pass, holding at most ``2 * limit``: the stride doubles when that
    fills); always the last event, the last one without a timestamp of its own (ordered at
    receipt, after every stamped one) and the one with the newest timestamp, so the job ends
    in the state applying every line would leave it in."""
    kept: list[tuple[int, _Seen]] = []
    stride, runs, count = 1, 0, 0
    previous: tuple[int, _Seen] | None = None
    newest: tuple[int, _Seen] | None = None
    newest_at: datetime | None = None
    unstamped: tuple[int, _Seen] | None = None
    for seq, event in enumerate(events):
        count += 1
        stamp = event.source_timestamp
        if stamp is None:
            unstamped = (seq, event)
        elif newest_at is None or stamp >= newest_at:
            newest, newest_at = (seq, event), stamp
        if previous is not None and previous[1].percentage != event.percentage:
            if runs % stride == 0:  # ``previous`` ended a run
                kept.append(previous)
                if len(kept) >= 2 * limit:
                    kept, stride = kept[::2], stride * 2
            runs += 1
        previous = (seq, event)
    if len(kept) > limit - 3:
        step = len(kept) / (limit - 3)
        kept = [kept[math.floor(i * step)] for i in range(limit - 3)]
    chosen = {seq: event for seq, event in kept}
    for extra in (previous, newest, unstamped):
        if extra is not None:
            chosen[extra[0]] = extra[1]
    return sorted(chosen.items()), count


def log_update(
    job_id: str, seq: int, event: ProgressEvent, caller: Principal, latest: datetime
) -> ProgressUpdate:
    """A log line's update; a time of its own that cannot order it (before 1970, or past the
    allowed skew) is dropped rather than failing the upload: the line keeps its place."""
    stamp = event.source_timestamp
    if stamp is not None and not (MIN_TIMESTAMP <= stamp <= latest):
        stamp = None
    return ProgressUpdate(
        job_id,
        event.percentage,
        event.message,
        timestamp=stamp,
        current=_count(event.current),
        total=_count(event.total),
        seq=seq,  # lines without a time of their own keep the order they were sent in
        user_id=caller.scope,
        claimant=caller.claimant,
        actor=caller.actor,
    )


def _count(value: int | None) -> int | None:
    """A count a log line gave, if the store can hold it (a tqdm bar may say anything)."""
    return value if value is None or 0 <= value <= 2**63 - 1 else None


@dataclass(frozen=True, slots=True)
class ParsedUpload:
    """What an upload holds: its lines, how many carried progress, and those worth applying."""

    lines: int
    events: int
    chosen: list[tuple[int, ProgressEvent]]


def parse_upload(body: bytes) -> ParsedUpload:
    """Decode (invalid UTF-8 replaced), split, parse and coalesce an upload's body; only the
    lines kept become events (``Sighting``)."""
    lines = body.decode("utf-8", errors="replace").splitlines()
    chosen: list[tuple[int, Sighting]]
    chosen, events = coalesce(_parser.iter_sightings(lines))
    return ParsedUpload(len(lines), events, [(seq, seen.event()) for seq, seen in chosen])


class UploadParser:
    """Parses uploads in ``processes`` worker processes (started on first use, with the spawn
    method: the server's threads are not forked), or in a thread when ``processes`` is 0."""

    def __init__(self, processes: int = 1, *, per_user: int = 2, waiting: int = 8) -> None:
        self.processes = processes
        self.per_user = per_user
        self.most = max(1, processes) * waiting
        self._pool: ProcessPoolExecutor | None = None
        self._by_user: Counter[str] = Counter()

    async def parse(self, body: bytes, user: str = "") -> ParsedUpload:
        """Parse ``body`` for ``user``: 429 when that user has ``per_user`` uploads being
        parsed (whatever keys they came with), or when ``waiting`` per process are (one user
        cannot queue everyone else's behind theirs)."""
        if self._by_user[user] >= self.per_user:
            raise LimitExceededError(
                f"this user has {self.per_user} log uploads being parsed; wait for one", 1
            )
        if sum(self._by_user.values()) >= self.most:
            raise LimitExceededError("the server is parsing as many uploads as it takes", 1)
        self._by_user[user] += 1
        try:
            if not self.processes:
                return await run_in_threadpool(parse_upload, body)
            loop = asyncio.get_running_loop()
            pool = self._workers()
            try:
                return await loop.run_in_executor(pool, parse_upload, body)
            except BrokenProcessPool:
                # A worker process died (killed, out of memory): the pool is unusable for
                # good. Start a new one for this upload and every later one.
                logger.warning("the log parse processes died; starting new ones")
                if self._pool is pool:
                    self._pool = None
                    pool.shutdown(wait=False, cancel_futures=True)
                return await loop.run_in_executor(self._workers(), parse_upload, body)
        finally:
            self._by_user[user] -= 1
            if not self._by_user[user]:
                del self._by_user[user]

    def _workers(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.processes, mp_context=multiprocessing.get_context("spawn")
            )
        return self._pool

    def close(self) -> None:
        """Stop the worker processes (uploads still being parsed are cancelled)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
