"""ProgressHandler: the seed's entry points, from log lines, remote workers and Celery tasks.

It turns each source into a call on ``job_tracker`` with MoRAG's conventions (keyword
``update_progress``, positional ``mark_completed``/``mark_failed``), so any object with the
tracker's methods can stand in for it. Worker-to-job mappings and parsing do not go through the
tracker: mappings live in the store, where every process and a restarted server see them.

Errors are handled as the seed's "Error Handling" section lists: invalid formats are ignored,
missing mappings are logged as warnings, database errors are caught and logged, and processing
continues. No method raises.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

from morag_progress.errors import JobConflictError
from morag_progress.models import ProgressEvent, status_for_percentage, utcnow
from morag_progress.parser import ProgressEventParser
from morag_progress.tracker import JobTracker

__all__ = ["ProgressHandler"]

logger = logging.getLogger(__name__)


class ProgressHandler:
    """Routes progress from log lines, remote workers and Celery tasks to job entities."""

    def __init__(
        self, database_url: str | None = None, *, job_tracker: JobTracker | None = None
    ) -> None:
        self.parser = ProgressEventParser()
        self.job_tracker: Any = job_tracker or JobTracker(database_url)
        # Mappings stay with the store this handler was built with, whatever job_tracker becomes.
        self._mapping_tracker: JobTracker = self.job_tracker
        # What this process registered (MoRAG kept its mappings in this dict). The store is the
        # truth; this is read only while the store cannot be reached.
        self._job_mappings: dict[str, str] = {}

    # -- worker-to-job mappings ----------------------------------------------------------------

    def register_job_mapping(self, worker_id: str, job_id: str) -> None:
        """Map a worker or Celery task id to a job id (stored: every process sees it)."""
        self._job_mappings[worker_id] = job_id
        try:
            self._mapping_tracker.store.set_mapping(worker_id, job_id, now=utcnow())
        except Exception:  # a database error must not stop the worker
            logger.exception("job mapping %s -> %s kept in this process only", worker_id, job_id)
            return
        logger.debug("job mapping registered: %s -> %s", worker_id, job_id)

    def unregister_job_mapping(self, worker_id: str) -> None:
        """Forget a worker's mapping."""
        self._job_mappings.pop(worker_id, None)
        try:
            self._mapping_tracker.store.delete_mapping(worker_id)
        except Exception:  # a database error must not stop the worker
            logger.exception("job mapping of %s not removed from the store", worker_id)

    def get_job_id_for_worker(self, worker_id: str) -> str | None:
        """The job id a worker or task id maps to, or None."""
        try:
            return self._mapping_tracker.store.get_mapping(worker_id)
        except JobConflictError:
            logger.warning("worker id %s is mapped by several users: name the job", worker_id)
            return None
        except Exception:  # fall back to what this process registered
            logger.exception("job mapping of %s read from this process only", worker_id)
            return self._job_mappings.get(worker_id)

    # -- sources -------------------------------------------------------------------------------

    def process_log_line(
        self, log_line: str | bytes, job_id: str | None = None, worker_id: str | None = None
    ) -> bool:
        """Parse one log line and apply its progress to ``job_id`` (or the worker's job)."""
        event = self.parser.parse_json_log(log_line)
        if event is None:
            return False  # not progress: ignored, as the seed says
        target = job_id or (self.get_job_id_for_worker(worker_id) if worker_id else None)
        if not target:
            logger.warning("progress line from worker %s has no job mapping; ignored", worker_id)
            return False
        return self.update_job_progress(target, event)

    def process_log_lines(
        self,
        log_lines: Iterable[str | bytes],
        job_id: str | None = None,
        worker_id: str | None = None,
    ) -> int:
        """Process many lines; returns how many updated a job."""
        return sum(self.process_log_line(line, job_id, worker_id) for line in log_lines)

    def update_job_progress(
        self, job_id: str, progress_event: ProgressEvent, user_id: str | None = None
    ) -> bool:
        """Apply a progress event to a job: status from the percentage, message as summary."""
        try:
            extra: dict[str, Any] = {}
            if isinstance(self.job_tracker, JobTracker):
                # Our tracker orders by the log's own time (or, without one, by the time it
                # receives the event) and keeps counts; a stand-in gets exactly MoRAG's call.
                extra = {
                    "timestamp": progress_event.source_timestamp,
                    "current": progress_event.current,
                    "total": progress_event.total,
                }
            result = self.job_tracker.update_progress(
                job_id=job_id,
                percentage=progress_event.percentage,
                status=status_for_percentage(progress_event.percentage),
                summary=progress_event.message,
                user_id=user_id,
                **extra,
            )
        except Exception:  # database errors are caught and logged, as the seed says
            logger.exception("progress for job %s not recorded", job_id)
            return False
        return True if result is None else bool(result)

    def process_remote_worker_progress(
        self, worker_id: str, percentage: float, message: str
    ) -> bool:
        """Progress reported by a remote worker, routed through its job mapping."""
        job_id = self.get_job_id_for_worker(worker_id)
        if not job_id:
            logger.warning("no job mapping for remote worker %s; progress ignored", worker_id)
            return False
        return self._report(job_id, percentage, message, "remote_worker", None)

    def process_celery_task_progress(
        self, task_id: str, percentage: float, message: str, user_id: str | None = None
    ) -> bool:
        """Progress of a Celery task: its mapped job, else the job whose id is the task id."""
        job_id = self.get_job_id_for_worker(task_id) or task_id
        return self._report(job_id, percentage, message, "celery_task", user_id)

    # -- logs ----------------------------------------------------------------------------------

    def extract_latest_progress_from_logs(
        self, log_lines: Iterable[str | bytes]
    ) -> ProgressEvent | None:
        """The latest progress event in the lines, by timestamp."""
        return self.parser.get_latest_progress(log_lines)

    def sync_job_with_logs(
        self, job_id: str, log_lines: Iterable[str | bytes], user_id: str | None = None
    ) -> bool:
        """Set the job to the latest progress found in the lines."""
        latest = self.extract_latest_progress_from_logs(log_lines)
        return latest is not None and self.update_job_progress(job_id, latest, user_id)

    # -- completion ----------------------------------------------------------------------------

    def handle_job_completion(
        self, job_id: str, success: bool, final_message: str, user_id: str | None = None
    ) -> bool:
        """Finish the job (success) or fail it, keeping its percentage."""
        try:
            if success:
                result = self.job_tracker.mark_completed(job_id, final_message, user_id)
            else:
                result = self.job_tracker.mark_failed(job_id, final_message, user_id)
        except Exception:  # database errors are caught and logged, as the seed says
            logger.exception("completion of job %s not recorded", job_id)
            return False
        return True if result is None else bool(result)

    def handle_job_error(self, job_id: str, error_message: str, user_id: str | None = None) -> bool:
        """Fail the job with "Job failed: <error_message>"."""
        return self.handle_job_completion(job_id, False, f"Job failed: {error_message}", user_id)

    # -- internals -----------------------------------------------------------------------------

    def _report(
        self, job_id: str, percentage: float, message: str, source: str, user_id: str | None
    ) -> bool:
        try:
            event = ProgressEvent(math.floor(percentage), message, logger_name=source)
        except (TypeError, ValueError, OverflowError):
            logger.warning("progress %r for job %s is not a number; ignored", percentage, job_id)
            return False
        return self.update_job_progress(job_id, event, user_id)
