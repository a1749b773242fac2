"""Rates, ETAs and start forecasts: one pure estimator, with no I/O (the caller passes the time).

The server keeps two small pieces of state and asks this module for every number it shows:

- ``Pace``, per job: where this run's measuring began, the open measuring window, and a rate
  smoothed over closed windows. A window closes only after a minimum span of time (a twentieth
  of the run so far, 1 to 60 s), so two reports milliseconds apart cannot make a rate; each report
  folds in O(1) (``Pace.observe``).
- ``History``, per kind of job (the user's document type): the log-duration of finished jobs,
  whole and per item (when they gave a ``total``), as a running mean and variance: O(1) per
  finished job, a few numbers per kind.

``estimate`` turns them into an ``Eta``: seconds left, a p10-p90 range and its basis (``live``,
``history`` or ``blend``). The live rate blends the recent windows (with the open window counted
up to now, so an idle job's ETA grows instead of counting down) with the run's average rate; a
learned duration is blended in by precision (its spread against the live estimate's, which
narrows as the job advances). ``forecast_starts`` gives queued jobs the time they are expected
to start. ``docs/eta.md`` has the figures (``bench/eta.py``) and the limits.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

__all__ = [
    "Eta",
    "History",
    "Pace",
    "QueuedJob",
    "RunningJob",
    "estimate",
    "forecast_starts",
    "parent_eta",
]

Basis = Literal["live", "history", "blend"]

_Z90 = 1.2815515655446004
"""The standard normal's 90th percentile: a log-normal's p10..p90 is exp(mu -/+ _Z90 sigma)."""
_MIN_SPAN = 1.0
_MAX_SPAN = 60.0
_SPAN_FRACTION = 0.05
_SMOOTHING = 0.7
"""Weight of the newest closed window in the smoothed (log) rate (chosen with bench/eta.py)."""
_CLOCK_JUMP = 60.0
"""How far the reporter's clock may move against the reader's before a new run begins."""
_MAX_SECONDS = 10 * 365 * 86400.0
"""The longest ETA given: beyond it (a job all but stopped) the estimate says ten years."""
_STEADY = 0.1
"""How far (in log) the recent rate may be from the run's average and still count as steady."""
_LIVE_SIGMA = 0.25
"""Relative spread of a live estimate at half way; it scales with sqrt(left / done)."""
_HISTORY_PRIOR = 0.35
"""Log-spread assumed of a kind of job before its own finished jobs say otherwise."""
_HISTORY_CAP = 200
"""A kind's running mean weighs at most this many jobs: older ones fade, so it follows drift."""
_MIN_HISTORY = 3


@dataclass(frozen=True, slots=True)
class Pace:
    """A job's live pace: the state a report folds into (times in Unix seconds)."""

    attempt: int
    start_s: float
    """When this run's measuring began (its first report, or after progress went back)."""
    start_pct: float
    anchor_s: float
    """Where the open window began."""
    anchor_pct: float
    rate: float | None = None
    """Percent per second, smoothed over closed windows (in logs); None before the first."""
    spread: float = 0.0
    """Smoothed squared log deviation of closed windows from the smoothed rate."""
    knots: tuple[float | None, ...] = ()
    """Seconds into the run at which it first reached each of ``KNOTS`` (None: not yet)."""
    window_s: float = 0.0
    """How long the last closed window lasted: silence shorter than it is not idleness."""
    skew: float = 0.0
    """The reader's clock minus the reporter's (times above are the reporter's): a reader
    asking at ``now`` means ``now - skew`` here."""
    resumes_at: float | None = None
    """Set while the run is paused at a checkpoint (``resume``): the percentage it goes on
    from. The next report, of any attempt, continues the run."""

    @classmethod
    def begin(
        cls, t: float, pct: float, attempt: int, rate: float | None = None, skew: float = 0.0
    ) -> Pace:
        """A run starts measuring at ``(t, pct)``; ``rate`` carries an earlier run's pace."""
        return cls(attempt, t, pct, t, pct, rate, 0.0, _knots_at_start(pct), 0.0, skew)

    @classmethod
    def of(cls, reports: Iterable[tuple[float, float, int]]) -> Pace | None:
        """The pace after ``reports`` ((time, percentage, attempt), in order); None for none."""
        pace: Pace | None = None
        for t, pct, attempt in reports:
            pace = cls.begin(t, pct, attempt) if pace is None else pace.observe(t, pct, attempt)
        return pace

    def min_span(self, t: float) -> float:
        """How long a window must be before it closes: a twentieth of the run, 1 to 60 s."""
        return min(_MAX_SPAN, max(_MIN_SPAN, _SPAN_FRACTION * (t - self.start_s)))

    def resume(self, pct: float) -> Pace:
        """This pace paused at a checkpoint of ``pct`` (a requeued job that will go on from
        there): the next report continues the run rather than beginning a new one, with the
        pause and the work lost after the checkpoint left out of its time, so its rate and
        ETA count only the work done."""
        return dataclasses.replace(self, resumes_at=pct)

    def _continued(self, t: float, pct: float, attempt: int, skew: float) -> Pace:
        """The run goes on at ``(t, pct)`` after a pause at ``resumes_at`` (``resume``)."""
        at = max(self.start_pct, min(self.resumes_at or 0.0, self.anchor_pct))
        ran, done = self.anchor_s - self.start_s, self.anchor_pct - self.start_pct
        # The time the run took to reach ``at``: the work after it is lost and done again.
        kept = ran * (at - self.start_pct) / done if done > 0 else 0.0
        start = t - kept
        known = self.knots if len(self.knots) == len(KNOTS) else (None,) * len(KNOTS)
        knots = tuple(
            k if k is not None and knot <= at else None
            for k, knot in zip(known, KNOTS, strict=True)
        )
        knots = _reached(knots, pct, kept)
        return Pace(
            attempt,
            start,
            self.start_pct,
            t,
            pct,
            self.rate,
            self.spread,
            knots,
            self.window_s,
            skew,
        )

    def observe(self, t: float, pct: float, attempt: int, received: float | None = None) -> Pace:
        """This pace after a report of ``pct`` stamped ``t`` by its reporter (and
        ``received`` by the reader's clock, when known). A new attempt, progress going back
        (a restart), or the reporter's clock jumping (by over a minute against the reader's)
        begins a new run, keeping the rate as a prior. A report stamped before the open
        window changes nothing."""
        skew = self.skew if received is None else received - t
        if self.resumes_at is not None:  # another worker (and clock) goes on after a pause
            return self._continued(t, pct, attempt, skew)
        jumped = abs(skew - self.skew) > _CLOCK_JUMP
        if attempt != self.attempt or pct < self.anchor_pct or jumped:
            return Pace.begin(t, pct, attempt, self.rate, skew)
        if t < self.anchor_s:
            return self
        knots = _reached(self.knots, pct, t - self.start_s)
        span = t - self.anchor_s
        if pct <= self.anchor_pct or span < self.min_span(t):
            return self if knots == self.knots else dataclasses.replace(self, knots=knots)
        window = (pct - self.anchor_pct) / span
        if self.rate is None:
            rate, spread = window, 0.0
        else:
            deviation = math.log(window / self.rate)
            rate = self.rate * math.exp(_SMOOTHING * deviation)
            spread = (1 - _SMOOTHING) * self.spread + _SMOOTHING * deviation * deviation
        return Pace(
            self.attempt, self.start_s, self.start_pct, t, pct, rate, spread, knots, span, skew
        )

    def live_rate(self, now: float, pct: float) -> float | None:
        """Percent per second now: the smoothed rate with the open window counted up to
        ``now`` (so silence slows it, and an idle job's ETA grows); None when nothing
        supports one (no window has closed, and the open one is too short or still)."""
        now -= self.skew  # on the reporter's clock
        recent = self.rate
        open_span = now - self.anchor_s
        # Silence as long as a closed window is the ordinary wait for the next report; past
        # it, the open window (its progress over all of its time) takes over, more and more.
        grace = max(self.window_s, self.min_span(now))
        if open_span > 0:
            open_rate = max(0.0, pct - self.anchor_pct) / open_span
            if recent is None:
                recent = open_rate if open_span >= self.min_span(now) else None
            elif open_span > grace:
                weight = (open_span - grace) / open_span
                recent = (1 - weight) * recent + weight * open_rate
        if recent is None or recent <= 0:
            return None
        # Where the run's average agrees with the recent rate, the pace is steady and the
        # average (more time, less noise) is the better measure; where they part (speeding
        # up, slowing down, a new stage), the recent rate is.
        elapsed = now - self.start_s
        if elapsed <= 0 or pct <= self.start_pct:
            return recent
        average = (pct - self.start_pct) / elapsed
        apart = math.log(recent / average)
        weight = math.exp(-apart * apart / (2 * _STEADY * _STEADY))
        return math.exp(weight * math.log(average) + (1 - weight) * math.log(recent))

    def to_json(self) -> dict[str, Any]:
        """The pace as a JSON object (how the store keeps it), equal to what reading it back
        gives (``knots`` a list): the writer knows a pace it wrote when it reads it again.
        Field by field: ``asdict`` deep-copies every value, which cost the writer more than
        the fold itself."""
        data = {name: getattr(self, name) for name in _PACE_FIELDS}
        data["knots"] = list(self.knots)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Pace | None:
        """A pace the store kept, or None for none (or one it cannot read)."""
        if not data:
            return None
        try:
            return cls(**{**data, "knots": tuple(data.get("knots", ()))})
        except (TypeError, ValueError):
            return None


_PACE_FIELDS = tuple(f.name for f in fields(Pace))

KNOTS = (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
"""The percentages at which a run's timing is learned."""


@functools.lru_cache(maxsize=256)
def _knots_at_start(pct: float) -> tuple[float | None, ...]:
    """The knots of a run that begins at ``pct``: those at or below it reached at once. A
    run begins at one of a few percentages (mostly whole ones), and often: remembered."""
    return _reached((), pct, 0.0)


def _reached(
    knots: tuple[float | None, ...], pct: float, elapsed: float
) -> tuple[float | None, ...]:
    """``knots`` with ``elapsed`` recorded for each knot first reached at ``pct``."""
    if len(knots) != len(KNOTS):
        knots = (None,) * len(KNOTS)
    # KNOTS ascend: if the first knot not yet reached is above ``pct``, so is every later one
    # (this runs for every applied report, and is mostly the whole answer).
    for k, at in zip(knots, KNOTS, strict=True):
        if k is None:
            if pct < at:
                return knots
            break
    else:
        return knots
    return tuple(
        elapsed if k is None and pct >= at else k for k, at in zip(knots, KNOTS, strict=True)
    )


@dataclass(frozen=True, slots=True)
class History:
    """What finished jobs of one kind took: the running mean and variance (Welford, the count
    capped so that old jobs fade) of their log-duration in seconds, whole (``count``, ``mean``,
    ``m2``) and per item for jobs that gave a ``total`` (``item_*``)."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    item_count: int = 0
    item_mean: float = 0.0
    item_m2: float = 0.0
    shape: tuple[tuple[int, float, float], ...] = ()
    """Per knot of ``KNOTS``: the running (count, mean, m2) of ln(time left / time spent) of
    finished runs when they reached it: the kind's shape of progress over time."""

    def learn(
        self,
        seconds: float,
        total: int | None = None,
        pace: Pace | None = None,
        ended_s: float | None = None,
    ) -> History:
        """This history after a job of ``seconds`` (and ``total`` items) finished, its last
        run's ``pace`` ending at ``ended_s`` (Unix seconds); O(1)."""
        if not (seconds > 0 and math.isfinite(seconds)):
            return self
        count, mean, m2 = _fold(self.count, self.mean, self.m2, math.log(seconds))
        item = (self.item_count, self.item_mean, self.item_m2)
        if total:
            item = _fold(*item, math.log(seconds / total))
        shape = self.shape if len(self.shape) == len(KNOTS) else ((0, 0.0, 0.0),) * len(KNOTS)
        whole_run = pace is not None and pace.start_pct < KNOTS[0]
        if pace is not None and whole_run and ended_s is not None and len(pace.knots) == len(KNOTS):
            run = ended_s - pace.start_s
            shape = tuple(
                _fold(*stats, math.log((run - at) / at)) if at and 0 < at < run else stats
                for stats, at in zip(shape, pace.knots, strict=True)
            )
        return History(count, mean, m2, *item, shape)

    def time_left(self, percentage: float, elapsed: float) -> tuple[float, float] | None:
        """(log of the seconds left, its log-spread) for a run at ``percentage`` after
        ``elapsed`` seconds, from the kind's shape (interpolated between knots); None when
        the kind has too few finished runs there."""
        if elapsed <= 0 or len(self.shape) != len(KNOTS):
            return None
        points = [
            (at, mean, _sigma(count, m2))
            for at, (count, mean, m2) in zip(KNOTS, self.shape, strict=True)
            if count >= _MIN_HISTORY
        ]
        if not points:
            return None
        below = [p for p in points if p[0] <= percentage]
        above = [p for p in points if p[0] >= percentage]
        if not below:
            return None  # before its first learned knot a run's pace says too little
        if above:
            (a, ma, sa), (b, mb, sb) = below[-1], above[0]
            share = 0.0 if b == a else (percentage - a) / (b - a)
            mean, sigma = ma + share * (mb - ma), sa + share * (sb - sa)
        else:
            _, mean, sigma = below[-1] if below else above[0]
        return math.log(elapsed) + mean, sigma

    def time_share(self, percentage: float) -> float | None:
        """How far along in time a run at ``percentage`` is: the share of its whole time
        (0..1) that finished runs of this kind had spent when they reached it (the median,
        from the kind's shape, interpolated between the learned knots, from 0 at 0% to all
        of it at 100%, never less at a higher percentage); None when the kind has too few
        finished runs at any knot. Its stages' real shares of the time are in it: a kind
        whose 10-70% takes most of its time has most of its time spent by 70%."""
        if len(self.shape) != len(KNOTS):
            return None
        # ln(time left / time spent) = m at a knot: the time spent is 1 / (1 + e^m) of all,
        # never less than at a knot below (so it never goes back as the percentage grows).
        points = [(0.0, 0.0)]
        for at, (count, mean, _) in zip(KNOTS, self.shape, strict=True):
            if count >= _MIN_HISTORY:
                points.append((float(at), max(points[-1][1], 1 / (1 + math.exp(mean)))))
        if len(points) == 1:
            return None
        points.append((100.0, 1.0))
        pct = min(max(percentage, 0.0), 100.0)
        above = next(i for i, (at, _) in enumerate(points) if at >= pct and i)
        (a, sa), (b, sb) = points[above - 1], points[above]
        return sa + (pct - a) / (b - a) * (sb - sa)

    def predict(self, total: int | None = None) -> tuple[float, float] | None:
        """(log of the expected duration in seconds, its log-spread) for a job of ``total``
        items, or None before the kind has enough finished jobs."""
        if total and self.item_count >= _MIN_HISTORY:
            return self.item_mean + math.log(total), _sigma(self.item_count, self.item_m2)
        if self.count >= _MIN_HISTORY:
            return self.mean, _sigma(self.count, self.m2)
        return None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> History:
        if not data:
            return cls()
        try:
            shape = tuple(tuple(stats) for stats in data.get("shape", ()))
            return cls(**{**data, "shape": shape})
        except (TypeError, ValueError):
            return cls()


def _fold(count: int, mean: float, m2: float, x: float) -> tuple[int, float, float]:
    """Welford's running mean and sum of squares of ``x``; robust (from 5 values on, a value
    is clipped to 3 sigma), and once ``_HISTORY_CAP`` values are in, exponentially weighted."""
    if count >= 5:  # clipped to 3 sigma (never narrower than the prior's, or it could freeze)
        sigma = max(math.sqrt(m2 / (count - 1)), _HISTORY_PRIOR)
        x = min(mean + 3 * sigma, max(mean - 3 * sigma, x))
    delta = x - mean
    if count < _HISTORY_CAP:
        count += 1
        mean += delta / count
        return count, mean, m2 + delta * (x - mean)
    a = 1 / _HISTORY_CAP
    variance = (1 - a) * (m2 / (count - 1) + a * delta * delta)
    return count, mean + a * delta, variance * (count - 1)


def _sigma(count: int, m2: float) -> float:
    """The log-spread of a kind, pulled toward the prior while it has few jobs."""
    observed = m2 / (count - 1) if count > 1 else 0.0
    weight = count / (count + _MIN_HISTORY)
    return math.sqrt(weight * observed + (1 - weight) * _HISTORY_PRIOR**2)


@dataclass(frozen=True, slots=True)
class Eta:
    """Seconds left, the p10-p90 range, what it rests on, and the live rate (%/s)."""

    seconds: float
    low: float
    high: float
    basis: Basis
    rate: float | None


def estimate(
    *,
    now: float,
    percentage: float,
    pace: Pace | None,
    history: History | None = None,
    total: int | None = None,
) -> Eta | None:
    """The ETA of a running job at ``now``: from its ``pace``, its kind's ``history``, or a
    blend of both; None when neither supports one (nothing measured yet, no history)."""
    done = min(max(percentage, 0.0), 100.0) / 100
    if done >= 1:
        return None
    rate = pace.live_rate(now, percentage) if pace is not None else None
    live: tuple[float, float] | None = None
    if rate is not None and rate > 0 and done > 0:
        spread = pace.spread if pace is not None else 0.0
        sigma = math.sqrt(_LIVE_SIGMA**2 + spread) * math.sqrt((1 - done) / done)
        live = (math.log((100 - percentage) / rate), sigma)
    learned: tuple[float, float] | None = None
    if history is not None:
        # The kind's shape of progress, given how long this run took to get here; before
        # that says anything, the unfinished share of the kind's expected duration.
        # How long the run has taken; unknown without a pace.
        elapsed = None if pace is None else now - pace.skew - pace.start_s
        shaped = (
            history.time_left(percentage, elapsed)
            if pace is not None and elapsed is not None and pace.start_pct < KNOTS[0]
            else None
        )
        predicted = history.predict(total)
        if shaped is not None:
            learned = shaped
        elif predicted is not None:
            # The kind's expected duration less the time run, at least its unfinished share
            # (the share alone when the time run is not known).
            mean, sigma = predicted
            whole = math.exp(mean)
            share = (1 - done) * whole
            left = share if elapsed is None else max(whole - elapsed, share)
            learned = (math.log(max(left, 1e-3)), sigma)
    if live is None and learned is None:
        return None
    if live is not None and learned is not None:
        (a, sa), (b, sb) = live, learned
        weight = sb * sb / (sa * sa + sb * sb)  # precision weighting: the surer one counts more
        mu = weight * a + (1 - weight) * b
        sigma = math.sqrt(1 / (1 / (sa * sa) + 1 / (sb * sb)))
        basis: Basis = "blend"
    elif live is not None:
        mu, sigma = live
        basis = "live"
    else:
        assert learned is not None
        mu, sigma = learned
        basis = "history"
    return Eta(*_bounded(mu, sigma), basis, rate)


def _bounded(mu: float, sigma: float) -> tuple[float, float, float]:
    """(estimate, p10, p90) of a log-normal, each at most ``_MAX_SECONDS``."""
    ceiling = math.log(_MAX_SECONDS)
    middle, low, high = (min(ceiling, x) for x in (mu, mu - _Z90 * sigma, mu + _Z90 * sigma))
    return math.exp(middle), math.exp(low), math.exp(high)


def parent_eta(
    weight: float, weighted_done: float, rates: Iterable[tuple[float, float]]
) -> Eta | None:
    """A parent's ETA from its children: the work left (``weight`` of all children, of it
    ``weighted_done`` percent-weight done) over the weighted rates ``(weight, rate %/s)`` of
    those running. Children in parallel add their rates; one after another, only the running
    one counts. None when no child has a rate."""
    rate = sum(w * r for w, r in rates if r and r > 0)
    left = weight * 100 - weighted_done
    if weight <= 0 or rate <= 0 or left <= 0:
        return None
    return Eta(*_bounded(math.log(left / rate), _LIVE_SIGMA), "live", rate / weight)


@dataclass(frozen=True, slots=True)
class RunningJob:
    """A job a worker runs now, with the seconds it is expected to take still."""

    worker: str
    seconds_left: float


@dataclass(frozen=True, slots=True)
class QueuedJob:
    """A job waiting for a worker (oldest first), with the seconds it is expected to take."""

    id: str
    seconds: float


def forecast_starts(
    queue: list[QueuedJob], running: list[RunningJob], workers: int, now: float
) -> dict[str, float]:
    """When each queued job is expected to start (Unix seconds): ``workers`` workers take the
    queue in order, each when it is free (the running jobs' ends first). Without a worker
    nothing is forecast."""
    if workers <= 0:
        return {}
    free = sorted(now + max(0.0, job.seconds_left) for job in running)[:workers]
    free += [now] * (workers - len(free))
    heapq.heapify(free)
    starts: dict[str, float] = {}
    for job in queue:
        start = heapq.heappop(free)
        starts[job.id] = start
        heapq.heappush(free, start + max(0.0, job.seconds))
    return starts
