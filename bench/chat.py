"""One live chat message per job: 10,000 reports through a real server to Slack, Telegram and
ntfy speaking their documented APIs on loopback (``tests/platforms.py``).

    python bench/chat.py [--reports 10000] [--retry-after 2]

One ``morag-progress serve`` process on a temporary SQLite file (private webhook addresses
allowed, the outbox polled as by default). Alice has three live webhooks (slack with a bot
token, telegram, ntfy; ``max_per_hour`` 3,600, one a second, a private chat's or a self-hosted
ntfy's allowance) and, the reference, one ``slack`` incoming webhook (a line per event, the
format a user has without a live message), as live: progress once a second, 3,600 an hour.
One job gets ``--reports`` progress reports over HTTP as fast as one client sends them; then
each platform answers its next request with a 429 and ``Retry-After: --retry-after``, and
the job finishes.

Printed for each: messages made, edits, the shortest and mean gap between sends, and how long
after the final report the final state was shown.

Target (issue 23, part 3): a job of 10,000 reports makes exactly one message and at most about
one edit a second; every terminal state delivered, even after a 429.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
from _server import create_key, free_port, serve, sqlite_env

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.platforms import (  # the platforms the tests speak to
    NTFY_TOKEN,
    SLACK_TOKEN,
    TELEGRAM_TOKEN,
    Platforms,
)

EVENTS = ["job.progress", "job.finished", "job.failed", "job.cancelled", "job.stalled"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=10_000)
    parser.add_argument("--retry-after", type=int, default=2)
    args = parser.parse_args(argv)
    platforms = Platforms()
    lines: list[tuple[float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        env = sqlite_env(Path(tmp), WEBHOOK_ALLOW_PRIVATE="true")
        key = create_key(env, "alice")
        port = free_port()
        server = serve(env, port)
        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": f"Bearer {key}"}
        try:
            with httpx.Client(base_url=base, headers=auth, timeout=30) as client:
                hooks = {
                    "slack": {"token": SLACK_TOKEN, "channel": "#builds", "path": "/slack/api"},
                    "telegram": {"token": TELEGRAM_TOKEN, "channel": "-1001", "path": "/telegram"},
                    "ntfy": {"token": NTFY_TOKEN, "path": "/ntfy/jobs"},
                }
                for name, how in hooks.items():
                    path = how.pop("path")
                    body = {"format": name, "url": platforms.url + path, "events": EVENTS}
                    made = client.post(
                        "/api/v1/webhooks", json={**body, **how, "max_per_hour": 3600}
                    )
                    made.raise_for_status()
                reference = client.post(
                    "/api/v1/webhooks",
                    json={
                        "format": "slack",
                        "url": platforms.url + "/lines",
                        "events": EVENTS,
                        "progress_interval_s": 1,  # as live as the live message
                        "max_per_hour": 3600,
                    },
                )
                reference.raise_for_status()
                job = client.post(
                    "/api/v1/jobs", json={"document_name": "scan.pdf", "document_type": "pdf"}
                ).json()["id"]
                started = time.monotonic()
                for i in range(args.reports):
                    client.put(
                        f"/api/v1/remote-jobs/{job}/progress",
                        json={"percentage": i * 100 // args.reports, "message": f"page {i}"},
                    ).raise_for_status()
                reported = time.monotonic() - started
                for name in hooks:
                    platforms.limit(name, retry_after=args.retry_after)
                client.put(
                    f"/api/v1/remote-jobs/{job}/result",
                    json={"success": True, "message": "all pages read"},
                ).raise_for_status()
                ended = time.monotonic()
                deadline = ended + 60
                while time.monotonic() < deadline:
                    shown = [m for p in hooks for m in platforms.of(p)]
                    if len(shown) >= 3 and all("FINISHED" in m.text for m in shown):
                        break
                    time.sleep(0.05)
                time.sleep(1)  # the reference's last line
                lines = [(at, text) for m in platforms.of("lines") for at, text in m.texts]
        finally:
            server.terminate()
            server.wait(10)
            platforms.close()
    print(f"{args.reports} reports over HTTP in {reported:.1f} s ({args.reports / reported:.0f}/s)")
    print(
        f"{'platform':10} {'messages':>8} {'edits':>6} {'min gap':>8} {'mean gap':>9} "
        f"{'final after':>12}"
    )
    for name in ("slack", "telegram", "ntfy"):
        messages = platforms.of(name)
        times = sorted(at for m in messages for at, _ in m.texts)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        final = [at for m in messages for at, text in m.texts if "FINISHED" in text]
        print(
            f"{name:10} {len(messages):>8} {len(times) - 1:>6} {min(gaps):>7.2f}s "
            f"{statistics.mean(gaps[:-1]):>8.2f}s "
            f"{(final[0] - ended if final else float('nan')):>11.2f}s"
        )
    finished = [text for _, text in lines if "FINISHED" in text]
    print(
        f"reference, a slack line per event: {len(lines)} messages in the channel, "
        f"the end {'told' if finished else 'not told'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
