"""Webhook fairness benchmark: another user's delivery latency while one user's webhooks point
at a receiver that never answers.

    python bench/webhooks.py [--seconds 30] [--hooks 8] [--jobs 100]

One ``morag-progress serve`` process on a temporary SQLite file, with its default webhook
settings (10 s a delivery, 32 in flight). Bob has one webhook to a receiver that answers at
once and finishes a job every quarter second; the time measured is from his finish's answer
to the receiver's reading of the delivery. First alone (the reference), then while Alice has
``--hooks`` webhooks (progress and ends) to a black hole, a socket that takes connections and
never answers, and ``--jobs`` jobs reporting progress twice a second and finishing one after
another. Afterwards: how many of Alice's deliveries wait (her backlog) and how her webhooks
were paused.

Target (issue 20): Bob's delivery p99 <= 1 s with Alice's 8 black-hole webhooks and 100 jobs.
"""

from __future__ import annotations

import argparse
import http.server
import re
import socket
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
from _server import create_key, free_port, percentile, serve, sqlite_env


class _Receiver:
    """Answers 200 at once and notes when each delivery for a job arrived."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                found = re.search(rb'"id":"([^"]+)","status":"FINISHED"', body)
                if found:
                    receiver.arrived.setdefault(found.group(1).decode(), time.monotonic())
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _black_hole() -> tuple[socket.socket, str, list[socket.socket]]:
    """A socket that takes connections and never answers (they are kept open)."""
    sock = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}/hook", held


def _bobs_deliveries(
    client: httpx.Client, bob: dict[str, str], receiver: _Receiver, seconds: float
) -> list[float]:
    """Bob finishes a job every quarter second for ``seconds``; each delivery's wait (s)."""
    finished: dict[str, float] = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        job = client.post(
            "/api/v1/jobs", json={"document_name": "b", "document_type": "doc"}, headers=bob
        ).json()["id"]
        client.put(f"/api/v1/remote-jobs/{job}/result", json={"success": True}, headers=bob)
        finished[job] = time.monotonic()
        time.sleep(0.25)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not set(finished) <= set(receiver.arrived):
        time.sleep(0.1)
    return [receiver.arrived.get(job, float("inf")) - at for job, at in finished.items()]


def _alice(client: httpx.Client, alice: dict[str, str], jobs: int, stop: threading.Event) -> None:
    """Alice's jobs: each reports progress twice a second for a few seconds, then finishes;
    new ones start as they end, until ``stop``."""
    ids = [
        client.post(
            "/api/v1/jobs", json={"document_name": f"a{i}", "document_type": "doc"}, headers=alice
        ).json()["id"]
        for i in range(jobs)
    ]
    tick = 0
    while not stop.is_set():
        tick += 1
        for i, job in enumerate(ids):
            if stop.is_set():
                return
            if (tick + i) % 10 == 0:
                client.put(
                    f"/api/v1/remote-jobs/{job}/result", json={"success": True}, headers=alice
                )
                ids[i] = client.post(
                    "/api/v1/jobs",
                    json={"document_name": f"a{i}", "document_type": "doc"},
                    headers=alice,
                ).json()["id"]
            else:
                client.put(
                    f"/api/v1/remote-jobs/{job}/progress",
                    json={"percentage": (tick * 7) % 99 + 1},
                    headers=alice,
                )
        time.sleep(0.5)


def _summary(name: str, waits: list[float]) -> str:
    return (
        f"  {name:<34} {len(waits):4d} deliveries   p50 {percentile(waits, 0.5) * 1000:7.0f} ms"
        f"   p99 {percentile(waits, 0.99) * 1000:7.0f} ms   max {max(waits) * 1000:7.0f} ms"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--hooks", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=100)
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="morag-bench-webhooks-"))
    port = free_port()
    env = sqlite_env(tmp, WEBHOOK_ALLOW_PRIVATE="true", MAX_OPEN_JOBS_PER_USER="100000")
    alice = {"Authorization": f"Bearer {create_key(env, 'alice')}"}
    bob = {"Authorization": f"Bearer {create_key(env, 'bob')}"}
    receiver = _Receiver()
    hole, hole_url, _held = _black_hole()
    server = serve(env, port)
    url = f"http://127.0.0.1:{port}"
    stop = threading.Event()
    try:
        with (
            httpx.Client(base_url=url, timeout=30) as client,
            httpx.Client(base_url=url, timeout=30) as alices_client,
        ):
            client.post(
                "/api/v1/webhooks",
                json={"url": receiver.url, "events": ["job.finished"]},
                headers=bob,
            ).raise_for_status()
            alone = _bobs_deliveries(client, bob, receiver, args.seconds / 3)
            hooks = [
                client.post(
                    "/api/v1/webhooks",
                    json={"url": hole_url, "events": ["job.progress", "job.finished"]},
                    headers=alice,
                ).json()["id"]
                for _ in range(args.hooks)
            ]
            load = threading.Thread(target=_alice, args=(alices_client, alice, args.jobs, stop))
            load.start()
            time.sleep(2)  # her deliveries under way
            loaded = _bobs_deliveries(client, bob, receiver, args.seconds)
            stop.set()
            load.join()
            waiting = {
                state: sum(
                    1
                    for hook in hooks
                    for d in client.get(
                        f"/api/v1/webhooks/{hook}/deliveries", params={"limit": 1000}, headers=alice
                    ).json()
                    if d["state"] == state
                )
                for state in ("pending", "superseded")
            }
            metrics = client.get("/metrics").text
    finally:
        stop.set()
        server.terminate()
        hole.close()
    paused = re.search(
        r'morag_progress_webhook_deliveries_total\{outcome="paused"\} ([\d.e+]+)', metrics
    )
    print(
        f"Bob's webhook deliveries (a job finished every 0.25 s), Alice's {args.hooks} webhooks "
        f"to a black hole with {args.jobs} jobs"
    )
    print(_summary("alone (reference)", alone))
    print(_summary("beside Alice's black holes", loaded))
    target = percentile(loaded, 0.99) <= 1.0
    print(f"  p99 beside her: {'met' if target else 'MISSED'} (target <= 1 s)")
    print(
        f"  Alice's deliveries afterwards (the last 1,000 of each webhook): {waiting['pending']} "
        f"pending, {waiting['superseded']} superseded; her webhooks paused "
        f"{float(paused.group(1)) if paused else 0:.0f} times"
    )
    return 0 if target else 1


if __name__ == "__main__":
    raise SystemExit(main())
