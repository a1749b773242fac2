"""Expensive reads against a real server: one user's searches and counts at his full rate do
not slow another user's reads (``limits.ReadGate``; the resume of every job is tested in
tests/api/routes/test_events.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta

import httpx

from morag_progress.models import utcnow
from morag_progress.store.schema import jobs
from tests.security.conftest import Target

JOBS = 40_000


def _fill(t: Target, user: str, count: int) -> None:
    """``count`` running jobs of ``user``, written straight into the database."""
    now = utcnow().replace(tzinfo=None)
    rows = [
        {
            "id": f"job-{n:06d}",
            "user_id": user,
            "document_name": f"lecture-{n}.mp3",
            "document_type": "audio",
            "status": "PROCESSING",
            "percentage": n % 100,
            "summary": f"Transcribing segment {n} of the recording",
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
    with t.store._engine.begin() as conn:
        conn.execute(jobs.insert(), rows)


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def test_one_users_searches_do_not_slow_another_users_reads(
    sqlite_target: Callable[..., Target],
) -> None:
    """Alice searches her 40,000 jobs for a word none holds, and counts them, from 24 clients
    at once, within her rate limit (50 a second): each is a scan. Bob reads his job meanwhile:
    his reads stay quick (they waited behind her scans, which took every core), and Alice's
    extra reads wait their turn or get 429, never an error."""
    t = sqlite_target(RATE_LIMIT_PER_SECOND="50")
    alice, bob = t.key("alice"), t.key("bob")
    _fill(t, "alice", JOBS)
    bobs = t.create(bob).json()["id"]
    stop = threading.Event()
    answers: list[int] = []

    def hammer(path: str) -> None:
        with httpx.Client(base_url=t.url, timeout=60) as client:
            while not stop.is_set():
                answer = client.get(path, params={"q": "zzzzqqq"}, headers=alice)
                answers.append(answer.status_code)
                if answer.status_code == 429:  # a careful client: back when it is told
                    stop.wait(float(answer.headers["Retry-After"]))

    with t.client() as client:
        started = time.perf_counter()
        assert client.get("/api/v1/jobs", params={"q": "zzzzqqq"}, headers=alice).status_code == 200
        one_scan = time.perf_counter() - started
        clients = [
            threading.Thread(target=hammer, args=(path,))
            for path in ["/api/v1/jobs"] * 12 + ["/api/v1/stats"] * 12
        ]
        for thread in clients:
            thread.start()
        time.sleep(1.0)  # her scans under way
        waits = []
        try:
            end = time.monotonic() + 5
            while time.monotonic() < end:
                started = time.perf_counter()
                assert client.get(f"/api/v1/jobs/{bobs}", headers=bob).status_code == 200
                waits.append(time.perf_counter() - started)
                time.sleep(0.02)
        finally:
            stop.set()
            for thread in clients:
                thread.join(60)
    assert set(answers) <= {200, 429}, sorted(set(answers))
    assert _p(waits, 0.95) < 0.1, (one_scan, _p(waits, 0.5), _p(waits, 0.95), max(waits))
