"""The seed's code blocks run as written, and its demo script runs.

The blocks are kept here verbatim. When the seed itself is reachable (``../shared/seeds`` beside
the checkout, as in CI), a test checks that these copies still match it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from morag_progress import JobStatus

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT.parent / "shared" / "seeds" / "000_1d17e0e0b1ae29ff.txt"

PARSER_BLOCK = """\
from morag_core.jobs import ProgressEventParser

parser = ProgressEventParser()

# Parse JSON log
log_line = '{"event": "Processing progress: Audio processing (75%)", "timestamp": "2025-06-11T11:26:50.780725Z"}'
event = parser.parse_json_log(log_line)

# Parse plain text log
event = parser.parse_plain_text_log("Processing... 75%")

# Get latest progress from multiple logs
events = parser.parse_log_stream(log_lines)
latest = parser.get_latest_progress(log_lines)
"""

HANDLER_BLOCK = """\
from morag_core.jobs import ProgressHandler

handler = ProgressHandler()

# Register job mapping for workers
handler.register_job_mapping("worker-1", "job-123")

# Process log lines
handler.process_log_line(log_line, job_id="job-123")

# Handle remote worker progress
handler.process_remote_worker_progress("worker-1", 75, "Processing audio")

# Handle Celery task progress
handler.process_celery_task_progress("task-123", 50, "Processing document")

# Handle job completion
handler.handle_job_completion("job-123", True, "Processing completed")
"""

REMOTE_CONVERTER_BLOCK = """\
# In remote_converter.py
def progress_callback(progress: float, message: str = None):
    percentage = int(progress * 100)
    logger.info(f"Processing progress: {message} ({percentage}%)")
    
    # Report progress to API
    asyncio.create_task(self._report_progress(job_id, percentage, message))
"""

EXAMPLE_1 = """\
# Remote worker reports progress
worker_id = "remote-worker-gpu-01"
job_id = "job-audio-123"

# Register mapping
handler.register_job_mapping(worker_id, job_id)

# Simulate progress updates
progress_updates = [
    (10, "Initializing audio processing"),
    (52, "Extracting audio metadata"),
    (75, "Transcribing audio content"),
    (100, "Audio processing completed")
]

for percentage, message in progress_updates:
    handler.process_remote_worker_progress(worker_id, percentage, message)
"""

EXAMPLE_2 = """\
# Parse progress from log messages
log_messages = [
    '{"event": "Processing progress: Video processing (30%)", "timestamp": "2025-06-11T11:26:51.780725Z"}',
    '{"event": "Processing progress: Video processing (60%)", "timestamp": "2025-06-11T11:26:52.780725Z"}',
    '{"event": "Processing progress: Video processing (100%)", "timestamp": "2025-06-11T11:26:54.780725Z"}',
]

for log_message in log_messages:
    handler.process_log_line(log_message, job_id="job-video-456")
"""

EXAMPLE_3 = """\
# Handle progress from multiple sources
handler.process_remote_worker_progress("remote-worker-1", 25, "Remote processing")
handler.process_celery_task_progress("celery-task-1", 50, "Celery processing")

log_line = '{"event": "Processing progress: Direct processing (75%)"}'
handler.process_log_line(log_line, job_id="direct-job-1")
"""

SELF_CONTAINED = [
    PARSER_BLOCK,
    HANDLER_BLOCK,
    REMOTE_CONVERTER_BLOCK,
    EXAMPLE_1,
    EXAMPLE_2,
    EXAMPLE_3,
]


def seed_python_blocks() -> list[str]:
    text = SEED.read_text()
    return [block for block in re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)]


def test_copies_match_the_seed() -> None:
    """The blocks kept here are the seed's own, character for character."""
    if not SEED.exists():
        pytest.skip(f"seed not found at {SEED}")
    from tests.api.test_server import SEED_REQUEST_BLOCK  # run against a real server there

    blocks = seed_python_blocks()
    for block in [*SELF_CONTAINED, SEED_REQUEST_BLOCK]:
        assert block in blocks


def test_seed_blocks_run_in_order_as_a_session() -> None:
    """Run one after another as a reader would, the blocks leave the jobs the seed describes.

    The parser block names ``log_lines`` without defining it; the session provides it, as the
    reader would. Nothing else is added.
    """
    namespace: dict[str, Any] = {
        "log_lines": [
            '{"event": "Processing progress: Starting (10%)", "timestamp": "2025-06-11T11:26:50Z"}',
            "Processing... 75%",
        ]
    }
    for block in SELF_CONTAINED:
        exec(compile(block, "<seed>", "exec"), namespace)
    assert [e.percentage for e in namespace["events"]] == [10, 75]
    assert namespace["latest"].percentage == 75
    tracker = namespace["handler"].job_tracker
    states = {job.id: (job.status, job.percentage) for job in tracker.list_jobs()}
    assert states == {
        "job-123": (JobStatus.FINISHED, 100),
        "task-123": (JobStatus.PROCESSING, 50),
        "job-audio-123": (JobStatus.FINISHED, 100),
        "job-video-456": (JobStatus.FINISHED, 100),
        "celery-task-1": (JobStatus.PROCESSING, 50),
        "direct-job-1": (JobStatus.PROCESSING, 75),
    }
    tracker.close()


def test_remote_converter_callback_as_written_logs_the_seed_format(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The seed's remote-converter callback logs a line our parser reads back as progress."""
    from morag_core.jobs import ProgressEventParser

    reported: list[tuple[str, int, str]] = []

    class Converter:
        async def _report_progress(self, job_id: str, percentage: int, message: str) -> None:
            reported.append((job_id, percentage, message))

    namespace: dict[str, Any] = {
        "logger": logging.getLogger("remote_converter"),
        "asyncio": asyncio,
        "self": Converter(),
        "job_id": "job-1",
    }
    exec(compile(REMOTE_CONVERTER_BLOCK, "<seed>", "exec"), namespace)

    async def run() -> None:
        namespace["progress_callback"](0.52, "Audio processing: Initializing audio processing")
        await asyncio.sleep(0)

    with caplog.at_level(logging.INFO, logger="remote_converter"):
        asyncio.run(run())
    assert reported == [("job-1", 52, "Audio processing: Initializing audio processing")]
    event = ProgressEventParser().parse_plain_text_log(caplog.records[0].getMessage())
    assert event is not None
    assert (event.percentage, event.message) == (
        52,
        "Audio processing: Initializing audio processing",
    )


def test_demo_script_runs(tmp_path: Path) -> None:
    """``python examples/progress_reporting_demo.py`` (the seed's demo command) succeeds."""
    env = {k: v for k, v in os.environ.items() if k != "MORAG_PROGRESS_DATABASE_URL"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "progress_reporting_demo.py")],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "job-audio-123    FINISHED     100        4" in done.stdout
    assert "job-video-456    FINISHED     100        3" in done.stdout
    assert "no job mapping for remote worker remote-worker-1" in done.stderr
