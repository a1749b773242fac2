"""The audit trail: who made each change to a job, and what kind of change it was.

Every row of a job's change feed records its ``actor`` and its ``action``; a job records who
created it (``created_by``). An actor is one of:

``<role>:<key id>``
    a caller of the HTTP API, by its key (``admin:k1a2b3``, ``user:...``, ``worker:...``);
``server``
    the server itself: stall detection, abandonment, a parent's roll-up of its children;
``local:<host>``
    a process that writes the store directly (a Celery task's in-process reporter, a script
    using ``JobTracker``), unless it names itself (``JobTracker(actor=...)``).

Retention deletes a job with its feed, so it leaves no row behind; the server logs each
pruning batch instead (docs/operations.md).
"""

from __future__ import annotations

import enum

__all__ = ["ACTION_WORDS", "ACTOR_LENGTH", "SERVER", "Action", "key_actor", "local_actor", "said"]

ACTOR_LENGTH = 200
"""The longest actor stored."""

SERVER = "server"
"""The actor of the changes the server makes by itself."""


class Action(enum.StrEnum):
    """What kind of change a feed row records."""

    CREATE = "create"
    """The job was created."""
    REPORT = "report"
    """Progress, a result or a failure, from the job's worker (or its owner)."""
    START = "start"
    """A heartbeat woke a pending or stalled job."""
    CLAIM = "claim"
    """A remote worker took the job from the queue."""
    CANCEL = "cancel"
    """Someone asked the job to stop."""
    REQUEUE = "requeue"
    """Someone put the job back in the queue."""
    STALL = "stall"
    """The server found the job silent too long (STALLED)."""
    ABANDON = "abandon"
    """The server gave up on a silent job's worker (failed it, or queued it again)."""
    ROLLUP = "rollup"
    """A parent's state followed its children's."""
    STRAGGLER = "straggler"
    """The server found one of a run's ranks behind its siblings (``store/runs.py``)."""
    AT_RISK = "at_risk"
    """The server found the job likely to miss its deadline, or running longer than usual."""


ACTION_WORDS: dict[str, str] = {
    Action.CREATE: "created",
    Action.REPORT: "report",
    Action.START: "started (heartbeat)",
    Action.CLAIM: "claimed",
    Action.CANCEL: "cancel requested",
    Action.REQUEUE: "requeued",
    Action.STALL: "stalled",
    Action.ABANDON: "given up",
    Action.ROLLUP: "from child jobs",
    Action.STRAGGLER: "straggler flagged",
    Action.AT_RISK: "at risk",
}
"""Each action as a person says it, wherever a history is shown to one (the CLI; the
dashboard has the same words, which a test holds it to)."""


def said(action: str | None) -> str:
    """``action`` (a feed row's) as a person says it; an unknown one as it is."""
    return "" if action is None else ACTION_WORDS.get(action, action)


def key_actor(role: str, key_id: str) -> str:
    """The actor of an API caller: its key's role and id."""
    return f"{role}:{key_id}"[:ACTOR_LENGTH]


def local_actor() -> str:
    """The actor of a process writing the store directly: ``local:<host name>``."""
    import socket  # here: a worker's import of the client stays light

    return f"local:{socket.gethostname()}"[:ACTOR_LENGTH]
