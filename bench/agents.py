"""MCP progress notifications: how soon after a worker's report an agent watching the job hears
of it, through ``morag-progress mcp`` (streamable HTTP), beside the API's own event stream read
directly (the floor the MCP server adds to).

    python bench/agents.py [--reports 100] [--interval 0.05]

One ``morag-progress serve`` on a temporary SQLite file and one ``morag-progress mcp
--transport http`` in front of it. An agent (the SDK's own client) calls ``watch_job`` with a
progress callback; beside it a plain client reads the job's event stream. A worker sends
``--reports`` reports over HTTP, ``--interval`` seconds apart, then the job's end. For each
report: the time from its answer to the notification (and to the stream's event).

Target (issue 23, part 2): notification <= 1 s after the report, p95 over 100 reports.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import httpx2
from _server import create_key, free_port, launch, percentile, serve, sqlite_env
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from morag_progress.client.events import read_events


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.05)
    args = parser.parse_args(argv)
    reported: dict[int, float] = {}
    heard: dict[int, float] = {}
    streamed: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = sqlite_env(Path(tmp))
        key = create_key(env, "alice")
        port, mcp_port = free_port(), free_port()
        server = serve(env, port)
        base = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "morag_progress.cli", "mcp", "--transport", "http"]
        command += ["--port", str(mcp_port), "--api-url", base]
        agent_server = launch(command, {**os.environ, **env}, f"http://127.0.0.1:{mcp_port}/")
        auth = {"Authorization": f"Bearer {key}"}
        try:
            job = httpx.post(
                f"{base}/api/v1/jobs",
                json={"document_name": "talk.mp3", "document_type": "audio"},
                headers=auth,
            ).json()["id"]

            def read_stream() -> None:
                with (
                    httpx.Client(base_url=base, headers=auth, timeout=60) as client,
                    client.stream("GET", f"/api/v1/jobs/{job}/events") as response,
                ):
                    for event in read_events(response):
                        if event.event == "progress":
                            data = event.json()
                            streamed.setdefault(int(data["percentage"]), time.monotonic())
                            if data["status"] == "FINISHED":
                                return

            def work() -> None:
                time.sleep(1.5)  # the watch and the stream are open
                with httpx.Client(base_url=base, headers=auth, timeout=10) as client:
                    for i in range(1, args.reports + 1):
                        percentage = i * 99 // args.reports
                        client.put(
                            f"/api/v1/remote-jobs/{job}/progress",
                            json={"percentage": percentage, "message": f"step {i}"},
                        ).raise_for_status()
                        reported.setdefault(percentage, time.monotonic())
                        time.sleep(args.interval)
                    client.put(f"/api/v1/remote-jobs/{job}/result", json={"success": True})

            async def on_progress(progress: float, total: float | None, _: str | None) -> None:
                heard.setdefault(int(progress), time.monotonic())

            async def watch() -> None:
                async with (
                    httpx2.AsyncClient(headers=auth, timeout=httpx2.Timeout(30, read=600)) as http,
                    streamable_http_client(
                        f"http://127.0.0.1:{mcp_port}/mcp", http_client=http
                    ) as (read, write),
                    ClientSession(read, write) as session,
                ):
                    await session.initialize()
                    await session.call_tool(
                        "watch_job", {"job_id": job}, progress_callback=on_progress
                    )

            threads = [threading.Thread(target=read_stream), threading.Thread(target=work)]
            for thread in threads:
                thread.start()
            asyncio.run(watch())
            for thread in threads:
                thread.join(60)
        finally:
            for process in (agent_server, server):
                process.terminate()
                process.wait(10)
    mcp = [heard[p] - at for p, at in reported.items() if p in heard]
    direct = [streamed[p] - at for p, at in reported.items() if p in streamed]
    apart = f"{args.interval * 1000:.0f} ms apart"
    print(f"{len(reported)} reports, {apart}; heard {len(mcp)} over MCP")
    print(f"{'path':24} {'p50':>8} {'p95':>8} {'max':>8}")
    for name, delays in (("MCP notification", mcp), ("API event stream (floor)", direct)):
        ms = [d * 1000 for d in delays]
        print(
            f"{name:24} {percentile(ms, 0.5):>6.1f}ms {percentile(ms, 0.95):>6.1f}ms "
            f"{max(ms):>6.1f}ms"
        )
    ratio = percentile(mcp, 0.95) / percentile(direct, 0.95)
    print(f"p95 ratio MCP / stream: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
