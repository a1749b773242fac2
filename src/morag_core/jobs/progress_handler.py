"""MoRAG's ``morag_core.jobs.progress_handler``: re-exports only.

``JobTracker``, ``JobStatus`` and ``ProgressEvent`` are here because MoRAG's module imported
them, and tests patch them by this path.
"""

from morag_progress.handler import ProgressHandler
from morag_progress.models import JobStatus, ProgressEvent
from morag_progress.parser import ProgressEventParser
from morag_progress.tracker import JobTracker

__all__ = ["JobStatus", "JobTracker", "ProgressEvent", "ProgressEventParser", "ProgressHandler"]
