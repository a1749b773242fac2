"""Progress from log records and structlog events, to a callable and to a real server."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest
import structlog

from morag_progress.client import ProgressReporter
from morag_progress.errors import ConfigurationError
from morag_progress.integrations.logging import ProgressLogHandler, report_progress
from morag_progress.models import JobStatus
from tests.live import Remote

Reports = list[tuple[int, str | None]]


@pytest.fixture
def reports() -> Reports:
    return []


@pytest.fixture
def log(reports: Reports) -> Iterator[logging.Logger]:
    logger = logging.getLogger("tests.converter")
    handler = ProgressLogHandler(lambda p, m: reports.append((p, m)))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield logger
    logger.removeHandler(handler)


def test_seed_converter_line_is_reported(log: logging.Logger, reports: Reports) -> None:
    """The remote converter's own log line reports its progress with no other change."""
    message, percentage = "Transcribing", 52
    log.info(f"Processing progress: {message} ({percentage}%)")
    log.info("Loaded model whisper-large (GPU utilisation 87%)")
    log.info("[75%] Embedding chunks")
    assert reports == [(52, "Transcribing"), (75, "Embedding chunks")]


def test_extra_fields_are_progress(log: logging.Logger, reports: Reports) -> None:
    """``extra={"progress": 0.3}`` reports 30% with the record's message."""
    log.info("chunking", extra={"progress": 0.3})
    log.info("chunking", extra={"percentage": 150})  # out of range: not progress
    assert reports == [(30, "chunking")]


def test_own_records_are_skipped(reports: Reports) -> None:
    """morag-progress's own records never feed back into reporting."""
    handler = ProgressLogHandler(lambda p, m: reports.append((p, m)))
    own = logging.getLogger("morag_progress.client")
    handler.handle(own.makeRecord(own.name, logging.INFO, __file__, 1, "[50%] x", (), None))
    assert reports == []


def test_failing_target_never_raises_into_the_logger(log: logging.Logger) -> None:
    """A target that raises is logging's problem (handleError), not the worker's."""

    def broken(percentage: int, message: str | None) -> None:
        raise RuntimeError("down")

    handler = ProgressLogHandler(broken)
    stream = io.StringIO()
    logging.raiseExceptions, old = False, logging.raiseExceptions
    try:
        log.addHandler(handler)
        log.info("[10%] step")
    finally:
        log.removeHandler(handler)
        logging.raiseExceptions = old
    assert stream.getvalue() == ""


def test_target_must_be_usable() -> None:
    """A target with neither update() nor a call is refused, naming the argument."""
    with pytest.raises(ConfigurationError) as info:
        ProgressLogHandler(42)  # type: ignore[arg-type]
    assert info.value.field == "target"


def test_structlog_processor_reports_and_passes_events_on(reports: Reports) -> None:
    """The processor reports event text and fields, and returns the event unchanged."""
    out = io.StringIO()
    logger = structlog.wrap_logger(
        structlog.PrintLogger(out),
        processors=[
            report_progress(lambda p, m: reports.append((p, m))),
            structlog.processors.JSONRenderer(),
        ],
    )
    logger.info("Processing progress: Extracting text (40%)")
    logger.info("embedding", percentage=61.9)
    logger.info("nothing to see")
    assert reports == [(40, "Extracting text"), (61, "embedding")]
    assert out.getvalue().count("\n") == 3


def test_structlog_processor_survives_a_broken_target(caplog: pytest.LogCaptureFixture) -> None:
    """A raising target is logged; the event still goes on."""

    def broken(percentage: int, message: str | None) -> None:
        raise RuntimeError("down")

    processor = report_progress(broken)
    event = {"event": "[5%] start"}
    with caplog.at_level(logging.WARNING):
        assert processor(None, "info", event) is event
    assert "not reported" in caplog.text


def test_log_lines_reach_a_real_server(remote: Remote) -> None:
    """Logging with a ProgressLogHandler over a ProgressReporter moves the job."""
    job_id = remote.new_job()
    logger = logging.getLogger("tests.remote-converter")
    logger.setLevel(logging.INFO)
    with ProgressReporter(job_id, api_url=remote.url, api_key=remote.key) as reporter:
        handler = ProgressLogHandler(reporter)
        logger.addHandler(handler)
        try:
            logger.info("Processing progress: Transcribing audio content (75%)")
        finally:
            logger.removeHandler(handler)
    job = remote.job(job_id)
    assert job.status is JobStatus.FINISHED
    assert [e.percentage for e in remote.tracker.history(job_id)][-2:] == [75, 100]
