"""LocalReporter: the reporter's promises, writing through a tracker instead of HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from morag_progress.client import LocalReporter
from morag_progress.errors import ConfigurationError
from morag_progress.models import JobStatus
from morag_progress.store import SQLStore
from morag_progress.tracker import JobTracker


@pytest.fixture
def tracker(tmp_path: Path) -> Iterator[JobTracker]:
    store = SQLStore(f"sqlite:///{tmp_path / 'local.db'}")
    yield JobTracker(store=store)
    store.close()


def test_reports_coalesce_and_finish(tracker: JobTracker) -> None:
    """A hot loop of updates lands as a few ordered writes and a FINISHED job."""
    job_id = tracker.start_job("a.pdf", "document", user_id="alice")
    with LocalReporter(job_id, tracker, user_id="alice", min_interval=0.05) as r:
        r.heartbeat()
        for i in range(10_000):
            r.update(i / 100)
    job = tracker.get_job(job_id)
    assert job is not None
    assert job.status is JobStatus.FINISHED
    history = [e.percentage for e in tracker.history(job_id)]
    assert history == sorted(history)
    assert len(history) < 200


def test_cancel_request_is_seen_and_acknowledged(tracker: JobTracker) -> None:
    """cancel_requested comes back from the store; the worker ends the job CANCELLED."""
    job_id = tracker.start_job("a.pdf", "document")
    r = LocalReporter(job_id, tracker, min_interval=0)
    r.update(10)
    assert r.close()
    tracker.request_cancel(job_id)
    r = LocalReporter(job_id, tracker, min_interval=0)
    r.update(20)
    assert r.close()
    assert r.cancel_requested
    r = LocalReporter(job_id, tracker, min_interval=0)
    r.complete(False, cancelled=True)
    assert r.close()
    job = tracker.get_job(job_id)
    assert job is not None
    assert job.status is JobStatus.CANCELLED


def test_another_users_job_is_not_found(tracker: JobTracker) -> None:
    """A reporter scoped to another user cannot write the job; it gives up quietly."""
    job_id = tracker.start_job("a.pdf", "document", user_id="alice")
    with LocalReporter(job_id, tracker, user_id="bob") as r:
        r.update(50)
    assert (r.stopped, r.finished) == (True, False)
    assert r.refusal is not None
    assert r.refusal[0] is None  # in process: no HTTP status
    job = tracker.get_job(job_id)
    assert job is not None
    assert job.percentage == 0


def test_database_down_is_retried_not_raised() -> None:
    """A database that cannot be reached is retried (like a server that is down), and nothing
    reaches the worker: close reports the update as undelivered."""
    from tests.services import free_port

    tracker = JobTracker(f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none")
    r = LocalReporter("job-1", tracker, min_interval=0)
    r.update(10)
    r.complete(True)
    assert r.close(timeout=0.5) is False
    assert not r.finished


def test_the_job_names_its_worker(tracker: JobTracker) -> None:
    """In process too, reports name the worker (here as given)."""
    job_id = tracker.start_job("a.pdf", "document", user_id="alice")
    with LocalReporter(job_id, tracker, user_id="alice", worker="celery@box") as r:
        r.update(40)
    job = tracker.get_job(job_id)
    assert job is not None
    assert job.worker_id == "celery@box"


def test_a_checkpoint_is_kept_with_the_job_in_process(tracker: JobTracker) -> None:
    """In process too, a saved checkpoint reaches the job before its final status, standing
    for the percentage noted when it was saved."""
    job_id = tracker.start_job("a.pdf", "document", user_id="alice")

    def work() -> None:
        with LocalReporter(job_id, tracker, user_id="alice", min_interval=0.05) as r:
            r.update(60, "page 60")
            r.save_checkpoint({"page": 60})
            r.update(65, "page 65")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        work()
    job = tracker.get_job(job_id)
    assert job is not None
    assert (job.status, job.percentage) == (JobStatus.FAILED, 65)
    assert (job.checkpoint, job.checkpoint_percentage) == ({"page": 60}, 60)


def test_a_local_reporter_for_a_rank_is_refused_before_any_thread_starts() -> None:
    import threading

    before = threading.active_count()
    with pytest.raises(ConfigurationError, match=r"JobTracker\.start_job"):
        LocalReporter.for_rank("train")
    assert threading.active_count() == before
