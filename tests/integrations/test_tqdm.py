"""tqdm bars that report: on redraw and on close, never per iteration, never raising."""

from __future__ import annotations

import io
import logging

import pytest

from morag_progress.client import ProgressReporter
from morag_progress.integrations.tqdm import tqdm, trange
from morag_progress.models import JobStatus
from tests.live import Remote

Reports = list[tuple[int, str | None]]


def test_bar_reports_its_progress_and_final_state() -> None:
    """The bar reports n/total with its description, ending at 100%."""
    reports: Reports = []
    for _ in tqdm(
        range(10),
        desc="Embedding",
        reporter=lambda p, m: reports.append((p, m)),
        file=io.StringIO(),
    ):
        pass
    assert reports[-1] == (100, "Embedding")
    assert [p for p, _ in reports] == sorted(p for p, _ in reports)


def test_reports_per_redraw_not_per_iteration() -> None:
    """A long loop reports a handful of times (tqdm's refresh rate), not once per item."""
    reports: Reports = []
    for _ in trange(
        100_000, reporter=lambda p, m: reports.append((p, m)), file=io.StringIO(), mininterval=60
    ):
        pass
    assert 1 <= len(reports) <= 3
    assert reports[-1][0] == 100


def test_bar_without_total_reports_nothing() -> None:
    """No total, no percentage."""
    reports: Reports = []
    for _ in tqdm(iter(range(5)), reporter=lambda p, m: reports.append((p, m)), file=io.StringIO()):
        pass
    assert reports == []


def test_broken_target_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    """A target that raises is logged; the loop goes on."""

    def broken(percentage: int, message: str | None) -> None:
        raise RuntimeError("down")

    with caplog.at_level(logging.WARNING):
        assert sum(trange(5, reporter=broken, file=io.StringIO())) == 10
    assert "tqdm progress not reported" in caplog.text


def test_bar_reaches_a_real_server(remote: Remote) -> None:
    """A bar over a ProgressReporter moves the job, with current and total; a bar left at
    20 of 40 leaves a failed job at 50%."""
    job_id = remote.new_job()
    with ProgressReporter(job_id, api_url=remote.url, api_key=remote.key) as reporter:
        with trange(40, desc="Chunks", reporter=reporter, file=io.StringIO()) as bar:
            for i in bar:
                if i == 20:
                    break
        reporter.complete(False, "stopped at 20")
    job = remote.job(job_id)
    assert (job.status, job.percentage, job.current, job.total) == (JobStatus.FAILED, 50, 20, 40)
