"""Parent jobs: a child's change rolls up into its parent in the same transaction, in O(1).

The parent keeps running sums over its children (how many, how many ended or failed, their
weights and weighted progress); each child remembers what it last added. A child's applied
change adds the difference, then the parent's own state follows from the sums and is applied as
an ordinary update (so it has its feed row, and rolls up to its own parent).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Connection, bindparam, select, update

from morag_progress.audit import SERVER
from morag_progress.errors import InvalidInputError
from morag_progress.models import Job, JobStatus, ProgressUpdate, UpdateResult
from morag_progress.store.engine import TERMINAL_VALUES, Row
from morag_progress.store.schema import jobs

__all__ = ["Apply", "adopt", "expected", "reopen", "roll_up"]

Apply = Callable[[Connection, ProgressUpdate, datetime], UpdateResult]
"""Applies an update inside the caller's transaction (the writer's)."""


def adopt(conn: Connection, child: Row, now: datetime, apply: Apply) -> None:
    """Count a new child in its parent's sums (the parent must be the same user's)."""
    j = jobs.c
    conditions = [
        j.id == child["parent_id"],
        j.user_id == child["user_id"],
        j.id != child["id"],
    ]
    parent = (
        conn.execute(
            update(jobs)
            .where(*conditions)
            .values(children=j.children + 1, children_weight=j.children_weight + child["weight"])
            .returning(*jobs.c)
        )
        .mappings()
        .first()
    )
    if parent is None:
        raise InvalidInputError(
            "parent_id", "must name an existing job of the same user", child["parent_id"]
        )
    _check_depth(conn, parent)
    _settle(conn, parent, child, now, apply)


MAX_DEPTH = 16
"""How many parents above it a job may have: a change rolls up through all of them in one
transaction, so the chain is bounded."""
_PARENT_OF = select(jobs.c.parent_id).where(
    jobs.c.id == bindparam("p_id"), jobs.c.user_id == bindparam("p_owner")
)


def _check_depth(conn: Connection, parent: Row) -> None:
    """Raise InvalidInputError when ``parent`` already has MAX_DEPTH parents above it (at
    most that many reads, only when a child is created)."""
    above, depth = parent["parent_id"], 1
    while above is not None:
        depth += 1
        if depth > MAX_DEPTH:
            raise InvalidInputError(
                "parent_id", f"must be at most {MAX_DEPTH} levels below a top-level job", "..."
            )
        params = {"p_id": above, "p_owner": parent["user_id"]}
        above = conn.execute(_PARENT_OF, params).scalar_one_or_none()


def roll_up(conn: Connection, child: Row, now: datetime, apply: Apply) -> None:
    """Carry a child's change into its parent's sums, then the parent's state, in the same
    transaction: O(1) per change, whatever the number of children. The parent's change is
    an ordinary applied update, so it has its feed row (and rolls up to its own parent)."""
    done = child["status"] in TERMINAL_VALUES
    failed = child["status"] == JobStatus.FAILED.value and not child["rolled_up_done"]
    delta = child["weight"] * (child["percentage"] - child["rolled_up_pct"])
    newly_done = done and not child["rolled_up_done"]
    if not delta and not newly_done:
        return
    j = jobs.c
    conn.execute(
        update(jobs)
        .where(j.id == child["id"], j.user_id == child["user_id"])
        .values(rolled_up_pct=child["percentage"], rolled_up_done=done)
    )
    parent = (
        conn.execute(
            update(jobs)
            .where(j.id == child["parent_id"], j.user_id == child["user_id"])
            .values(
                children_progress=j.children_progress + delta,
                children_done=j.children_done + int(newly_done),
                children_failed=j.children_failed + int(failed),
            )
            .returning(*jobs.c)
        )
        .mappings()
        .first()
    )
    if parent is not None:
        _settle(conn, parent, child, now, apply)


def reopen(conn: Connection, child: Row) -> None:
    """A child that had ended runs again (requeued): take its end back out of its parent's
    sums. Its percentage rolls up as any change does. A parent that has ended stays ended:
    terminal states are final."""
    if not child["rolled_up_done"]:
        return
    j = jobs.c
    failed = int(child["status"] == JobStatus.FAILED.value)
    conn.execute(
        update(jobs)
        .where(j.id == child["id"], j.user_id == child["user_id"])
        .values(rolled_up_done=False)
    )
    conn.execute(
        update(jobs)
        .where(j.id == child["parent_id"], j.user_id == child["user_id"])
        .values(
            children_done=j.children_done - 1,
            children_failed=j.children_failed - failed,
        )
    )


def _settle(conn: Connection, parent: Row, child: Row, now: datetime, apply: Apply) -> None:
    """The parent's state from its sums: FAILED when a child failed, FINISHED when all
    ended, otherwise the children's weighted mean (at most 99%). A parent that expects more
    children than it has (a run whose ranks have not all started) counts the missing ones as
    children of weight 1 at 0%."""
    if parent["status"] in TERMINAL_VALUES or not parent["children"]:
        return
    count, missing = expected(parent)
    update_: ProgressUpdate
    if parent["children_failed"]:
        update_ = ProgressUpdate.final(
            parent["id"],
            success=False,
            message=f"Child job {child['id']} failed: {child['error'] or child['summary']}",
            user_id=parent["user_id"],
            actor=SERVER,
        )
    elif parent["children_done"] >= count:
        update_ = ProgressUpdate.final(
            parent["id"],
            success=True,
            message=f"All {count} child jobs ended",
            user_id=parent["user_id"],
            actor=SERVER,
        )
    else:
        mean = parent["children_progress"] / max(parent["children_weight"] + missing, 1e-9)
        update_ = ProgressUpdate(
            parent["id"],
            min(99, max(0, math.floor(mean + 1e-9))),
            f"{parent['children_done']} of {count} child jobs done",
            user_id=parent["user_id"],
            actor=SERVER,
        )
    apply(conn, update_, now)


def expected(parent: Row | Job) -> tuple[int, int]:
    """How many children ``parent`` counts (those it has, or those it expects if more), and
    how many of those it has not got yet."""
    if isinstance(parent, Job):
        have, want = parent.children, parent.expected_children
    else:
        have, want = parent["children"], parent["expected_children"]
    count = max(have, want or 0)
    return count, count - have
