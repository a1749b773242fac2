"""The write path: every change to a job, each decided by one conditional statement.

The rules of docs/architecture.md section 3 that depend on the job's current state run inside
one conditional ``UPDATE ... RETURNING``: the database decides atomically whether an update is
newer than the last applied one and what the new status is, so concurrent writers (threads,
Celery processes, API replicas) cannot lose or reorder each other's updates. The feed row is
inserted in the same transaction, and so is a parent's roll-up (``rollup.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias, TypeVar, cast

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Integer,
    String,
    and_,
    bindparam,
    case,
    false,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)

from morag_progress.audit import SERVER, Action
from morag_progress.errors import JobConflictError, JobStateError, ProgressError, StoreError
from morag_progress.eta import Pace
from morag_progress.models import (
    TERMINAL_STATUSES,
    Job,
    JobStatus,
    ProgressUpdate,
    UpdateOutcome,
    UpdateResult,
    status_for_percentage,
)
from morag_progress.store.engine import (
    NO_USER,
    TERMINAL_VALUES,
    Database,
    Row,
    db_user,
    job_from_row,
    mapping_upsert,
    status_in,
)
from morag_progress.store.group import GroupCommit
from morag_progress.store.history import learn
from morag_progress.store.rollup import adopt, reopen, roll_up
from morag_progress.store.schema import UTCDateTime, events, jobs
from morag_progress.tracing import TraceContext

__all__ = ["RELEASED", "REQUEUABLE", "JobWriter", "NewJob"]

_Work: TypeAlias = tuple[ProgressUpdate | tuple[ProgressUpdate, ...], datetime, bool]
"""What the writer thread is given: an update (or a caller's updates, in order), the time it
was received, and whether to create a missing job."""
_Done: TypeAlias = UpdateResult | list[UpdateResult]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_UNCLAIMED = [JobStatus.PENDING.value, JobStatus.WAITING_FOR_REMOTE_WORKER.value]
REQUEUABLE = [JobStatus.FAILED.value, JobStatus.CANCELLED.value, JobStatus.STALLED.value]
"""The states a job a remote worker claimed may be requeued from."""
RELEASED = ""
"""``claimed_by`` of a job given back to the queue: claimed before (its next claim is a new
attempt), and no worker key's until then."""


def _micros(value: datetime) -> int:
    """Microseconds since the epoch, exactly (datetime.timestamp() goes through a float)."""
    return (value - _EPOCH) // _MICROSECOND


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


class JobWriter(Database):
    """Creates jobs and applies every kind of change to them."""

    _group: GroupCommit[_Work, _Done] | None = None
    _group_lock = threading.Lock()

    def create_job(self, new: NewJob, *, now: datetime) -> tuple[Job, bool]:
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
        }
        with self._write("create job") as conn:
            stmt = self.dialect_insert()(jobs).values(row).on_conflict_do_nothing()
            created = conn.execute(stmt.returning(*jobs.c)).mappings().first()
            if created is None:  # the user made it before: the same request twice
                existing = self._fetch(conn, new.id, owner)
                assert existing is not None
                return job_from_row(existing), False
            self._append_event(
                conn, created, now=now, timestamp=now, actor=new.created_by, action=Action.CREATE
            )
            if new.parent_id is not None:
                adopt(conn, created, now, self._apply_settled)  # raising here undoes the insert too
            return job_from_row(created), True

    def apply(
        self, update: ProgressUpdate, *, now: datetime, create_missing: bool = False
    ) -> UpdateResult:
        """Apply one update through the group commit, waiting for its transaction."""
        return self.submit(update, now=now, create_missing=create_missing).result()

    def submit(
        self, update: ProgressUpdate, *, now: datetime, create_missing: bool = False
    ) -> Future[UpdateResult]:
        """Queue one update for the store's writer thread (``group.py``); the future holds
        its outcome once the transaction it shares with other queued updates has committed.
        Await it with ``asyncio.wrap_future``: no thread of the caller's waits."""
        return cast(Future[UpdateResult], self._writer().submit((update, now, create_missing)))

    def _writer(self) -> GroupCommit[_Work, _Done]:
        group = self._group
        if group is None:
            with self._group_lock:
                if self._group is None:
                    self._group = GroupCommit(self._apply_batch, size=_work_size)
                group = self._group
        return group

    def _apply_batch(self, items: list[_Work]) -> list[_Done | BaseException]:
        """Apply queued work (an update, or a caller's list of them) in one transaction. An
        error the rules raise before writing (an id several users have) is that update's
        alone; a database error fails them all."""
        flat = [
            (one, now, create_missing)
            for what, now, create_missing in items
            for one in (what if isinstance(what, tuple) else (what,))
        ]
        # Rows are locked in one order, (owner, id), whatever order the callers came in: two
        # batches (or replicas) then never wait on each other in a cycle. The sort is stable,
        # so one job's updates keep their queued order.
        order = sorted(range(len(flat)), key=lambda i: _lock_key(flat[i][0]))

        def run() -> list[UpdateResult | BaseException]:
            results: list[UpdateResult | BaseException] = [None] * len(flat)  # type: ignore[list-item]
            _batch.lessons = []  # anew for each try of the transaction
            try:
                with self._write("apply updates") as conn:
                    for i in order:
                        one, now, create_missing = flat[i]
                        try:
                            results[i] = self._apply_in(conn, one, now, create_missing)
                        except ProgressError as e:
                            results[i] = e
                    self._learn_all(conn, _batch.lessons)
            finally:
                _batch.lessons = None
            return results

        results = _retry_conflicts(run)
        done: list[_Done | BaseException] = []
        at = 0
        for what, _, _ in items:
            if not isinstance(what, tuple):
                done.append(results[at])
                at += 1
                continue
            mine = results[at : at + len(what)]
            at += len(what)
            failed = next((r for r in mine if isinstance(r, BaseException)), None)
            done.append(failed if failed is not None else cast(list[UpdateResult], mine))
        return done

    def close(self) -> None:
        """Apply what is queued, stop the writer thread, release connections."""
        if self._group is not None:
            self._group.close()
        super().close()

    def apply_many(self, updates: list[ProgressUpdate], *, now: datetime) -> list[UpdateResult]:
        """Apply updates in order through the writer thread, as one piece of its work: they
        share its transaction with concurrent reports, and the results come once it has
        committed."""
        return self.submit_many(updates, now=now).result()

    def submit_many(
        self, updates: list[ProgressUpdate], *, now: datetime
    ) -> Future[list[UpdateResult]]:
        """``apply_many`` without waiting: the future holds the results once committed."""
        if not updates:
            done: Future[list[UpdateResult]] = Future()
            done.set_result([])
            return done
        return cast(Future[list[UpdateResult]], self._writer().submit((tuple(updates), now, False)))

    def heartbeat(
        self,
        job_id: str,
        *,
        user_id: str | None,
        now: datetime,
        claimant: str | None = None,
        actor: str | None = None,
    ) -> UpdateResult:
        j = jobs.c
        conditions = _scope(claimant=claimant is not None)
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
            )
            .returning(*jobs.c)
        )
        touch = update(jobs).where(*conditions).values(last_seen_at=now).returning(*jobs.c)
        with self._write("heartbeat") as conn:
            owner = self._owner(conn, job_id, user_id)
            if owner is None:
                return UpdateResult(UpdateOutcome.NOT_FOUND)
            params = {"p_job_id": job_id, "p_user_id": owner, "p_claimant": claimant}
            row = conn.execute(wake, params).mappings().first()
            if row is not None:  # a status change: it belongs in the feed
                event_id = self._append_event(
                    conn, row, now=now, timestamp=now, actor=actor, action=Action.START
                )
                return UpdateResult(UpdateOutcome.APPLIED, job_from_row(row), event_id)
            row = conn.execute(touch, params).mappings().first()
            if row is not None:
                return UpdateResult(UpdateOutcome.APPLIED, job_from_row(row))
            existing = self._fetch(conn, job_id, owner)
            if existing is None or not _visible(existing, claimant):
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
                rate=None,
                pace=None,
                summary=f"Claimed by {worker_id}",
            )
            .returning(*jobs.c)
        )
        with self._write("claim job") as conn:
            # Pick (and on PostgreSQL lock) the oldest waiting job, then take it: the lock
            # holds it for this transaction, so concurrent claimers pass over it.
            picked = conn.execute(pick).first()
            if picked is None:
                return None
            params = {"p_job_id": picked.id, "p_owner": picked.user_id}
            row = conn.execute(stmt, params).mappings().first()
            if row is None:
                return None
            self._append_event(conn, row, now=now, timestamp=now, actor=actor, action=Action.CLAIM)
            conn.execute(
                mapping_upsert(self.dialect_insert(), worker_id, row["id"], now, row["user_id"])
            )
            return job_from_row(row)

    def _apply_in(
        self,
        conn: Connection,
        update: ProgressUpdate,
        now: datetime,
        create_missing: bool,
        action: Action = Action.REPORT,
    ) -> UpdateResult:
        try:
            owner = self._owner(conn, update.job_id, update.user_id)
        except JobConflictError:
            return UpdateResult(UpdateOutcome.AMBIGUOUS)
        if owner is None:
            if not create_missing:
                return UpdateResult(UpdateOutcome.NOT_FOUND)
            owner = NO_USER  # an unscoped in-process caller's new job has no user
        shape, params = _prepare(update, now, owner, action)
        # On PostgreSQL the UPDATE and its feed row are one statement: one round trip.
        together = self.dialect == "postgresql"
        stmt = self.prepared(_update_with_feed(shape) if together else _update_statement(shape))
        row = stmt.first(conn, params)
        if row is None:
            existing = self._fetch(conn, update.job_id, owner)
            if existing is None and create_missing:
                self._create_for(conn, update, owner, now)
                row = stmt.first(conn, params)
            elif existing is None or not _visible(existing, update.claimant):
                return UpdateResult(UpdateOutcome.NOT_FOUND)
            else:
                return UpdateResult(_why_not(existing, update), job_from_row(existing))
        if row is None:  # created a moment ago by us, then refused: report it as it is
            existing = self._fetch(conn, update.job_id, owner)
            assert existing is not None
            return UpdateResult(_why_not(existing, update), job_from_row(existing))
        if together:
            event_id = int(row.pop("event_id"))
            if row["parent_id"] is not None:
                roll_up(conn, row, now, self._apply_settled)
        else:
            event_id = self._append_event(
                conn,
                row,
                now=now,
                timestamp=params["p_event_ts"],
                actor=update.actor,
                action=action,
            )
        self._track_pace(conn, row, now)
        return UpdateResult(UpdateOutcome.APPLIED, job_from_row(row), event_id)

    def _track_pace(self, conn: Connection, row: dict[str, Any], now: datetime) -> None:
        """Fold the applied change into the job's pace (``eta.Pace``), writing it only when
        it changed (a measuring window closed, a knot was reached: a few times a minute at
        most); a job this change finished teaches its kind's history."""
        if row["last_ts_us"] is None:
            return
        t = row["last_ts_us"] / 1_000_000  # the reporter's clock (never ahead of ours)
        received = now.timestamp()
        old = Pace.from_json(row["pace"])
        pct, attempt = row["percentage"], row["attempt"]
        if old is None:
            pace = Pace.begin(t, pct, attempt, skew=received - t)
        else:
            pace = old.observe(t, pct, attempt, received=received)
        if pace != old:
            row["pace"], row["rate"] = pace.to_json(), pace.rate
            params = {"p_id": row["id"], "p_owner": row["user_id"], "p_pace": row["pace"]}
            conn.execute(_SET_PACE, {**params, "p_rate": pace.rate})
        if row["status"] == JobStatus.FINISHED.value:
            lesson = _Lesson(dict(row), pace, t)
            lessons: list[_Lesson] | None = getattr(_batch, "lessons", None)
            if lessons is None:  # a change of its own (a cancel, a claim): learn it now
                self._learn_all(conn, [lesson])
            else:  # the writer's batch: at its end, in one order
                lessons.append(lesson)

    def _learn_all(self, conn: Connection, lessons: list[_Lesson]) -> None:
        """Teach the finished jobs' kinds, in (user, kind) order, after every job row of the
        transaction is locked: history rows are locked last and in one order, so writers
        (and replicas) cannot deadlock on them."""
        lock = self.dialect == "postgresql"
        for lesson in sorted(lessons, key=lambda x: (x.job["user_id"], x.job["document_type"])):
            learn(
                conn,
                lesson.job,
                lesson.pace,
                ended_s=lesson.ended_s,
                dialect_insert=self.dialect_insert(),
                lock=lock,
            )

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
        self, job_id: str, *, user_id: str | None, now: datetime, actor: str | None = None
    ) -> UpdateResult:
        """Put a remote job that failed, was cancelled or stalled back in the queue: WAITING
        for a remote worker at 0% in a new attempt, its error, worker and claim released (no
        worker may report on it until one claims it again; the old attempt's late reports are
        superseded). NOT_FOUND for no such job; JobStateError saying why for a job in another
        state, one no remote worker claimed, or a child whose parent has ended."""
        j = jobs.c
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
                percentage=0,
                summary="Requeued: waiting for a remote worker",
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
                rate=None,
                pace=None,
                current=None,
                total=None,
                stage=None,
                updated_at=now,
            )
            .returning(*jobs.c)
        )
        with self._write("requeue job") as conn:
            owner = self._owner(conn, job_id, user_id)
            before = None if owner is None else self._fetch(conn, job_id, owner)
            if before is None:
                return UpdateResult(UpdateOutcome.NOT_FOUND)
            self._check_requeue(conn, before)
            params = {
                "p_owner": owner,
                "p_status": before["status"],
                "p_updated": before["updated_at"],
            }
            row = conn.execute(stmt, params).mappings().first()
            if row is None:  # changed since it was read: explain by its state now
                now_row = self._fetch(conn, job_id, before["user_id"])
                if now_row is not None:
                    self._check_requeue(conn, now_row)
                raise JobStateError(job_id, "changed while it was being requeued: try again")
            if before["parent_id"] is not None:
                reopen(conn, before)
            event_id = self._append_event(
                conn, row, now=now, timestamp=now, actor=actor, action=Action.REQUEUE
            )
            return UpdateResult(UpdateOutcome.APPLIED, job_from_row(row), event_id)

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
        with self._write(what) as conn:
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
                conn, row, now=now, timestamp=now, actor=actor, action=action
            )
            return UpdateResult(UpdateOutcome.APPLIED, job_from_row(row), event_id)

    def _create_for(
        self, conn: Connection, update: ProgressUpdate, owner: str, now: datetime
    ) -> None:
        """Create the job an in-process caller reports on before anyone created it."""
        stmt = self.dialect_insert()(jobs).values(
            id=update.job_id,
            user_id=owner,
            document_name=update.job_id,
            document_type="unknown",
            document_id=update.job_id,
            status=JobStatus.PENDING.value,
            percentage=0,
            attempt=1,
            weight=1.0,
            metadata={},
            cancel_requested=False,
            created_at=now,
            updated_at=now,
            last_seq=0,
            created_by=update.actor,
            traceparent=str(TraceContext.root()),
        )
        conn.execute(stmt.on_conflict_do_nothing())

    def _append_event(
        self,
        conn: Connection,
        row: Row,
        *,
        now: datetime,
        timestamp: datetime,
        actor: str | None,
        action: Action,
    ) -> int:
        params = {
            "job_id": row["id"],
            "user_id": row["user_id"],
            "status": row["status"],
            "percentage": row["percentage"],
            "message": row["summary"],
            "attempt": row["attempt"],
            "current": row["current"],
            "total": row["total"],
            "stage": row["stage"],
            "timestamp": timestamp,
            "recorded_at": now,
            "actor": actor,
            "action": action.value,
        }
        event_id = int(self.prepared(_INSERT_EVENT, _EVENT_COLUMNS).scalar(conn, params))
        if row["parent_id"] is not None:
            roll_up(conn, row, now, self._apply_settled)
        return event_id

    def _apply_settled(
        self, conn: Connection, update: ProgressUpdate, now: datetime
    ) -> UpdateResult:
        """A parent's update from its children's sums, inside the child's transaction."""
        return self._apply_in(conn, update, now, False, Action.ROLLUP)


@dataclass(frozen=True, slots=True)
class _Lesson:
    """A job that finished in a transaction, to teach its kind at the transaction's end."""

    job: dict[str, Any]
    pace: Pace
    ended_s: float


_batch = threading.local()
"""The writer thread's current batch: ``lessons`` while one runs, else None."""

_CONFLICTS = frozenset({"40P01", "40001"})  # PostgreSQL: deadlock, serialization failure
_T = TypeVar("_T")


def _retry_conflicts(run: Callable[[], _T], attempts: int = 3) -> _T:
    """``run()`` (one transaction), again when PostgreSQL chose it as a deadlock's or a
    serialization conflict's victim (rolled back whole, so running it again is safe)."""
    for attempt in range(attempts):
        try:
            return run()
        except StoreError as e:
            orig = getattr(e.__cause__, "orig", None)
            if getattr(orig, "sqlstate", None) not in _CONFLICTS or attempt + 1 == attempts:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _work_size(work: _Work) -> int:
    """How many updates a piece of the writer's work holds."""
    return len(work[0]) if isinstance(work[0], tuple) else 1


def _lock_key(update: ProgressUpdate) -> tuple[str, str]:
    return (update.user_id or "", update.job_id)


_INSERT_EVENT = events.insert().returning(events.c.id)
_EVENT_COLUMNS = tuple(c.key for c in events.c if c.key != "id")
_SET_PACE = (
    update(jobs)
    .where(jobs.c.id == bindparam("p_id"), jobs.c.user_id == bindparam("p_owner"))
    .values(pace=bindparam("p_pace", type_=jobs.c.pace.type), rate=bindparam("p_rate"))
)
_TRANSITION_COLUMNS = frozenset({"status", "summary", "error", "end_date", "worker_id"})


@dataclasses.dataclass(frozen=True, slots=True)
class _Shape:
    """What an update's UPDATE statement looks like; its values travel as bound parameters.

    Building a SQLAlchemy statement costs far more than running it (about 0.7 ms against
    0.2 ms), so each shape is built once and cached (``_update_statement``).
    """

    status: str  # "given": a status known in Python; "keep": no percentage; "zero": 0%
    terminal: bool
    starts: bool
    percentage: bool
    message: bool
    counts: bool
    stage: bool
    error: bool
    worker: bool
    attempt: bool
    seq: bool
    claimant: bool


def _prepare(
    u: ProgressUpdate, now: datetime, owner: str, action: Action
) -> tuple[_Shape, dict[str, Any]]:
    """The statement shape of ``u`` (on ``owner``'s job, a change of kind ``action``) and the
    parameters to run it with."""
    pct = u.percentage
    explicit = u.status
    if explicit is not None and pct is not None and explicit == status_for_percentage(pct):
        explicit = None  # "status=PROCESSING, 50%" is the derivation, not an override
    known: JobStatus | None
    if explicit is not None:
        mode, known = "given", explicit
    elif pct is None:
        mode, known = "keep", None  # failure/cancel-like: keep the status, wake a stalled job
    elif pct >= 1:
        mode, known = "given", status_for_percentage(pct)
    else:
        mode, known = "zero", None  # 0% leaves a running job running
    shape = _Shape(
        status=mode,
        terminal=known is not None and known in TERMINAL_STATUSES,
        starts=known is not None and known is not JobStatus.PENDING,
        percentage=pct is not None,
        message=u.message is not None,
        counts=u.current is not None or u.total is not None,
        stage=u.stage is not None,
        error=u.error is not None,
        worker=u.worker_id is not None,
        attempt=u.attempt is not None,
        seq=u.seq is not None,
        claimant=u.claimant is not None,
    )
    params: dict[str, Any] = {
        "p_job_id": u.job_id,
        "p_now": now,
        # A worker clock running ahead is ordered at our receive time (its own time stays in
        # the feed row): otherwise one early stamp would make every honest report stale.
        "p_ts": _micros(now if u.timestamp is None or u.timestamp > now else u.timestamp),
        "p_status": known.value if known is not None else None,
        "p_percentage": pct,
        "p_message": u.message,
        "p_current": u.current,
        "p_total": u.total,
        "p_stage": u.stage,
        "p_error": u.error,
        "p_worker_id": u.worker_id,
        "p_attempt": u.attempt,
        "p_seq": u.seq,
        "p_user_id": owner,
        "p_claimant": u.claimant,
        "p_event_ts": u.timestamp or now,  # the feed row keeps the worker's own time
        "p_actor": u.actor,
        "p_action": action.value,
    }
    return shape, params


@functools.lru_cache(maxsize=1024)
def _update_statement(shape: _Shape) -> Any:
    """One UPDATE that applies an update only if it is newer, deriving the status in SQL."""
    j = jobs.c
    ts = bindparam("p_ts", type_=BigInteger())
    now = bindparam("p_now", type_=UTCDateTime())
    pct = bindparam("p_percentage", type_=Integer())
    status: Any
    if shape.status == "given":
        status = bindparam("p_status", type_=String())
    elif shape.status == "keep":
        stalled = j.status == JobStatus.STALLED.value
        status = case((stalled, JobStatus.PROCESSING.value), else_=j.status)
    else:
        running = status_in(JobStatus.PROCESSING, JobStatus.STALLED)
        status = case((running, JobStatus.PROCESSING.value), else_=JobStatus.PENDING.value)

    conditions = _scope(claimant=shape.claimant)
    newer_attempt: ColumnElement[bool] = false()
    attempt = bindparam("p_attempt", type_=Integer())
    seq = bindparam("p_seq", type_=BigInteger())
    if shape.attempt:
        conditions.append(j.attempt <= attempt)
        newer_attempt = j.attempt < attempt
    if not shape.terminal:
        # A final status is not held back by a worker clock running ahead of ours.
        # Same instant: a higher seq wins; without seq, arrival order, except that an exact
        # repeat (a retransmission) changes nothing and is not applied again.
        same_instant = j.last_ts_us == ts
        tie = and_(same_instant, j.last_seq < seq if shape.seq else _changes(shape, status))
        conditions.append(or_(newer_attempt, j.last_ts_us.is_(None), j.last_ts_us < ts, tie))

    values: dict[str, Any] = {
        "status": status,
        "updated_at": now,
        "last_seen_at": now,
        "last_ts_us": ts,
    }
    if shape.attempt:
        values["attempt"] = attempt
    if shape.seq:
        values["last_seq"] = seq
    if shape.percentage:
        values["percentage"] = pct
    for name, value in _optional_values(shape).items():
        values[name] = value
    if shape.starts:
        values["start_date"] = func.coalesce(j.start_date, now)
    if shape.terminal:
        values["end_date"] = now
    return update(jobs).where(*conditions).values(values).returning(*jobs.c)


@functools.lru_cache(maxsize=1024)
def _update_with_feed(shape: _Shape) -> Any:
    """PostgreSQL: the update and, if it applied, its feed row, in one statement returning
    the job's new row and the feed id (``WITH applied AS (UPDATE ...), fed AS (INSERT ...)``).
    """
    applied = _update_statement(shape).cte("applied")
    now = bindparam("p_now", type_=UTCDateTime())
    feed_row = select(
        applied.c.id,
        applied.c.user_id,
        applied.c.status,
        applied.c.percentage,
        applied.c.summary,
        applied.c.attempt,
        applied.c.current,
        applied.c.total,
        applied.c.stage,
        bindparam("p_event_ts", type_=UTCDateTime()),
        now,
        bindparam("p_actor", type_=String()),
        bindparam("p_action", type_=String()),
    )
    fed = (
        insert(events).from_select(list(_EVENT_COLUMNS), feed_row).returning(events.c.id).cte("fed")
    )
    return select(applied, select(fed.c.id).scalar_subquery().label("event_id"))


def _optional_values(shape: _Shape) -> dict[str, Any]:
    """The columns an update sets only when it carries them, as bound parameters."""
    j = jobs.c
    present = {
        "summary": shape.message,
        "current": shape.counts,
        "total": shape.counts,
        "stage": shape.stage,
        "error": shape.error,
        "worker_id": shape.worker,
    }
    names = {"summary": "message"}
    return {
        column: bindparam("p_" + names.get(column, column), type_=j[column].type)
        for column, carried in present.items()
        if carried
    }


def _changes(shape: _Shape, status: Any) -> ColumnElement[bool]:
    """True where applying the update would change the job's reported state."""
    j = jobs.c
    changes = [j.status.is_distinct_from(status)]
    if shape.percentage:
        changes.append(j.percentage.is_distinct_from(bindparam("p_percentage", type_=Integer())))
    changes += [
        j[column].is_distinct_from(value) for column, value in _optional_values(shape).items()
    ]
    return or_(*changes)


def _scope(*, claimant: bool) -> list[ColumnElement[bool]]:
    """The job (bound as ``p_job_id`` of ``p_user_id``), if it is not terminal and the caller
    may write to it."""
    j = jobs.c
    conditions: list[ColumnElement[bool]] = [
        j.id == bindparam("p_job_id", type_=String()),
        j.user_id == bindparam("p_user_id", type_=String()),
        ~status_in(*TERMINAL_STATUSES),
    ]
    if claimant:
        conditions.append(
            or_(j.claimed_by.is_(None), j.claimed_by == bindparam("p_claimant", type_=String()))
        )
    return conditions


def _visible(row: Row, claimant: str | None) -> bool:
    """Whether a worker key (``claimant``) may write to the job: unclaimed, or claimed by it."""
    return claimant is None or row["claimed_by"] in (None, claimant)


def _why_not(row: Row, u: ProgressUpdate) -> UpdateOutcome:
    """Why the conditional UPDATE matched no row, for a job that exists and is visible."""
    if row["status"] in TERMINAL_VALUES:
        return UpdateOutcome.TERMINAL
    if u.attempt is not None and row["attempt"] > u.attempt:
        return UpdateOutcome.SUPERSEDED
    return UpdateOutcome.STALE
