"""Jobs at risk: a deadline the predicted finish passes, a kind's limit, and a job running
longer than its kind usually takes; and the monitor's marks, given once until they change."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import timedelta

import pytest

from morag_progress import JobStatus, JobTracker
from morag_progress.deadlines import LIKELY, Risk, assess, chance_late, deadline_of
from morag_progress.eta import Eta, History
from morag_progress.models import Job
from morag_progress.monitor import Monitor
from tests.conftest import Clock


def _running(tracker: JobTracker, make_job: Callable[..., str], clock: Clock, **kw: object) -> Job:
    """A job 30% done after 300 s at a steady 0.1%/s: about 700 s left."""
    job_id = make_job(**kw)
    for pct in range(1, 31):
        clock.advance(10)
        tracker.update_progress(job_id, pct, None, f"{pct}%", "alice")
    job = tracker.get_job(job_id)
    assert job is not None
    return job


def _history(seconds: float, n: int = 20, spread: float = 0.05) -> History:
    history = History()
    for i in range(n):
        history = history.learn(seconds * (1 + spread * (i % 3 - 1)))
    return history


def test_the_chance_of_missing_is_read_from_the_predicted_range() -> None:
    """An ETA is a log-normal: its median has an even chance, its p90 a 10% one; a range of
    nothing is certain either way; past the deadline is certain."""
    eta = Eta(seconds=100, low=50, high=200, basis="live", rate=None)
    assert chance_late(eta, 100) == pytest.approx(0.5)
    assert chance_late(eta, 200) == pytest.approx(0.1, abs=1e-4)
    assert chance_late(eta, 50) == pytest.approx(0.9, abs=1e-4)
    assert chance_late(eta, 0) == 1.0
    assert chance_late(eta, -5) == 1.0
    point = Eta(seconds=100, low=100, high=100, basis="live", rate=None)
    assert (chance_late(point, 99), chance_late(point, 100)) == (1.0, 0.0)


def test_a_deadline_a_miss_of_is_likely_is_at_risk_before_it_is_missed(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock
) -> None:
    """At risk once the chance of missing the deadline reaches ``likely`` (0.99 unless told):
    a deadline at a third of the expected time left is; one at its median is an even chance,
    at risk only for a caller who warns at 50%; one past the p90 is not."""
    job = _running(tracker, make_job, clock)
    eta = job.estimate(clock())
    assert eta is not None
    assert 500 < eta.seconds < 1000

    def due_in(seconds: float) -> Job:
        return dataclasses.replace(job, deadline=clock() + timedelta(seconds=seconds))

    verdict = assess(due_in(eta.seconds / 3), clock(), None)
    assert verdict is not None
    assert verdict.risk is Risk.DEADLINE
    chance = chance_late(eta, eta.seconds / 3)
    assert chance >= LIKELY
    end = clock() + timedelta(seconds=eta.seconds)
    assert verdict.message == (
        f"Likely to miss its deadline {job_deadline(due_in(eta.seconds / 3))}: a "
        f"{chance:.0%} chance; expected to end {end:%Y-%m-%d %H:%M} UTC"
    )
    assert assess(due_in(eta.seconds * 0.99), clock(), None) is None
    assert assess(due_in(eta.seconds * 0.99), clock(), None, likely=0.5) is not None
    assert assess(due_in(eta.high + 60), clock(), None, likely=0.1) is None


def test_a_job_marked_at_risk_stays_so_until_the_chance_falls_well_below_the_line(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock
) -> None:
    """Once marked, a job is cleared only below half of ``likely``: an estimate that wavers
    around the line does not warn, clear and warn again."""
    job = _running(tracker, make_job, clock)
    eta = job.estimate(clock())
    assert eta is not None
    seconds = eta.seconds * 0.99  # a 50-50 chance, give or take
    chance = chance_late(eta, seconds)
    assert 0.3 < chance < 0.6
    due = dataclasses.replace(job, deadline=clock() + timedelta(seconds=seconds))
    assert assess(due, clock(), None, likely=0.7) is None  # not marked: the line is 0.7
    marked = dataclasses.replace(due, at_risk="deadline")
    assert assess(marked, clock(), None, likely=0.7) is not None  # marked: kept above 0.35
    assert assess(marked, clock(), None, likely=2 * chance + 0.02) is None  # well below: cleared
    long_marked = dataclasses.replace(due, at_risk="long")  # another mark: the full line
    assert assess(long_marked, clock(), None, likely=0.7) is None


def job_deadline(job: Job) -> str:
    assert job.deadline is not None
    return f"{job.deadline:%Y-%m-%d %H:%M} UTC"


def test_past_its_deadline_is_at_risk_even_without_an_estimate(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock
) -> None:
    made = tracker.get_job(make_job())
    assert made is not None
    job = dataclasses.replace(
        made, status=JobStatus.STALLED, deadline=clock() - timedelta(seconds=1)
    )
    verdict = assess(job, clock(), None)
    assert verdict is not None
    assert verdict.risk is Risk.DEADLINE
    assert verdict.message == f"Past its deadline {job.deadline:%Y-%m-%d %H:%M} UTC"
    assert (
        assess(dataclasses.replace(job, deadline=clock() + timedelta(hours=1)), clock(), None)
        is None
    )


def test_a_kinds_limit_counts_from_the_start_and_the_jobs_own_wins(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock
) -> None:
    job = _running(tracker, make_job, clock)
    assert job.start_date is not None
    assert deadline_of(job, {}) is None
    assert deadline_of(job, {"audio": 600}) == job.start_date + timedelta(seconds=600)
    assert deadline_of(job, {"video": 600}) is None
    own = dataclasses.replace(job, deadline=clock())
    assert deadline_of(own, {"audio": 600}) == clock()
    waiting = dataclasses.replace(job, start_date=None)
    assert deadline_of(waiting, {"audio": 60}) == job.created_at + timedelta(seconds=60)
    verdict = assess(job, clock(), None, {"audio": 400})  # ~700 s to go, 110 s left
    assert verdict is not None
    assert verdict.risk is Risk.DEADLINE


def test_longer_than_the_kinds_p95_without_a_deadline(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock
) -> None:
    """Jobs of its kind took about 200 s: at 300 s it runs longer than usual; a kind that
    takes 2,000 s, or one with too few finished jobs, says nothing."""
    job = _running(tracker, make_job, clock)
    verdict = assess(job, clock(), _history(200))
    assert verdict is not None
    assert verdict.risk is Risk.LONG
    assert verdict.message == (
        "Running longer than usual: 4:50 so far, where audio jobs take up to 4:08 (p95)"
    )
    assert assess(job, clock(), _history(2000)) is None
    assert assess(job, clock(), _history(200, n=2)) is None
    assert assess(job, clock(), None) is None


def test_the_monitor_marks_once_and_clears_when_the_job_catches_up(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock
) -> None:
    """A job whose p90 finish passes its deadline is marked at risk once (a feed row of action
    at_risk, its summary saying why); it stays marked without a new row while it stays late;
    once it is on time again the mark goes, without a row; an ended job is never marked."""
    made = clock()
    job = _running(tracker, make_job, clock, deadline=made + timedelta(seconds=500))
    monitor = Monitor(tracker, stall_timeout=None, straggler_share=None, clock=clock)
    store = tracker.store
    monitor.sweep()
    marked = tracker.get_job(job.id)
    assert marked is not None
    assert marked.at_risk == "deadline"
    assert marked.summary.startswith("Likely to miss its deadline")  # type: ignore[union-attr]
    rows = tracker.history(job.id)
    assert (rows[-1].action, rows[-1].actor) == ("at_risk", "server")
    assert store.count_at_risk() == {"deadline": 1}
    clock.advance(5)
    monitor.sweep()
    assert len(tracker.history(job.id)) == len(rows)  # once, while it stays so
    for pct in range(31, 96, 5):  # it speeds up: 5%/s
        clock.advance(1)
        tracker.update_progress(job.id, pct, None, f"{pct}%", "alice")
    monitor.sweep()
    assert tracker.get_job(job.id).at_risk is None  # type: ignore[union-attr]
    assert len(tracker.history(job.id)) == len(rows) + 13  # its reports, no row of ours
    assert store.count_at_risk() == {}
    tracker.mark_completed(job.id, "done", "alice")
    clock.advance(10_000)
    monitor.sweep()
    assert tracker.get_job(job.id).at_risk is None  # type: ignore[union-attr]


def test_the_monitor_warns_of_a_job_running_longer_than_usual(
    tracker: JobTracker, make_job: Callable[..., str], clock: Clock
) -> None:
    """Four finished jobs of a kind took 100 s each: one running 300 s is marked ``long``,
    unless the server is told not to (``warn_long``); a kind's limit makes it a deadline."""
    for _ in range(4):
        done = make_job(document_type="quick")
        tracker.update_progress(done, 50, None, "half", "alice")
        clock.advance(100)
        tracker.mark_completed(done, "done", "alice")
    slow = _running(tracker, make_job, clock, document_type="quick")
    quiet = Monitor(tracker, stall_timeout=None, straggler_share=None, warn_long=False, clock=clock)
    quiet.sweep()
    assert tracker.get_job(slow.id).at_risk is None  # type: ignore[union-attr]
    Monitor(tracker, stall_timeout=None, straggler_share=None, clock=clock).sweep()
    job = tracker.get_job(slow.id)
    assert job is not None
    assert job.at_risk == "long"
    assert job.summary is not None
    assert job.summary.startswith("Running longer than usual: 4:50 so far, where quick jobs")
    limited = Monitor(
        tracker, stall_timeout=None, straggler_share=None, deadlines={"quick": 200}, clock=clock
    )
    limited.sweep()
    job = tracker.get_job(slow.id)
    assert job is not None
    assert job.at_risk == "deadline"  # the state changed: a new warning
    assert job.summary.startswith("Past its deadline")  # type: ignore[union-attr]
    assert [e.action for e in tracker.history(slow.id)][-2:] == ["at_risk", "at_risk"]
