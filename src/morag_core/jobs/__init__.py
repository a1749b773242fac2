"""MoRAG's ``morag_core.jobs``: re-exports of morag-progress, so the seed's imports work."""

from morag_progress import (
    JobStatus,
    JobTracker,
    ProgressEvent,
    ProgressEventParser,
    ProgressHandler,
)

__all__ = ["JobStatus", "JobTracker", "ProgressEvent", "ProgressEventParser", "ProgressHandler"]
