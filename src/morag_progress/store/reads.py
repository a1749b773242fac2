"""Reading jobs and the change feed: one job, pages (keyset: a page costs the same at any
depth), counts, idle jobs for the monitor, a job's history and the feed after an id."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, and_, bindparam, func, or_, select

from morag_progress.models import FeedEvent, Job, JobStatus
from morag_progress.store.engine import Database, feed_event_from_row, job_from_row
from morag_progress.store.schema import events, jobs

__all__ = ["JobReader"]


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
    ) -> list[Job]:
        j = jobs.c
        stmt = select(jobs).order_by(j.created_at.desc(), j.id.desc()).limit(limit)
        if user_id is not None:
            stmt = stmt.where(j.user_id == user_id)
        if parent_id is not None:
            stmt = stmt.where(j.parent_id == parent_id)
        if status is not None:
            stmt = stmt.where(j.status == JobStatus(status).value)
        if document_type is not None:
            stmt = stmt.where(j.document_type == document_type)
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
        with self._read("list jobs") as conn:
            return [job_from_row(row) for row in conn.execute(stmt).mappings()]

    def count_open_jobs(self, user_id: str) -> int:
        """How many of the user's jobs have not ended (an index range per open status)."""
        j = jobs.c
        open_ = sorted(s.value for s in JobStatus if not s.is_terminal)
        stmt = select(func.count()).where(j.status.in_(open_), j.user_id == user_id)
        with self._read("count open jobs") as conn:
            return int(conn.execute(stmt).scalar_one())

    def count_jobs(self, *, user_id: str | None = None) -> dict[tuple[str, str], int]:
        j = jobs.c
        stmt = select(j.status, j.document_type, func.count()).group_by(j.status, j.document_type)
        if user_id is not None:
            stmt = stmt.where(j.user_id == user_id)
        with self._read("count jobs") as conn:
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
        self, job_id: str, *, user_id: str | None = None, after: int = 0, limit: int = 1000
    ) -> list[FeedEvent]:
        e = events.c
        stmt = (
            select(events)
            .where(
                e.job_id == job_id,
                e.user_id == bindparam("p_owner", type_=String()),
                e.id > after,
            )
            .order_by(e.id)
            .limit(limit)
        )
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
