"""morag-progress: job progress reporting for long-running workers.

Workers report progress through in-process callbacks, HTTP or log lines; one persisted job
entity per job holds the truth. Start with :class:`ProgressHandler` (the seed's entry points)
or :class:`JobTracker` (the job lifecycle).
"""

from importlib import metadata as _metadata

from morag_progress.errors import ProgressError
from morag_progress.handler import ProgressHandler
from morag_progress.models import (
    FeedEvent,
    Job,
    JobStatus,
    ProgressEvent,
    ProgressUpdate,
    UpdateOutcome,
    UpdateResult,
)
from morag_progress.parser import ProgressEventParser
from morag_progress.tracker import JobTracker

try:
    __version__ = _metadata.version("morag-progress")
except _metadata.PackageNotFoundError:  # pragma: no cover - a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "FeedEvent",
    "Job",
    "JobStatus",
    "JobTracker",
    "ProgressError",
    "ProgressEvent",
    "ProgressEventParser",
    "ProgressHandler",
    "ProgressUpdate",
    "UpdateOutcome",
    "UpdateResult",
    "__version__",
]
