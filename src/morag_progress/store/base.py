"""The Store protocol: what the tracker needs from a database."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from morag_progress.keys import ApiKey
from morag_progress.models import FeedEvent, Job, JobStatus, ProgressUpdate, UpdateResult

__all__ = ["NewJob", "Store"]


@dataclass(frozen=True, slots=True)
class NewJob:
    """The fields a caller chooses when creating a job."""

    id: str
    document_name: str
    document_type: str
    document_id: str | None = None
    user_id: str | None = None
    summary: str | None = None
    status: JobStatus = JobStatus.PENDING
    parent_id: str | None = None
    weight: float = 1.0
    metadata: dict[str, Any] = field(default_factory=dict)
    stall_timeout_s: float | None = None


class Store(Protocol):
    """Persistence for jobs, the change feed and worker-to-job mappings.

    Every write is one transaction; ``apply`` decides with one conditional UPDATE, so two
    writers of the same job never lose each other's update. ``user_id=None`` means unscoped
    (a trusted in-process caller); otherwise another user's job is reported as not found.
    """

    def create_job(self, new: NewJob, *, now: datetime) -> tuple[Job, bool]:
        """Insert a job; an existing job with the same id and owner is returned as it is.

        Returns the job and whether it was created. Raises JobConflictError when the id is
        another user's.
        """
        ...

    def apply(
        self, update: ProgressUpdate, *, now: datetime, create_missing: bool = False
    ) -> UpdateResult:
        """Apply one update under the rules of docs/architecture.md section 3, appending a
        feed row if applied."""
        ...

    def apply_many(self, updates: list[ProgressUpdate], *, now: datetime) -> list[UpdateResult]:
        """Apply updates in order, in one transaction (one commit for the batch)."""
        ...

    def heartbeat(
        self, job_id: str, *, user_id: str | None, now: datetime, claimant: str | None = None
    ) -> UpdateResult:
        """The worker is alive: set last_seen_at; a STALLED job is PROCESSING again."""
        ...

    def claim(
        self,
        *,
        user_id: str | None,
        worker_id: str,
        claimant: str,
        document_types: list[str] | None,
        now: datetime,
    ) -> Job | None:
        """Take the oldest job WAITING_FOR_REMOTE_WORKER (of the user, of the types) for a
        worker: PROCESSING, a new attempt if it ran before, its worker mapping stored. None
        when nothing waits. Two claimers never take the same job."""
        ...

    def request_cancel(self, job_id: str, *, user_id: str | None, now: datetime) -> UpdateResult:
        """Flag a job for cancellation; one not yet claimed becomes CANCELLED at once."""
        ...

    def get_job(self, job_id: str, *, user_id: str | None = None) -> Job | None:
        """The job's latest state, or None."""
        ...

    def list_jobs(
        self,
        *,
        user_id: str | None = None,
        status: JobStatus | None = None,
        document_type: str | None = None,
        limit: int = 50,
        after: str | None = None,
        parent_id: str | None = None,
    ) -> list[Job]:
        """Newest first; ``after`` is the id of the last job of the previous page;
        ``parent_id`` keeps a parent's children."""
        ...

    def idle_jobs(self, *, statuses: list[JobStatus], seen_before: datetime) -> list[Job]:
        """Jobs in ``statuses`` whose last sign of life (report or heartbeat) is older than
        ``seen_before``, longest idle first."""
        ...

    def shortest_stall_timeout(self) -> float | None:
        """The smallest ``stall_timeout_s`` among PROCESSING jobs, or None."""
        ...

    def transition(
        self,
        job_id: str,
        *,
        expect: list[JobStatus],
        seen: datetime | None,
        changes: dict[str, Any],
        now: datetime,
        user_id: str | None = None,
    ) -> UpdateResult:
        """Apply ``changes`` (status, summary, error, end_date, worker_id) with one feed row,
        only if the job is still in ``expect`` and its ``last_seen_at`` is still ``seen``;
        otherwise STALE (someone changed it first) or NOT_FOUND."""
        ...

    def count_open_jobs(self, user_id: str) -> int:
        """How many of the user's jobs have not ended."""
        ...

    def count_jobs(self, *, user_id: str | None = None) -> dict[tuple[str, str], int]:
        """How many jobs there are per (status, document type), of one user or of all."""
        ...

    def history(
        self, job_id: str, *, user_id: str | None = None, after: int = 0, limit: int = 1000
    ) -> list[FeedEvent]:
        """The job's feed rows with an id above ``after``, oldest first."""
        ...

    def events_after(
        self, after: int = 0, *, user_id: str | None = None, limit: int = 1000
    ) -> list[FeedEvent]:
        """Feed rows of every job (or one user's jobs) with an id above ``after``."""
        ...

    def last_event_id(self, job_id: str | None = None, user_id: str | None = None) -> int:
        """The newest feed id (of one job, of one user's, or of all); 0 when there is none."""
        ...

    def set_mapping(self, worker_id: str, job_id: str, *, now: datetime) -> None:
        """Map a worker (or Celery task) id to a job id, replacing an earlier mapping."""
        ...

    def get_mapping(self, worker_id: str) -> str | None:
        """The job id a worker id maps to, or None."""
        ...

    def delete_mapping(self, worker_id: str) -> None:
        """Forget a worker's mapping (no error when there is none)."""
        ...

    def create_key(self, key: ApiKey, key_hash: str) -> None:
        """Store a new API key (its hash only)."""
        ...

    def find_key(self, key_hash: str) -> ApiKey | None:
        """The key with this hash, revoked or not, or None."""
        ...

    def get_key(self, key_id: str) -> ApiKey | None:
        """The key with this id, revoked or not, or None."""
        ...

    def list_keys(self, *, user_id: str | None = None) -> list[ApiKey]:
        """Every key (or one user's), oldest first."""
        ...

    def revoke_key(self, key_id: str, *, now: datetime) -> bool:
        """Revoke a key; False when there is no such active key."""
        ...

    def create_stream_token(self, token_hash: str, key_id: str, *, expires_at: datetime) -> None:
        """Store a short-lived read token for a key (its hash only)."""
        ...

    def find_stream_token(self, token_hash: str, *, now: datetime) -> ApiKey | None:
        """The key behind an unexpired token, or None."""
        ...

    def ping(self) -> None:
        """Raise StoreError unless the database answers."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
