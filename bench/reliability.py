"""Long forms of the reliability suite, run on demand (the short forms are in
tests/reliability/, run by CI).

    python bench/reliability.py [--seconds 60] [--workers 32] [--kills 3] [--outage 30]

1. Load: ``--workers`` threads, each its own job and key-less reporter loop over HTTP, for
   ``--seconds``; the server's memory (RSS) is sampled every second and must stay flat (the
   last third's mean within 10% of the middle third's); afterwards every acknowledged update
   is in the change feed.
2. Crashes: the server is killed with SIGKILL ``--kills`` times under that load and restarted;
   every acknowledged update survives each crash.
3. Outage: a reporter keeps its worker running through ``--outage`` seconds of server outage
   and delivers its latest state and final status after the restart.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from _server import create_key, free_port, wait_until_up

from morag_progress.client import ProgressReporter
from morag_progress.store import SQLStore


class Server:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "morag_progress.cli", "serve", "--port", str(self.port)],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until_up(f"{self.url}/readyz")

    def rss_mb(self) -> float:
        assert self.process is not None
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def load(
    server: Server, key: str, workers: int, seconds: float
) -> tuple[dict[str, list[str]], list[float]]:
    headers = {"Authorization": f"Bearer {key}"}
    jobs = [
        httpx.post(
            f"{server.url}/api/v1/jobs",
            json={"document_name": f"load-{i}", "document_type": "load"},
            headers=headers,
        ).json()["id"]
        for i in range(workers)
    ]
    acknowledged: dict[str, list[str]] = {job: [] for job in jobs}
    stop = threading.Event()

    def write(job_id: str) -> None:
        with httpx.Client(base_url=server.url, headers=headers, timeout=5) as client:
            n = 0
            while not stop.is_set():
                n += 1
                message = f"{job_id}:{n}"
                try:
                    response = client.put(
                        f"/api/v1/remote-jobs/{job_id}/progress",
                        json={"percentage": 1 + n % 98, "message": message, "seq": n},
                    )
                except httpx.TransportError:
                    return
                if response.status_code == 200 and response.json()["applied"]:
                    acknowledged[job_id].append(message)

    threads = [threading.Thread(target=write, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(1)
        try:
            samples.append(server.rss_mb())
        except OSError:
            break
    stop.set()
    for thread in threads:
        thread.join(10)
    return acknowledged, samples


def lost(database_url: str, acknowledged: dict[str, list[str]]) -> int:
    store = SQLStore(database_url)
    missing = 0
    for job_id, messages in acknowledged.items():
        recorded = {e.message for e in store.history(job_id, limit=10_000_000)}
        missing += sum(1 for m in messages if m not in recorded)
    store.close()
    return missing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--outage", type=float, default=30)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="morag-bench-reliability-"))
    database_url = f"sqlite:///{directory / 'reliability.db'}"
    env = {
        **os.environ,
        "MORAG_PROGRESS_DATABASE_URL": database_url,
        "MORAG_PROGRESS_RATE_LIMIT_PER_SECOND": "0",
    }
    key = create_key(env, "alice")
    server = Server(env)
    server.start()
    try:
        acknowledged, rss = load(server, key, args.workers, args.seconds)
        total = sum(len(m) for m in acknowledged.values())
        third = max(1, len(rss) // 3)
        middle, last = statistics.mean(rss[third : 2 * third]), statistics.mean(rss[-third:])
        growth = (last - middle) / middle
        print(
            f"load: {args.workers} writers x {args.seconds:.0f} s, {total:,} acknowledged "
            f"({total / args.seconds:,.0f}/s); RSS {rss[0]:.0f} -> {rss[-1]:.0f} MB, last third "
            f"vs middle third {growth:+.1%} ({'flat' if abs(growth) <= 0.10 else 'GROWING'}); "
            f"lost: {lost(database_url, acknowledged)}"
        )
        for kill in range(1, args.kills + 1):
            killer = threading.Timer(args.seconds / 4, server.kill)
            killer.start()
            acknowledged, _ = load(server, key, args.workers, args.seconds / 4 + 1)
            killer.join()
            server.start()
            print(
                f"crash {kill}: SIGKILL under load; {sum(len(m) for m in acknowledged.values()):,}"
                f" acknowledged, lost after restart: {lost(database_url, acknowledged)}"
            )
        job_id = httpx.post(
            f"{server.url}/api/v1/jobs",
            json={"document_name": "outage", "document_type": "x"},
            headers={"Authorization": f"Bearer {key}"},
        ).json()["id"]
        reporter = ProgressReporter(job_id, api_url=server.url, api_key=key, min_interval=0.1)
        reporter.update(1, "before")
        time.sleep(0.5)
        server.kill()
        slowest, steps = 0.0, 0
        deadline = time.monotonic() + args.outage
        while time.monotonic() < deadline:
            started = time.perf_counter()
            reporter.update(1 + min(98, steps // 10_000), f"step {steps}")
            slowest = max(slowest, time.perf_counter() - started)
            steps += 1
        reporter.complete(True, "done during the outage")
        server.start()
        delivered = reporter.close(timeout=60)
        job = httpx.get(
            f"{server.url}/api/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {key}"}
        ).json()
        print(
            f"outage: {args.outage:.0f} s, {steps:,} updates, slowest call "
            f"{slowest * 1e6:.0f} us; after restart delivered={delivered}, job "
            f"{job['status']} ({job['summary']!r})"
        )
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
