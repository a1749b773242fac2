"""The worker SDK: report a job's progress to a morag-progress server over HTTP.

:class:`ProgressReporter` (a background thread) and :class:`AsyncProgressReporter` (an asyncio
task) share one decision core without I/O (``_core.py``): coalescing, throttling, retries.
:class:`LocalReporter` is the same reporter writing through a tracker, for workers beside the
database.
"""

from morag_progress.client._core import Stage
from morag_progress.client.aio import AsyncProgressReporter
from morag_progress.client.jobs import create_job
from morag_progress.client.sync import LocalReporter, ProgressReporter

__all__ = [
    "AsyncProgressReporter",
    "LocalReporter",
    "ProgressReporter",
    "Stage",
    "create_job",
]
