"""MoRAG's ``morag_core.jobs.tracker``: re-exports only."""

from morag_progress.models import JobStatus
from morag_progress.tracker import JobTracker

__all__ = ["JobStatus", "JobTracker"]
