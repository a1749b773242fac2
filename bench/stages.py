"""Time-true progress on replayed multi-stage runs, through the real tracker, store and API.

    python bench/stages.py [--history 30] [--traces 120] [--seed 3]

Each trace is one job of a kind whose four stages report uneven shares of the percentage
against their share of the time: download 0-10% (45% of the time: a slow source), processing
10-70% (25%), indexing 70-95% (25%), cleanup 95-100% (5%), each run's shares varied by up to
+-30% and
renormalised, its whole duration log-normal around 10 minutes (sigma 0.3); within a stage
the percentage moves evenly, reported every 1-3 s. On one SQLite store with the clock moved
by hand, ``--history`` jobs of the kind run first; then each of ``--traces`` jobs is sampled
every 10 s of its run: its percentage, and its ``time_progress`` as the API writes it
(``Estimates.jobs_out``), against the elapsed fraction of its run (known once it ends).

Target (issue 22, part 3): mean |time-true progress - elapsed fraction| <= 10 points, reported
beside the worker's own percentage measured the same way.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import tempfile
from pathlib import Path

from resume import Clock

from morag_progress import JobTracker
from morag_progress.api.auth import Principal
from morag_progress.api.estimates import Estimates
from morag_progress.keys import Role
from morag_progress.store import SQLStore

STAGES = ((10, 0.45), (60, 0.25), (25, 0.25), (5, 0.05))
"""(share of the percentage, mean share of the time) of each stage."""
SAMPLE = 10.0
VIEWER = Principal(key_id="k", user_id="u", role=Role.USER)


def trace(rng: random.Random) -> list[tuple[float, int]]:
    """(seconds from the start, percentage) of each report of one run."""
    duration = 600 * math.exp(rng.gauss(0, 0.3))
    shares = [mean * rng.uniform(0.7, 1.3) for _, mean in STAGES]
    times = [duration * share / sum(shares) for share in shares]
    reports: list[tuple[float, int]] = []
    t, pct_at, t_at = 0.0, 0.0, 0.0
    for (span, _), seconds in zip(STAGES, times, strict=True):
        end = t_at + seconds
        while t < end:
            t = min(end, t + rng.uniform(1, 3))
            pct = pct_at + span * (t - t_at) / seconds
            reports.append((t, math.floor(pct + 1e-9)))
        pct_at, t_at = pct_at + span, end
    return reports


def replay(
    tracker: JobTracker, estimates: Estimates | None, clock: Clock, reports: list[tuple[float, int]]
) -> list[tuple[float, int, int | None]]:
    """One job through ``reports``; sampled every 10 s: (elapsed fraction, percentage,
    time-true progress)."""
    start = clock.now
    job_id = tracker.start_job("run", "staged", user_id="u")
    duration = reports[-1][0]
    samples: list[tuple[float, int, int | None]] = []
    sampled = 0.0
    for t, pct in reports:
        while estimates is not None and sampled + SAMPLE <= t:
            sampled += SAMPLE
            clock.to(sampled, start)
            job = tracker.get_job(job_id, "u")
            assert job is not None
            if job.percentage > 0:  # started
                out = estimates.jobs_out([job], VIEWER)[0]
                samples.append((sampled / duration, job.percentage, out.time_progress))
        clock.to(t, start)
        tracker.update_progress(job_id, pct, None, f"{pct}%", "u")
    clock.to(duration + 1, start)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--history", type=int, default=30)
    parser.add_argument("--traces", type=int, default=120)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    ours: list[float] = []
    theirs: list[float] = []
    missing = 0
    per_run_ours: list[float] = []
    with tempfile.TemporaryDirectory() as scratch:
        store = SQLStore(f"sqlite:///{Path(scratch) / 'stages.db'}")
        clock = Clock()
        tracker = JobTracker(store=store, clock=clock)
        estimates = Estimates(store, history_ttl=0, clock=clock)
        for _ in range(args.history):
            replay(tracker, None, clock, trace(rng))
        for _ in range(args.traces):
            run: list[float] = []
            for elapsed, pct, time_true in replay(tracker, estimates, clock, trace(rng)):
                theirs.append(abs(pct - 100 * elapsed))
                if time_true is None:
                    missing += 1
                    continue
                run.append(abs(time_true - 100 * elapsed))
            ours += run
            per_run_ours.append(statistics.fmean(run) if run else 0.0)
        store.close()
    print(
        f"stages: {args.traces} replayed runs after {args.history} that taught the kind, "
        f"seed {args.seed}; {len(theirs)} samples (every {SAMPLE:.0f} s of each run), "
        f"{missing} without a time-true progress"
    )
    mean_ours, mean_theirs = statistics.fmean(ours), statistics.fmean(theirs)
    print(
        f"  ours, time_progress: mean |time-true - elapsed| {mean_ours:.1f} points "
        f"(p90 {sorted(ours)[int(0.9 * len(ours))]:.1f}; worst run's mean "
        f"{max(per_run_ours):.1f})"
    )
    print(
        f"  reference, the worker's own percentage: mean |percentage - elapsed| "
        f"{mean_theirs:.1f} points (p90 {sorted(theirs)[int(0.9 * len(theirs))]:.1f})"
    )
    print(
        f"  target mean <= 10 points: {'met' if mean_ours <= 10 else 'MISSED'} "
        f"({mean_theirs / mean_ours:.1f}x closer than the percentage)"
    )


if __name__ == "__main__":
    main()
