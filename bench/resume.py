"""Resume benchmark: a worker killed at 70% and its job requeued, against the same job run
without interruption, through the real tracker and store.

    python bench/resume.py [--traces 200] [--seed 11]

Each trace is one job's run: a duration log-normal around 20 minutes, whole-percent reports
every 1-3 s at a pace that wanders (each stretch of 5-15% at 0.6-1.6x the trace's rate). It is
played three times, each job on a SQLite store with the clock moved by hand:

- **uninterrupted**: claimed and reported to 100%;
- **resumed**: the same reports to 70%, with a checkpoint saved at each tenth; the worker dies
  (the job fails), and after a gap of 30-300 s the owner requeues it; the next worker claims it,
  gets the checkpoint, and reports the rest of the trace from 70%;
- **restarted** (what a requeue did before checkpoints, and what peers do): requeued at 0%
  without a checkpoint; the next worker does all the work again.

It reports how low the resumed job's progress went in its new attempt (target: never below
70%), and its ETA once 5% of the remaining work is done (at 71.5%) against the uninterrupted
job's ETA at the same percentage: the median and p90 of |resumed - uninterrupted| /
uninterrupted (target: within 15%); and how much longer each interrupted run took in all (the
gap included).
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from morag_progress import JobStatus, JobTracker, ProgressUpdate
from morag_progress.store import SQLStore
from morag_progress.store.schema import jobs


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def to(self, seconds: float, start: datetime) -> None:
        self.now = max(self.now, start + timedelta(seconds=seconds))


def trace(rng: random.Random) -> list[tuple[float, int]]:
    """(seconds from the start, percentage) of each report of one run."""
    rate = 100 / (1200 * math.exp(rng.gauss(0, 0.5)))  # percent a second, on average
    reports: list[tuple[float, int]] = []
    t, done, speed, stretch_end = 0.0, 0.0, 1.0, 0.0
    while done < 100:
        if done >= stretch_end:
            speed = rng.uniform(0.6, 1.6)
            stretch_end = done + rng.randint(5, 15)
        step = rng.uniform(1, 3)
        t += step
        done = min(100.0, done + rate * speed * step)
        reports.append((t, math.floor(done)))
    return reports


def _claim(tracker: JobTracker, kind: str, worker: str) -> str:
    job = tracker.claim(worker, claimant="k", user_id="u", document_types=[kind])
    assert job is not None
    return job.id


def _eta(tracker: JobTracker, job_id: str) -> float | None:
    job = tracker.get_job(job_id, "u")
    assert job is not None
    eta = job.estimate(tracker._clock())
    return None if eta is None else eta.seconds


def play(
    tracker: JobTracker,
    clock: Clock,
    reports: list[tuple[float, int]],
    kind: str,
    mode: str,
    rng: random.Random,
) -> tuple[float | None, int | None, float]:
    """Run one job through ``reports``; (its ETA at the first report at or past 71.5% of the
    work, the lowest percentage of its last attempt, the seconds it took in all)."""
    tracker.start_job("run", kind, user_id="u", status=JobStatus.WAITING_FOR_REMOTE_WORKER)
    start = clock.now
    job_id = _claim(tracker, kind, "w1")
    offset = 0.0
    attempt = 1
    watched: float | None = None
    lowest: int | None = None
    for t, pct in reports:
        if mode != "uninterrupted" and attempt == 1 and pct > 70:
            # The worker dies just after 70%: the job fails, and waits a while to be requeued.
            clock.to(t + offset, start)
            tracker.apply(
                ProgressUpdate.final(job_id, success=False, message="killed", user_id="u")
            )
            gap = rng.uniform(30, 300)
            offset += gap
            if mode == "restarted":  # no checkpoint: requeued at 0%, all done again
                with tracker.store.transaction("forget the checkpoint") as conn:
                    conn.execute(jobs.update().values(checkpoint=None, checkpoint_percentage=None))
            clock.to(t + offset, start)
            tracker.requeue(job_id, "u")
            offset += 5
            clock.to(t + offset, start)
            assert _claim(tracker, kind, "w2") == job_id
            attempt = 2
            if mode == "restarted":
                # The work up to 70% is done again, at the same pace, before going on.
                for t0, p0 in reports:
                    if p0 > 70:
                        break
                    clock.to(t + offset + t0, start)
                    tracker.apply(ProgressUpdate(job_id, p0, user_id="u", attempt=2))
                    lowest = p0 if lowest is None else min(lowest, p0)
                offset += t0
        clock.to(t + offset, start)
        checkpoint = {"pct": pct} if mode == "resumed" and pct % 10 == 0 and attempt == 1 else None
        tracker.apply(
            ProgressUpdate(job_id, pct, user_id="u", attempt=attempt, checkpoint=checkpoint)
        )
        if attempt == 2:
            lowest = pct if lowest is None else min(lowest, pct)
        if watched is None and pct >= 71.5 and (mode == "uninterrupted" or attempt == 2):
            watched = _eta(tracker, job_id)
    if lowest is None:
        lowest = tracker.get_job(job_id, "u").percentage  # type: ignore[union-attr]
    history = [e.percentage for e in tracker.history(job_id, "u") if e.attempt == 2]
    took = (clock.now - start).total_seconds()
    return watched, min([lowest, *history]) if history else lowest, took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", type=int, default=200)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    differences: list[float] = []
    lowest_resumed: list[int] = []
    lost: dict[str, list[float]] = {"resumed": [], "restarted": []}
    with tempfile.TemporaryDirectory() as scratch:
        for i in range(args.traces):
            reports = trace(rng)
            results = {}
            for mode in ("uninterrupted", "resumed", "restarted"):
                store = SQLStore(f"sqlite:///{Path(scratch) / f'{i}-{mode}.db'}")
                clock = Clock()
                tracker = JobTracker(store=store, clock=clock)
                results[mode] = play(tracker, clock, reports, f"k{i}", mode, random.Random(i))
                store.close()
            base, _, whole = results["uninterrupted"]
            resumed, low, _ = results["resumed"]
            assert low is not None
            lowest_resumed.append(low)
            if base and resumed is not None:
                differences.append(abs(resumed - base) / base)
            for mode, extra in lost.items():
                extra.append(results[mode][2] / whole - 1)

    def q(values: list[float], p: float) -> float:
        return sorted(values)[min(len(values) - 1, int(p * len(values)))]

    print(f"resume: {args.traces} traces, seed {args.seed}")
    print(
        f"  lowest percentage of the resumed attempt: {min(lowest_resumed)}% "
        f"({'met' if min(lowest_resumed) >= 70 else 'MISSED'}: never below 70%)"
    )
    within = sum(d <= 0.15 for d in differences) / len(differences)
    print(
        f"  ETA at 71.5%, resumed vs uninterrupted: median {statistics.median(differences):.1%}, "
        f"mean {statistics.fmean(differences):.1%}, p90 {q(differences, 0.9):.1%} over "
        f"{len(differences)} traces; within 15%: {within:.0%} of them"
    )
    for mode, extra in lost.items():
        print(
            f"  {mode}: took {statistics.median(extra):+.1%} (median) longer than the "
            f"uninterrupted run, gap included"
        )


if __name__ == "__main__":
    main()
