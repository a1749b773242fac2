"""Jobs at risk: a running job that will likely miss its deadline, or that has run longer than
jobs of its kind usually take ([deadlines](../../docs/deadlines.md)).

Pure, time passed in. A job's deadline is its own (``Job.deadline``, set when it is made), else
its kind's limit (``limits``: seconds from its start, a server setting). With a deadline, the
job is at risk once the chance that it finishes after it, read from its predicted finish
(``eta.estimate``'s log-normal range), reaches ``LIKELY``, or once it is past it. Without one,
it is at risk once it has run longer than the p95 of what finished jobs of its kind took. The
monitor writes the verdict when it changes (``store/risk.py``), so each warning is given once
until the job's state changes.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from morag_progress.eta import Eta, History
from morag_progress.models import Job

__all__ = ["LIKELY", "LONG_Z", "Risk", "Verdict", "assess", "chance_late", "deadline_of"]

LONG_Z = 1.6449
"""The p95 of a log-normal duration is ``exp(mean + LONG_Z * sigma)``."""
LIKELY = 0.99
"""The chance of missing its deadline at which a job is marked at risk. A job is assessed every
few seconds for its whole run, so a lower one warns of jobs that make it: on replayed runs
(``bench/deadlines.py``) 0.1, the p90 of the finish past the deadline, warned of every job
that finished in time, and 0.99 of 0.5% of them, still warning of 93% of the misses with 88%
of the run to go."""
_Z90 = 1.2816


class Risk(enum.StrEnum):
    """Why a job is at risk."""

    DEADLINE = "deadline"
    """It will likely miss its deadline (a miss is at least ``LIKELY``), or it has."""
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
    likely: float = LIKELY,
) -> Verdict | None:
    """Whether the running ``job`` is at risk at ``now`` (None: it is not, or nothing says):
    with a deadline, once the chance that it finishes after it (``chance_late``) is at least
    ``likely`` (for a job already marked at risk of it, half of that), or it is past it."""
    deadline = deadline_of(job, limits or {})
    if deadline is not None:
        if now >= deadline:
            return Verdict(Risk.DEADLINE, f"Past its deadline {_clock(deadline)}")
        eta = job.estimate(now, history)
        if eta is None:
            return None
        chance = chance_late(eta, (deadline - now).total_seconds())
        # A job marked stays marked until the chance falls well below the line (half of it):
        # an estimate that wavers around the line must not warn, clear and warn again.
        line = likely / 2 if job.at_risk == Risk.DEADLINE.value else likely
        if chance < line:
            return None
        finish = now + timedelta(seconds=eta.seconds)
        return Verdict(
            Risk.DEADLINE,
            f"Likely to miss its deadline {_clock(deadline)}: a {chance:.0%} chance; "
            f"expected to end {_clock(finish)}",
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


def chance_late(eta: Eta, seconds_left: float) -> float:
    """The chance that a job with ``eta`` (a log-normal: its median and p90) needs more than
    ``seconds_left``."""
    if seconds_left <= 0:
        return 1.0
    sigma = math.log(eta.high / eta.seconds) / _Z90 if eta.high > eta.seconds > 0 else 0.0
    if sigma <= 0:
        return 1.0 if eta.seconds > seconds_left else 0.0
    z = (math.log(seconds_left) - math.log(eta.seconds)) / sigma
    return 0.5 * math.erfc(z / math.sqrt(2))


def _clock(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


def _span(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
