"""morag-progress: job progress reporting for long-running workers.

Workers report progress through in-process callbacks, HTTP or log lines; one persisted job
entity per job holds the truth. Start with :class:`ProgressHandler` (the seed's entry points)
or :class:`JobTracker` (the job lifecycle).
"""

import typing as _typing
from importlib import import_module as _import_module

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

if _typing.TYPE_CHECKING:
    from morag_progress.handler import ProgressHandler as ProgressHandler
    from morag_progress.parser import ProgressEventParser as ProgressEventParser
    from morag_progress.tracker import JobTracker as JobTracker

    __version__: str

# The tracker and the handler bring the store (SQLAlchemy), the parser its patterns: imported
# when first asked for, so that a worker importing the client stays light.
_LAZY = {
    "JobTracker": "morag_progress.tracker",
    "ProgressHandler": "morag_progress.handler",
    "ProgressEventParser": "morag_progress.parser",  # its patterns compile in a few ms
}


def _server_installed() -> bool:
    from importlib.util import find_spec

    return find_spec("sqlalchemy") is not None


def __getattr__(name: str) -> _typing.Any:
    if name == "__version__":
        value: _typing.Any = _version()
        globals()[name] = value
        return value
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'morag_progress' has no attribute {name!r}")
    try:
        value = getattr(_import_module(module), name)
    except ModuleNotFoundError as e:  # a worker's light install
        raise ImportError(
            f"morag_progress.{name} needs the server ({e.name} is not installed): "
            "pip install 'morag-progress[server]'"
        ) from e
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
    "ProgressError",
    "ProgressEvent",
    "ProgressEventParser",
    "ProgressUpdate",
    "UpdateOutcome",
    "UpdateResult",
    "__version__",
]

if _server_installed():  # ``from morag_progress import *`` works on a worker's install too
    __all__ = sorted([*__all__, "JobTracker", "ProgressHandler"])


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, "__version__"})
