"""JobTracker: the job lifecycle (MoRAG's API) over a store, with the rules of
docs/architecture.md section 3.

Two layers: ``apply``/``start_job``/``request_cancel`` raise ``ProgressError`` subclasses and
return an ``UpdateResult`` that says what happened; the seed-compatible calls
(``update_progress``, ``mark_*``) are a guarded shell over them that logs and returns a bool, so
reporting never raises into a worker.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from morag_progress.audit import ACTOR_LENGTH, SERVER, Action, local_actor
from morag_progress.bounds import (
    MAX_EXPECTED_CHILDREN,
    MAX_ID,
    MAX_MESSAGE,
    MAX_NAME,
    MAX_SECONDS_OR_WEIGHT,
    MAX_TYPE,
    check_checkpoint,
    check_id,
    check_metadata,
    check_text,
    check_timestamp,
)
from morag_progress.errors import InvalidInputError, ProgressError
from morag_progress.models import (
    FeedEvent,
    Job,
    JobStatus,
    ProgressUpdate,
    UpdateOutcome,
    UpdateResult,
    utcnow,
)
from morag_progress.store import NewJob, SQLStore, open_store
from morag_progress.trace_context import current_traceparent, job_trace

__all__ = ["JobTracker", "ProgressCallback"]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[str, int, JobStatus, str | None], Any]
"""Called as ``callback(job_id, percentage, status, summary)`` after each applied change."""

MAX_CLOCK_SKEW = timedelta(minutes=5)
"""An update stamped further in the future than this is refused."""


def _check_positive(field: str, value: object, *, required: bool = False) -> None:
    if value is None and not required:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 < value <= MAX_SECONDS_OR_WEIGHT
    ):
        raise InvalidInputError(
            field, f"must be a number above 0 and at most {MAX_SECONDS_OR_WEIGHT:g}", value
        )


class JobTracker:
    """Tracks jobs and their progress in a store.

    ``JobTracker()`` uses ``MORAG_PROGRESS_DATABASE_URL`` or a SQLite file in the user's data
    directory; the database is opened on first use, so constructing a tracker costs nothing.
    ``clock`` returns the current UTC time (tests pass their own).
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        store: SQLStore | None = None,
        clock: Callable[[], datetime] = utcnow,
        actor: str | None = None,
    ) -> None:
        check_text("actor", actor, max_length=ACTOR_LENGTH)
        self.actor = actor or local_actor()
        """Who this tracker's changes are recorded as made by, unless a call names another
        (``audit.py``; default ``local:<host>``)."""
        self._database_url = database_url
        self._store = store
        self._clock = clock
        self._store_lock = threading.Lock()
        self._callbacks: dict[str, ProgressCallback] = {}
        self._listeners: list[Callable[[Job], object]] = []
        self._wakers: list[Callable[[], object]] = []

    @property
    def store(self) -> SQLStore:
        """The store, opened on first use."""
        if self._store is None:
            with self._store_lock:
                if self._store is None:
                    self._store = open_store(self._database_url)
        return self._store

    def close(self) -> None:
        """Release the store's connections."""
        if self._store is not None:
            self._store.close()

    # -- raising API ---------------------------------------------------------------------------

    def start_job(
        self,
        document_name: str,
        document_type: str,
        document_id: str | None = None,
        user_id: str | None = None,
        summary: str | None = None,
        *,
        job_id: str | None = None,
        parent_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        weight: float = 1.0,
        stall_timeout_s: float | None = None,
        status: JobStatus = JobStatus.PENDING,
        actor: str | None = None,
        parent_trace: str | None = None,
        max_open: int | None = None,
        expected_children: int | None = None,
        deadline: datetime | None = None,
    ) -> str:
        """Create a job and return its id. A given ``job_id`` is idempotent for its owner.

        ``expected_children``: the children the job will have (a distributed run's ranks,
        each made by its own process): it cannot finish before that many have ended, and
        those not made yet count as 0% in its percentage. ``deadline``: when it should have
        ended; the server warns while it runs if it will likely miss it (``deadlines.py``).

        The job's span (``tracing.py``) is a child of ``parent_trace`` (the creator's W3C
        ``traceparent``; default: the span current in this process, if any). ``max_open``:
        LimitExceededError, nothing made, if the user would have more jobs not yet ended."""
        check_text("document_name", document_name, max_length=MAX_NAME, required=True)
        check_text("document_type", document_type, max_length=MAX_TYPE, required=True)
        check_text("document_id", document_id, max_length=MAX_NAME)
        check_text("user_id", user_id, max_length=MAX_ID)
        check_text("summary", summary, max_length=MAX_MESSAGE)
        for field, value in (("job_id", job_id), ("parent_id", parent_id)):
            if value is not None:
                check_id(field, value)
        if metadata is not None:
            check_metadata(metadata)
        _check_positive("weight", weight, required=True)
        _check_positive("stall_timeout_s", stall_timeout_s)
        if expected_children is not None and (
            isinstance(expected_children, bool)
            or not isinstance(expected_children, int)
            or not 1 <= expected_children <= MAX_EXPECTED_CHILDREN
        ):
            raise InvalidInputError(
                "expected_children",
                f"must be a whole number from 1 to {MAX_EXPECTED_CHILDREN}",
                expected_children,
            )
        check_text("actor", actor, max_length=ACTOR_LENGTH)
        if deadline is not None:
            deadline = check_timestamp("deadline", deadline)
        own_trace, creator_span = job_trace(
            parent_trace if parent_trace is not None else current_traceparent()
        )
        new = NewJob(
            id=job_id or str(uuid.uuid4()),
            document_name=document_name,
            document_type=document_type,
            document_id=document_id,
            user_id=user_id,
            summary=summary or f"Processing {document_type} document: {document_name}",
            status=JobStatus(status),
            parent_id=parent_id,
            weight=float(weight),
            metadata=metadata or {},
            stall_timeout_s=stall_timeout_s,
            created_by=actor or self.actor,
            traceparent=own_trace,
            trace_parent_id=creator_span,
            expected_children=expected_children,
            deadline=deadline,
        )
        job, created = self.store.create_job(new, now=self._clock(), max_open=max_open)
        if created:
            logger.info("job %s started: %s (%s)", job.id, document_name, document_type)
        return job.id

    def apply(self, update: ProgressUpdate, *, create_missing: bool = False) -> UpdateResult:
        """Apply one update and say what became of it.

        Raises InvalidInputError for a timestamp too far in the future and StoreError when the
        database fails; stale, terminal and superseded updates are outcomes, not errors.
        ``create_missing`` creates an unknown job first (for trusted in-process callers).
        """
        now = self._clock()
        self.check_timestamp(update, now)
        result = self.store.apply(self._signed(update), now=now, create_missing=create_missing)
        if result.applied:
            self._notify_result(result)
        return result

    async def apply_async(self, update: ProgressUpdate) -> UpdateResult:
        """``apply`` for the event loop: the update goes to the store's writer thread and this
        coroutine waits for its commit without holding a thread of its own."""
        now = self._clock()
        self.check_timestamp(update, now)
        result = await self.store.submit_async(self._signed(update), now=now)
        if result.applied:
            self._notify_result(result)
        return result

    def apply_many(self, updates: list[ProgressUpdate]) -> list[UpdateResult]:
        """Apply updates in order through the store's writer, returning once all have committed
        (in as few transactions as the writer's batches allow).

        Validate first (``check_timestamp``): one invalid update raises before any is written.
        """
        now = self._checked(updates)
        return self._notified(self.store.apply_many([self._signed(u) for u in updates], now=now))

    async def apply_many_async(self, updates: list[ProgressUpdate]) -> list[UpdateResult]:
        """``apply_many`` for the event loop, waiting for the commit without holding a thread."""
        now = self._checked(updates)
        signed = [self._signed(u) for u in updates]
        return self._notified(await self.store.apply_many_async(signed, now=now))

    def _checked(self, updates: list[ProgressUpdate]) -> datetime:
        """Now, once every update's timestamp is checked (``check_timestamp``)."""
        now = self._clock()
        for update in updates:
            self.check_timestamp(update, now)
        return now

    def _notified(self, results: list[UpdateResult]) -> list[UpdateResult]:
        for result in results:
            if result.applied:
                self._notify_result(result)
        return results

    def _signed(self, update: ProgressUpdate) -> ProgressUpdate:
        """``update``, recorded as made by this tracker's actor unless it names its own."""
        if update.actor is not None:
            return update
        return dataclasses.replace(update, actor=self.actor)

    def check_timestamp(self, update: ProgressUpdate, now: datetime | None = None) -> None:
        """Raise InvalidInputError if the update is stamped too far in the future."""
        now = now or self._clock()
        if update.timestamp is not None and update.timestamp > now + MAX_CLOCK_SKEW:
            raise InvalidInputError(
                "timestamp", "must not be more than 5 minutes in the future", update.timestamp
            )

    def heartbeat(
        self,
        job_id: str,
        user_id: str | None = None,
        *,
        worker_id: str | None = None,
        claimant: str | None = None,
        actor: str | None = None,
        checkpoint: dict[str, Any] | None = None,
        checkpoint_percentage: int | None = None,
    ) -> UpdateResult:
        """The job's worker is alive: ``last_seen_at`` is now; a STALLED job resumes and a PENDING
        one starts (PROCESSING). ``worker_id`` names a job that has no worker yet;
        ``checkpoint`` becomes the job's, saved at ``checkpoint_percentage`` (default: the
        job's percentage now)."""
        check_text("worker_id", worker_id, max_length=MAX_NAME)
        if checkpoint is not None:
            check_checkpoint(checkpoint)
        if checkpoint_percentage is not None:
            if checkpoint is None:
                raise InvalidInputError(
                    "checkpoint_percentage", "needs a checkpoint", checkpoint_percentage
                )
            if (
                isinstance(checkpoint_percentage, bool)
                or not isinstance(checkpoint_percentage, int)
                or not 0 <= checkpoint_percentage <= 100
            ):
                raise InvalidInputError(
                    "checkpoint_percentage",
                    "must be a whole number from 0 to 100",
                    checkpoint_percentage,
                )
        result = self.store.heartbeat(
            job_id,
            user_id=user_id,
            now=self._clock(),
            worker_id=worker_id,
            claimant=claimant,
            actor=actor or self.actor,
            checkpoint=checkpoint,
            checkpoint_percentage=checkpoint_percentage,
        )
        if result.event_id is not None and result.job is not None:
            self._notify(result.job)
        return result

    def transition(
        self,
        job_id: str,
        *,
        expect: list[JobStatus],
        seen: datetime | None,
        changes: dict[str, Any],
        user_id: str | None = None,
        action: Action = Action.STALL,
    ) -> UpdateResult:
        """A state change the server makes itself (``action``: a stall, an abandonment), only
        if nobody changed the job since it was read; listeners hear of it like any applied
        update. Its actor is ``server``."""
        result = self.store.transition(
            job_id,
            expect=expect,
            seen=seen,
            changes=changes,
            now=self._clock(),
            user_id=user_id,
            actor=SERVER,
            action=action,
        )
        if result.event_id is not None and result.job is not None:
            self._notify(result.job)
        return result

    def claim(
        self,
        worker_id: str,
        *,
        claimant: str,
        user_id: str | None = None,
        document_types: list[str] | None = None,
        actor: str | None = None,
    ) -> Job | None:
        """Give the oldest waiting job (for remote workers) to ``worker_id``; None if none waits."""
        job = self.store.claim(
            user_id=user_id,
            worker_id=worker_id,
            claimant=claimant,
            document_types=document_types,
            now=self._clock(),
            actor=actor or self.actor,
        )
        if job is not None:
            self._notify(job)
        return job

    def request_cancel(
        self, job_id: str, user_id: str | None = None, *, actor: str | None = None
    ) -> UpdateResult:
        """Ask a job to stop: an unclaimed job is CANCELLED at once, a running one when its
        worker sees ``cancel_requested`` in its next reply and acknowledges."""
        result = self.store.request_cancel(
            job_id, user_id=user_id, now=self._clock(), actor=actor or self.actor
        )
        if result.applied and result.job is not None:
            self._notify(result.job)
        return result

    def requeue(
        self,
        job_id: str,
        user_id: str | None = None,
        *,
        actor: str | None = None,
        max_open: int | None = None,
    ) -> UpdateResult:
        """Put a remote job that failed, was cancelled or stalled back in the queue (WAITING
        for a remote worker at 0%, a new attempt, released: no worker may report on it until
        one claims it). Raises JobStateError saying why a job cannot be requeued, and
        LimitExceededError if its user would have more than ``max_open`` jobs not ended."""
        result = self.store.requeue(
            job_id, user_id=user_id, now=self._clock(), actor=actor or self.actor, max_open=max_open
        )
        if result.applied and result.job is not None:
            self._notify(result.job)
        return result

    # -- seed-compatible API: logs and returns bool, never raises -------------------------------

    def update_progress(
        self,
        job_id: str,
        percentage: float,
        status: JobStatus | None = None,
        summary: str | None = None,
        user_id: str | None = None,
        *,
        timestamp: datetime | None = None,
        current: int | None = None,
        total: int | None = None,
        stage: str | None = None,
        attempt: int | None = None,
        seq: int | None = None,
    ) -> bool:
        """Report progress; True when applied. An unknown job is created (trusted caller)."""
        return self._report(
            job_id,
            percentage=percentage,
            status=status,
            message=summary,
            user_id=user_id,
            timestamp=timestamp,
            current=current,
            total=total,
            stage=stage,
            attempt=attempt,
            seq=seq,
        )

    def mark_processing(self, job_id: str, user_id: str | None = None) -> bool:
        """The job has started running."""
        return self._report(
            job_id, status=JobStatus.PROCESSING, message="Processing started", user_id=user_id
        )

    def mark_completed(
        self, job_id: str, summary: str | None = None, user_id: str | None = None
    ) -> bool:
        """The job finished: 100%, FINISHED."""
        return self._report(
            job_id,
            percentage=100,
            status=JobStatus.FINISHED,
            message=summary or "Processing completed successfully",
            user_id=user_id,
        )

    def mark_failed(self, job_id: str, error_message: str, user_id: str | None = None) -> bool:
        """The job failed: FAILED, the percentage kept, the error recorded."""
        return self._report(
            job_id,
            status=JobStatus.FAILED,
            message=error_message,
            error=error_message,
            user_id=user_id,
        )

    def mark_cancelled(self, job_id: str, user_id: str | None = None) -> bool:
        """The job was cancelled (its worker acknowledged, or it never ran)."""
        return self._report(
            job_id, status=JobStatus.CANCELLED, message="Job cancelled by user", user_id=user_id
        )

    def mark_waiting_for_remote(self, job_id: str, user_id: str | None = None) -> bool:
        """The job is queued for a remote worker to claim."""
        return self._report(
            job_id,
            status=JobStatus.WAITING_FOR_REMOTE_WORKER,
            message="Waiting for remote worker",
            user_id=user_id,
        )

    # -- reads ---------------------------------------------------------------------------------

    def get_job(self, job_id: str, user_id: str | None = None) -> Job | None:
        """The job's latest state, or None (also for another user's job)."""
        return self.store.get_job(job_id, user_id=user_id)

    def get_job_status(self, job_id: str, user_id: str | None = None) -> JobStatus | None:
        """The job's status, or None."""
        job = self.get_job(job_id, user_id)
        return job.status if job else None

    def get_job_progress(self, job_id: str, user_id: str | None = None) -> int | None:
        """The job's percentage, or None."""
        job = self.get_job(job_id, user_id)
        return job.percentage if job else None

    def list_jobs(
        self,
        user_id: str | None = None,
        *,
        status: JobStatus | None = None,
        document_type: str | None = None,
        limit: int = 50,
        after: str | None = None,
        parent_id: str | None = None,
        top_level: bool = False,
        search: str | None = None,
    ) -> list[Job]:
        """Jobs, newest first; pass the last job's id as ``after`` for the next page;
        ``parent_id`` keeps a parent's children, ``top_level`` the jobs without a parent, and
        ``search`` those whose name, id or message holds it (any case)."""
        return self.store.list_jobs(
            user_id=user_id,
            status=status,
            document_type=document_type,
            limit=limit,
            after=after,
            parent_id=parent_id,
            top_level=top_level,
            search=search,
        )

    def history(
        self,
        job_id: str,
        user_id: str | None = None,
        *,
        after: int = 0,
        before: int | None = None,
        newest_first: bool = False,
        limit: int = 1000,
    ) -> list[FeedEvent]:
        """The job's applied changes with feed ids between ``after`` and ``before``, oldest
        first (or newest first)."""
        return self.store.history(
            job_id,
            user_id=user_id,
            after=after,
            before=before,
            newest_first=newest_first,
            limit=limit,
        )

    # -- callbacks -----------------------------------------------------------------------------

    def register_progress_callback(self, job_id: str, callback: ProgressCallback) -> None:
        """Call ``callback(job_id, percentage, status, summary)`` after each applied change
        made through this tracker."""
        self._callbacks[job_id] = callback

    def unregister_progress_callback(self, job_id: str) -> None:
        """Stop calling the job's callback."""
        self._callbacks.pop(job_id, None)

    def add_listener(self, listener: Callable[[Job], object]) -> None:
        """Call ``listener(job)`` after every change this tracker commits, to any job."""
        self._listeners.append(listener)

    def add_waker(self, waker: Callable[[], object]) -> None:
        """Call ``waker()`` after every change this tracker commits, to any job: for whoever
        only needs to know that something changed (the event streams' hub), so that no job
        is built for it (``UpdateResult``)."""
        self._wakers.append(waker)

    # -- internals -----------------------------------------------------------------------------

    def _report(self, job_id: str, **fields: Any) -> bool:
        """The guarded shell: apply, log what happened, never raise."""
        try:
            result = self.apply(
                ProgressUpdate(job_id, actor=self.actor, **fields), create_missing=True
            )
        except ProgressError as e:
            logger.error("progress for job %s not recorded: %s", job_id, e)
            return False
        except Exception:  # reporting must never raise into the worker
            logger.exception("progress for job %s not recorded", job_id)
            return False
        if result.outcome is UpdateOutcome.APPLIED:
            return True
        if result.outcome is UpdateOutcome.STALE:
            logger.debug("stale update for job %s ignored", job_id)
        else:
            state = result.job.status.value if result.job else None
            logger.warning(
                "update for job %s not applied: %s (job is %s)", job_id, result.outcome, state
            )
        return False

    def _notify_result(self, result: UpdateResult) -> None:
        """``_notify`` for an applied update's result, building its job only for a listener
        or the job's callback, which read it."""
        job_id = result.job_id
        if job_id is None:
            return
        if self._listeners or job_id in self._callbacks:
            job = result.job
            assert job is not None
            self._notify(job)
        else:
            self._wake()

    def _wake(self) -> None:
        for waker in self._wakers:
            try:
                waker()
            except Exception:  # a failing waker must not fail the update
                logger.warning("a change waker failed", exc_info=True)

    def _notify(self, job: Job) -> None:
        self._wake()
        targets = list(self._listeners)
        callback = self._callbacks.get(job.id)
        if callback is not None:
            targets.append(lambda j: callback(j.id, j.percentage, j.status, j.summary))
        for target in targets:
            try:
                target(job)
            except Exception:  # a failing callback must not fail the update
                logger.warning("progress callback for job %s failed", job.id, exc_info=True)
