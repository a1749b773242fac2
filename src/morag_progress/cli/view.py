"""A live terminal view of jobs fed by the server's event stream (``watch`` and ``demo``)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

__all__ = ["JobsView", "ServerEvent", "read_events"]

_STYLE = {
    "PENDING": "dim",
    "WAITING_FOR_REMOTE_WORKER": "dim",
    "PROCESSING": "cyan",
    "STALLED": "yellow",
    "FINISHED": "green",
    "FAILED": "red",
    "CANCELLED": "magenta",
}
TERMINAL = frozenset({"FINISHED", "FAILED", "CANCELLED"})
_SMOOTHING = 0.3  # tqdm's default


@dataclass
class ServerEvent:
    """One server-sent event."""

    event: str = "message"
    data: str = ""
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


def read_events(response: httpx.Response) -> Iterator[ServerEvent]:
    """Server-sent events from a streaming response; comments (keep-alives) come as events
    named ``comment``."""
    event = ServerEvent()
    lines: list[str] = []
    for line in response.iter_lines():
        if line == "":
            if lines:
                event.data = "\n".join(lines)
                yield event
            event, lines = ServerEvent(), []
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "":  # a comment (keep-alive): told apart so readers can look at the clock
            yield ServerEvent(event="comment", data=value)
        elif name == "data":
            lines.append(value)
        elif name == "event":
            event.event = value
        elif name == "id":
            event.id = value


def _seconds(value: float | None) -> str:
    if value is None:
        return ""
    value = int(value)
    if value >= 3600:
        return f"{value // 3600}:{value % 3600 // 60:02d}:{value % 60:02d}"
    return f"{value // 60}:{value % 60:02d}"


@dataclass
class JobsView:
    """The jobs on screen: snapshots from the API, moved by progress events. Rate and ETA
    are smoothed here from the events' own timestamps, as tqdm smooths its rate."""

    only: set[str] | None = None
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    _last: dict[str, tuple[float, int]] = field(default_factory=dict)

    def wants(self, job_id: str) -> bool:
        return self.only is None or job_id in self.only

    def snapshot(self, job: dict[str, Any]) -> None:
        """Take a job as the API returned it."""
        if self.wants(job["id"]):
            self.jobs[job["id"]] = dict(job)

    def apply(self, event: dict[str, Any]) -> bool:
        """Move a job by a progress event; False when the job is not known yet."""
        job = self.jobs.get(event["job_id"])
        if job is None:
            return False
        for name in ("status", "percentage", "message", "stage", "current", "total", "attempt"):
            if name in event:
                job["summary" if name == "message" else name] = event[name]
        self._smooth(job, event)
        return True

    def _smooth(self, job: dict[str, Any], event: dict[str, Any]) -> None:
        try:
            at = datetime.fromisoformat(event["timestamp"]).timestamp()
        except (KeyError, TypeError, ValueError):
            at = time.time()
        percentage = int(event.get("percentage") or 0)
        last = self._last.get(job["id"])
        self._last[job["id"]] = (at, percentage)
        if job.get("status") != "PROCESSING":
            job["eta_seconds"] = None
            return
        if last is None or at <= last[0] or percentage <= last[1]:
            return
        rate = (percentage - last[1]) / (at - last[0])
        previous = job.get("rate")
        job["rate"] = rate if not previous else _SMOOTHING * rate + (1 - _SMOOTHING) * previous
        job["eta_seconds"] = (100 - percentage) / job["rate"] if job["rate"] > 0 else None

    @property
    def done(self) -> bool:
        """Every job on screen has ended (and there is at least one)."""
        return bool(self.jobs) and all(j.get("status") in TERMINAL for j in self.jobs.values())

    def changed_lines(self, printed: dict[str, tuple[Any, ...]]) -> list[str]:
        """One line per job whose status, percentage or message changed since ``printed``
        (updated), oldest job first: for a pipe or a file, where a live table cannot go."""
        lines = []
        for job in sorted(self.jobs.values(), key=lambda j: str(j.get("created_at", ""))):
            state = (job.get("status"), job.get("percentage"), job.get("summary"))
            if printed.get(job["id"]) != state:
                printed[job["id"]] = state
                status, percentage, summary = state
                lines.append(
                    f"{job['id']} {status} {int(percentage or 0)}% {summary or ''}".rstrip()
                )
        return lines

    def render(self, title: str | None = None, *, whole_ids: bool = True) -> Table:
        """The jobs as a table; ``whole_ids=False`` shows ids' first 8 characters (the demo's
        jobs have distinct names, and its table must fit a narrow terminal)."""
        table = Table(title=title, expand=True, title_justify="left")
        table.add_column("job", no_wrap=True)
        table.add_column("name", no_wrap=True, max_width=20)
        table.add_column("status", no_wrap=True)
        table.add_column("progress", ratio=1, min_width=10)
        table.add_column("%", justify="right", no_wrap=True)
        table.add_column("message", ratio=2, no_wrap=True)
        table.add_column("rate", justify="right", no_wrap=True)
        table.add_column("ETA", justify="right", no_wrap=True)
        for job in sorted(self.jobs.values(), key=lambda j: str(j.get("created_at", ""))):
            status = str(job.get("status", ""))
            percentage = int(job.get("percentage") or 0)
            rate = job.get("rate")
            table.add_row(
                str(job["id"]) if whole_ids else str(job["id"])[:8],
                str(job.get("document_name", "")),
                Text(status, style=_STYLE.get(status, "")),
                ProgressBar(total=100, completed=percentage, width=None),
                f"{percentage}%",
                str(job.get("summary") or ""),
                f"{rate:.1f}%/s" if isinstance(rate, int | float) and rate > 0 else "",
                _seconds(job.get("eta_seconds")) if status == "PROCESSING" else "",
            )
        return table
