"""Jobs at risk: a running job that will likely miss its deadline, or that has run longer than
jobs of its kind usually take ([deadlines](../../docs/deadlines.md)).

Pure, time passed in. A job's deadline is its own (``Job.deadline``, set when it is made), else
its kind's limit (``limits``: seconds from its start, a server setting). With a deadline, the
job is at risk once the p90 of its predicted finish (``eta.estimate``'s range) passes it, or once
it is past it. Without one, it is at risk once it has run longer than the p95 of what finished
jobs of its kind took. The monitor writes the verdict when it changes (``store/risk.py``), so
each warning is given once until the job's state changes.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from morag_progress.eta import History
from morag_progress.models import Job

__all__ = ["LONG_Z", "Risk", "Verdict", "assess", "deadline_of"]

LONG_Z = 1.6449
"""The p95 of a log-normal duration is ``exp(mean + LONG_Z * sigma)``."""


class Risk(enum.StrEnum):
    """Why a job is at risk."""

    DEADLINE = "deadline"
    """It will likely miss its deadline (its finish's p90 is past it), or it has."""
    LONG = "long"
    """It has run longer than the p95 of its kind's finished jobs (it has no deadline)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """A job at risk: why, and what to tell people."""

    risk: Risk
    message: str


def deadline_of(job: Job, limits: Mapping[str, float]) -> datetime | None:
    """The job's deadline: its own, else its kind's limit from when it started (or was made)."""
    if job.deadline is not None:
        return job.deadline
    limit = limits.get(job.document_type)
    if limit is None:
        return None
    return (job.start_date or job.created_at) + timedelta(seconds=limit)


def assess(
    job: Job,
    now: datetime,
    history: History | None,
    limits: Mapping[str, float] | None = None,
) -> Verdict | None:
    """Whether the running ``job`` is at risk at ``now`` (None: it is not, or nothing says)."""
    deadline = deadline_of(job, limits or {})
    if deadline is not None:
        if now >= deadline:
            return Verdict(Risk.DEADLINE, f"Past its deadline {_clock(deadline)}")
        eta = job.estimate(now, history)
        if eta is None:
            return None
        finish = now + timedelta(seconds=eta.high)
        if finish <= deadline:
            return None
        return Verdict(
            Risk.DEADLINE,
            f"Likely to miss its deadline {_clock(deadline)}: it may take until "
            f"{_clock(finish)} (p90)",
        )
    predicted = history.predict(job.total) if history is not None else None
    if predicted is None:
        return None
    mean, sigma = predicted
    usual = math.exp(mean + LONG_Z * sigma)
    ran = (now - (job.start_date or job.created_at)).total_seconds()
    if ran <= usual:
        return None
    return Verdict(
        Risk.LONG,
        f"Running longer than usual: {_span(ran)} so far, where {job.document_type} jobs "
        f"take up to {_span(usual)} (p95)",
    )


def _clock(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


def _span(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
