"""The worker SDK: report a job's progress to a morag-progress server over HTTP.

:class:`ProgressReporter` (a background thread) and :class:`AsyncProgressReporter` (an asyncio
task) share one decision core without I/O (``_core.py``): coalescing, throttling, retries.
:class:`LocalReporter` is the same reporter writing through a tracker, for workers beside the
database.
"""

from typing import TYPE_CHECKING, Any

from morag_progress.client._core import Stage
from morag_progress.client.jobs import create_job, job_body
from morag_progress.client.sync import LocalReporter, ProgressReporter

if TYPE_CHECKING:
    from morag_progress.client.aio import AsyncProgressReporter


def __getattr__(name: str) -> Any:
    # asyncio is imported with the async reporter, not with every worker's import.
    if name == "AsyncProgressReporter":
        from morag_progress.client.aio import AsyncProgressReporter

        return AsyncProgressReporter
    raise AttributeError(f"module 'morag_progress.client' has no attribute {name!r}")


__all__ = [
    "AsyncProgressReporter",
    "LocalReporter",
    "ProgressReporter",
    "Stage",
    "create_job",
    "job_body",
]
