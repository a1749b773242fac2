"""The seed's unit tests (``python -m pytest tests/test_progress_reporting.py -v``).

Parser and handler behaviour as the seed describes it, against a real SQLite store.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from morag_core.jobs import ProgressEventParser, ProgressHandler
from morag_core.jobs.models import JobStatus


@pytest.fixture
def handler() -> Iterator[ProgressHandler]:
    """A handler on the test's own SQLite file (MORAG_PROGRESS_DATABASE_URL, see conftest)."""
    h = ProgressHandler()
    yield h
    h.job_tracker.close()


class TestProgressEventParser:
    """Progress event parsing from log messages."""

    def test_seed_json_example(self) -> None:
        """The seed's JSON log line parses to 75% with the timestamp it carries."""
        parser = ProgressEventParser()
        log_line = '{"event": "Processing progress: Audio processing (75%)", "timestamp": "2025-06-11T11:26:50.780725Z"}'
        event = parser.parse_json_log(log_line)
        assert event is not None
        assert (event.percentage, event.message) == (75, "Audio processing")
        assert event.timestamp.isoformat() == "2025-06-11T11:26:50.780725+00:00"

    def test_seed_plain_example(self) -> None:
        """The seed's plain line "Processing... 75%" parses to 75."""
        event = ProgressEventParser().parse_plain_text_log("Processing... 75%")
        assert event is not None
        assert (event.percentage, event.message) == (75, "Processing...")

    @pytest.mark.parametrize(
        ("message", "percentage", "description"),
        [
            (
                "Processing progress: Audio processing: Initializing (52%)",
                52,
                "Audio processing: Initializing",
            ),
            ("Processing... 75%", 75, "Processing..."),
            ("Progress: 45% - Converting video", 45, "Converting video"),
            ("Stage: transcription (67%)", 67, "transcription"),
            ("Audio processing: 80% complete", 80, "Audio processing"),
            ("[75%] Processing audio content", 75, "Processing audio content"),
        ],
    )
    def test_supported_formats(self, message: str, percentage: int, description: str) -> None:
        """Every format in the seed's "Supported Progress Formats" list parses, JSON or plain."""
        parser = ProgressEventParser()
        for event in (
            parser.parse_plain_text_log(message),
            parser.parse_json_log(
                json.dumps({"event": message, "logger": "test", "level": "info"})
            ),
        ):
            assert event is not None
            assert (event.percentage, event.message) == (percentage, description)

    def test_stream_and_latest(self) -> None:
        """parse_log_stream finds each progress line; get_latest_progress the latest by time."""
        parser = ProgressEventParser()
        log_lines = [
            json.dumps(
                {
                    "event": "Processing progress: Starting (10%)",
                    "timestamp": "2025-06-11T11:26:50Z",
                }
            ),
            json.dumps(
                {"event": "Processing progress: Middle (50%)", "timestamp": "2025-06-11T11:26:52Z"}
            ),
            json.dumps(
                {"event": "Processing progress: Earlier (30%)", "timestamp": "2025-06-11T11:26:51Z"}
            ),
            "Not a progress line",
        ]
        assert [e.percentage for e in parser.parse_log_stream(log_lines)] == [10, 50, 30]
        latest = parser.get_latest_progress(log_lines)
        assert latest is not None
        assert latest.percentage == 50

    def test_invalid_formats_are_ignored(self) -> None:
        """Invalid log formats are ignored (None), as the seed's Error Handling says."""
        parser = ProgressEventParser()
        for line in ["{not json", "", "GPU utilisation 87%", '{"event": "Some other event"}']:
            assert parser.parse_json_log(line) is None


class TestProgressHandler:
    """Progress handling and job entity updates, on a real store."""

    def test_job_entity_fields(self, handler: ProgressHandler) -> None:
        """An update sets percentage, status, summary and updated_at on the job entity."""
        handler.register_job_mapping("worker-1", "job-123")
        assert handler.process_remote_worker_progress("worker-1", 75, "Processing audio")
        job = handler.job_tracker.get_job("job-123")
        assert (job.percentage, job.status, job.summary) == (
            75,
            JobStatus.PROCESSING,
            "Processing audio",
        )
        assert job.updated_at.tzinfo is not None

    @pytest.mark.parametrize(
        ("percentage", "status"),
        [(0, JobStatus.PENDING), (50, JobStatus.PROCESSING), (100, JobStatus.FINISHED)],
    )
    def test_status_from_percentage(
        self, handler: ProgressHandler, percentage: int, status: JobStatus
    ) -> None:
        """The seed's mapping: PENDING (0%), PROCESSING (1-99%), FINISHED (100%)."""
        assert handler.process_celery_task_progress("task-123", percentage, "Processing document")
        assert handler.job_tracker.get_job_status("task-123") is status

    def test_process_log_line(self, handler: ProgressHandler) -> None:
        """The seed's handler block: a log line updates the job it names."""
        log_line = '{"event": "Processing progress: Audio processing (75%)", "timestamp": "2025-06-11T11:26:50.780725Z"}'
        assert handler.process_log_line(log_line, job_id="job-123")
        assert handler.job_tracker.get_job_progress("job-123") == 75

    def test_handle_job_completion(self, handler: ProgressHandler) -> None:
        """handle_job_completion finishes the job with the final message."""
        handler.process_celery_task_progress("task-123", 50, "Processing document")
        assert handler.handle_job_completion("task-123", True, "Processing completed")
        job = handler.job_tracker.get_job("task-123")
        assert (job.status, job.percentage, job.summary) == (
            JobStatus.FINISHED,
            100,
            "Processing completed",
        )
        assert job.end_date is not None

    def test_missing_mapping(self, handler: ProgressHandler) -> None:
        """Missing job mappings are warnings: nothing is written, nothing raised."""
        assert handler.process_remote_worker_progress("nobody", 50, "x") is False
        assert handler.job_tracker.list_jobs() == []
