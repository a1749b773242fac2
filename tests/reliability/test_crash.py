"""Faults: the server killed with SIGKILL under load keeps every update it acknowledged; a
worker keeps running through a server outage and delivers its latest state and its final
status once the server is back. (The long forms, with longer loads and a 30 s outage, are
``bench/reliability.py``.)"""

from __future__ import annotations

import threading
import time

import httpx

from morag_progress.client import ProgressReporter
from morag_progress.models import JobStatus
from morag_progress.store import SQLStore
from tests.live import ServerProcess, cli


def test_sigkill_under_load_loses_no_acknowledged_update(
    server_env: dict[str, str], database_url: str
) -> None:
    """Eight writers report as fast as they can; the server is killed mid-stream; after a
    restart every update it answered 200 for is in the change feed."""
    key = cli("keys", "create", "--user", "alice", env=server_env).splitlines()[0]
    headers = {"Authorization": f"Bearer {key}"}
    server = ServerProcess(server_env).start()
    jobs = [
        httpx.post(
            f"{server.url}/api/v1/jobs",
            json={"document_name": f"j{i}", "document_type": "load"},
            headers=headers,
        ).json()["id"]
        for i in range(8)
    ]
    acknowledged: dict[str, list[str]] = {job: [] for job in jobs}
    stop = threading.Event()

    def write(job_id: str) -> None:
        with httpx.Client(base_url=server.url, headers=headers, timeout=5) as client:
            for n in range(1, 100_000):
                if stop.is_set():
                    return
                message = f"{job_id}:{n}"
                try:
                    response = client.put(
                        f"/api/v1/remote-jobs/{job_id}/progress",
                        json={"percentage": 1 + n % 98, "message": message, "seq": n},
                    )
                except httpx.TransportError:
                    return  # the server is gone: this one was never acknowledged
                if response.status_code == 200 and response.json()["applied"]:
                    acknowledged[job_id].append(message)

    writers = [threading.Thread(target=write, args=(job,)) for job in jobs]
    for writer in writers:
        writer.start()
    time.sleep(1.5)
    server.kill()
    stop.set()
    for writer in writers:
        writer.join(10)
    total = sum(len(messages) for messages in acknowledged.values())
    assert total > 50, f"only {total} updates were acknowledged before the kill"

    server.start()  # recovery: SQLite replays its WAL, PostgreSQL its log
    try:
        store = SQLStore(database_url)
        for job_id, messages in acknowledged.items():
            recorded = {event.message for event in store.history(job_id, limit=100_000)}
            missing = [m for m in messages if m not in recorded]
            assert not missing, f"{len(missing)} acknowledged updates of {job_id} were lost"
        store.close()
        # And the restarted server answers with a state at least as new as the last answer
        # (an update committed just before the kill may never have been answered).
        last = int(acknowledged[jobs[0]][-1].rsplit(":", 1)[1])
        job = httpx.get(f"{server.url}/api/v1/jobs/{jobs[0]}", headers=headers).json()
        assert int(job["summary"].rsplit(":", 1)[1]) >= last
    finally:
        server.stop()


def test_worker_runs_through_an_outage(server_env: dict[str, str]) -> None:
    """A reporter whose server goes away for a few seconds: the worker's loop never slows or
    fails, and the latest state and final status arrive after the restart."""
    key = cli("keys", "create", "--user", "alice", env=server_env).splitlines()[0]
    headers = {"Authorization": f"Bearer {key}"}
    server = ServerProcess(server_env).start()
    job_id = httpx.post(
        f"{server.url}/api/v1/jobs",
        json={"document_name": "long", "document_type": "audio"},
        headers=headers,
    ).json()["id"]
    reporter = ProgressReporter(job_id, api_url=server.url, api_key=key, min_interval=0.1)
    try:
        reporter.update(5, "before the outage")
        time.sleep(0.5)
        server.kill()
        slowest = 0.0
        steps = 0
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:  # the worker keeps working through the outage
            started = time.perf_counter()
            reporter.update(5 + min(90, steps // 1000), f"step {steps}")
            slowest = max(slowest, time.perf_counter() - started)
            steps += 1
        reporter.update(95, "last step during the outage")
        reporter.complete(True, "finished during the outage")
        assert slowest < 0.05, f"one update blocked for {slowest * 1000:.1f} ms"
        server.start()
        assert reporter.close(timeout=30)
    finally:
        server.stop()
    server.start()
    try:
        job = httpx.get(f"{server.url}/api/v1/jobs/{job_id}", headers=headers).json()
        history = httpx.get(f"{server.url}/api/v1/jobs/{job_id}/history", headers=headers).json()
    finally:
        server.stop()
    assert (job["status"], job["summary"]) == (
        JobStatus.FINISHED.value,
        "finished during the outage",
    )
    assert "last step during the outage" in [event["message"] for event in history]
