"""Deadline warnings on replayed runs, through the real tracker, store and monitor.

    python bench/deadlines.py [--history 60] [--traces 300] [--seed 5] [--deadline 1500]

Each trace is one job's run as in ``bench/resume.py``: a duration log-normal around 20 minutes
(sigma 0.5), whole-percent reports every 1-3 s at a pace that wanders (each stretch of 5-15% at
0.6-1.6x the trace's rate). On one SQLite store with the clock moved by hand, ``--history``
jobs of the kind run to the end first (what the server learns from), then ``--traces`` jobs
each made with a deadline ``--deadline`` seconds after it is made; the server's monitor sweeps
every 5 s of the replay, as ``serve`` does, and the first sweep that marks a job at risk is its
warning. Finished jobs keep teaching the kind's history as they would on a server.

Targets (issue 22, part 4): at least 80% of the jobs that miss their deadline warned with at
least 25% of the job's duration still to go; at most 5% of the jobs that finish in time warned.
The same replay is scored for the rule a user would write without a prediction (warn once the
job has used 75% of its time and is less than 75% done), side by side.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

from resume import Clock, trace

from morag_progress import JobTracker
from morag_progress.deadlines import LIKELY
from morag_progress.monitor import Monitor
from morag_progress.store import SQLStore

SWEEP = 5.0


def replay(
    tracker: JobTracker,
    monitor: Monitor,
    clock: Clock,
    reports: list[tuple[float, int]],
    deadline_s: float | None,
) -> tuple[float, float | None, float | None]:
    """One job through ``reports`` with sweeps every 5 s: (its duration, when the monitor
    first marked it at risk, when the naive rule would have warned), in seconds from its
    start (None: never)."""
    start = clock.now
    deadline = None if deadline_s is None else start + timedelta(seconds=deadline_s)
    job_id = tracker.start_job("run", "replayed", user_id="u", deadline=deadline)
    warned: float | None = None
    naive: float | None = None
    swept = 0.0
    for t, pct in reports:
        while swept + SWEEP <= t:
            swept += SWEEP
            clock.to(swept, start)
            if deadline_s is None:
                continue
            monitor.sweep()
            job = tracker.get_job(job_id, "u")
            assert job is not None
            if warned is None and job.at_risk == "deadline":
                warned = swept
        clock.to(t, start)
        tracker.update_progress(job_id, pct, None, f"{pct}%", "u")
        if deadline_s is not None and naive is None and t >= 0.75 * deadline_s and pct < 75:
            naive = t
    duration = reports[-1][0]
    if reports[-1][1] < 100:
        tracker.mark_completed(job_id, "done", "u")
    clock.to(duration + 1, start)
    return duration, warned, naive


def score(
    name: str, runs: list[tuple[float, float | None]], deadline_s: float
) -> tuple[float, float]:
    """Print and return (share of misses warned with >= 25% to go, share of on-time warned)."""
    misses = [(d, w) for d, w in runs if d > deadline_s]
    in_time = [(d, w) for d, w in runs if d <= deadline_s]
    early = [w is not None and w <= 0.75 * d for d, w in misses]
    ever = [w is not None for _, w in misses]
    false = [w is not None for _, w in in_time]
    early_share = sum(early) / len(misses) if misses else 1.0
    false_share = sum(false) / len(in_time) if in_time else 0.0
    to_go = [1 - w / d for d, w in misses if w is not None]
    print(
        f"  {name}: misses warned with >= 25% to go {sum(early)}/{len(misses)} "
        f"({early_share:.0%}; warned at all {sum(ever)}), median share still to go when "
        f"warned {statistics.median(to_go) if to_go else 0:.0%}; on-time jobs warned "
        f"{sum(false)}/{len(in_time)} ({false_share:.1%})"
    )
    return early_share, false_share


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--history", type=int, default=60)
    parser.add_argument("--traces", type=int, default=300)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--deadline", type=float, default=1500)
    parser.add_argument("--chance", type=float, default=LIKELY)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    ours: list[tuple[float, float | None]] = []
    naive: list[tuple[float, float | None]] = []
    with tempfile.TemporaryDirectory() as scratch:
        store = SQLStore(f"sqlite:///{Path(scratch) / 'replay.db'}")
        clock = Clock()
        tracker = JobTracker(store=store, clock=clock)
        monitor = Monitor(
            tracker,
            stall_timeout=None,
            straggler_share=None,
            warn_long=False,
            deadline_chance=args.chance,
            clock=clock,
        )
        for _ in range(args.history):
            replay(tracker, monitor, clock, trace(rng), None)
        for i in range(args.traces):
            duration, warned, rule = replay(tracker, monitor, clock, trace(rng), args.deadline)
            ours.append((duration, warned))
            naive.append((duration, rule))
            if (i + 1) % 50 == 0:
                print(f"  ... {i + 1} jobs", file=sys.stderr)
        store.close()
    durations = [d for d, _ in ours]
    missed = sum(d > args.deadline for d in durations)
    print(
        f"deadlines: {args.traces} replayed jobs after {args.history} that taught the kind, "
        f"seed {args.seed}, deadline {args.deadline:.0f} s after each is made; durations "
        f"median {statistics.median(durations):.0f} s; {missed} missed their deadline"
    )
    early, false = score(f"ours (a {args.chance:.0%} chance of missing it)", ours, args.deadline)
    score("reference (75% of the time used, under 75% done)", naive, args.deadline)
    print(
        f"  targets: >= 80% of misses warned with >= 25% to go: "
        f"{'met' if early >= 0.8 else 'MISSED'}; <= 5% of on-time jobs warned: "
        f"{'met' if false <= 0.05 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
