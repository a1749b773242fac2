"""One rank of a distributed run, as a launcher starts it: ``RANK``/``WORLD_SIZE`` (or SLURM's,
MPI's) in the environment, and nothing else changed in the training loop but the reporter.
Arguments: steps, seconds a step; ``SLOW_RANK`` names a rank whose steps take three times as
long."""

from __future__ import annotations

import os
import sys
import time

from morag_progress.client import ProgressReporter


def main() -> None:
    steps, seconds = int(sys.argv[1]), float(sys.argv[2])
    rank = int(os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or 0)
    if os.environ.get("SLOW_RANK") == str(rank):
        seconds *= 3
    with ProgressReporter.for_rank("train", "ranks-test", min_interval=0.1) as reporter:
        for step in range(steps):
            time.sleep(seconds)
            reporter.update(100 * (step + 1) / steps, f"step {step + 1} of {steps}")


if __name__ == "__main__":
    main()
