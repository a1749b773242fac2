"""A job's life beyond progress reports: creation, heartbeats, claims, cancel, requeue and the
monitor's transitions, each one conditional statement with its feed row in one transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, String, bindparam, case, func, literal, or_, select, update

from morag_progress.audit import SERVER, Action
from morag_progress.errors import JobStateError, LimitExceededError
from morag_progress.eta import Pace
from morag_progress.models import Job, JobStatus, UpdateOutcome, UpdateResult
from morag_progress.store.engine import (
    TERMINAL_VALUES,
    Row,
    checkpoint_text,
    db_user,
    job_from_row,
    mapping_upsert,
)
from morag_progress.store.rollup import adopt, reopen
from morag_progress.store.schema import jobs
from morag_progress.store.statements import BOUND, scope, visible
from morag_progress.store.writer import JobWriter

__all__ = ["RELEASED", "REQUEUABLE", "JobLifecycle", "NewJob"]

_UNCLAIMED = [JobStatus.PENDING.value, JobStatus.WAITING_FOR_REMOTE_WORKER.value]
REQUEUABLE = [JobStatus.FAILED.value, JobStatus.CANCELLED.value, JobStatus.STALLED.value]
"""The states a job a remote worker claimed may be requeued from."""
RELEASED = ""
"""``claimed_by`` of a job given back to the queue: claimed before (its next claim is a new
attempt), and no worker key's until then."""
_TRANSITION_COLUMNS = frozenset(
    {"status", "summary", "error", "end_date", "worker_id", "percentage", "pace"}
)


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
    created_by: str | None = None
    """Who creates it (``audit.py``)."""
    traceparent: str | None = None
    """Its span's trace context (``tracing.py``), and the span id of its creator's span."""
    trace_parent_id: str | None = None
    expected_children: int | None = None
    """The children it expects (a run's ranks): see ``Job.expected_children``."""
    deadline: datetime | None = None
    """When it should have ended: see ``Job.deadline``."""


class JobLifecycle(JobWriter):
    """Creates jobs and makes the changes of their life that are not progress reports."""

    def create_job(
        self, new: NewJob, *, now: datetime, max_open: int | None = None
    ) -> tuple[Job, bool]:
        """Create the job (or return the user's job of that id, made before: the same request
        twice). ``max_open``: LimitExceededError, nothing made, when the user would have more
        jobs that have not ended (checked in the same transaction: concurrent creates cannot
        pass it together)."""
        owner = db_user(new.user_id)
        row = {
            "id": new.id,
            "user_id": owner,
            "document_name": new.document_name,
            "document_type": new.document_type,
            "document_id": new.document_id,
            "status": new.status.value,
            "percentage": 0,
            "summary": new.summary,
            "attempt": 1,
            "parent_id": new.parent_id,
            "weight": new.weight,
            "metadata": new.metadata,
            "cancel_requested": False,
            "created_at": now,
            "updated_at": now,
            "stall_timeout_s": new.stall_timeout_s,
            "last_seq": 0,
            "created_by": new.created_by,
            "traceparent": new.traceparent,
            "trace_parent_id": new.trace_parent_id,
            "expected_children": new.expected_children,
            "deadline": new.deadline,
        }
        with self._batch("create job") as batch:
            conn = batch.conn
            stmt = self.dialect_insert()(jobs).values(row).on_conflict_do_nothing()
            created = conn.execute(stmt.returning(*jobs.c)).mappings().first()
            if created is None:  # the user made it before: the same request twice
                existing = self._fetch(conn, new.id, owner)
                assert existing is not None
                return job_from_row(existing), False
            self._within_open_cap(conn, owner, max_open)
            self._append_event(
                batch, created, now=now, timestamp=now, actor=new.created_by, action=Action.CREATE
            )
            if new.parent_id is not None:
                adopt(
                    conn, created, now, self._settled(batch)
                )  # raising here undoes the insert too
            return job_from_row(created), True

    def heartbeat(
        self,
        job_id: str,
        *,
        user_id: str | None,
        now: datetime,
        worker_id: str | None = None,
        claimant: str | None = None,
        actor: str | None = None,
        checkpoint: dict[str, Any] | None = None,
        checkpoint_percentage: int | None = None,
    ) -> UpdateResult:
        """The worker is alive (see ``JobTracker.heartbeat``); ``checkpoint`` (validated by the
        caller) is kept as the job's, saved at ``checkpoint_percentage`` or, without one, at
        the job's percentage now."""
        j = jobs.c
        conditions = scope(BOUND, claimant=claimant is not None)
        # A job with no worker yet takes the heartbeat's (a claimed job keeps its claim's).
        named: dict[str, Any] = (
            {"worker_id": func.coalesce(j.worker_id, worker_id)} if worker_id else {}
        )
        if checkpoint is not None:
            named["checkpoint"] = checkpoint_text(checkpoint)
            named["checkpoint_percentage"] = (
                j.percentage if checkpoint_percentage is None else checkpoint_percentage
            )
        # A worker that is alive runs the job: a STALLED job resumes, a PENDING one starts.
        wake = (
            update(jobs)
            .where(
                *conditions,
                j.status.in_([JobStatus.STALLED.value, JobStatus.PENDING.value]),
            )
            .values(
                status=JobStatus.PROCESSING.value,
                start_date=func.coalesce(j.start_date, literal(now, jobs.c.start_date.type)),
                last_seen_at=now,
                updated_at=now,
                **named,
            )
            .returning(*jobs.c)
        )
        touch = update(jobs).where(*conditions).values(last_seen_at=now, **named).returning(*jobs.c)
        with self._batch("heartbeat") as batch:
            conn = batch.conn
            owner = self._owner(conn, job_id, user_id)
            if owner is None:
                return UpdateResult(UpdateOutcome.NOT_FOUND)
            params = {"p_job_id": job_id, "p_user_id": owner, "p_claimant": claimant}
            row = conn.execute(wake, params).mappings().first()
            if row is not None:  # a status change: it belongs in the feed
                event_id = self._append_event(
                    batch, row, now=now, timestamp=now, actor=actor, action=Action.START
                )
                return UpdateResult(UpdateOutcome.APPLIED, job_from_row(row), event_id)
            row = conn.execute(touch, params).mappings().first()
            if row is not None:
                return UpdateResult(UpdateOutcome.APPLIED, job_from_row(row))
            existing = self._fetch(conn, job_id, owner)
            if existing is None or not visible(existing, claimant):
                return UpdateResult(UpdateOutcome.NOT_FOUND)
            return UpdateResult(UpdateOutcome.TERMINAL, job_from_row(existing))

    def claim(
        self,
        *,
        user_id: str | None,
        worker_id: str,
        claimant: str,
        document_types: list[str] | None,
        now: datetime,
        actor: str | None = None,
    ) -> Job | None:
        j = jobs.c
        waiting = j.status == JobStatus.WAITING_FOR_REMOTE_WORKER.value
        pick = select(j.id, j.user_id).where(waiting).order_by(j.created_at, j.id).limit(1)
        if user_id is not None:
            pick = pick.where(j.user_id == user_id)
        if document_types:
            pick = pick.where(j.document_type.in_(document_types))
        if self.dialect == "postgresql":
            pick = pick.with_for_update(skip_locked=True)  # concurrent claimers take different jobs
        stmt = (
            update(jobs)
            .where(
                j.id == bindparam("p_job_id", type_=String()),
                j.user_id == bindparam("p_owner", type_=String()),
                waiting,
            )
            .values(
                status=JobStatus.PROCESSING.value,
                worker_id=worker_id,
                claimed_by=claimant,
                # A job claimed before (and returned to the queue) starts a new attempt.
                # (A job requeued by hand is released with its new attempt already.)
                attempt=case(
                    (or_(j.claimed_by.is_(None), j.claimed_by == RELEASED), j.attempt),
                    else_=j.attempt + 1,
                ),
                start_date=func.coalesce(j.start_date, literal(now, j.start_date.type)),
                updated_at=now,
                last_seen_at=now,
                last_ts_us=None,  # the worker's clock orders its own reports from here
                last_seq=0,
                # A job resuming from a checkpoint keeps its pace, paused there by the
                # requeue (``resumed_pace``): the next report continues the run.
                rate=case((j.checkpoint.is_not(None), j.rate), else_=None),
                pace=case((j.checkpoint.is_not(None), j.pace), else_=None),
                summary=f"Claimed by {worker_id}",
            )
            .returning(*jobs.c)
        )
        with self._batch("claim job") as batch:
            conn = batch.conn
            # Pick (and on PostgreSQL lock) the oldest waiting job, then take it: the lock
            # holds it for this transaction, so concurrent claimers pass over it.
            picked = conn.execute(pick).first()
            if picked is None:
                return None
            params = {"p_job_id": picked.id, "p_owner": picked.user_id}
            row = conn.execute(stmt, params).mappings().first()
            if row is None:
                return None
            self._append_event(batch, row, now=now, timestamp=now, actor=actor, action=Action.CLAIM)
            conn.execute(
                mapping_upsert(self.dialect_insert(), worker_id, row["id"], now, row["user_id"])
            )
            return job_from_row(row)

    def request_cancel(
        self, job_id: str, *, user_id: str | None, now: datetime, actor: str | None = None
    ) -> UpdateResult:
        j = jobs.c
        unclaimed = j.status.in_(_UNCLAIMED)
        stmt = (
            update(jobs)
            .where(
                j.id == job_id,
                j.user_id == bindparam("p_owner", type_=String()),
                j.status.not_in(TERMINAL_VALUES),
            )
            .values(
                cancel_requested=True,
                status=case((unclaimed, JobStatus.CANCELLED.value), else_=j.status),
                end_date=case((unclaimed, literal(now, jobs.c.end_date.type)), else_=j.end_date),
                updated_at=now,
            )
            .returning(*jobs.c)
        )
        return self._change_one(
            "request cancel",
            stmt,
            job_id,
            user_id,
            now,
            UpdateOutcome.TERMINAL,
            actor=actor,
            action=Action.CANCEL,
        )

    def requeue(
        self,
        job_id: str,
        *,
        user_id: str | None,
        now: datetime,
        actor: str | None = None,
        max_open: int | None = None,
    ) -> UpdateResult:
        """Put a remote job that failed, was cancelled or stalled back in the queue: WAITING
        for a remote worker in a new attempt, its error, worker and claim released (no
        worker may report on it until one claims it again; the old attempt's late reports are
        superseded). A job whose worker saved a checkpoint keeps it and resumes at the
        percentage it was saved at, not 0%. NOT_FOUND for no such job; JobStateError saying why
        for a job in another state, one no remote worker claimed, or a child whose parent has
        ended."""
        j = jobs.c
        resumes = j.checkpoint.is_not(None)
        stmt = (
            update(jobs)
            .where(
                j.id == job_id,
                j.user_id == bindparam("p_owner", type_=String()),
                # Still as read: a concurrent change (or requeue) makes this one refuse.
                j.status == bindparam("p_status", type_=String()),
                j.updated_at == bindparam("p_updated", type_=jobs.c.updated_at.type),
            )
            .values(
                status=JobStatus.WAITING_FOR_REMOTE_WORKER.value,
                # A job with a checkpoint resumes at the percentage it was saved at: its next
                # worker gets the checkpoint with its claim and goes on from there.
                percentage=case((resumes, func.coalesce(j.checkpoint_percentage, 0)), else_=0),
                summary=case(
                    (resumes, "Requeued: waiting for a remote worker, to resume from a checkpoint"),
                    else_="Requeued: waiting for a remote worker",
                ),
                error=None,
                worker_id=None,
                claimed_by=RELEASED,
                attempt=j.attempt + 1,
                cancel_requested=False,
                start_date=None,
                end_date=None,
                last_seen_at=None,
                last_ts_us=None,
                last_seq=0,
                rate=case((resumes, j.rate), else_=None),
                pace=bindparam("p_pace", type_=jobs.c.pace.type),
                current=None,
                total=None,
                stage=None,
                updated_at=now,
            )
            .returning(*jobs.c)
        )
        with self._batch("requeue job") as batch:
            conn = batch.conn
            owner = self._owner(conn, job_id, user_id)
            before = None if owner is None else self._fetch(conn, job_id, owner)
            if before is None:
                return UpdateResult(UpdateOutcome.NOT_FOUND)
            self._check_requeue(conn, before)
            params = {
                "p_owner": owner,
                "p_status": before["status"],
                "p_updated": before["updated_at"],
                "p_pace": _resumed_pace(before),
            }
            row = conn.execute(stmt, params).mappings().first()
            if row is None:  # changed since it was read: explain by its state now
                now_row = self._fetch(conn, job_id, before["user_id"])
                if now_row is not None:
                    self._check_requeue(conn, now_row)
                raise JobStateError(job_id, "changed while it was being requeued: try again")
            self._within_open_cap(conn, before["user_id"], max_open)
            if before["parent_id"] is not None:
                reopen(conn, before)
            event_id = self._append_event(
                batch, row, now=now, timestamp=now, actor=actor, action=Action.REQUEUE
            )
            return UpdateResult(UpdateOutcome.APPLIED, job_from_row(row), event_id)

    def _within_open_cap(self, conn: Connection, owner: str, max_open: int | None) -> None:
        """Raise LimitExceededError (undoing the transaction) when ``owner`` now has more than
        ``max_open`` jobs that have not ended, this transaction's included. Concurrent
        transactions of one owner take turns here: SQLite's writes are one at a time, and on
        PostgreSQL a lock per owner, held to the commit, makes the second count after the
        first has committed."""
        if not max_open:
            return
        if self.dialect == "postgresql":
            conn.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(owner, 0))))
        j = jobs.c
        open_ = sorted(s.value for s in JobStatus if not s.is_terminal)
        count = select(func.count()).where(j.status.in_(open_), j.user_id == owner)
        if int(conn.execute(count).scalar_one()) > max_open:
            raise LimitExceededError(
                f"this user has {max_open} jobs that have not ended, the most it may; "
                "finish or cancel some first",
                retry_after=10,
            )

    def _check_requeue(self, conn: Connection, job: Row) -> None:
        """Raise JobStateError saying why ``job`` cannot be requeued, if it cannot."""
        rule = (
            "only a failed, cancelled or stalled job that a remote worker claimed can be requeued"
        )
        if job["status"] not in REQUEUABLE:
            raise JobStateError(job["id"], f"is {job['status']}: {rule}")
        if job["claimed_by"] is None:
            raise JobStateError(job["id"], f"was never claimed by a remote worker: {rule}")
        if job["parent_id"] is not None:
            parent = self._fetch(conn, job["parent_id"], job["user_id"])
            if parent is not None and parent["status"] in TERMINAL_VALUES:
                raise JobStateError(
                    job["id"],
                    f"is a child of {job['parent_id']}, which has ended ({parent['status']}); "
                    "a parent's end is final, so its children cannot run again",
                )

    def transition(
        self,
        job_id: str,
        *,
        expect: list[JobStatus],
        seen: datetime | None,
        changes: dict[str, Any],
        now: datetime,
        user_id: str | None = None,
        actor: str | None = SERVER,
        action: Action = Action.STALL,
    ) -> UpdateResult:
        j = jobs.c
        unknown = set(changes) - _TRANSITION_COLUMNS
        if unknown:
            raise ValueError(f"transition cannot change {sorted(unknown)}")
        # Still as the caller saw it (same status, no sign of life since): exactly one of any
        # number of concurrent sweepers makes the change.
        unchanged = (
            j.last_seen_at.is_(None)
            if seen is None
            else j.last_seen_at == literal(seen, j.last_seen_at.type)
        )
        stmt = (
            update(jobs)
            .where(
                j.id == job_id,
                j.user_id == bindparam("p_owner", type_=String()),
                j.status.in_([JobStatus(s).value for s in expect]),
                unchanged,
            )
            .values({**changes, "updated_at": now})
            .returning(*jobs.c)
        )
        return self._change_one(
            "change job state",
            stmt,
            job_id,
            user_id,
            now,
            UpdateOutcome.STALE,
            actor=actor,
            action=action,
        )

    def _change_one(
        self,
        what: str,
        stmt: Any,
        job_id: str,
        user_id: str | None,
        now: datetime,
        refused: UpdateOutcome,
        *,
        actor: str | None,
        action: Action,
    ) -> UpdateResult:
        """Run a conditional ``UPDATE ... RETURNING`` (bound to ``p_owner``) on the job of the
        caller's scope, with its feed row; ``refused`` when the job exists but the condition
        did not hold."""
        with self._batch(what) as batch:
            conn = batch.conn
            owner = self._owner(conn, job_id, user_id)
            if owner is None:
                return UpdateResult(UpdateOutcome.NOT_FOUND)
            row = conn.execute(stmt, {"p_owner": owner}).mappings().first()
            if row is None:
                existing = self._fetch(conn, job_id, owner)
                if existing is None:
                    return UpdateResult(UpdateOutcome.NOT_FOUND)
                return UpdateResult(refused, job_from_row(existing))
            event_id = self._append_event(
                batch, row, now=now, timestamp=now, actor=actor, action=action
            )
            return UpdateResult(UpdateOutcome.APPLIED, job_from_row(row), event_id)


def _resumed_pace(job: Row) -> dict[str, Any] | None:
    """The pace a requeued job keeps (``resumed_pace``), from its row."""
    if job["checkpoint"] is None:
        return None
    return resumed_pace(job["pace"], job["checkpoint_percentage"])


def resumed_pace(pace: dict[str, Any] | None, at: int | None) -> dict[str, Any] | None:
    """The pace of a job requeued to resume from a checkpoint of ``at`` percent: its own,
    paused there (``Pace.resume``), so that the next report continues the run; None without
    one."""
    kept = Pace.from_json(pace)
    return None if kept is None else kept.resume(at or 0).to_json()
