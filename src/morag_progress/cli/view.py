"""A live terminal view of jobs fed by the server's event stream (``watch`` and ``demo``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rich import box
from rich.console import RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table

from morag_progress.cli.text import cell, column_width, visible

__all__ = ["JobsView"]

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


def as_clock(value: float | None) -> str:
    if value is None:
        return ""
    value = int(value)
    if value >= 3600:
        return f"{value // 3600}:{value % 3600 // 60:02d}:{value % 60:02d}"
    return f"{value // 60}:{value % 60:02d}"


def _until(when: str) -> str:
    """``in m:ss`` until an ISO time (``now`` once it is past)."""
    try:
        left = datetime.fromisoformat(when).timestamp() - time.time()
    except ValueError:
        return ""
    return f"in {as_clock(left)}" if left > 0 else "now"


SILENT_AFTER = 30.0
"""Seconds without a report before a running job's estimate gives way to the silence."""


def silent_for(job: dict[str, Any], now: float | None = None) -> float | None:
    """How long a running or stalled job's worker has sent nothing (seconds), once that is at
    least ``SILENT_AFTER``; else None. An estimate that goes on counting down for a job nobody
    hears from would look live."""
    seen = job.get("last_seen_at")
    if job.get("status") not in ("PROCESSING", "STALLED") or not seen:
        return None
    try:
        since = datetime.fromisoformat(seen).timestamp()
    except (TypeError, ValueError):
        return None
    silent = (time.time() if now is None else now) - since
    return silent if silent >= SILENT_AFTER else None


def no_report(silent: float) -> str:
    return f"no report for {as_clock(silent)}"


_COLUMNS = ("job", "name", "status", "progress", "%", "message", "rate", "ETA")
_COLUMN_OPTIONS: dict[str, dict[str, Any]] = {
    "job": {"no_wrap": True},
    "name": {"no_wrap": True, "max_width": 20, "overflow": "ellipsis"},
    "status": {"no_wrap": True},
    "progress": {"ratio": 1, "min_width": 10},
    "%": {"justify": "right", "no_wrap": True},
    "message": {"ratio": 2, "min_width": 12, "no_wrap": True, "overflow": "ellipsis"},
    "rate": {"justify": "right", "no_wrap": True},
    "ETA": {"justify": "right", "no_wrap": True},
}


def _needs(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> int:
    """The width ``columns`` need for ``rows``, with a column's gap."""
    widths = (
        column_width(name, (row[name] for row in rows), _COLUMN_OPTIONS[name]) for name in columns
    )
    return sum(widths) + 2 * (len(columns) - 1)


_WORKER_ACTIONS = frozenset({"report", "start", "claim"})
"""Changes a job's worker makes (a stall, a cancel are not a sign of the worker)."""


@dataclass
class JobsView:
    """The jobs on screen: snapshots from the API, moved by progress events. Rate and ETA are
    the server's (one estimator for every view): an event moves a job's bar at once, and
    ``due`` says which jobs to fetch again for fresh estimates."""

    only: set[str] | None = None
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    refresh_seconds: float = 2.0
    lost_since: float | None = None
    """When the event stream was lost (wall time), while it is: what is on screen stops
    moving, and the table says so."""
    _fetched: dict[str, float] = field(default_factory=dict)

    def wants(self, job_id: str) -> bool:
        return self.only is None or job_id in self.only

    def snapshot(self, job: dict[str, Any], now: float | None = None) -> None:
        """Take a job as the API returned it (with its estimates)."""
        if self.wants(job["id"]):
            self.jobs[job["id"]] = dict(job)
            self._fetched[job["id"]] = time.monotonic() if now is None else now

    def apply(self, event: dict[str, Any]) -> bool:
        """Move a job by a progress event; False when the job is not known yet."""
        job = self.jobs.get(event["job_id"])
        if job is None:
            return False
        for name in ("status", "percentage", "message", "stage", "current", "total", "attempt"):
            if name in event:
                job["summary" if name == "message" else name] = event[name]
        if event.get("action") in _WORKER_ACTIONS and event.get("recorded_at"):
            job["last_seen_at"] = event["recorded_at"]  # heard from its worker just now
        if job.get("status") != "PROCESSING":
            job["eta_seconds"] = None
        return True

    def due(self, job_id: str, now: float | None = None) -> bool:
        """Whether ``job_id``'s estimates are older than ``refresh_seconds``."""
        now = time.monotonic() if now is None else now
        return now - self._fetched.get(job_id, float("-inf")) >= self.refresh_seconds

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
                line = f"{visible(job['id'])} {visible(status)} {int(percentage or 0)}%"
                lines.append(f"{line} {visible(summary)}".rstrip())
        return lines

    def render(
        self, title: str | None = None, *, whole_ids: bool = True, width: int | None = None
    ) -> Table:
        """The jobs as a table; ``whole_ids=False`` shows ids' first 8 characters (the demo's
        jobs have distinct names, and its table must fit a narrow terminal). Given the
        terminal's ``width``, columns give way until the rest fit with a bar of at least 10
        characters: the rate first, then the message (``jobs show`` has both), then the ids
        are cut to 8 characters, then the names go."""
        rows: list[dict[str, Any]] = []
        for job in sorted(self.jobs.values(), key=lambda j: str(j.get("created_at", ""))):
            status = str(job.get("status", ""))
            percentage = int(job.get("percentage") or 0)
            rate = job.get("rate")
            eta = as_clock(job.get("eta_seconds")) if status == "PROCESSING" else ""
            if status == "WAITING_FOR_REMOTE_WORKER" and job.get("expected_start_at"):
                eta = f"starts {_until(job['expected_start_at'])}"
            silent = silent_for(job)
            if silent is not None:
                eta = no_report(silent)
            rows.append(
                {
                    "job": visible(job["id"] if whole_ids else str(job["id"])[:8]),
                    "name": visible(job.get("document_name", "")),
                    "status": status,
                    "%": f"{percentage}%{_in_time(job, status, percentage)}",
                    "message": visible(job.get("summary")),
                    "rate": f"{rate:.1f}%/s" if isinstance(rate, int | float) and rate > 0 else "",
                    "ETA": eta,
                    "percentage": percentage,
                    "silent": silent is not None,
                }
            )
        shown: tuple[str, ...] = _COLUMNS
        if width is not None:
            for step in ("rate", "message", "short ids", "name"):
                if _needs(shown, rows) <= width:
                    break
                if step == "short ids":
                    for row in rows:
                        row["job"] = row["job"][:8]
                else:
                    shown = tuple(c for c in shown if c != step)
        # Rules under the header only, no borders: at 80 columns, boxes and their padding took
        # a third of the width, and the bar was left 3 characters.
        if self.lost_since is not None:
            lost = datetime.fromtimestamp(self.lost_since).strftime("%H:%M:%S")
            title = f"disconnected since {lost}: reconnecting (what is shown may be out of date)"
        table = Table(
            title=title,
            expand=True,
            title_justify="left",
            title_style="bold red" if self.lost_since is not None else "",
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
            collapse_padding=True,
        )
        for name in shown:
            table.add_column(name, **_COLUMN_OPTIONS[name])
        for row in rows:
            cells: dict[str, RenderableType] = {
                "status": cell(row["status"], style=_STYLE.get(row["status"], "")),
                "progress": ProgressBar(total=100, completed=row["percentage"], width=None),
                "ETA": cell(row["ETA"], style="yellow" if row["silent"] else ""),
            }
            table.add_row(*(cells[name] if name in cells else cell(row[name]) for name in shown))
        return table


def _in_time(job: dict[str, Any], status: str, percentage: int) -> str:
    """How far along in time a running job is (``time_progress``, from its kind's history),
    where that differs from its percentage by 5 points or more: ``" (52% time)"``."""
    time_progress = job.get("time_progress")
    if status != "PROCESSING" or not isinstance(time_progress, int):
        return ""
    return f" ({time_progress}% time)" if abs(time_progress - percentage) >= 5 else ""
