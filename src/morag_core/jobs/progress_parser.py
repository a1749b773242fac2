"""MoRAG's ``morag_core.jobs.progress_parser``: re-exports only."""

from morag_progress.models import ProgressEvent
from morag_progress.parser import ProgressEventParser

__all__ = ["ProgressEvent", "ProgressEventParser"]
