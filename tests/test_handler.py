"""ProgressHandler: routing, stored mappings, MoRAG's call conventions, graceful errors."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from morag_progress import JobStatus, JobTracker, ProgressEvent, ProgressHandler
from morag_progress.store import SQLStore
from tests.conftest import Clock


@pytest.fixture
def handler(tracker: JobTracker) -> ProgressHandler:
    return ProgressHandler(job_tracker=tracker)


def line(message: str, ts: str | None = None) -> str:
    data: dict[str, Any] = {"event": message}
    if ts:
        data["timestamp"] = ts
    return json.dumps(data)


class RecordingTracker:
    """A stand-in tracker with MoRAG's signatures that records its calls."""

    def __init__(self, result: object = True) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.result = result

    def update_progress(self, job_id, percentage, status=None, summary=None, user_id=None):
        self.calls.append(
            (
                "update_progress",
                (),
                dict(
                    job_id=job_id,
                    percentage=percentage,
                    status=status,
                    summary=summary,
                    user_id=user_id,
                ),
            )
        )
        return self.result

    def mark_completed(self, *args: Any) -> object:
        self.calls.append(("mark_completed", args, {}))
        return self.result

    def mark_failed(self, *args: Any) -> object:
        self.calls.append(("mark_failed", args, {}))
        return self.result


def test_log_line_updates_the_job(handler: ProgressHandler, tracker: JobTracker) -> None:
    """A progress log line updates the job it names; other lines change nothing."""
    assert handler.process_log_line(line("Processing progress: Audio (75%)"), job_id="j1")
    assert not handler.process_log_line("This is not a valid JSON log line", job_id="j1")
    assert not handler.process_log_line(line("Some other event"), job_id="j1")
    job = tracker.get_job("j1")
    assert job is not None
    assert (job.status, job.percentage, job.summary) == (JobStatus.PROCESSING, 75, "Audio")


def test_log_line_through_a_worker_mapping(handler: ProgressHandler, tracker: JobTracker) -> None:
    """A worker's log line goes to the job the worker is mapped to."""
    handler.register_job_mapping("worker-1", "job-456")
    assert handler.process_log_line(line("[60%] frames"), worker_id="worker-1")
    assert tracker.get_job_progress("job-456") == 60


def test_missing_mapping_is_a_warning(
    handler: ProgressHandler, caplog: pytest.LogCaptureFixture
) -> None:
    """Progress from an unmapped worker is dropped with a warning, not an error."""
    with caplog.at_level(logging.WARNING):
        assert handler.process_remote_worker_progress("unknown-worker", 50, "x") is False
        assert handler.process_log_line(line("[5%] x"), worker_id="unknown-worker") is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "unknown-worker" in warnings[0].getMessage()


def test_mappings_are_stored(database_url: str) -> None:
    """A mapping registered by one handler is seen by another on the same database."""
    first = ProgressHandler(database_url)
    second = ProgressHandler(database_url)
    first.register_job_mapping("gpu-01", "job-9")
    assert second.get_job_id_for_worker("gpu-01") == "job-9"
    assert second.process_remote_worker_progress("gpu-01", 30, "decoding")
    first.unregister_job_mapping("gpu-01")
    assert second.get_job_id_for_worker("gpu-01") is None
    first.job_tracker.close()
    second.job_tracker.close()


def test_celery_task_id_is_the_job_id_unless_mapped(
    handler: ProgressHandler, tracker: JobTracker
) -> None:
    """A Celery task reports to its mapped job, else to the job whose id is the task id."""
    assert handler.process_celery_task_progress("task-1", 40, "chunking", user_id="alice")
    assert tracker.get_job("task-1", "alice") is not None
    handler.register_job_mapping("task-2", "job-2")
    assert handler.process_celery_task_progress("task-2", 45, "chunking")
    assert tracker.get_job_progress("job-2") == 45
    assert tracker.get_job("task-2") is None


def test_out_of_order_log_lines_do_not_move_progress_back(
    handler: ProgressHandler, tracker: JobTracker
) -> None:
    """Log lines are ordered by their own timestamps: a late older line is not applied."""
    lines = [
        line("Processing progress: a (30%)", "2025-06-11T11:26:51Z"),
        line("Processing progress: c (60%)", "2025-06-11T11:26:53Z"),
        line("Processing progress: b (45%)", "2025-06-11T11:26:52Z"),
    ]
    assert handler.process_log_lines(lines, job_id="video") == 2
    assert tracker.get_job_progress("video") == 60


def test_sync_job_with_logs_uses_the_latest(handler: ProgressHandler, tracker: JobTracker) -> None:
    """sync_job_with_logs applies only the latest progress in the lines."""
    lines = [
        line("[90%] late", "2025-06-11T11:26:52Z"),
        line("[10%] early", "2025-06-11T11:26:50Z"),
    ]
    assert handler.sync_job_with_logs("j", lines)
    assert len(tracker.history("j")) == 1
    assert tracker.get_job_progress("j") == 90
    assert handler.sync_job_with_logs("j", ["nothing here"]) is False
    latest = handler.extract_latest_progress_from_logs(lines)
    assert latest is not None
    assert latest.message == "late"


def test_completion_and_error(handler: ProgressHandler, tracker: JobTracker, clock: Clock) -> None:
    """handle_job_completion finishes or fails; handle_job_error fails with "Job failed: ..."."""
    handler.process_celery_task_progress("ok", 50, "half")
    clock.advance(1)
    assert handler.handle_job_completion("ok", True, "all done")
    assert (tracker.get_job_status("ok"), tracker.get_job_progress("ok")) == (
        JobStatus.FINISHED,
        100,
    )
    handler.process_celery_task_progress("bad", 35, "third")
    clock.advance(1)
    assert handler.handle_job_error("bad", "disk full")
    job = tracker.get_job("bad")
    assert job is not None
    assert (job.status, job.percentage, job.error) == (
        JobStatus.FAILED,
        35,
        "Job failed: disk full",
    )
    assert handler.handle_job_completion("bad", True, "too late") is False


def test_update_job_progress_with_an_event(handler: ProgressHandler, tracker: JobTracker) -> None:
    """update_job_progress applies a ProgressEvent built by the caller, with its counts."""
    event = ProgressEvent(20, "pages", datetime(2026, 1, 1, 11, tzinfo=UTC), current=2, total=10)
    assert handler.update_job_progress("doc", event, user_id="alice")
    job = tracker.get_job("doc", "alice")
    assert job is not None
    assert (job.percentage, job.current, job.total) == (20, 2, 10)


def test_stand_in_tracker_gets_morags_calls() -> None:
    """A stand-in tracker receives MoRAG's keyword update_progress and positional completions."""
    handler = ProgressHandler()
    stand_in = RecordingTracker()
    handler.job_tracker = stand_in
    handler.register_job_mapping("w", "job-1")  # mappings do not go through the tracker
    assert handler.process_remote_worker_progress("w", 85, "Transcribing")
    assert handler.handle_job_completion("job-1", True, "done")
    assert handler.handle_job_error("job-1", "boom")
    assert stand_in.calls == [
        (
            "update_progress",
            (),
            {
                "job_id": "job-1",
                "percentage": 85,
                "status": JobStatus.PROCESSING,
                "summary": "Transcribing",
                "user_id": None,
            },
        ),
        ("mark_completed", ("job-1", "done", None), {}),
        ("mark_failed", ("job-1", "Job failed: boom", None), {}),
    ]


@pytest.mark.parametrize(
    ("returned", "expected"), [(None, True), (False, False), (0, False), ("yes", True)]
)
def test_stand_in_results_become_bools(returned: object, expected: bool) -> None:
    """Whatever a stand-in returns becomes a bool (None counts as success, as in MoRAG)."""
    handler = ProgressHandler()
    handler.job_tracker = RecordingTracker(returned)
    assert handler.process_celery_task_progress("t", 10, "x") is expected
    assert handler.handle_job_completion("t", True, "x") is expected


def test_tracker_that_raises_is_contained(caplog: pytest.LogCaptureFixture) -> None:
    """A tracker that raises makes the call return False; the error is logged, not raised."""

    class Broken:
        def update_progress(self, **_: Any) -> bool:
            raise RuntimeError("db exploded")

        def mark_completed(self, *_: Any) -> bool:
            raise RuntimeError("db exploded")

        mark_failed = mark_completed

    handler = ProgressHandler()
    handler.job_tracker = Broken()
    assert handler.process_celery_task_progress("t", 10, "x") is False
    assert handler.process_log_line("[10%] x", job_id="t") is False
    assert handler.handle_job_completion("t", False, "x") is False
    assert "db exploded" in caplog.text


@pytest.mark.parametrize("percentage", [float("nan"), float("inf"), "ten", None])
def test_non_numeric_percentage_is_ignored(handler: ProgressHandler, percentage: Any) -> None:
    """A percentage that is not a number is ignored with a warning, not raised."""
    handler.register_job_mapping("w", "j")
    assert handler.process_remote_worker_progress("w", percentage, "x") is False
    assert handler.process_celery_task_progress("t", percentage, "x") is False


def test_database_down_keeps_the_process_going(caplog: pytest.LogCaptureFixture) -> None:
    """With the database unreachable, mappings still route within the process and every
    call returns False instead of raising."""
    handler = ProgressHandler("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    handler.register_job_mapping("w", "j")
    assert handler.get_job_id_for_worker("w") == "j"
    assert handler.process_remote_worker_progress("w", 10, "x") is False
    assert handler.process_log_line("[10%] x", job_id="j") is False
    assert handler.handle_job_completion("j", True, "x") is False
    handler.unregister_job_mapping("w")
    assert handler.get_job_id_for_worker("w") is None
    assert "kept in this process only" in caplog.text


def test_default_database_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ProgressHandler() writes to MORAG_PROGRESS_DATABASE_URL."""
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("MORAG_PROGRESS_DATABASE_URL", url)
    handler = ProgressHandler()
    assert handler.process_celery_task_progress("t", 10, "x")
    reader = SQLStore(url)
    assert reader.get_job("t") is not None
    reader.close()
    handler.job_tracker.close()


def test_another_users_worker_of_the_same_name_cannot_take_over_a_mapping(
    handler: ProgressHandler, tracker: JobTracker
) -> None:
    """Alice's and Bob's workers are both called gpu-01: Bob's claim does not replace the
    mapping of Alice's, and the in-process handler refuses to guess between them rather than
    writing into Bob's job."""
    waiting = JobStatus.WAITING_FOR_REMOTE_WORKER
    alices = tracker.start_job("a", "audio", user_id="alice", status=waiting)
    bobs = tracker.start_job("b", "audio", user_id="bob", status=waiting)
    assert tracker.claim("gpu-01", claimant="ka", user_id="alice") is not None
    assert handler.get_job_id_for_worker("gpu-01") == alices
    assert tracker.claim("gpu-01", claimant="kb", user_id="bob") is not None
    assert handler.get_job_id_for_worker("gpu-01") is None
    assert handler.process_remote_worker_progress("gpu-01", 77, "whose?") is False
    assert tracker.get_job_progress(bobs, "bob") == 0
    assert tracker.get_job_progress(alices, "alice") == 0


def test_an_in_process_mapping_wins_over_users_workers_of_that_name(
    handler: ProgressHandler, tracker: JobTracker
) -> None:
    """A worker id registered in-process keeps mapping to its job when a user's worker claims a
    job under the same name; unregistering it leaves the user's mapping alone."""
    local = tracker.start_job("local", "audio")
    handler.register_job_mapping("gpu-01", local)
    waiting = JobStatus.WAITING_FOR_REMOTE_WORKER
    bobs = tracker.start_job("b", "audio", user_id="bob", status=waiting)
    assert tracker.claim("gpu-01", claimant="kb", user_id="bob") is not None
    assert handler.get_job_id_for_worker("gpu-01") == local
    handler.unregister_job_mapping("gpu-01")
    assert handler.get_job_id_for_worker("gpu-01") == bobs
