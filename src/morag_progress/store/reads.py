"""Reading jobs and the change feed: one job, pages (keyset: a page costs the same at any
depth), counts, idle jobs for the monitor, a job's history and the feed after an id."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    String,
    and_,
    bindparam,
    case,
    func,
    or_,
    select,
    tuple_,
)

from morag_progress.eta import History
from morag_progress.models import FeedEvent, Job, JobStatus, as_utc
from morag_progress.store import search as search_index
from morag_progress.store.engine import Database, feed_event_from_row, job_from_row
from morag_progress.store.history import read_histories
from morag_progress.store.schema import events, jobs

__all__ = [
    "MAX_QUEUE",
    "MAX_WORKERS",
    "JobReader",
    "RemoteQueue",
    "WorkerActivity",
    "WorkerState",
]

MAX_QUEUE = 1000
"""The most queued (and running remote) jobs a start forecast looks at."""

MAX_WORKERS = 500
"""The most workers one listing holds."""

WorkerState = Literal["running", "stalled", "idle", "offline"]
"""What a worker is doing (``WorkerActivity.state``)."""


@dataclass(frozen=True, slots=True)
class WorkerActivity:
    """What one worker has been doing."""

    worker_id: str
    user_id: str | None
    """Whose worker it is (a worker id is a user's own name)."""
    last_seen: datetime
    current_job: Job | None
    """The job it runs now (PROCESSING; the latest it reported on)."""
    finished: int
    failed: int
    stalled_job: Job | None = None
    """The job it fell silent on (STALLED), when it runs none now."""

    def state(self, now: datetime, offline_after: timedelta) -> WorkerState:
        """``running`` a job; ``stalled`` on one (silent past its job's stall timeout);
        ``idle`` (seen within ``offline_after``, running nothing); else ``offline``. A worker
        is seen only through its jobs, so one waiting for work and one that has stopped look
        alike until ``offline_after`` has passed."""
        if self.current_job is not None:
            return "running"
        if self.stalled_job is not None:
            return "stalled"
        return "idle" if now - self.last_seen <= offline_after else "offline"


@dataclass(frozen=True, slots=True)
class RemoteQueue:
    """A user's jobs waiting for remote workers, those running, and the workers lately seen."""

    waiting: list[Job]
    running: list[Job]
    workers: int


def _filters(
    conn: Connection,
    *,
    user_id: str | None,
    document_type: str | None,
    parent_id: str | None,
    top_level: bool,
    search: str | None,
) -> list[ColumnElement[bool]]:
    """The conditions of a job list (and of its counts), but for status. A search finds its
    candidates through the index first (``store/search.py``), on ``conn``."""
    j = jobs.c
    conditions: list[ColumnElement[bool]] = []
    if user_id is not None:
        conditions.append(j.user_id == user_id)
    if parent_id is not None:
        conditions.append(j.parent_id == parent_id)
    elif top_level:
        conditions.append(j.parent_id.is_(None))
    if document_type is not None:
        conditions.append(j.document_type == document_type)
    if search:
        # Case-insensitive substring of the name, id or message (the scan's LIKE folds only
        # ASCII letters on SQLite; the index folds every letter).
        conditions.append(search_index.condition(conn, search, user_id))
    return conditions


def _paged(
    stmt: Select[Any], *, user_id: str | None, status: JobStatus | None, after: str | None
) -> Select[Any]:
    """``stmt`` narrowed to ``status`` and to the jobs strictly after the job ``after``."""
    j = jobs.c
    if status is not None:
        stmt = stmt.where(j.status == JobStatus(status).value)
    if after is not None:
        # Keyset pagination: strictly before the cursor job in (created_at, id) order.
        # The cursor job, of the user for a user's page (an admin's page takes the newest
        # job of that id: ids are unique per user, not across users).
        cursor_job = select(j.created_at).where(j.id == after)
        if user_id is not None:
            cursor_job = cursor_job.where(j.user_id == user_id)
        cursor_created = cursor_job.order_by(j.created_at.desc()).limit(1).scalar_subquery()
        stmt = stmt.where(
            # The plain bound lets the index seek to the cursor (the OR alone cannot), so a
            # page costs the same whatever its depth.
            j.created_at <= cursor_created,
            or_(
                j.created_at < cursor_created,
                and_(j.created_at == cursor_created, j.id < after),
            ),
        )
    return stmt


class JobReader(Database):
    """The store's reads."""

    def get_job(self, job_id: str, *, user_id: str | None = None) -> Job | None:
        with self._read("get job") as conn:
            owner = self._owner(conn, job_id, user_id)
            row = None if owner is None else self._fetch(conn, job_id, owner)
        return None if row is None else job_from_row(row)

    def list_jobs(
        self,
        *,
        user_id: str | None = None,
        status: JobStatus | None = None,
        document_type: str | None = None,
        limit: int = 50,
        after: str | None = None,
        parent_id: str | None = None,
        top_level: bool = False,
        search: str | None = None,
    ) -> list[Job]:
        j = jobs.c
        with self._read("list jobs") as conn:
            stmt = select(jobs).order_by(j.created_at.desc(), j.id.desc()).limit(limit)
            stmt = stmt.where(
                *_filters(
                    conn,
                    user_id=user_id,
                    document_type=document_type,
                    parent_id=parent_id,
                    top_level=top_level,
                    search=search,
                )
            )
            stmt = _paged(stmt, user_id=user_id, status=status, after=after)
            return [job_from_row(row) for row in conn.execute(stmt).mappings()]

    def workers(self, *, user_id: str | None = None, since: datetime) -> list[WorkerActivity]:
        """Each worker (of each user) running or stalled on a job now, or that ended one
        since ``since``: when it was last seen, its current job (the latest it reported on),
        and the jobs it finished and failed since ``since``. At most ``MAX_WORKERS``, the most
        recently seen first. Two index ranges: jobs running now, and jobs ended since."""
        j = jobs.c
        ended_since = and_(j.end_date >= since, j.worker_id.is_not(None))

        def ended(status: JobStatus) -> Any:
            return func.sum(case((j.status == status.value, 1), else_=0))

        recent = (
            select(
                j.user_id,
                j.worker_id,
                func.max(j.end_date),
                ended(JobStatus.FINISHED),
                ended(JobStatus.FAILED),
            )
            .where(ended_since)
            .group_by(j.user_id, j.worker_id)
            .limit(10 * MAX_WORKERS)
        )
        active = [JobStatus.PROCESSING.value, JobStatus.STALLED.value]
        running = (
            select(jobs)
            .where(j.status.in_(active), j.worker_id.is_not(None))
            .order_by(j.updated_at.desc())
            .limit(10 * MAX_WORKERS)
        )
        if user_id is not None:
            recent = recent.where(j.user_id == user_id)
            running = running.where(j.user_id == user_id)
        found: dict[tuple[str, str], dict[str, Any]] = {}
        with self._read("list workers") as conn:
            for owner, worker, last_end, finished, failed in conn.execute(recent):
                found[(owner, worker)] = {
                    "last_seen": as_utc(last_end),
                    "current_job": None,
                    "finished": int(finished or 0),
                    "failed": int(failed or 0),
                }
            for row in conn.execute(running).mappings():
                job = job_from_row(row)
                assert job.worker_id is not None
                seen = job.last_seen_at or job.updated_at
                entry = found.setdefault(
                    (row["user_id"], job.worker_id),
                    {"last_seen": seen, "current_job": None, "finished": 0, "failed": 0},
                )
                entry["last_seen"] = max(entry["last_seen"], seen)
                if entry["current_job"] is None and job.status is JobStatus.PROCESSING:
                    entry["current_job"] = job  # newest first: its latest
                elif entry.get("stalled_job") is None and job.status is JobStatus.STALLED:
                    entry["stalled_job"] = job
        activity = []
        for (owner, worker), entry in found.items():
            if entry["current_job"] is not None:
                entry.pop("stalled_job", None)  # it runs a job: not stalled on another
            activity.append(WorkerActivity(worker_id=worker, user_id=owner or None, **entry))
        activity.sort(key=lambda a: a.last_seen, reverse=True)
        return activity[:MAX_WORKERS]

    def histories(self, keys: set[tuple[str, str]]) -> dict[tuple[str, str], History]:
        """What finished jobs of each (user id, document type) took (``store/history.py``)."""
        with self._read("read histories") as conn:
            return read_histories(conn, keys)

    def running_children(self, parents: list[tuple[str, str]]) -> dict[tuple[str, str], list[Job]]:
        """The PROCESSING children of each (user id, parent id): one query, at most 1000
        children a parent (and 10,000 in all)."""
        if not parents:
            return {}
        j = jobs.c
        stmt = (
            select(jobs)
            .where(
                tuple_(j.user_id, j.parent_id).in_(sorted(set(parents))),
                j.status == JobStatus.PROCESSING.value,
            )
            .limit(10_000)
        )
        found: dict[tuple[str, str], list[Job]] = {key: [] for key in parents}
        with self._read("read running children") as conn:
            for row in conn.execute(stmt).mappings():
                children = found[(row["user_id"], row["parent_id"])]
                if len(children) < 1000:
                    children.append(job_from_row(row))
        return found

    def remote_queue(self, user_id: str, *, since: datetime) -> RemoteQueue:
        """A user's queue for remote workers: the jobs waiting (oldest first, at most
        ``MAX_QUEUE``), the remote jobs running, and how many workers claimed one of the user's
        jobs since ``since``."""
        j = jobs.c
        waiting = (
            select(jobs)
            .where(j.status == JobStatus.WAITING_FOR_REMOTE_WORKER.value, j.user_id == user_id)
            .order_by(j.created_at, j.id)
            .limit(MAX_QUEUE)
        )
        running = (
            select(jobs)
            .where(
                j.status == JobStatus.PROCESSING.value,
                j.user_id == user_id,
                j.claimed_by.is_not(None),
            )
            .limit(MAX_QUEUE)
        )
        # Workers that ended one of the user's remote jobs lately (an index range on the end
        # time), beside those running one now.
        ended = (
            select(j.worker_id)
            .where(
                j.end_date >= since,
                j.worker_id.is_not(None),
                j.user_id == user_id,
                j.claimed_by.is_not(None),
            )
            .distinct()
            .limit(MAX_QUEUE)
        )
        with self._read("read the remote queue") as conn:
            now_running = [job_from_row(r) for r in conn.execute(running).mappings()]
            workers = {job.worker_id for job in now_running if job.worker_id}
            workers.update(worker for (worker,) in conn.execute(ended))
            return RemoteQueue(
                waiting=[job_from_row(r) for r in conn.execute(waiting).mappings()],
                running=now_running,
                workers=len(workers),
            )

    def oldest_waiting(self) -> datetime | None:
        """Since when the longest-waiting job has waited for a remote worker: its last change
        (its creation, or its requeue), not its creation."""
        j = jobs.c
        stmt = select(func.min(j.updated_at)).where(
            j.status == JobStatus.WAITING_FOR_REMOTE_WORKER.value
        )
        with self._read("read the oldest waiting job") as conn:
            value = conn.execute(stmt).scalar()
        return None if value is None else as_utc(value)

    def count_jobs(
        self,
        *,
        user_id: str | None = None,
        document_type: str | None = None,
        parent_id: str | None = None,
        top_level: bool = False,
        search: str | None = None,
    ) -> dict[tuple[str, str], int]:
        """How many jobs there are by (status, document type), filtered as ``list_jobs``."""
        j = jobs.c
        stmt = select(j.status, j.document_type, func.count()).group_by(j.status, j.document_type)
        with self._read("count jobs") as conn:
            stmt = stmt.where(
                *_filters(
                    conn,
                    user_id=user_id,
                    document_type=document_type,
                    parent_id=parent_id,
                    top_level=top_level,
                    search=search,
                )
            )
            return {(status, kind): int(n) for status, kind, n in conn.execute(stmt)}

    def idle_jobs(self, *, statuses: list[JobStatus], seen_before: datetime) -> list[Job]:
        j = jobs.c
        seen = func.coalesce(j.last_seen_at, j.updated_at)
        stmt = (
            select(jobs)
            .where(j.status.in_([JobStatus(s).value for s in statuses]), seen < seen_before)
            .order_by(seen)
            .limit(10_000)
        )
        with self._read("find idle jobs") as conn:
            return [job_from_row(row) for row in conn.execute(stmt).mappings()]

    def shortest_stall_timeout(self) -> float | None:
        j = jobs.c
        stmt = select(func.min(j.stall_timeout_s)).where(j.status == JobStatus.PROCESSING.value)
        with self._read("shortest stall timeout") as conn:
            value = conn.execute(stmt).scalar()
        return None if value is None else float(value)

    def history(
        self,
        job_id: str,
        *,
        user_id: str | None = None,
        after: int = 0,
        before: int | None = None,
        newest_first: bool = False,
        limit: int = 1000,
    ) -> list[FeedEvent]:
        e = events.c
        stmt = (
            select(events)
            .where(
                e.job_id == job_id,
                e.user_id == bindparam("p_owner", type_=String()),
                e.id > after,
            )
            .order_by(e.id.desc() if newest_first else e.id)
            .limit(limit)
        )
        if before is not None:
            stmt = stmt.where(e.id < before)
        with self._read("read history") as conn:
            owner = self._owner(conn, job_id, user_id)
            if owner is None:
                return []
            return [
                feed_event_from_row(row)
                for row in conn.execute(stmt, {"p_owner": owner}).mappings()
            ]

    def events_after(
        self, after: int = 0, *, user_id: str | None = None, limit: int = 1000
    ) -> list[FeedEvent]:
        e = events.c
        stmt = select(events).where(e.id > after).order_by(e.id).limit(limit)
        if user_id is not None:
            stmt = stmt.where(e.user_id == user_id)
        with self._read("read feed") as conn:
            return [feed_event_from_row(row) for row in conn.execute(stmt).mappings()]

    def last_event_id(self, job_id: str | None = None, user_id: str | None = None) -> int:
        e = events.c
        stmt = select(func.max(e.id))
        if job_id is not None:
            stmt = stmt.where(e.job_id == job_id)
        if user_id is not None:
            stmt = stmt.where(e.user_id == user_id)
        with self._read("read feed head") as conn:
            return int(conn.execute(stmt).scalar_one_or_none() or 0)
