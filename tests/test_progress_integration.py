"""The seed's integration tests (``python -m pytest tests/test_progress_integration.py -v``).

The seed's usage examples, end to end against a real SQLite store, checking the job entities.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from morag_core.jobs import ProgressHandler
from morag_core.jobs.models import JobStatus


@pytest.fixture
def handler() -> Iterator[ProgressHandler]:
    h = ProgressHandler()
    yield h
    h.job_tracker.close()


def test_example_1_remote_worker_progress(handler: ProgressHandler) -> None:
    """Example 1: a remote worker's updates take its mapped job to FINISHED, each recorded."""
    worker_id = "remote-worker-gpu-01"
    job_id = "job-audio-123"
    handler.register_job_mapping(worker_id, job_id)
    progress_updates = [
        (10, "Initializing audio processing"),
        (52, "Extracting audio metadata"),
        (75, "Transcribing audio content"),
        (100, "Audio processing completed"),
    ]
    for percentage, message in progress_updates:
        assert handler.process_remote_worker_progress(worker_id, percentage, message)
    job = handler.job_tracker.get_job(job_id)
    assert (job.status, job.percentage, job.summary) == (
        JobStatus.FINISHED,
        100,
        "Audio processing completed",
    )
    history = handler.job_tracker.history(job_id)
    assert [(e.percentage, e.message) for e in history] == progress_updates


def test_example_2_log_parsing(handler: ProgressHandler) -> None:
    """Example 2: replayed log lines (from 2025) apply to a new job, ending FINISHED."""
    log_messages = [
        '{"event": "Processing progress: Video processing (30%)", "timestamp": "2025-06-11T11:26:51.780725Z"}',
        '{"event": "Processing progress: Video processing (60%)", "timestamp": "2025-06-11T11:26:52.780725Z"}',
        '{"event": "Processing progress: Video processing (100%)", "timestamp": "2025-06-11T11:26:54.780725Z"}',
    ]
    for log_message in log_messages:
        assert handler.process_log_line(log_message, job_id="job-video-456")
    job = handler.job_tracker.get_job("job-video-456")
    assert (job.status, job.percentage) == (JobStatus.FINISHED, 100)
    assert [e.percentage for e in handler.job_tracker.history("job-video-456")] == [30, 60, 100]
    # The feed keeps the log's own times.
    assert (
        handler.job_tracker.history("job-video-456")[0].timestamp.isoformat()
        == "2025-06-11T11:26:51.780725+00:00"
    )


def test_example_3_mixed_sources(handler: ProgressHandler) -> None:
    """Example 3: three sources, three jobs; the unmapped remote worker changes nothing."""
    handler.process_remote_worker_progress("remote-worker-1", 25, "Remote processing")
    handler.process_celery_task_progress("celery-task-1", 50, "Celery processing")
    log_line = '{"event": "Processing progress: Direct processing (75%)"}'
    handler.process_log_line(log_line, job_id="direct-job-1")
    jobs = {job.id: (job.status, job.percentage) for job in handler.job_tracker.list_jobs()}
    assert jobs == {
        "celery-task-1": (JobStatus.PROCESSING, 50),
        "direct-job-1": (JobStatus.PROCESSING, 75),
    }


def test_mixed_sources_on_one_job(handler: ProgressHandler) -> None:
    """A remote worker, a Celery task and a log stream reporting on one job interleave safely."""
    handler.register_job_mapping("gpu-1", "job-1")
    handler.register_job_mapping("task-1", "job-1")
    assert handler.process_remote_worker_progress("gpu-1", 20, "remote")
    assert handler.process_celery_task_progress("task-1", 40, "celery")
    assert handler.process_log_line("[60%] logged", worker_id="gpu-1")
    assert handler.handle_job_completion("job-1", True, "done")
    assert handler.process_remote_worker_progress("gpu-1", 99, "late") is False
    job = handler.job_tracker.get_job("job-1")
    assert (job.status, job.percentage, job.summary) == (JobStatus.FINISHED, 100, "done")


def test_error_handling(handler: ProgressHandler) -> None:
    """Invalid lines, lines without progress and unmapped workers return False and write nothing."""
    assert handler.process_log_line("This is not a valid JSON log line", job_id="test-job") is False
    assert handler.process_log_line('{"event": "Some other event"}', job_id="test-job") is False
    assert handler.process_remote_worker_progress("unknown-worker", 50, "Test message") is False
    assert handler.job_tracker.get_job("test-job") is None


def test_failure_path(handler: ProgressHandler) -> None:
    """handle_job_error fails the job with "Job failed: ...", keeping the percentage."""
    handler.process_celery_task_progress("t", 42, "working")
    assert handler.handle_job_error("t", "Critical error occurred")
    job = handler.job_tracker.get_job("t")
    assert (job.status, job.percentage, job.error) == (
        JobStatus.FAILED,
        42,
        "Job failed: Critical error occurred",
    )


def test_celery_callback_mapping(handler: ProgressHandler) -> None:
    """The seed's Celery callback maps progress 0..1 onto 10..70% through the tracker."""
    tracker = handler.job_tracker
    job_id = tracker.start_job("report.pdf", "document", "doc-1", "user-1")
    user_id = "user-1"
    seen = []

    def progress_callback(progress: float, message: str | None = None) -> None:
        mapped_percentage = 10 + int(progress * 60)
        tracker.update_progress(
            job_id, mapped_percentage, None, message or f"Processing: {mapped_percentage}%", user_id
        )
        seen.append(tracker.get_job_progress(job_id, user_id))

    for p in (0.0, 0.5, 1.0):
        progress_callback(p)
    assert seen == [10, 40, 70]
    assert tracker.get_job(job_id, user_id).summary == "Processing: 70%"
