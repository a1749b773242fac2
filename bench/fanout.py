"""Fan-out benchmark: many SSE subscribers, jobs updating ten times a second.

    python bench/fanout.py [--jobs 100] [--per-job 10] [--rate 10] [--seconds 10]

One server process (uvicorn) pinned to core 0; the subscribers run in this process and the
writer in a process of its own, both on core 1. The writer sends one batch a tick with an
update for every job, stamped
with the time it is sent; each subscriber reads its job's stream and records, for every
progress event, how long after that stamp it arrived. A slow subscriber gets the latest state
per job, so it may see fewer events than were written; the figure that matters is latency.

Target (issue 14): 1,000 subscribers, ten on each of 100 jobs that update 10
times/s: p99 delivery latency <= 250 ms with the server on one core.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx
from _server import create_key, free_port, wait_until_up


async def subscriber(
    client: httpx.AsyncClient,
    job_id: str,
    headers: dict[str, str],
    latencies: list[float],
    ready: asyncio.Event,
    stop: asyncio.Event,
) -> int:
    received = 0
    async with client.stream("GET", f"/api/v1/jobs/{job_id}/events", headers=headers) as response:
        if response.status_code != 200:
            raise RuntimeError(f"stream refused: {response.status_code}")
        event = None
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "snapshot":
                ready.set()
            elif line.startswith("data:") and event == "progress":
                data = json.loads(line[5:])
                sent = datetime.fromisoformat(data["timestamp"])
                latencies.append((datetime.now(UTC) - sent).total_seconds() * 1000)
                received += 1
            if stop.is_set():
                break
    return received


def write(base: str, key: str, jobs: list[str], rate: int, seconds: float) -> int:
    """The writer, run in a process of its own so that the readers' loop cannot slow it: one
    batch a tick with an update for every job, stamped with the time it is sent."""
    written = 0
    tick = 1 / rate
    deadline = time.monotonic() + seconds
    n = 0
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        while time.monotonic() < deadline:
            started = time.monotonic()
            n += 1
            stamp = datetime.now(UTC).isoformat()
            updates = [
                {"job_id": j, "percentage": 1 + n % 98, "message": f"tick {n}", "timestamp": stamp}
                for j in jobs
            ]
            c.post("/api/v1/remote-jobs/progress", json={"updates": updates}).raise_for_status()
            written += len(jobs)
            time.sleep(max(0.0, tick - (time.monotonic() - started)))
    return written


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(
    base: str,
    headers: dict[str, str],
    jobs: list[str],
    per_job: int,
    rate: int,
    seconds: float,
    server_pid: int,
    staggered: bool,
) -> None:
    limits = httpx.Limits(max_connections=len(jobs) * per_job + 10, max_keepalive_connections=0)
    timeout = httpx.Timeout(60.0)
    latencies: list[float] = []
    stop = asyncio.Event()
    async with (
        httpx.AsyncClient(base_url=base, limits=limits, timeout=timeout) as streams,
        httpx.AsyncClient(base_url=base, timeout=timeout) as control,
    ):
        readies = []
        tasks = []
        arriving = time.monotonic()
        cpu_arriving = cpu_seconds(server_pid)
        for job in jobs:
            for _ in range(per_job):
                ready = asyncio.Event()
                readies.append(ready)
                tasks.append(
                    asyncio.create_task(subscriber(streams, job, headers, latencies, ready, stop))
                )
                if staggered:  # one by one: the next connects once this one has its snapshot
                    await asyncio.wait_for(ready.wait(), 60)
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 120)
        arrived = time.monotonic() - arriving
        arrival_cpu = cpu_seconds(server_pid) - cpu_arriving
        await asyncio.sleep(1)  # let the tail settle
        latencies.clear()
        cpu_before, wall_before = cpu_seconds(server_pid), time.monotonic()
        client_before = time.process_time()
        key = headers["Authorization"].removeprefix("Bearer ")
        writer = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--write",
            base,
            key,
            ",".join(jobs),
            str(rate),
            str(seconds),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await writer.communicate()
        written = int(out.decode().split()[-1])
        wall = time.monotonic() - wall_before
        server_cpu = (cpu_seconds(server_pid) - cpu_before) / wall
        client_cpu = (time.process_time() - client_before) / wall
        await asyncio.sleep(1)  # the last ticks arrive
        stop.set()
        metrics = (await control.get("/metrics")).text
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    open_streams = next(
        (line for line in metrics.splitlines() if line.startswith("morag_progress_open_streams ")),
        "",
    )
    received = len(latencies)
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) if ordered else float("nan")
    p99 = ordered[int(len(ordered) * 0.99) - 1] if ordered else float("nan")
    subscribers = len(jobs) * per_job
    share = received / max(1, written * per_job)
    print(
        f"{subscribers} subscribers on {len(jobs)} jobs, {rate} updates/s per job asked for "
        f"{seconds:g}s: {written:,} updates written ({written / seconds:,.0f}/s), "
        f"{received:,} events delivered ({share:.0%} of updates x subscribers)"
    )
    streams = open_streams.split()[-1] if open_streams else "?"
    worst = ordered[-1] if ordered else 0
    verdict = "OK" if p99 <= 250 else "MISS"
    print(
        f"delivery latency: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {worst:.1f} ms "
        f"(target p99 <= 250 ms) {verdict}; open streams {streams}"
    )
    how = "one by one" if staggered else "all at once"
    print(
        f"arrival ({how}): every stream had its snapshot after {arrived:.2f} s, "
        f"{arrival_cpu * 1000 / subscribers:.2f} ms of server CPU per subscriber"
    )
    per_event = server_cpu * wall / max(1, received) * 1e6
    print(
        f"CPU: server {server_cpu:.0%} of its core, {per_event:.0f} us per delivered event "
        f"(target <= 25 us); subscribers {client_cpu:.0%} of the other, which the writer "
        "process shares"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--per-job", type=int, default=10)
    parser.add_argument("--rate", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument(
        "--staggered",
        action="store_true",
        help="subscribers connect one by one (default: all at once, as after a deploy)",
    )
    parser.add_argument("--write", nargs=5, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.write:
        base, key, jobs, rate, seconds = opts.write
        print(write(base, key, jobs.split(","), int(rate), float(seconds)))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="morag-fanout-"))
    env = {
        **os.environ,
        "MORAG_PROGRESS_DATABASE_URL": f"sqlite:///{tmp / 'fanout.db'}",
        "MORAG_PROGRESS_RATE_LIMIT_PER_SECOND": "0",
        "MORAG_PROGRESS_KEY_CACHE_SECONDS": "3600",
        # One key opens every stream here; its cap (32 by default) would refuse the rest.
        "MORAG_PROGRESS_MAX_STREAMS_PER_KEY": "100000",
    }
    key = create_key(env, "fan")
    headers = {"Authorization": f"Bearer {key}"}
    port = free_port()
    server = subprocess.Popen(
        [
            "taskset",
            "-c",
            "0",
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "morag_progress.api:create_app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
            "--backlog",
            "4096",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.sched_setaffinity(0, {1})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{base}/healthz")
        jobs = []
        for i in range(opts.jobs):
            body = {"id": f"fan-{i}", "document_name": "d", "document_type": "pdf"}
            httpx.post(f"{base}/api/v1/jobs", json=body, headers=headers).raise_for_status()
            jobs.append(f"fan-{i}")
        asyncio.run(
            run(
                base,
                headers,
                jobs,
                opts.per_job,
                opts.rate,
                opts.seconds,
                server.pid,
                opts.staggered,
            )
        )
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
