"""The seed's usage examples, run against a temporary database, then the jobs they produced.

    python examples/progress_reporting_demo.py

Set MORAG_PROGRESS_DATABASE_URL to keep the jobs in a database of your own.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from morag_core.jobs import ProgressEventParser, ProgressHandler


def example_1_remote_worker(handler: ProgressHandler) -> None:
    """Example 1: a remote worker reports progress through its job mapping."""
    worker_id = "remote-worker-gpu-01"
    job_id = "job-audio-123"

    # Register mapping
    handler.register_job_mapping(worker_id, job_id)

    # Simulate progress updates
    progress_updates = [
        (10, "Initializing audio processing"),
        (52, "Extracting audio metadata"),
        (75, "Transcribing audio content"),
        (100, "Audio processing completed"),
    ]

    for percentage, message in progress_updates:
        handler.process_remote_worker_progress(worker_id, percentage, message)


def example_2_log_parsing(handler: ProgressHandler) -> None:
    """Example 2: progress parsed from structlog JSON lines."""
    log_messages = [
        '{"event": "Processing progress: Video processing (30%)", "timestamp": "2025-06-11T11:26:51.780725Z"}',
        '{"event": "Processing progress: Video processing (60%)", "timestamp": "2025-06-11T11:26:52.780725Z"}',
        '{"event": "Processing progress: Video processing (100%)", "timestamp": "2025-06-11T11:26:54.780725Z"}',
    ]

    for log_message in log_messages:
        handler.process_log_line(log_message, job_id="job-video-456")


def example_3_mixed_sources(handler: ProgressHandler) -> None:
    """Example 3: three sources at once ("remote-worker-1" has no mapping: a logged warning)."""
    handler.process_remote_worker_progress("remote-worker-1", 25, "Remote processing")
    handler.process_celery_task_progress("celery-task-1", 50, "Celery processing")

    log_line = '{"event": "Processing progress: Direct processing (75%)"}'
    handler.process_log_line(log_line, job_id="direct-job-1")


def show_parser() -> None:
    """The parser on its own: the seed's two lines."""
    parser = ProgressEventParser()
    log_line = '{"event": "Processing progress: Audio processing (75%)", "timestamp": "2025-06-11T11:26:50.780725Z"}'
    for event in (
        parser.parse_json_log(log_line),
        parser.parse_plain_text_log("Processing... 75%"),
    ):
        assert event is not None
        print(
            f"  parsed {event.percentage:3d}%  {event.message!r}  at {event.timestamp.isoformat()}"
        )


def main() -> None:
    # The handler logs what it ignores (the seed: "missing job mappings are logged as warnings").
    logging.basicConfig(level=logging.WARNING, format="  [%(levelname)s %(name)s] %(message)s")
    with tempfile.TemporaryDirectory(prefix="morag-progress-demo-") as tmp:
        os.environ.setdefault("MORAG_PROGRESS_DATABASE_URL", f"sqlite:///{Path(tmp) / 'demo.db'}")
        print("Parser")
        show_parser()

        print("\nRunning the seed's three usage examples")
        handler = ProgressHandler()
        example_1_remote_worker(handler)
        example_2_log_parsing(handler)
        example_3_mixed_sources(handler)

        tracker = handler.job_tracker
        jobs = sorted(tracker.list_jobs(), key=lambda job: job.id)
        print(f"\nJobs in {os.environ['MORAG_PROGRESS_DATABASE_URL']}")
        print(f"  {'job':<16} {'status':<11} {'%':>4}  {'updates':>7}  summary")
        for job in jobs:
            updates = len(tracker.history(job.id))
            print(
                f"  {job.id:<16} {job.status.value:<11} {job.percentage:>4}  {updates:>7}  {job.summary}"
            )
        tracker.close()


if __name__ == "__main__":
    main()
