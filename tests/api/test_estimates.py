"""Estimates as the API writes them: learned from finished jobs (kept in the database, so a new
store and every replica see them), a parent's from its children, start forecasts for queued
jobs, and the fields over HTTP."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import httpx

from morag_progress import JobStatus, JobTracker
from morag_progress.api.auth import Principal
from morag_progress.api.estimates import Estimates
from morag_progress.keys import Role
from morag_progress.models import ProgressUpdate, utcnow
from morag_progress.store import SQLStore
from tests.api.conftest import Auth
from tests.conftest import Clock

MakeJob = Callable[..., str]
ALICE = Principal(key_id="k-alice", user_id="alice", role=Role.USER)


def run(tracker: JobTracker, clock: Clock, job_id: str, seconds: float, steps: int = 10) -> None:
    """Report ``job_id`` from 0 to 100% evenly over ``seconds``, the clock moving along."""
    for i in range(steps + 1):
        tracker.update_progress(job_id, 100 * i // steps, None, f"step {i}", "alice")
        if i < steps:
            clock.advance(seconds / steps)


def test_finished_jobs_teach_their_kind(
    tracker: JobTracker, make_job: MakeJob, clock: Clock, database_url: str
) -> None:
    """Three finished audio jobs (90 s from their first percent): a new one at 0% is expected
    to take about that
    (basis history), one at 30% after 30 s about 70 s more (blend); a new store on the same
    database knows the same; another user's kind is theirs alone."""
    for _ in range(3):
        run(tracker, clock, make_job(), 100)
    estimates = Estimates(tracker.store, clock=clock)
    fresh = make_job()
    tracker.update_progress(fresh, 0, None, "starting", "alice")
    tracker.mark_processing(fresh, "alice")
    job = tracker.get_job(fresh, "alice")
    assert job is not None
    out = estimates.job_out(job, ALICE)
    assert out.eta_basis == "history"
    assert out.eta_seconds is not None
    assert 85 < out.eta_seconds < 110
    assert out.eta_low_seconds is not None
    assert out.eta_high_seconds is not None
    assert out.eta_low_seconds < out.eta_seconds < out.eta_high_seconds
    for pct in (10, 20, 30):
        clock.advance(10)
        tracker.update_progress(fresh, pct, None, "working", "alice")
    job = tracker.get_job(fresh, "alice")
    assert job is not None
    out = estimates.job_out(job, ALICE)
    assert out.eta_basis == "blend"
    assert out.eta_seconds is not None
    assert 60 < out.eta_seconds < 80

    again = SQLStore(database_url)  # a restart, or another replica
    try:
        assert Estimates(again, clock=clock).job_out(job, ALICE).eta_basis == "blend"
    finally:
        again.close()
    bobs = make_job(user_id="bob")
    tracker.mark_processing(bobs, "bob")
    bob_job = tracker.get_job(bobs, "bob")
    assert bob_job is not None
    assert estimates.job_out(bob_job, ALICE).eta_seconds is None  # nothing learned for bob


def test_a_parents_eta_comes_from_its_children(
    tracker: JobTracker, make_job: MakeJob, clock: Clock
) -> None:
    """Two children of one parent, one running at 1 %/s: the parent's ETA is the work left
    over that rate, not its own steps."""
    parent = make_job(document_name="course", document_type="bundle")
    a = make_job(parent_id=parent)
    make_job(parent_id=parent)
    for pct in range(0, 51, 5):
        tracker.update_progress(a, pct, None, "a", "alice")
        clock.advance(5)
    job = tracker.get_job(parent, "alice")
    assert job is not None
    assert job.percentage == 25  # (50 + 0) / 2
    out = Estimates(tracker.store, clock=clock).job_out(job, ALICE)
    assert out.eta_seconds is not None
    # 150 percent-weight left over 1 %/s, the idle 5 s since the last report slowing it a bit
    assert 150 <= out.eta_seconds < 200
    assert out.rate is not None


def test_queued_jobs_get_a_start_forecast(
    tracker: JobTracker, make_job: MakeJob, clock: Clock
) -> None:
    """One worker runs a job of a kind that takes about 90 s (30% done); two wait behind it:
    they are expected to start when it ends (about 60-90 s) and one kind's duration later.
    Without history there is no forecast."""
    remote = {"status": JobStatus.WAITING_FOR_REMOTE_WORKER}
    waiting = make_job(**remote)
    alone = tracker.get_job(waiting)
    assert alone is not None
    assert Estimates(tracker.store, clock=clock).job_out(alone, ALICE).expected_start_at is None
    for _ in range(3):
        job_id = make_job(**remote)
        assert tracker.claim("gpu-01", claimant="k1", user_id="alice") is not None
        run(tracker, clock, job_id, 100)
    tracker.mark_cancelled(waiting, "alice")
    first = make_job(**remote)
    clock.advance(1)  # queue order is creation order
    second = make_job(**remote)
    clock.advance(1)
    third = make_job(**remote)
    # the oldest waiting job is `first`: claim it, leave two waiting behind
    claimed = tracker.claim("gpu-01", claimant="k1", user_id="alice")
    assert claimed is not None
    assert claimed.id == first
    for pct in (0, 10, 20, 30):
        tracker.update_progress(first, pct, None, "working", "alice")
        clock.advance(10)
    estimates = Estimates(tracker.store, clock=clock)
    jobs = [tracker.get_job(second), tracker.get_job(third)]
    out = estimates.jobs_out([j for j in jobs if j is not None], ALICE)
    starts = [o.expected_start_at for o in out]
    assert starts[0] is not None
    assert starts[1] is not None
    now = clock()
    assert timedelta(seconds=50) < starts[0] - now < timedelta(seconds=100)
    gap = starts[1] - starts[0]  # the kind's median duration
    assert timedelta(seconds=85) < gap < timedelta(seconds=100)


async def test_estimates_over_http(
    client: httpx.AsyncClient, alice: Auth, new_job: Callable[..., object], store: SQLStore
) -> None:
    """A job reported over 20 s shows a live rate, an ETA with its range and basis."""
    job_id = str(await new_job(alice))  # type: ignore[misc]
    tracker = JobTracker(store=store)
    now = utcnow()
    for seconds_ago, pct in ((20, 10), (10, 20), (0, 30)):
        at = now - timedelta(seconds=seconds_ago)
        tracker.apply(ProgressUpdate(str(job_id), pct, "working", timestamp=at, user_id="alice"))
    job = (await client.get(f"/api/v1/jobs/{job_id}", headers=alice)).json()
    assert job["eta_basis"] == "live"
    assert job["rate"] > 0
    assert job["eta_low_seconds"] < job["eta_seconds"] < job["eta_high_seconds"]
    assert 50 < job["eta_seconds"] < 120
    assert "pace" not in job
    listed = (await client.get("/api/v1/jobs", headers=alice)).json()["jobs"][0]
    assert listed["eta_basis"] == "live"


def test_actors_are_named_by_their_keys_names_for_those_who_may_know_them(
    store: SQLStore,
) -> None:
    """An actor that is a named key reads as its name (revoked since, too: it names who did
    it), to its own user and to an admin; a key of another user, a key without a name, an
    unknown key, the server and a local process have none."""
    now = utcnow()
    laptop, _ = store.create_key(user_id="alice", role=Role.WORKER, name="gpu-01", now=now)
    bare, _ = store.create_key(user_id="alice", role=Role.USER, name=None, now=now)
    bobs, _ = store.create_key(user_id="bob", role=Role.WORKER, name="bob-box", now=now)
    old, _ = store.create_key(user_id="alice", role=Role.USER, name="old", now=now)
    assert store.revoke_key(old.id, now=now)
    actors = [
        f"worker:{laptop.id}",
        f"user:{bare.id}",
        f"worker:{bobs.id}",
        f"user:{old.id}",
        "user:no-such-key",
        "server",
        "local:gpu-01",
        None,
    ]
    estimates = Estimates(store)
    assert estimates.names(actors, ALICE) == {
        f"worker:{laptop.id}": "gpu-01",
        f"user:{old.id}": "old",
    }
    admin = Principal(key_id="k-admin", user_id="root", role=Role.ADMIN)
    assert estimates.names(actors, admin) == {
        f"worker:{laptop.id}": "gpu-01",
        f"worker:{bobs.id}": "bob-box",
        f"user:{old.id}": "old",
    }


def _staged(tracker: JobTracker, clock: Clock, job_id: str, upto: int = 100) -> None:
    """A run whose 10-70% takes 80% of its time: 1% a second to 10%, then 0.075%/s, then 1%/s
    (10 s, 800 s, 30 s: 840 s in all), reported at each whole percent."""
    for pct in range(1, upto + 1):
        clock.advance(1 if pct <= 10 or pct > 70 else 800 / 60)
        tracker.update_progress(job_id, pct, None, f"{pct}%", "alice")


def test_time_progress_says_how_far_along_in_time_a_job_of_uneven_stages_is(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock
) -> None:
    """Once four runs of a kind spent most of their time between 10% and 70%, a run at 40%
    is about half way in time (its percentage says 40%); a kind with no history says nothing,
    and neither does a job that does not run."""
    for _ in range(4):
        _staged(tracker, clock, make_job(document_type="staged"))
    job_id = make_job(document_type="staged")
    _staged(tracker, clock, job_id, upto=40)
    estimates = Estimates(tracker.store, clock=clock)
    job = tracker.get_job(job_id)
    assert job is not None
    out = estimates.job_out(job, ALICE)
    assert out.percentage == 40
    assert out.time_progress is not None
    assert abs(out.time_progress - (10 + 30 * 800 / 60) / 840 * 100) <= 3  # 49%
    other = make_job(document_type="fresh")
    tracker.update_progress(other, 40, None, "", "alice")
    fresh = tracker.get_job(other)
    assert fresh is not None
    assert estimates.job_out(fresh, ALICE).time_progress is None
    tracker.mark_failed(job_id, "stopped", "alice")
    failed = tracker.get_job(job_id)
    assert failed is not None
    assert estimates.job_out(failed, ALICE).time_progress is None
