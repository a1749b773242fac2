"""Log upload benchmark: a 1 MiB upload, and another user's report while four such run.

    python bench/logs.py [--uploads 5] [--reports 300]

One ``morag-progress serve`` process on a temporary SQLite file (synchronous=NORMAL). Alice
uploads 1 MiB of log lines (about 31,000 progress lines) to her job; the time is the whole
request, from sending to the answer. Then Bob reports on his own job, one report after another,
first alone (the reference) and then while four of Alice's uploads run at once; the ratio is his
p99 under load over his p99 alone.

Targets (issue 14): a 1 MiB upload applied in <= 100 ms; Bob's p99 <= 100 ms under four uploads.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
from _server import create_key, free_port, percentile, serve, sqlite_env


def log_body(size: int = 1024 * 1024) -> bytes:
    """About ``size`` bytes of log lines: progress lines and ordinary ones, as a worker logs."""
    lines = []
    total = 0
    i = 0
    while total < size:
        line = f"[{i % 99 + 1}%] Transcribing chunk {i}" if i % 10 else f"decoded frame {i} ok"
        lines.append(line)
        total += len(line) + 1
        i += 1
    return "\n".join(lines).encode()[:size]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=5, help="timed single uploads")
    parser.add_argument("--reports", type=int, default=300, help="Bob's reports per phase")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="morag-bench-logs-"))
    port = free_port()
    env = sqlite_env(tmp)
    alice = {"Authorization": f"Bearer {create_key(env, 'alice')}"}
    bob = {"Authorization": f"Bearer {create_key(env, 'bob')}"}
    server = serve(env, port)
    url = f"http://127.0.0.1:{port}"
    try:
        body = log_body()
        with httpx.Client(base_url=url, timeout=60) as client:
            job = {"document_name": "talk.mp3", "document_type": "audio"}
            alices = client.post("/api/v1/jobs", json=job, headers=alice).json()["id"]
            bobs = client.post("/api/v1/jobs", json=job, headers=bob).json()["id"]
            times = []
            for _ in range(args.uploads):
                start = time.perf_counter()
                answer = client.post(
                    f"/api/v1/remote-jobs/{alices}/logs", content=body, headers=alice
                )
                times.append(time.perf_counter() - start)
                assert answer.status_code == 200, answer.text
            found = answer.json()
            print(
                f"1 MiB upload: {found['lines']} lines, {found['events']} with progress, "
                f"{found['events'] - found['coalesced']} applied as updates"
            )
            print(
                f"  median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms"
            )

            def reports() -> list[float]:
                latencies = []
                for i in range(args.reports):
                    start = time.perf_counter()
                    answer = client.put(
                        f"/api/v1/remote-jobs/{bobs}/progress",
                        json={"percentage": i % 99 + 1},
                        headers=bob,
                    )
                    latencies.append(time.perf_counter() - start)
                    assert answer.status_code == 200, answer.text
                return latencies

            alone = reports()
            stop = threading.Event()

            def upload_loop() -> None:
                with httpx.Client(base_url=url, timeout=60) as own:
                    while not stop.is_set():
                        own.post(f"/api/v1/remote-jobs/{alices}/logs", content=body, headers=alice)

            uploaders = [threading.Thread(target=upload_loop) for _ in range(4)]
            for thread in uploaders:
                thread.start()
            time.sleep(0.5)
            loaded = reports()
            stop.set()
            for thread in uploaders:
                thread.join()
        p99_alone, p99_loaded = percentile(alone, 0.99), percentile(loaded, 0.99)
        print("Bob's report, p50 / p99:")
        for name, values in (("alone (reference)", alone), ("under four uploads", loaded)):
            p50, p99 = percentile(values, 0.5) * 1000, percentile(values, 0.99) * 1000
            print(f"  {name:<20} {p50:6.1f} / {p99:6.1f} ms")
        print(f"  p99 ratio            {p99_loaded / p99_alone:.1f}x")
    finally:
        server.terminate()
        server.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
