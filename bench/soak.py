"""Soak: ten minutes of mixed load from five users at once; the server's memory over time, each
user's p99 a minute, 5xx answers, and whether every acknowledged report is stored.

    python bench/soak.py [--minutes 10]

One ``morag-progress serve`` on a new SQLite file with its default limits (webhooks to
loopback allowed). The users, each with a key of their own:

- alice: 20 workers, each reporting its own job over HTTP every 0.5 s (the reporter's default
  interval), 40 reports a second within her key's 50;
- bob: 20 event streams of all his jobs read as they come, and 10 that read a little and then
  stop reading (slow readers), while his own 20 jobs change;
- carol: 8 webhooks (progress and ends) to a socket that never answers, and 20 jobs that
  change and finish;
- dave: 4 clients searching his 20,000 jobs and counting them, as fast as he is let;
- erin: a 1 MiB log upload every 2 s.

The reference is the first minute: memory growth after it must stay within 10%, and no answer
may be a 5xx. Targets (issue 20): memory flat (growth <= 10% after the first minute), no 5xx,
nothing acknowledged lost.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import httpx
from _server import create_key, free_port, percentile, serve, sqlite_env
from logs import log_body
from sqlalchemy import create_engine
from webhooks import _black_hole

from morag_progress.models import utcnow
from morag_progress.store import SQLStore
from morag_progress.store.schema import jobs


class Load:
    """What the users saw: each user's request latencies by minute, answers by status."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.latency: dict[tuple[str, int], list[float]] = collections.defaultdict(list)
        self.statuses: collections.Counter[tuple[str, int]] = collections.Counter()
        self.errors: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()

    def note(self, user: str, seconds: float, status: int) -> None:
        minute = int((time.monotonic() - self.started) // 60)
        with self.lock:
            self.latency[(user, minute)].append(seconds)
            self.statuses[(user, status)] += 1

    @contextlib.contextmanager
    def timed(self, user: str) -> Iterator[Callable[[httpx.Response], None]]:
        started = time.perf_counter()
        try:
            yield lambda response: self.note(
                user, time.perf_counter() - started, response.status_code
            )
        except httpx.HTTPError as e:
            with self.lock:
                self.errors[f"{user}: {type(e).__name__}"] += 1


def _reporter(
    url: str, key: str, job: str, load: Load, stop: threading.Event, acked: list[int]
) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        n = 0
        while not stop.is_set():
            n += 1
            body = {"percentage": n % 99 + 1, "message": f"step {n}", "seq": n}
            with load.timed("alice") as done:
                response = client.put(f"/api/v1/remote-jobs/{job}/progress", json=body)
                done(response)
                if response.status_code == 200 and response.json()["applied"]:
                    acked.append(n)
            stop.wait(0.5)  # the reporter's default interval


def _changer(
    url: str, key: str, user: str, job_ids: list[str], load: Load, stop: threading.Event
) -> None:
    """Moves ``job_ids`` along, finishing each at 100% and starting a new one in its place."""
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        tick = 0
        while not stop.is_set():
            tick += 1
            for i, job in enumerate(job_ids):
                with load.timed(user) as done:
                    if (tick + i) % 20 == 0:
                        done(
                            client.put(f"/api/v1/remote-jobs/{job}/result", json={"success": True})
                        )
                        made = client.post(
                            "/api/v1/jobs",
                            json={"document_name": f"{user}-{tick}", "document_type": "doc"},
                        )
                        if made.status_code == 201:
                            job_ids[i] = made.json()["id"]
                    else:
                        body = {"percentage": tick % 99 + 1, "message": f"tick {tick}"}
                        done(client.put(f"/api/v1/remote-jobs/{job}/progress", json=body))
            stop.wait(0.5)


def _stream(url: str, key: str, stop: threading.Event, slow: bool, load: Load) -> None:
    """Bob's stream of all his jobs: read as it comes, or (``slow``) read a little and stop."""
    headers = {"Authorization": f"Bearer {key}"}
    while not stop.is_set():
        try:
            with (
                httpx.Client(
                    base_url=url, headers=headers, timeout=httpx.Timeout(30, read=None)
                ) as client,
                client.stream("GET", "/api/v1/events") as response,
            ):
                load.note("bob", 0.0, response.status_code)
                for i, _ in enumerate(response.iter_bytes(1024)):
                    if stop.is_set():
                        return
                    if slow and i > 4:
                        stop.wait(3600)  # holds the stream open and reads nothing
                        return
        except httpx.HTTPError as e:
            with load.lock:
                load.errors[f"bob stream: {type(e).__name__}"] += 1
            stop.wait(1.0)


def _searcher(url: str, key: str, load: Load, stop: threading.Event) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        n = 0
        while not stop.is_set():
            n += 1
            path = "/api/v1/jobs" if n % 2 else "/api/v1/stats"
            with load.timed("dave") as done:
                response = client.get(path, params={"q": f"rare-{n % 7}"})
                done(response)
                if response.status_code == 429:
                    stop.wait(float(response.headers.get("Retry-After", "1")))


def _uploader(url: str, key: str, job: str, load: Load, stop: threading.Event) -> None:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "text/plain"}
    body = log_body()
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        while not stop.is_set():
            with load.timed("erin") as done:
                done(client.post(f"/api/v1/remote-jobs/{job}/logs", content=body))
            stop.wait(2.0)


def _memory_mb(pid: int) -> tuple[float, float]:
    """The process's own memory (anonymous pages: heap, stacks, SQLite's private cache) and
    its file-backed pages (code, and the database file SQLite reads through mmap: the OS's
    page cache, shared and reclaimable), in MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return tuple(int(fields[name].split()[0]) / 1024 for name in ("RssAnon", "RssFile"))  # type: ignore[return-value]


def _fill(database_url: str, user: str, count: int) -> None:
    """``count`` ended jobs of ``user`` for the searches to scan, straight into the database."""
    engine = create_engine(database_url)
    now = utcnow().replace(tzinfo=None)
    rows = [
        {
            "id": f"old-{n:06d}",
            "user_id": user,
            "document_name": f"report-{n}.pdf",
            "document_type": "pdf",
            "status": "FINISHED",
            "percentage": 100,
            "summary": f"Indexed page {n}",
            "attempt": 1,
            "weight": 1.0,
            "metadata": {},
            "cancel_requested": False,
            "created_at": now - timedelta(seconds=count - n),
            "updated_at": now,
            "last_seq": 0,
        }
        for n in range(count)
    ]
    with engine.begin() as conn:
        conn.execute(jobs.insert(), rows)
    engine.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument(
        "--users",
        default="alice,bob,carol,dave,erin",
        help="whose load runs (comma-separated; fewer to tell which load a figure comes from)",
    )
    args = parser.parse_args(argv)
    users = set(args.users.split(","))

    tmp = Path(tempfile.mkdtemp(prefix="morag-bench-soak-"))
    env = sqlite_env(tmp, WEBHOOK_ALLOW_PRIVATE="true")
    env.pop("MORAG_PROGRESS_RATE_LIMIT_PER_SECOND")  # the default limits, as users get them
    database_url = env["MORAG_PROGRESS_DATABASE_URL"]
    keys = {user: create_key(env, user) for user in ("alice", "bob", "carol", "dave", "erin")}
    port = free_port()
    server = serve(env, port)
    url = f"http://127.0.0.1:{port}"
    store = SQLStore(database_url)
    hole, hole_url, _held = _black_hole()
    _fill(database_url, "dave", 20_000)

    def made(user: str, count: int) -> list[str]:
        headers = {"Authorization": f"Bearer {keys[user]}"}
        return [
            httpx.post(
                f"{url}/api/v1/jobs",
                json={"document_name": f"{user}-{i}", "document_type": "doc"},
                headers=headers,
            ).json()["id"]
            for i in range(count)
        ]

    for _ in range(8):
        httpx.post(
            f"{url}/api/v1/webhooks",
            json={"url": hole_url, "events": ["job.progress", "job.finished"]},
            headers={"Authorization": f"Bearer {keys['carol']}"},
        ).raise_for_status()
    alice_jobs, bob_jobs, carol_jobs = made("alice", 20), made("bob", 20), made("carol", 20)
    [erin_job] = made("erin", 1)
    stop = threading.Event()
    load = Load(time.monotonic())
    acked: dict[str, list[int]] = {job: [] for job in alice_jobs}
    everyone = [
        *(
            (
                "alice",
                threading.Thread(
                    target=_reporter, args=(url, keys["alice"], job, load, stop, acked[job])
                ),
            )
            for job in alice_jobs
        ),
        (
            "bob",
            threading.Thread(target=_changer, args=(url, keys["bob"], "bob", bob_jobs, load, stop)),
        ),
        (
            "carol",
            threading.Thread(
                target=_changer, args=(url, keys["carol"], "carol", carol_jobs, load, stop)
            ),
        ),
        *(
            ("bob", threading.Thread(target=_stream, args=(url, keys["bob"], stop, i >= 20, load)))
            for i in range(30)
        ),
        *(
            ("dave", threading.Thread(target=_searcher, args=(url, keys["dave"], load, stop)))
            for _ in range(4)
        ),
        (
            "erin",
            threading.Thread(target=_uploader, args=(url, keys["erin"], erin_job, load, stop)),
        ),
    ]
    threads = [thread for user, thread in everyone if user in users]
    for thread in threads:
        thread.daemon = True
        thread.start()
    memory: list[tuple[float, float, float]] = []
    end = time.monotonic() + args.minutes * 60
    try:
        while time.monotonic() < end:
            memory.append((time.monotonic() - load.started, *_memory_mb(server.pid)))
            time.sleep(5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
        server.terminate()
        server.wait(30)
        hole.close()
    lost = 0
    stored = 0
    for job, seqs in acked.items():
        history = {event.message for event in store.history(job, user_id="alice", limit=1_000_000)}
        stored += len(seqs)
        lost += sum(1 for n in seqs if f"step {n}" not in history)
    store.close()

    print(
        f"soak: {args.minutes:g} minutes, {', '.join(sorted(users))} at once, "
        "server memory every 5 s"
    )
    growth = _growth("own memory (anonymous)", [(at, anon) for at, anon, _ in memory])
    _growth("file-backed (mmap, code)", [(at, file) for at, _, file in memory], rule=False)
    minutes = sorted({minute for _, minute in load.latency})
    for user in ("alice", "bob", "carol", "dave", "erin"):
        p99s = [
            f"{percentile(load.latency[(user, m)], 0.99) * 1000:.0f}"
            for m in minutes
            if load.latency.get((user, m))
        ]
        answers = dict(sorted((s, n) for (u, s), n in load.statuses.items() if u == user))
        print(f"  {user:<6} p99 by minute (ms): {' '.join(p99s)}   answers: {answers}")
    fives = sum(n for (_, status), n in load.statuses.items() if status >= 500)
    print(f"  5xx answers: {fives} ({'met' if fives == 0 else 'MISSED'}: none)")
    print(f"  client-side errors: {dict(load.errors) or 'none'}")
    print(
        f"  alice's acknowledged reports: {stored:,}, stored: {stored - lost:,} "
        f"({'met' if lost == 0 else 'MISSED'}: nothing lost)"
    )
    return 0 if growth <= 0.10 and fives == 0 and lost == 0 else 1


def _growth(what: str, memory: list[tuple[float, float]], *, rule: bool = True) -> float:
    """Print one memory's course (start, after the first minute, most after it, end, most by
    minute) and return its growth past the first minute; ``rule``: say whether the 10% is met."""
    first = [mb for at, mb in memory if at < 60] or [memory[0][1]]
    after = [mb for at, mb in memory if at >= 60] or first
    base = statistics.mean(first[-3:])
    growth = (max(after) - base) / base
    verdict = f" ({'met' if growth <= 0.10 else 'MISSED'}: <= 10%)" if rule else ""
    by_minute: dict[int, float] = {}
    for at, mb in memory:
        by_minute[int(at // 60)] = max(by_minute.get(int(at // 60), 0.0), mb)
    print(
        f"  {what}: {first[0]:.0f} MB at start, {base:.0f} MB after the first minute, "
        f"{max(after):.0f} MB at most after it, {memory[-1][1]:.0f} MB at the end: "
        f"growth {growth:+.1%}{verdict}; by minute (most): "
        + " ".join(f"{mb:.0f}" for mb in by_minute.values())
    )
    return growth


if __name__ == "__main__":
    raise SystemExit(main())
