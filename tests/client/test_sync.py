"""ProgressReporter against a real server: delivery, the final status, a server that is down
then up, 429 and 500 answers, cancel requests, and nothing ever raised into the worker."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from morag_progress.client import ProgressReporter
from morag_progress.errors import ConfigurationError
from morag_progress.models import JobStatus
from tests.conftest import Eventually
from tests.live import CLI, Remote, ServerProcess, cli


def reporter(remote: Remote, job_id: str, **kwargs: object) -> ProgressReporter:
    kwargs.setdefault("min_interval", 0.05)
    return ProgressReporter(job_id, api_url=remote.url, api_key=remote.key, **kwargs)  # type: ignore[arg-type]


def test_context_manager_reports_and_finishes(remote: Remote) -> None:
    """Updates reach the job; leaving the block finishes it, acknowledged before exit."""
    job_id = remote.new_job()
    with reporter(remote, job_id) as r:
        for i in range(1, 101):
            r.update(i * 0.9, f"item {i}", current=i, total=100)
    assert r.finished
    job = remote.job(job_id)
    assert (job.status, job.percentage) == (JobStatus.FINISHED, 100)
    percentages = [e.percentage for e in remote.tracker.history(job_id)]
    assert percentages == sorted(percentages)


def test_the_job_names_its_worker(remote: Remote) -> None:
    """Reports name the worker: ``<host>:<process id>`` by default, or as given; a bad name
    is refused when the reporter is made, naming the argument."""
    job_id = remote.new_job()
    with reporter(remote, job_id) as r:
        r.update(50)
    assert remote.job(job_id).worker_id == f"{socket.gethostname()}:{os.getpid()}"
    named = remote.new_job()
    with reporter(remote, named, worker="gpu-07") as r:
        r.update(50)
    assert remote.job(named).worker_id == "gpu-07"
    for bad in ("", "  ", "x" * 256, 7, "nul\x00"):
        with pytest.raises(ConfigurationError, match=r"^worker "):
            reporter(remote, named, worker=bad)


def test_exception_fails_the_job_keeping_progress(remote: Remote) -> None:
    """An exception in the block fails the job with its message; the exception propagates."""
    job_id = remote.new_job()

    def work() -> None:
        with reporter(remote, job_id) as r:
            r.update(42, "transcribing")
            raise RuntimeError("GPU lost")

    with pytest.raises(RuntimeError, match="GPU lost"):
        work()
    job = remote.job(job_id)
    assert (job.status, job.percentage, job.error) == (
        JobStatus.FAILED,
        42,
        "RuntimeError: GPU lost",
    )


def test_seed_callback_and_stage(remote: Remote, eventually: Eventually) -> None:
    """progress_callback takes the seed's 0..1; a stage maps MoRAG's 10 + p * 60."""
    job_id = remote.new_job()
    r = reporter(remote, job_id)
    r.progress_callback(0.05, "Downloading")
    callback = r.stage("processing", 60, start=10)
    callback(0.5, "Processing: halfway")
    eventually(lambda: _check(remote, job_id, 40, "Processing: halfway"))
    assert remote.job(job_id).stage == "processing"
    assert r.close()


def _check(remote: Remote, job_id: str, percentage: int, message: str | None = None) -> None:
    job = remote.job(job_id)
    assert job.percentage == percentage
    if message is not None:
        assert job.summary == message


def test_server_down_then_up(remote: Remote, eventually: Eventually) -> None:
    """With the server down the worker is not blocked; the latest state and the final status
    arrive once it is back."""
    job_id = remote.new_job()
    remote.server.stop()
    r = reporter(remote, job_id)
    started = time.monotonic()
    for i in range(1, 1001):
        r.update(i / 20, f"step {i}")
    r.complete(True, "done while down")
    elapsed = time.monotonic() - started
    assert elapsed < 5, f"1000 calls took {elapsed:.1f} s with the server down"
    assert remote.job(job_id).percentage == 0
    remote.server.start()
    assert r.close(timeout=30)
    job = remote.job(job_id)
    assert (job.status, job.summary) == (JobStatus.FINISHED, "done while down")


def test_close_gives_up_at_its_deadline(remote: Remote) -> None:
    """A server that stays down: close returns False after its timeout, nothing raised."""
    job_id = remote.new_job()
    remote.server.stop()
    r = reporter(remote, job_id)
    r.update(10)
    r.complete(True)
    started = time.monotonic()
    assert r.close(timeout=0.5) is False
    assert time.monotonic() - started < 5
    assert not r.finished


def test_what_the_close_could_not_deliver_is_kept_and_flushed_later(
    remote: Remote, eventually: Eventually
) -> None:
    """With the server down at the close deadline, the first update, a stage's start, the
    latest update and the final status are kept in the spool (not the key); ``flush`` sends
    them once the server is back, in order, and the job ends FINISHED with every one of them
    in its history. A second flush has nothing left."""
    job_id = remote.new_job()
    remote.server.stop()
    r = reporter(remote, job_id)
    r.update(5, "Downloading")
    r.stage("processing", 60, start=10)
    r.update(55, "halfway")
    r.complete(True, "done while down")
    assert r.close(timeout=0.3) is False
    assert r.spooled is not None
    text = r.spooled.path.read_text()
    assert remote.key not in text
    assert [c["path"].rsplit("/", 1)[1] for c in r.spooled.calls] == [
        "progress",
        "progress",
        "progress",
        "result",
    ]
    remote.server.start()
    out = cli("flush", env=remote.env())
    assert "4 kept reports sent" in out
    job = remote.job(job_id)
    assert (job.status, job.summary) == (JobStatus.FINISHED, "done while down")
    messages = [e.message for e in remote.tracker.history(job_id)]
    assert {"Downloading", "Stage: processing", "halfway"} <= set(messages)
    assert not r.spooled.path.exists()
    assert "no reports kept" in cli("flush", env=remote.env())


def test_flush_keeps_what_a_down_server_cannot_take(remote: Remote) -> None:
    """flush with the server down exits 1 saying so, and keeps every report; reports kept
    for another key are not sent with this one."""
    job_id = remote.new_job()
    remote.server.stop()
    r = reporter(remote, job_id)
    r.update(20, "kept")
    assert r.close(timeout=0.2) is False
    assert r.spooled is not None
    done = subprocess.run(
        [*CLI, "flush"], capture_output=True, text=True, env=remote.env(), timeout=60
    )
    assert done.returncode == 1
    assert "reports kept" in done.stderr
    assert "\n" not in done.stderr.strip()  # one line
    assert r.spooled.path.exists()
    remote.server.start()
    other = cli("flush", env=remote.env(key=remote.user_key))
    assert "no reports kept" in other
    assert r.spooled.path.exists()


def test_flush_fails_naming_the_job_whose_kept_report_is_refused(remote: Remote) -> None:
    """A kept report for a job that ended meanwhile is refused for good: flush says so for
    that job and exits 1; the report is not kept again, so the next flush has nothing."""
    job_id = remote.new_job()
    remote.server.stop()
    r = reporter(remote, job_id)
    r.update(20, "kept")
    assert r.close(timeout=0.2) is False
    remote.tracker.mark_completed(job_id, "ended elsewhere")
    remote.server.start()
    done = subprocess.run(
        [*CLI, "flush"], capture_output=True, text=True, env=remote.env(), timeout=60
    )
    assert done.returncode == 1
    assert f"job {job_id}: a kept report was refused" in done.stderr
    assert "0 kept reports sent" in done.stdout
    assert "1 refused" in done.stdout
    assert remote.job(job_id).summary == "ended elsewhere"
    assert "no reports kept" in cli("flush", env=remote.env())


def test_the_next_reporter_sends_what_an_earlier_one_kept(
    remote: Remote, eventually: Eventually
) -> None:
    """A reporter for the same server and key sends the kept reports of an earlier one once
    the server has taken one of its own; its own job is reported as usual."""
    first = remote.new_job()
    remote.server.stop()
    r = reporter(remote, first)
    r.update(70, "kept for later")
    r.complete(False, "failed while down")
    assert r.close(timeout=0.2) is False
    assert r.spooled is not None
    remote.server.start()
    second = remote.new_job()
    with reporter(remote, second) as later:
        later.update(10, "second job")
        eventually(lambda: _ended(remote, first))
    job = remote.job(first)
    assert (job.status, job.percentage, job.error) == (JobStatus.FAILED, 70, "failed while down")
    assert remote.job(second).status is JobStatus.FINISHED
    assert not r.spooled.path.exists()


def _ended(remote: Remote, job_id: str) -> None:
    assert remote.job(job_id).status is JobStatus.FAILED


def test_429_and_500_are_retried_honouring_retry_after(remote: Remote) -> None:
    """A 429 with Retry-After: 1 and a 500 are retried; the update still arrives."""
    job_id = remote.new_job()
    remote.faults.fail_next(429, retry_after="1")
    remote.faults.fail_next(500)
    with reporter(remote, job_id) as r:
        r.update(30, "after faults")
    progress = [s for s in remote.faults.seen if s[2].endswith("/progress")]
    assert len(progress) >= 3
    assert progress[1][0] - progress[0][0] >= 0.9  # waited out Retry-After
    assert remote.job(job_id).status is JobStatus.FINISHED
    assert any(e.message == "after faults" for e in remote.tracker.history(job_id))


def test_order_preserved_under_retries(remote: Remote) -> None:
    """With every other request failing, the job's percentage never goes backwards."""
    job_id = remote.new_job()
    for _ in range(30):
        remote.faults.fail_next(500)
        remote.faults.fail_next(0)
    r = reporter(remote, job_id, min_interval=0)
    for i in range(1, 200):
        r.update(i / 2)
        if i % 20 == 0:
            time.sleep(0.01)
    assert r.close(timeout=30)
    history = [e.percentage for e in remote.tracker.history(job_id)]
    assert history == sorted(history)
    assert remote.job(job_id).percentage == 99


def test_cancel_request_reaches_the_worker(remote: Remote, eventually: Eventually) -> None:
    """A cancel requested by the user shows as cancel_requested; the worker ends it CANCELLED."""
    job_id = remote.new_job()
    r = reporter(remote, job_id)
    r.update(20)
    eventually(lambda: _check(remote, job_id, 20))
    remote.tracker.request_cancel(job_id)
    r.heartbeat()

    def told() -> None:
        assert r.cancel_requested

    eventually(told)
    r.complete(False, "stopped", cancelled=True)
    assert r.close()
    assert remote.job(job_id).status is JobStatus.CANCELLED


def test_unknown_job_and_bad_key_are_given_up(remote: Remote) -> None:
    """A job that does not exist, or a wrong key, is logged and dropped; close returns."""
    with ProgressReporter("no-such-job", api_url=remote.url, api_key=remote.key) as r:
        r.update(10)
    assert (r.stopped, r.finished) == (True, False)
    assert r.refusal is not None
    assert r.refusal[0] == 404
    assert r.job == {"id": "no-such-job", "status": None, "percentage": 10, "message": None}
    job_id = remote.new_job()
    with ProgressReporter(job_id, api_url=remote.url, api_key="wrong") as r:
        r.update(10)
    assert remote.job(job_id).percentage == 0
    assert (r.stopped, r.finished) == (True, False)
    assert r.refusal is not None
    assert r.refusal[0] == 401


def test_nothing_raises_into_the_worker(remote: Remote) -> None:
    """Garbage arguments are logged, never raised."""
    job_id = remote.new_job()
    r = reporter(remote, job_id)
    r.update("abc")  # type: ignore[arg-type]
    r.update(float("nan"))
    r.update(500)
    r.progress_callback(None)  # type: ignore[arg-type]
    r.update(5, message=12)  # type: ignore[arg-type]
    assert r.close()
    assert remote.job(job_id).summary == "12"


def test_configuration_from_environment(
    remote: Remote, monkeypatch: pytest.MonkeyPatch, eventually: Eventually
) -> None:
    """MORAG_PROGRESS_API_URL and MORAG_PROGRESS_API_KEY configure a reporter."""
    monkeypatch.setenv("MORAG_PROGRESS_API_URL", remote.url)
    monkeypatch.setenv("MORAG_PROGRESS_API_KEY", remote.key)
    job_id = remote.new_job()
    with ProgressReporter(job_id) as r:
        r.update(50)
    assert remote.job(job_id).status is JobStatus.FINISHED


@pytest.mark.parametrize("url", [None, "ftp://example.org", "not a url"])
def test_missing_or_bad_url_names_the_setting(url: str | None) -> None:
    """Without a usable URL the reporter refuses to start, naming api_url."""
    with pytest.raises(ConfigurationError) as info:
        ProgressReporter("job", api_url=url)
    assert info.value.field == "api_url"


def test_a_requeued_job_resumes_where_the_dead_worker_left_it(remote: Remote) -> None:
    """End to end over HTTP: a worker claims a job, saves a checkpoint at 70% and dies; the
    owner requeues the job; the next claim hands the checkpoint back, a reporter made with it
    exposes it as ``resume``, and the job goes on from 70% (never lower) to FINISHED."""
    job_id = remote.new_job(status=JobStatus.WAITING_FOR_REMOTE_WORKER)
    worker = {"Authorization": f"Bearer {remote.key}"}
    with httpx.Client(base_url=remote.url, headers=worker, timeout=10) as http:
        first = http.post("/api/v1/remote-jobs/claim", json={"worker_id": "gpu-1"}).json()
        assert (first["id"], first["checkpoint"]) == (job_id, None)

        def dies() -> None:
            with reporter(remote, job_id, attempt=first["attempt"]) as r:
                assert r.resume is None
                for step in range(1, 8):
                    r.update(10 * step, f"step {step}")
                    r.save_checkpoint({"step": step * 100})
                raise RuntimeError("node lost")

        with pytest.raises(RuntimeError):
            dies()
        assert remote.job(job_id).status is JobStatus.FAILED
        owner = {"Authorization": f"Bearer {remote.user_key}"}
        requeued = http.post(f"/api/v1/jobs/{job_id}/requeue", headers=owner)
        assert requeued.json()["percentage"] == 70
        claim = http.post("/api/v1/remote-jobs/claim", json={"worker_id": "gpu-2"}).json()
        assert (claim["attempt"], claim["percentage"]) == (2, 70)
        again = reporter(remote, job_id, attempt=claim["attempt"], resume=claim["checkpoint"])
        with again as r:
            assert r.resume == {"step": 700}
            for step in range(r.resume["step"] // 100 + 1, 11):
                r.update(10 * step, f"step {step}")
    assert again.finished
    second = [e.percentage for e in remote.tracker.history(job_id) if e.attempt == 2]
    assert min(second) == 70
    assert second == sorted(second)
    assert remote.job(job_id).status is JobStatus.FINISHED


def test_ranks_started_together_make_one_run_and_a_slow_one_is_flagged(
    server_env: dict[str, str], eventually: Eventually
) -> None:
    """Four processes started at once as torchrun starts them, one of them three times
    slower: one run job (made once however the creates race) with the four ranks as its
    children; the slow rank is flagged on the run while it is behind, and cleared once it is
    within 10% of the others; the run finishes when the last rank does."""
    env = {
        **server_env,
        "MORAG_PROGRESS_MONITOR_INTERVAL_SECONDS": "0.2",
        "MORAG_PROGRESS_STRAGGLER_SECONDS": "1",
    }
    key = cli("keys", "create", "--user", "alice", env=env).splitlines()[0]
    server = ServerProcess(env).start()
    try:
        worker = Path(__file__).with_name("rank_worker.py")
        ranks = [
            subprocess.Popen(
                [sys.executable, str(worker), "20", "0.1"],
                env={
                    **env,
                    "MORAG_PROGRESS_API_URL": server.url,
                    "MORAG_PROGRESS_API_KEY": key,
                    "RANK": str(rank),
                    "WORLD_SIZE": "4",
                    "LOCAL_RANK": str(rank),
                    "TORCHELASTIC_RUN_ID": "42",  # the run: torch-42
                    "SLOW_RANK": "3",
                },
            )
            for rank in range(4)
        ]
        headers = {"Authorization": f"Bearer {key}"}

        def run() -> dict[str, Any]:
            answer = httpx.get(f"{server.url}/api/v1/jobs/torch-42", headers=headers, timeout=5)
            assert answer.status_code == 200
            job: dict[str, Any] = answer.json()
            return job

        def flagged() -> None:
            assert run()["stragglers"] == 1

        eventually(flagged, timeout=15)
        for process in ranks:
            assert process.wait(60) == 0
        eventually(lambda: _assert_equal(run()["status"], "FINISHED"), timeout=10)
        job = run()
        assert (job["children"], job["children_done"], job["expected_children"]) == (4, 4, 4)
        listed = httpx.get(
            f"{server.url}/api/v1/jobs", params={"parent_id": "torch-42"}, headers=headers
        ).json()["jobs"]
        assert sorted((j["id"], j["status"]) for j in listed) == [
            (f"torch-42:rank-{r}", "FINISHED") for r in range(4)
        ]
        # Within 10% of the others by its last steps, the slow rank was cleared again.
        assert job["stragglers"] == sum(j["straggler"] for j in listed) == 0
        history = httpx.get(f"{server.url}/api/v1/jobs/torch-42/history", headers=headers).json()
        said = [e["message"] for e in history if e["action"] == "straggler"]
        assert len(said) == 1
        assert said[0].startswith("Straggler: torch-42:rank-3 at ")
    finally:
        server.stop()


def _assert_equal(a: object, b: object) -> None:
    assert a == b
