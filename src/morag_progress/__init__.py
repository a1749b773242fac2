"""morag-progress: job progress reporting for long-running workers.

Workers report progress through in-process callbacks, HTTP or log lines; one persisted job
entity per job holds the truth. Start with :class:`ProgressHandler` (the seed's entry points)
or :class:`JobTracker` (the job lifecycle).
"""

from importlib import import_module as _import_module
from typing import TYPE_CHECKING, Any

from morag_progress.errors import ProgressError
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

if TYPE_CHECKING:
    from morag_progress.handler import ProgressHandler
    from morag_progress.tracker import JobTracker

    __version__: str

# The tracker and the handler bring the store (SQLAlchemy): imported when first asked for, so
# that a worker importing the client or the parser stays light.
_LAZY = {"JobTracker": "morag_progress.tracker", "ProgressHandler": "morag_progress.handler"}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _version()
        globals()[name] = value
        return value
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'morag_progress' has no attribute {name!r}")
    value = getattr(_import_module(module), name)
    globals()[name] = value
    return value


def _version() -> str:
    from importlib import metadata  # about 30 ms: read when asked for

    try:
        return metadata.version("morag-progress")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source tree not installed
        return "0.0.0"


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
