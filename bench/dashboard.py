"""Dashboard benchmark: the first paint with 100,000 jobs in the store, against an empty store.

    python bench/dashboard.py [--jobs 100000] [--runs 7]

Two ``morag-progress serve`` processes on SQLite: one whose user has ``--jobs`` jobs (a tenth of
them children of others, statuses and types spread), one with none (the reference: the page's
own cost, the same requests answered from an empty table). For each, headless Chromium (Debian's
``chromium``) opens the dashboard signed in (the key in the tab's storage, as after a reload)
``--runs`` times in fresh contexts; the time is from navigation start to the first page of rows
and the counts per status on screen. It prints p50 and worst per store, their ratio, and the
server time of the two requests the first paint makes (the page of jobs and the counts).

Target (the dashboard issue): first paint within a second with 100,000 jobs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from _server import create_key, free_port, serve
from sqlalchemy import create_engine

from morag_progress.store import SQLStore
from morag_progress.store.schema import jobs

STATUSES = ["FINISHED"] * 6 + ["FAILED", "PROCESSING", "PENDING", "CANCELLED"]
TYPES = ["pdf", "audio", "video", "image"]
START = datetime(2026, 1, 1, tzinfo=UTC)
FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
PAINTED = (  # rows, or the empty store's "No jobs yet.", and the counts
    "() => (document.querySelectorAll('#jobs tbody tr').length > 0"
    " || !document.querySelector('#empty').hidden)"
    " && document.querySelectorAll('#counts a').length > 0"
)


def fill(url: str, count: int) -> None:
    """``count`` jobs of alice's: every tenth a child of the job before it."""
    SQLStore(url).close()  # the schema, as the server makes it
    engine = create_engine(url)
    chunk = 20_000
    for first in range(0, count, chunk):
        rows = [
            {
                "id": f"job-{n:07d}",
                "user_id": "alice",
                "document_name": f"document-{n}.pdf",
                "document_type": TYPES[n % len(TYPES)],
                "status": STATUSES[n % len(STATUSES)],
                "percentage": n % 100,
                "summary": f"step {n % 17} of 17",
                "attempt": 1,
                "weight": 1.0,
                "metadata": {},
                "cancel_requested": False,
                "parent_id": f"job-{n - 1:07d}" if n % 10 == 9 else None,
                "created_at": START + timedelta(seconds=n),
                "updated_at": START + timedelta(seconds=n + 5),
                "last_seq": 0,
            }
            for n in range(first, min(first + chunk, count))
        ]
        with engine.begin() as conn:
            conn.execute(jobs.insert(), rows)
    engine.dispose()


def paint_times(browser: object, url: str, key: str, runs: int) -> list[float]:
    """Milliseconds from navigation start to rows and counts on screen, per run."""
    times = []
    for _ in range(runs):
        context = browser.new_context(viewport={"width": 1280, "height": 860})  # type: ignore[attr-defined]
        context.add_init_script(f"sessionStorage.setItem('morag-progress-key', {key!r})")
        page = context.new_page()
        page.goto(url)
        page.wait_for_function(PAINTED, timeout=30_000)
        times.append(page.evaluate("performance.now()"))
        context.close()
    return times


def request_ms(url: str, key: str, path: str, runs: int = 20) -> float:
    headers = {"Authorization": f"Bearer {key}"}
    samples = []
    with httpx.Client(base_url=url, headers=headers) as client:
        for _ in range(runs):
            started = time.perf_counter()
            client.get(path).raise_for_status()
            samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        raise SystemExit("chromium not found (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    servers = []
    try:
        sites = {}
        for name, count in (("empty store", 0), (f"{args.jobs:,} jobs", args.jobs)):
            url = f"sqlite:///{work / f'{count}.db'}"
            started = time.perf_counter()
            fill(url, count)
            print(f"{name}: filled in {time.perf_counter() - started:.1f} s")
            env = {**os.environ, "MORAG_PROGRESS_DATABASE_URL": url}
            key = create_key(env, "alice")
            port = free_port()
            servers.append(serve(env, port))
            sites[name] = (f"http://127.0.0.1:{port}", key)
        results = {}
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=executable, headless=True, args=FLAGS
            )
            for name, (url, key) in sites.items():
                paint_times(browser, url, key, 1)  # warm: the browser's and server's first use
                times = paint_times(browser, url, key, args.runs)
                results[name] = times
                page = request_ms(url, key, "/api/v1/jobs?top_level=true&limit=50")
                stats = request_ms(url, key, "/api/v1/stats")
                print(
                    f"{name:>15}: first paint p50 {statistics.median(times):6.0f} ms, "
                    f"worst {max(times):6.0f} ms; server: page {page:.1f} ms, counts {stats:.1f} ms"
                )
            browser.close()
        reference, ours = (statistics.median(t) for t in results.values())
        print(f"ratio (ours / empty store) p50: {ours / reference:.2f}x; target: under 1000 ms")
    finally:
        for process in servers:
            process.terminate()
            process.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
