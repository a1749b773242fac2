"""morag_core.jobs: MoRAG's import paths re-export morag-progress, with no logic of their own."""

from __future__ import annotations

import importlib

import pytest

import morag_progress


@pytest.mark.parametrize(
    ("module", "names"),
    [
        (
            "morag_core.jobs",
            ["ProgressEventParser", "ProgressHandler", "JobTracker", "JobStatus", "ProgressEvent"],
        ),
        ("morag_core.jobs.progress_parser", ["ProgressEventParser", "ProgressEvent"]),
        (
            "morag_core.jobs.progress_handler",
            ["ProgressHandler", "JobTracker", "JobStatus", "ProgressEvent"],
        ),
        ("morag_core.jobs.tracker", ["JobTracker", "JobStatus"]),
        ("morag_core.jobs.models", ["JobStatus", "ProgressEvent"]),
    ],
)
def test_shim_modules_re_export(module: str, names: list[str]) -> None:
    """Each MoRAG module path exposes the names it had, as the very same objects."""
    mod = importlib.import_module(module)
    for name in names:
        assert getattr(mod, name) is getattr(morag_progress, name)


def test_job_status_values_match_morag() -> None:
    """JobStatus has MoRAG's values (plus STALLED) and compares equal to its strings."""
    from morag_core.jobs.models import JobStatus

    assert {s.value for s in JobStatus} >= {
        "PENDING",
        "WAITING_FOR_REMOTE_WORKER",
        "PROCESSING",
        "FINISHED",
        "FAILED",
        "CANCELLED",
    }
    assert JobStatus.PROCESSING == "PROCESSING"
