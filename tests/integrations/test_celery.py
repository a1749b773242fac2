"""Celery end to end: a real worker process runs ProgressTask tasks, on kombu's filesystem
transport (no server) and on Redis; the jobs they drive are read from the store."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.app.task import Context
from celery.signals import task_revoked

from morag_progress import JobStatus, JobTracker, ProgressHandler
from morag_progress.errors import ConfigurationError
from morag_progress.integrations.celery import ProgressTask, progress_group
from morag_progress.models import Job
from tests.live import Remote
from tests.services import reap

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", params=["filesystem", "redis"])
def worker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[object, JobTracker]]:
    """A real `celery worker` process (prefork, one child) and the test's tracker on its store,
    one per broker for the module's tests."""
    tmp_path = tmp_path_factory.mktemp(f"celery-{request.param}")
    database_url = f"sqlite:///{tmp_path / 'jobs.db'}"
    env = {**os.environ, "MORAG_PROGRESS_DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}
    env.pop("MORAG_PROGRESS_API_URL", None)
    env.pop("MORAG_PROGRESS_API_KEY", None)
    if request.param == "redis":
        env["MORAG_TEST_BROKER_URL"] = request.getfixturevalue("redis_url")
    else:
        env["MORAG_TEST_BROKER_DIR"] = str(tmp_path / "broker")
    os.environ.update({k: env[k] for k in env if k.startswith("MORAG_TEST_")})
    # The producer side (this process) uses the same app module and broker.
    import importlib

    import tests.integrations.celery_app as module

    module = importlib.reload(module)
    log = (tmp_path / "worker.log").open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.integrations.celery_app",
            "worker",
            "--pool=prefork",
            "--concurrency=1",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel=INFO",
        ],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    tracker = JobTracker(database_url)
    try:
        yield module, tracker
    finally:
        reap(process, grace=20)
        tracker.close()
        log.close()
        for name in ("MORAG_TEST_BROKER_URL", "MORAG_TEST_BROKER_DIR"):
            os.environ.pop(name, None)
        module.app.close()
        print((tmp_path / "worker.log").read_text()[-3000:])


def wait_for(
    tracker: JobTracker, job_id: str, done: Callable[[Job], bool], timeout: float = 60
) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        job = tracker.get_job(job_id)
        if job is not None and done(job):
            return job
        assert time.monotonic() < deadline, f"job {job_id} is {job}"
        time.sleep(0.05)


def terminal(job: Job) -> bool:
    return job.status.is_terminal


def test_task_drives_its_job_to_finished(worker: tuple[object, JobTracker]) -> None:
    """Started -> PROCESSING, the 10-70% stage mapping, success -> FINISHED; job id = task id."""
    module, tracker = worker
    result = module.ingest.delay(20)  # type: ignore[attr-defined]
    job = wait_for(tracker, result.id, terminal)
    assert (job.status, job.percentage, job.document_type) == (JobStatus.FINISHED, 100, "celery")
    assert job.start_date is not None
    history = [(e.status, e.percentage) for e in tracker.history(result.id)]
    percentages = [p for _, p in history]
    assert percentages == sorted(percentages)
    assert [s for s, _ in history[:2]] == [JobStatus.PENDING, JobStatus.PROCESSING]
    stage = [p for p in percentages if 5 < p < 90]
    assert stage
    assert all(10 <= p <= 70 for p in stage)  # 10 + progress * 60


def test_the_sender_span_is_the_jobs_parent_and_the_body_runs_in_the_job(
    worker: tuple[object, JobTracker],
) -> None:
    """A task sent inside a span carries it (a message header) to the worker: the job's span
    is that span's child, and the task body runs inside the job's span, so the worker's own
    spans join the sender's trace."""
    from opentelemetry.sdk.trace import TracerProvider

    module, tracker = worker
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("upload request") as sender:
        result = module.traced.delay()  # type: ignore[attr-defined]
    job = wait_for(tracker, result.id, terminal)
    context = sender.get_span_context()
    assert job.traceparent is not None
    assert job.traceparent[3:35] == f"{context.trace_id:032x}"
    assert job.trace_parent_id == f"{context.span_id:016x}"
    assert f"in span {job.traceparent}" in [e.message for e in tracker.history(result.id)]


def test_failure_keeps_the_percentage(worker: tuple[object, JobTracker]) -> None:
    """A task that raises fails its job at the percentage it reached, with the error."""
    module, tracker = worker
    result = module.explode.delay()  # type: ignore[attr-defined]
    job = wait_for(tracker, result.id, terminal)
    assert (job.status, job.percentage) == (JobStatus.FAILED, 40)
    assert job.error == "ValueError: corrupt PDF"


def test_retry_is_a_new_attempt(worker: tuple[object, JobTracker]) -> None:
    """A retried task's second run reports as attempt 2 and finishes the job."""
    module, tracker = worker
    result = module.flaky.delay()  # type: ignore[attr-defined]
    job = wait_for(tracker, result.id, terminal)
    assert (job.status, job.attempt) == (JobStatus.FINISHED, 2)
    messages = [e.message for e in tracker.history(result.id)]
    assert "run 1" in messages
    assert "run 2" in messages


def test_mapped_job_and_revocation(worker: tuple[object, JobTracker]) -> None:
    """A task mapped to an existing job reports on it; revoking the task cancels the job."""
    module, tracker = worker
    job_id = tracker.start_job("site", "web", user_id="alice")
    task_id = "task-crawl-1"
    ProgressHandler(job_tracker=tracker).register_job_mapping(task_id, job_id)
    result = module.crawl.apply_async(task_id=task_id)  # type: ignore[attr-defined]
    wait_for(tracker, job_id, lambda j: j.percentage >= 2)
    result.revoke(terminate=True)
    job = wait_for(tracker, job_id, terminal)
    assert job.status is JobStatus.CANCELLED
    assert tracker.get_job(task_id) is None


# -- in this process: Celery's own tracer runs the hooks (task.apply), on both store modes ---------

eager_app = Celery("eager")


@eager_app.task(bind=True, base=ProgressTask, progress_min_interval=0)  # type: ignore[untyped-decorator]  # celery is untyped
def convert(self: Any, fail: bool = False) -> str:
    self.progress(30, "Converting")
    self.progress_callback(0.5, "Half")
    if fail:
        raise RuntimeError("bad input")
    return str(self.job_id)


def test_eager_run_through_the_store() -> None:
    """Hooks run in Celery's tracer: the job is created, moved and finished; job id = task id."""
    result = convert.apply(task_id="eager-1")
    assert result.get() == "eager-1"
    tracker = JobTracker()
    job = tracker.get_job("eager-1")
    assert job is not None
    assert (job.status, job.percentage, job.document_name) == (
        JobStatus.FINISHED,
        100,
        convert.name,
    )
    assert 50 in [e.percentage for e in tracker.history("eager-1")]
    tracker.close()


def test_eager_failure_and_revocation_signal() -> None:
    """A raising task fails its job; the task_revoked signal cancels a job still running."""
    convert.apply(kwargs={"fail": True}, task_id="eager-2")
    tracker = JobTracker()
    job = tracker.get_job("eager-2")
    assert job is not None
    assert (job.status, job.percentage, job.error) == (
        JobStatus.FAILED,
        50,
        "RuntimeError: bad input",
    )
    tracker.start_job("queued", "doc", job_id="eager-3")
    task_revoked.send(sender=convert, request=Context(id="eager-3"), terminated=False)
    task_revoked.send(sender=convert, request=Context(id="eager-2"), terminated=False)
    task_revoked.send(sender=object(), request=Context(id="eager-3"), terminated=False)
    job = tracker.get_job("eager-3")
    assert job is not None
    assert job.status is JobStatus.CANCELLED
    failed = tracker.get_job("eager-2")
    assert failed is not None
    assert failed.status is JobStatus.FAILED  # terminal states stay
    tracker.close()


def test_eager_run_over_http(remote: Remote, monkeypatch: pytest.MonkeyPatch) -> None:
    """With MORAG_PROGRESS_API_URL set, a task creates its job on the server and reports over
    HTTP; revoking it there cancels the job."""
    monkeypatch.setenv("MORAG_PROGRESS_API_URL", remote.url)
    monkeypatch.setenv("MORAG_PROGRESS_API_KEY", remote.user_key)
    assert convert.apply(task_id="http-1").successful()
    job = remote.job("http-1")
    assert (job.status, job.user_id) == (JobStatus.FINISHED, "alice")
    remote.tracker.start_job("queued", "doc", job_id="http-2", user_id="alice")
    task_revoked.send(sender=convert, request=Context(id="http-2"), terminated=False)
    assert remote.job("http-2").status is JobStatus.CANCELLED


def test_outside_a_worker_the_task_still_reports() -> None:
    """Calling the task as a function (no worker run) still reports, never raises."""
    assert convert.run() == "eager"


def test_group_is_a_parent_with_children() -> None:
    """progress_group: a parent job whose children are the group's tasks (job id = task id);
    it finishes when they all have, through the store."""
    parent, tasks = progress_group(
        [convert.s(), convert.s(), convert.s()], name="batch", weights=[1, 1, 2]
    )
    results = tasks.apply()
    assert all(r.successful() for r in results.results)
    tracker = JobTracker()
    job = tracker.get_job(parent)
    assert job is not None
    assert (job.status, job.children, job.children_done) == (JobStatus.FINISHED, 3, 3)
    children = tracker.list_jobs(parent_id=parent)
    assert {c.id for c in children} == {r.id for r in results.results}
    assert sorted(c.weight for c in children) == [1, 1, 2]
    tracker.close()


def test_group_over_http(remote: Remote, monkeypatch: pytest.MonkeyPatch) -> None:
    """With MORAG_PROGRESS_API_URL set, the parent and children are made on the server."""
    monkeypatch.setenv("MORAG_PROGRESS_API_URL", remote.url)
    monkeypatch.setenv("MORAG_PROGRESS_API_KEY", remote.user_key)
    parent, tasks = progress_group([convert.s(), convert.s()], name="remote batch")
    tasks.apply()
    job = remote.job(parent)
    assert (job.status, job.user_id, job.children) == (JobStatus.FINISHED, "alice", 2)


def test_group_weights_must_match() -> None:
    """One weight per task, or a ConfigurationError naming weights."""
    with pytest.raises(ConfigurationError) as info:
        progress_group([convert.s()], name="x", weights=[1, 2])
    assert info.value.field == "weights"
