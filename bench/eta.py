"""ETA benchmark: our estimator against tqdm's smoothed rate and a naive linear estimate, on the
same seeded traces; then start forecasts on a simulated queue.

    python bench/eta.py [--traces 400] [--seed 7]

Traces (``--traces`` of each kind, durations log-normal around a kind's own typical duration,
whole-percent reports every 0.5-3 s as a tqdm bar or a log would send them):

- ``constant``: one pace throughout;
- ``accelerating`` / ``slowing``: progress goes as time^1.6 / time^0.6;
- ``pauses``: a constant pace with one or two silent pauses of 10-30% of the work's time;
- ``stages``: three stages of the work at different speeds;
- ``bursts``: reports come in bursts of 5-20 within 50 ms, every 5-10 s;
- ``restarts``: the worker dies at 30-60% and, after a gap, a new attempt starts again from 0.

At 10, 25, 50, 75 and 90% (the first report at or past it) each estimator gives the time left;
the relative error is ``|estimate - truth| / truth``. "History" means the estimator also knows
20 earlier finished jobs of the same kind (the same generator, other seeds). It prints the median
and p90 error per checkpoint for: ours without history, ours with, tqdm (its EMA of dn and dt,
smoothing 0.3, one sample per 0.1 s at most, as tqdm's ``mininterval``), and linear (elapsed
times left over done); the ratios to tqdm; how often our p10-p90 range holds the truth; and the
median and p90 error of start forecasts against the true wait.

Targets (the prediction issue): median error <= 0.5x tqdm's at every checkpoint without
history, <= 0.25x with; the p10-p90 range holds the truth 70-90% of the time; start forecasts'
median error <= 25% of the true wait.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from morag_progress.eta import (
    Eta,
    History,
    Pace,
    QueuedJob,
    RunningJob,
    estimate,
    forecast_starts,
)

KINDS = ["constant", "accelerating", "slowing", "pauses", "stages", "bursts", "restarts"]
CHECKPOINTS = [10, 25, 50, 75, 90]
TYPICAL = {kind: 60 * 2 ** (i % 4) for i, kind in enumerate(KINDS)}  # 1 to 8 minutes
SPREAD = 0.3  # log-spread of durations within a kind


@dataclass
class Trace:
    reports: list[tuple[float, int, int]]  # (seconds, percentage, attempt), in order
    end: float


def _cadence(rng: random.Random, kind: str, end: float) -> list[float]:
    times, t = [], 0.0
    while t < end:
        if kind == "bursts":
            t += rng.uniform(5, 10)
            times += sorted(min(end, t + rng.uniform(0, 0.05)) for _ in range(rng.randint(5, 20)))
        else:
            t += rng.uniform(0.5, 3)
            times.append(min(t, end))
    return times


def _shape(rng: random.Random, kind: str) -> Callable[[float], float]:
    """Work done (0..1) at a share of the working time (0..1)."""
    if kind == "accelerating":
        return lambda x: x**1.6
    if kind == "slowing":
        return lambda x: x**0.6
    if kind == "stages":
        work = [0.2, 0.5, 0.3]
        times = [rng.uniform(0.5, 2) * w for w in work]
        total = sum(times)
        bounds = [sum(times[:i]) / total for i in range(4)]

        def staged(x: float) -> float:
            for i in range(3):
                if x <= bounds[i + 1]:
                    inside = (x - bounds[i]) / (bounds[i + 1] - bounds[i])
                    return sum(work[:i]) + work[i] * inside
            return 1.0

        return staged
    return lambda x: x


def make_trace(rng: random.Random, kind: str) -> Trace:
    duration = TYPICAL[kind] * math.exp(rng.gauss(0, SPREAD))
    shape = _shape(rng, kind)
    pauses: list[tuple[float, float]] = []  # (at working time, length)
    if kind == "pauses":
        for _ in range(rng.randint(1, 2)):
            pauses.append((rng.uniform(0.1, 0.9) * duration, rng.uniform(0.1, 0.3) * duration))
    restart_at = rng.uniform(0.3, 0.6) * duration if kind == "restarts" else None
    gap = rng.uniform(0.05, 0.15) * duration if restart_at is not None else 0.0
    # Wall time -> (attempt, working time in this attempt).
    lost = restart_at or 0.0
    end = duration + sum(length for _, length in pauses) + lost + gap
    reports: list[tuple[float, int, int]] = []
    for wall in _cadence(rng, kind, end):
        attempt, work_t = 1, wall
        if restart_at is not None:
            if wall < restart_at:
                work_t = wall
            elif wall < restart_at + gap:
                continue  # dead worker: silence
            else:
                attempt, work_t = 2, wall - restart_at - gap
        for at, length in sorted(pauses):
            if work_t > at + length:
                work_t -= length
            elif work_t > at:
                work_t = -1  # paused: silent
                break
        if work_t < 0:
            continue
        pct = min(100, int(100 * shape(min(1.0, work_t / duration))))
        reports.append((wall, pct, attempt))
    if not reports or reports[-1][1] < 100:
        reports.append((end, 100, reports[-1][2] if reports else 1))
    return Trace(reports, end)


class Tqdm:
    """tqdm's rate: EMAs (smoothing 0.3, bias-corrected) of dn and dt, sampled at most every
    0.1 s (its ``mininterval``); ETA = left / (ema_dn / ema_dt)."""

    def __init__(self) -> None:
        self.dn = self.dt = 0.0
        self.calls = 0
        self.last_t: float | None = None
        self.last_n = 0

    def observe(self, t: float, n: int) -> None:
        if self.last_t is None or n < self.last_n:
            self.last_t, self.last_n = t, n
            self.dn = self.dt = 0.0
            self.calls = 0
            return
        dt = t - self.last_t
        if dt < 0.1:
            return
        self.dn = 0.3 * (n - self.last_n) + 0.7 * self.dn
        self.dt = 0.3 * dt + 0.7 * self.dt
        self.calls += 1
        self.last_t, self.last_n = t, n

    def eta(self, n: int) -> float | None:
        if not self.calls or self.dt <= 0 or self.dn <= 0:
            return None
        return (100 - n) / (self.dn / self.dt)


def history_for(rng: random.Random, kind: str, jobs: int = 20) -> History:
    """What the server learns from ``jobs`` finished jobs of ``kind``: each one's duration and
    its last run's pace, folded in as it finished."""
    history = History()
    for _ in range(jobs):
        trace = make_trace(rng, kind)
        pace = Pace.of(trace.reports)
        history = history.learn(trace.end, pace=pace, ended_s=trace.reports[-1][0])
    return history


def evaluate(
    trace: Trace, history: History
) -> dict[str, list[tuple[int, float | None, Eta | None]]]:
    """Per estimator, (checkpoint, relative error, our Eta) at each checkpoint."""
    results: dict[str, list[tuple[int, float | None, Eta | None]]] = {
        "ours": [], "ours+history": [], "tqdm": [], "linear": []
    }  # fmt: skip
    pace: Pace | None = None
    tqdm = Tqdm()
    start: tuple[float, int] | None = None
    pending = list(CHECKPOINTS)
    for t, pct, attempt in trace.reports:
        pace = Pace.begin(t, pct, attempt) if pace is None else pace.observe(t, pct, attempt)
        tqdm.observe(t, pct)
        if start is None:
            start = (t, pct)
        while pending and pct >= pending[0]:
            checkpoint = pending.pop(0)
            truth = trace.end - t
            if truth <= 0 or pct >= 100:
                continue

            def error(value: float | None, truth: float = truth) -> float | None:
                return None if value is None else abs(value - truth) / truth

            live = estimate(now=t, percentage=pct, pace=pace)
            learned = estimate(now=t, percentage=pct, pace=pace, history=history)
            elapsed = t - start[0]
            linear = elapsed * (100 - pct) / (pct - start[1]) if pct > start[1] else None
            results["ours"].append((checkpoint, error(live and live.seconds), live))
            results["ours+history"].append(
                (checkpoint, error(learned and learned.seconds), learned)
            )
            results["tqdm"].append((checkpoint, error(tqdm.eta(pct)), None))
            results["linear"].append((checkpoint, error(linear), None))
            for name, eta in (("ours", live), ("ours+history", learned)):
                if eta is not None:
                    held = eta.low <= truth <= eta.high
                    coverage[name].append(held)
    return results


coverage: dict[str, list[bool]] = {"ours": [], "ours+history": []}


def median_or_nan(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))] if ordered else float("nan")


def simulate_queue(rng: random.Random, rounds: int = 200) -> list[float]:
    """Relative errors of start forecasts: workers take a queue of jobs whose durations vary
    as a kind's do; at random moments each waiting job's forecast start (from the running
    jobs' expected time left and the queued ones' expected durations, as the server
    forecasts them) is compared with when it really starts."""
    errors: list[float] = []
    history = history_for(rng, "constant")
    predicted = history.predict()
    assert predicted is not None
    typical = math.exp(predicted[0])
    for _ in range(rounds):
        workers = rng.randint(2, 6)
        jobs = [TYPICAL["constant"] * math.exp(rng.gauss(0, SPREAD)) for _ in range(30)]
        # Play the real queue: each worker takes the next job when free.
        free = [0.0] * workers
        starts, ends = [], []
        for duration in jobs:
            at = min(free)
            i = free.index(at)
            starts.append(at)
            ends.append(at + duration)
            free[i] = at + duration
        now = rng.uniform(0, max(starts) * 0.8)
        running, queue = [], []
        for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
            if start <= now < end:
                done = int(100 * (now - start) / (end - start))  # what its bar shows
                # Its pace as the server keeps it: reports from its start to now.
                pace = Pace.of([(start, 0, 1), (now, done, 1)])
                left = estimate(now=now, percentage=done, pace=pace, history=history)
                running.append(RunningJob(str(i), left.seconds if left else typical))
            elif start > now:
                queue.append(QueuedJob(str(i), typical))
        forecast = forecast_starts(queue, running, workers, now)
        for job in queue:
            wait = starts[int(job.id)] - now
            if wait > 1:
                errors.append(abs(forecast[job.id] - now - wait) / wait)
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--traces", type=int, default=400, help="traces of each kind")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    errors: dict[str, dict[int, list[float]]] = {}
    missing: dict[str, int] = {}
    by_kind: dict[str, dict[str, list[float]]] = {}
    for kind in KINDS:
        history = history_for(rng, kind)
        for _ in range(args.traces):
            results = evaluate(make_trace(rng, kind), history)
            for name, rows in results.items():
                for checkpoint, error, _ in rows:
                    if error is None:
                        missing[name] = missing.get(name, 0) + 1
                        continue
                    errors.setdefault(name, {}).setdefault(checkpoint, []).append(error)
                    by_kind.setdefault(kind, {}).setdefault(name, []).append(error)
    names = ["ours", "ours+history", "tqdm", "linear"]
    print(f"{args.traces} traces of each of {len(KINDS)} kinds, seed {args.seed}")
    print("median relative ETA error (p90) at each checkpoint")
    print(f"{'progress':>9} " + " ".join(f"{n:>20}" for n in names) + "   ours/tqdm  +hist/tqdm")
    worst = {"ours": 0.0, "ours+history": 0.0}
    for checkpoint in CHECKPOINTS:
        cells, medians = [], {}
        for name in names:
            values = errors.get(name, {}).get(checkpoint, [])
            medians[name] = median_or_nan(values)
            cells.append(f"{medians[name]:>10.3f} ({p90(values):>6.2f})")
        ratios = [medians[n] / medians["tqdm"] for n in ("ours", "ours+history")]
        for n, r in zip(("ours", "ours+history"), ratios, strict=True):
            worst[n] = max(worst[n], r)
        print(
            f"{checkpoint:>8}% "
            + " ".join(f"{c:>20}" for c in cells)
            + "".join(f"{r:>12.2f}" for r in ratios)
        )
    print(f"no estimate given: {missing or 'none'}")
    print("median error by kind (all checkpoints):")
    for kind in KINDS:
        row = by_kind[kind]
        print(
            f"  {kind:>12}: " + "  ".join(f"{n} {median_or_nan(row.get(n, [])):.3f}" for n in names)
        )
    for name, held in coverage.items():
        share = 100 * sum(held) / len(held)
        print(f"p10-p90 range holds the truth ({name}): {share:.1f}% of {len(held)}")
    starts = simulate_queue(rng)
    print(
        f"start forecasts: median error {median_or_nan(starts):.3f} of the true wait, "
        f"p90 {p90(starts):.3f} ({len(starts)} forecasts)"
    )
    print(
        f"targets: worst ours/tqdm {worst['ours']:.2f} (<= 0.5), with history "
        f"{worst['ours+history']:.2f} (<= 0.25); range 70-90%; starts <= 0.25"
    )


if __name__ == "__main__":
    main()
