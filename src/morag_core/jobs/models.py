"""MoRAG's ``morag_core.jobs.models``: re-exports only."""

from morag_progress.models import Job, JobStatus, ProgressEvent, ProgressUpdate

__all__ = ["Job", "JobStatus", "ProgressEvent", "ProgressUpdate"]
