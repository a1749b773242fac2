"""Fan-out benchmark: many SSE subscribers, jobs updating ten times a second.

    python bench/fanout.py [--jobs 100] [--per-job 10] [--rate 10] [--seconds 10]

One server process (uvicorn) pinned to core 0; the subscribers run in this process and the
writer in a process of its own, both on core 1. The writer sends one batch a tick with an
update for every job, stamped
with the time it is sent; each subscriber reads its job's stream and records, for every
progress event, how long after that stamp it arrived. A slow subscriber gets the latest state
per job, so it may see fewer events than were written; the figure that matters is latency.

Targets (issue 14): 1,000 subscribers, ten on each of 100 jobs that update 10 times/s, all
connecting at once: every stream has its snapshot within 3 s, then p99 delivery latency
<= 100 ms and <= 25 us of server CPU per delivered event, with the server on one core.
``--staggered`` connects them one by one instead; ``--reference`` measures a bare uvloop server
writing the same events (the floor).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx
import uvloop
from _server import cpu_seconds, create_key, free_port, sqlite_env, wait_until_up


async def subscriber(
    base: str,
    job_id: str,
    headers: dict[str, str],
    latencies: list[float],
    ready: asyncio.Event,
    stop: asyncio.Event,
) -> int:
    """One stream, read with as little client work as possible (a raw connection, a substring
    search per event) so that the client's core is not what the latency measures."""
    host, port = base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    lines = [f"GET /api/v1/jobs/{job_id}/events HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"stream refused: {head[:40]!r}")
    received = 0
    buffer = b""
    try:
        while not stop.is_set():
            data = await reader.read(65536)
            if not data:
                break
            buffer += data
            *events, buffer = buffer.split(b"\r\n\r\n")
            now = datetime.now(UTC)
            for event in events:
                if b"event: snapshot" in event:
                    ready.set()
                    continue
                at = event.find(b'"timestamp":"')
                if b"event: progress" not in event or at < 0:
                    continue
                stamp = event[at + 13 : event.index(b'"', at + 13)].decode()
                sent = datetime.fromisoformat(stamp)
                latencies.append((now - sent).total_seconds() * 1000)
                received += 1
    finally:
        writer.close()
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


def serve_reference(port: int, rate: int) -> None:
    """The floor: a bare uvloop server that writes each tick's event for a job, encoded once,
    to every connection watching it, as chunked SSE. No framework, no database: what one socket
    write per delivered event costs on this machine. It ticks while the file ``GO`` exists
    beside the bench's database, which the bench creates for the measured seconds."""
    watchers: dict[str, list[asyncio.Transport]] = {}

    class Stream(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.head = b""

        def data_received(self, data: bytes) -> None:
            self.head += data
            if b"\r\n\r\n" not in self.head:
                return
            job = self.head.split(b" ", 2)[1].split(b"/")[4].decode()
            snapshot = b"event: snapshot\r\ndata: {}\r\n\r\n"
            self.transport.write(  # type: ignore[attr-defined]
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n" + b"%x\r\n%s\r\n" % (len(snapshot), snapshot)
            )
            watchers.setdefault(job, []).append(self.transport)  # type: ignore[arg-type]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Stream, "127.0.0.1", port, backlog=4096)
        n = 0
        go = Path(os.environ["FANOUT_GO"])
        while True:
            await asyncio.sleep(1 / rate)
            if not go.exists():
                continue
            n += 1
            stamp = datetime.now(UTC).isoformat()
            for job, transports in watchers.items():
                data = json.dumps(
                    {"job_id": job, "percentage": n % 99, "timestamp": stamp}, separators=(",", ":")
                )
                event = f"event: progress\r\nid: {n}\r\ndata: {data}\r\n\r\n".encode()
                chunk = b"%x\r\n%s\r\n" % (len(event), event)
                for transport in transports:
                    transport.write(chunk)
        server.close()

    uvloop.run(main())


async def run(
    base: str,
    headers: dict[str, str],
    jobs: list[str],
    per_job: int,
    rate: int,
    seconds: float,
    server_pid: int,
    staggered: bool,
    go: Path | None = None,
) -> None:
    latencies: list[float] = []
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=base, timeout=60.0) as control:
        readies = []
        tasks = []
        arriving = time.monotonic()
        cpu_arriving = cpu_seconds(server_pid)
        for job in jobs:
            for _ in range(per_job):
                ready = asyncio.Event()
                readies.append(ready)
                tasks.append(
                    asyncio.create_task(subscriber(base, job, headers, latencies, ready, stop))
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
        if go is not None:  # the reference ticks by itself while the file exists
            go.touch()
            await asyncio.sleep(seconds)
            go.unlink()
            written = int(seconds * rate) * len(jobs)
        else:
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
        metrics = "" if go is not None else (await control.get("/metrics")).text
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
    verdict = "OK" if p99 <= 100 else "MISS"
    print(
        f"delivery latency: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {worst:.1f} ms "
        f"(target p99 <= 100 ms) {verdict}; open streams {streams}"
    )
    how = "one by one" if staggered else "all at once"
    print(
        f"arrival ({how}): every stream had its snapshot after {arrived:.2f} s, "
        f"{arrival_cpu * 1000 / subscribers:.2f} ms of server CPU per subscriber "
        f"(target <= 3 s) {'OK' if arrived <= 3 else 'MISS'}"
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
    parser.add_argument(
        "--reference",
        action="store_true",
        help="measure the floor instead: a bare uvloop server writing the same events",
    )
    parser.add_argument("--write", nargs=5, help=argparse.SUPPRESS)
    parser.add_argument("--serve-reference", nargs=2, type=int, help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.serve_reference:
        serve_reference(*opts.serve_reference)
        return 0
    if opts.write:
        base, key, jobs, rate, seconds = opts.write
        print(write(base, key, jobs.split(","), int(rate), float(seconds)))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="morag-fanout-"))
    # One key opens every stream here; its cap (32 by default) would refuse the rest.
    env = sqlite_env(tmp, KEY_CACHE_SECONDS="3600", MAX_STREAMS_PER_KEY="100000")
    port = free_port()
    go = tmp / "GO"
    if opts.reference:
        headers: dict[str, str] = {}
        command = [__file__, "--serve-reference", str(port), str(opts.rate)]
        env["FANOUT_GO"] = str(go)
    else:
        headers = {"Authorization": f"Bearer {create_key(env, 'fan')}"}
        command = ["-m", "uvicorn", "--factory", "morag_progress.api:create_app"]
        command += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
        command += ["--backlog", "4096"]
    server = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, *command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(os.environ.get("FANOUT_SERVER_LOG", os.devnull), "w"),  # noqa: SIM115
    )
    os.sched_setaffinity(0, {1})
    base = f"http://127.0.0.1:{port}"
    try:
        jobs = [f"fan-{i}" for i in range(opts.jobs)]
        if opts.reference:
            _wait_for_port(port)
        else:
            wait_until_up(f"{base}/healthz")
            for job in jobs:
                body = {"id": job, "document_name": "d", "document_type": "pdf"}
                httpx.post(f"{base}/api/v1/jobs", json=body, headers=headers).raise_for_status()
        uvloop.run(
            run(
                base,
                headers,
                jobs,
                opts.per_job,
                opts.rate,
                opts.seconds,
                server.pid,
                opts.staggered,
                go if opts.reference else None,
            )
        )
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


if __name__ == "__main__":
    raise SystemExit(main())
