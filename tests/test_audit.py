"""The audit trail: every change to a job records who made it and what kind of change it was,
on SQLite and PostgreSQL (where an update and its feed row are one statement)."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from morag_progress import JobStatus, JobTracker, ProgressUpdate
from morag_progress.audit import ACTION_WORDS, SERVER, Action, key_actor, local_actor, said
from morag_progress.errors import InvalidInputError
from morag_progress.monitor import Monitor
from morag_progress.store import SQLStore
from tests.conftest import Clock


def trail(tracker: JobTracker, job_id: str) -> list[tuple[str | None, str | None, JobStatus]]:
    return [(e.action, e.actor, e.status) for e in tracker.history(job_id)]


def test_an_in_process_job_is_recorded_as_the_local_process(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock
) -> None:
    """A tracker without an actor records its changes as ``local:<host>``: the creation, each
    report (through the seed's ``update_progress``) and the end."""
    here = f"local:{socket.gethostname()}"
    assert local_actor() == here
    job_id = make_job()
    tracker.update_progress(job_id, 40, summary="halfway")
    clock.advance(1)
    tracker.mark_completed(job_id)
    job = tracker.get_job(job_id)
    assert job is not None
    assert job.created_by == here
    assert trail(tracker, job_id) == [
        ("create", here, JobStatus.PENDING),
        ("report", here, JobStatus.PROCESSING),
        ("report", here, JobStatus.FINISHED),
    ]


def test_a_named_tracker_and_a_named_call_are_recorded_as_named(
    store: SQLStore, clock: Clock
) -> None:
    """``JobTracker(actor=...)`` names every change it makes; a call (or an update) that names
    its own actor wins, as the server does for each API key."""
    tracker = JobTracker(store=store, clock=clock, actor="celery:worker-7")
    job_id = tracker.start_job("a.pdf", "pdf", user_id="alice", actor="user:k1")
    tracker.apply(ProgressUpdate(job_id, 10, user_id="alice"))
    clock.advance(1)
    tracker.apply(ProgressUpdate(job_id, 20, user_id="alice", actor="worker:k2"))
    tracker.request_cancel(job_id, "alice", actor="admin:k3")
    assert [(a, who) for a, who, _ in trail(tracker, job_id)] == [
        ("create", "user:k1"),
        ("report", "celery:worker-7"),
        ("report", "worker:k2"),
        ("cancel", "admin:k3"),
    ]


def test_claim_heartbeat_and_requeue_are_recorded(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock
) -> None:
    """A remote job's life: claimed by a worker key, failed by it, requeued by its user,
    stalled by the server, woken by the worker's heartbeat."""
    worker, owner = key_actor("worker", "kw"), key_actor("user", "ku")
    job_id = make_job(status=JobStatus.WAITING_FOR_REMOTE_WORKER, actor=owner)
    assert tracker.claim("gpu-01", claimant="kw", user_id="alice", actor=worker) is not None
    clock.advance(1)
    failed = ProgressUpdate.final(
        job_id, success=False, message="CUDA OOM", user_id="alice", claimant="kw", actor=worker
    )
    assert tracker.apply(failed).applied
    assert tracker.requeue(job_id, "alice", actor=owner).applied
    assert tracker.claim("gpu-02", claimant="kw", user_id="alice", actor=worker) is not None
    clock.advance(120)
    Monitor(tracker, stall_timeout=60, clock=clock).sweep()
    assert tracker.heartbeat(job_id, "alice", claimant="kw", actor=worker).applied
    assert [(a, who) for a, who, _ in trail(tracker, job_id)] == [
        ("create", owner),
        ("claim", worker),
        ("report", worker),
        ("requeue", owner),
        ("claim", worker),
        ("stall", SERVER),
        ("start", worker),
    ]


def test_stall_and_abandonment_are_the_servers(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock
) -> None:
    """The monitor's changes are recorded as ``server``, whatever the tracker's actor."""
    job_id = make_job()
    tracker.update_progress(job_id, 30)
    monitor = Monitor(tracker, stall_timeout=60, abandon_timeout=600, clock=clock)
    clock.advance(120)
    monitor.sweep()
    clock.advance(600)
    monitor.sweep()
    assert trail(tracker, job_id)[-2:] == [
        ("stall", SERVER, JobStatus.STALLED),
        ("abandon", SERVER, JobStatus.FAILED),
    ]


def test_a_parents_roll_up_is_the_servers(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock
) -> None:
    """A parent that follows its children changes by the server's hand; the child's own change
    keeps its reporter."""
    parent = make_job()
    child = make_job(parent_id=parent)
    tracker.apply(ProgressUpdate(child, 100, user_id="alice", actor="worker:kw"))
    assert trail(tracker, child)[-1] == ("report", "worker:kw", JobStatus.FINISHED)
    assert trail(tracker, parent)[-1] == ("rollup", SERVER, JobStatus.FINISHED)


def test_every_action_is_documented() -> None:
    """Each kind of change a feed row can record is described where users read: the API's
    schema and the operations guide."""
    from pathlib import Path

    from morag_progress.api.schemas import FeedEventOut

    described = FeedEventOut.model_fields["action"].description or ""
    guide = (Path(__file__).parents[1] / "docs" / "operations.md").read_text()
    for action in Action:
        assert action.value in described, action
        assert f"`{action.value}`" in guide, action


@pytest.mark.parametrize("actor", ["x" * 201, 7])
def test_an_actor_is_bounded(store: SQLStore, actor: object) -> None:
    """An actor longer than 200 characters (or not text) is refused, naming the field."""
    with pytest.raises(InvalidInputError, match="actor"):
        JobTracker(store=store, actor=actor)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="actor"):
        ProgressUpdate("j1", 10, actor=actor)  # type: ignore[arg-type]


def test_every_action_has_one_word_and_the_dashboard_says_the_same() -> None:
    """Each action has the words a person reads (``jobs history``), and the dashboard's copy
    of them (its script has no build step to import them) is the same, action for action."""
    assert set(ACTION_WORDS) == set(Action)
    assert said("create") == "created"
    assert said(None) == ""
    assert said("a-later-action") == "a-later-action"  # an older CLI, a newer server
    script = (
        Path(__file__).resolve().parent.parent / "src/morag_progress/api/dashboard/dashboard.js"
    ).read_text()
    block = re.search(r"const ACTIONS = \{(.*?)\};", script, flags=re.DOTALL)
    assert block is not None
    words = dict(re.findall(r'(\w+): "([^"]+)"', block.group(1)))
    assert words == {str(action): word for action, word in ACTION_WORDS.items()}
