"""Reporter benchmark: what one ``update`` costs a worker's hot loop, against tqdm's own
per-iteration cost measured in the same run, and the longest one call blocks while the server
cannot be reached.

    python bench/reporter.py [--calls 1000000] [--rounds 5]

Reference: tqdm 4, the progress bar people already put in hot loops, writing to /dev/null with
its default refresh (``mininterval=0.1``). Its per-iteration cost is the time of
``for _ in tqdm(range(n))`` minus the bare loop's; its per-call cost is ``bar.update(1)``.
Ours is ``reporter.update(percentage)`` in the same loop, against a real server on loopback
(the sender thread sending every ``min_interval``) and against a port where nothing listens.
Rounds alternate ours and tqdm; medians are reported.

Targets (the worker-side issue): one call costs no more than tqdm's
per-iteration overhead; no call blocks for 1 ms or more while the server is unreachable.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from _server import create_key, free_port, serve, sqlite_env
from tqdm import tqdm

from morag_progress.client import ProgressReporter


def per_call(loop: Callable[[int], None], n: int) -> float:
    """Nanoseconds per iteration of ``loop(n)``."""
    started = time.perf_counter_ns()
    loop(n)
    return (time.perf_counter_ns() - started) / n


def bare(n: int) -> None:
    for _ in range(n):
        pass


def tqdm_iteration(n: int) -> None:
    with open(os.devnull, "w") as sink:
        for _ in tqdm(range(n), file=sink):
            pass


def tqdm_update(n: int) -> None:
    with open(os.devnull, "w") as sink, tqdm(total=n, file=sink) as bar:
        update = bar.update
        for _ in range(n):
            update(1)


def ours(reporter: ProgressReporter) -> Callable[[int], None]:
    """The call alone, as tqdm's loop has no percentage to compute either."""

    def loop(n: int) -> None:
        update = reporter.update
        percentage = 42.0
        for _ in range(n):
            update(percentage)

    return loop


def ours_computed(reporter: ProgressReporter) -> Callable[[int], None]:
    """The call with the percentage a worker computes for it."""

    def loop(n: int) -> None:
        update = reporter.update
        scale = 100 / n
        for i in range(n):
            update(i * scale)

    return loop


def longest_block(reporter: ProgressReporter, n: int) -> tuple[float, float]:
    """(max, p99.9) microseconds of single calls, each timed alone."""
    clock = time.perf_counter_ns
    samples = []
    for i in range(n):
        started = clock()
        reporter.update(i * 100 / n, "working")
        samples.append(clock() - started)
    samples.sort()
    return samples[-1] / 1000, samples[int(len(samples) * 0.999)] / 1000


def start_server(directory: Path) -> tuple[subprocess.Popen[bytes], str, str, str]:
    env = sqlite_env(directory)
    key = create_key(env, "bench")
    port = free_port()
    server = serve(env, port)
    url = f"http://127.0.0.1:{port}"
    job = httpx.post(
        f"{url}/api/v1/jobs",
        json={"document_name": "bench", "document_type": "bench"},
        headers={"Authorization": f"Bearer {key}"},
    ).json()["id"]
    return server, url, key, job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="morag-bench-reporter-"))
    server, url, key, job = start_server(directory)
    try:
        up = ProgressReporter(job, api_url=url, api_key=key, min_interval=0.5)
        down = ProgressReporter(job, api_url=f"http://127.0.0.1:{free_port()}", api_key=key)
        keys = ("bare", "tqdm_it", "tqdm_up", "up", "down", "computed")
        rows: dict[str, list[float]] = {k: [] for k in keys}
        n = args.calls
        for _ in range(args.rounds):
            rows["bare"].append(per_call(bare, n))
            rows["up"].append(per_call(ours(up), n))
            rows["tqdm_it"].append(per_call(tqdm_iteration, n))
            rows["down"].append(per_call(ours(down), n))
            rows["tqdm_up"].append(per_call(tqdm_update, n))
            rows["computed"].append(per_call(ours_computed(up), n))
        med = {k: statistics.median(v) for k, v in rows.items()}
        tqdm_overhead = med["tqdm_it"] - med["bare"]
        print(f"calls per round {n:,}, rounds {args.rounds}, Python {sys.version.split()[0]}")
        print(f"{'measure':<46}{'ns/call':>10}{'vs tqdm/it':>12}")
        print(f"{'bare loop':<46}{med['bare']:>10.0f}")
        print(f"{'tqdm: per-iteration overhead (reference)':<46}{tqdm_overhead:>10.0f}{1:>11.2f}x")
        print(
            f"{'tqdm: bar.update(1)':<46}{med['tqdm_up'] - med['bare']:>10.0f}"
            f"{(med['tqdm_up'] - med['bare']) / tqdm_overhead:>11.2f}x"
        )
        for name, label in (
            ("up", "server up"),
            ("down", "server down"),
            ("computed", "percentage computed, up"),
        ):
            cost = med[name] - med["bare"]
            ratio = cost / tqdm_overhead
            print(f"{'ours: reporter.update(p), ' + label:<46}{cost:>10.0f}{ratio:>11.2f}x")
        worst, p999 = longest_block(down, 200_000)
        print(
            f"longest single call with the server down (200,000 calls): max {worst:.1f} us, "
            f"p99.9 {p999:.2f} us (target < 1000 us)"
        )
        worst, p999 = longest_block(up, 200_000)
        print(
            f"longest single call with the server up (200,000 calls): max {worst:.1f} us, "
            f"p99.9 {p999:.2f} us"
        )
        up.complete(True)
        print(
            f"final status delivered: {up.close(timeout=10)}; "
            f"undelivered to the down server, closed at its deadline: {not down.close(timeout=0.5)}"
        )
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
