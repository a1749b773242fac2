"""The estimator (``eta.py``): windows of time make rates, silence grows an ETA, history is
learned in O(1) and blended in, ranges hold the estimate, start forecasts fill free workers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from morag_progress.eta import (
    KNOTS,
    History,
    Pace,
    QueuedJob,
    RunningJob,
    estimate,
    forecast_starts,
    parent_eta,
)


def paced(reports: list[tuple[float, float]], attempt: int = 1) -> Pace:
    pace = Pace.of((t, pct, attempt) for t, pct in reports)
    assert pace is not None
    return pace


def test_reports_milliseconds_apart_make_no_rate() -> None:
    """A burst of reports within a few milliseconds closes no window: no rate, no ETA."""
    pace = paced([(0.0, 10), (0.013, 11), (0.020, 12)])
    assert pace.rate is None
    assert estimate(now=0.02, percentage=12, pace=pace) is None


def test_a_steady_pace_gives_the_linear_eta() -> None:
    """1 %/s, reported every second: 50 s left at 50%."""
    pace = paced([(float(t), t) for t in range(51)])
    eta = estimate(now=50.0, percentage=50, pace=pace)
    assert eta is not None
    assert eta.seconds == pytest.approx(50, rel=0.02)
    assert eta.basis == "live"
    assert eta.low < eta.seconds < eta.high


def test_silence_grows_the_eta() -> None:
    """A job silent after a steady start: its ETA at 1, 60 and 600 s of silence grows."""
    pace = paced([(float(t), t) for t in range(41)])
    etas = [estimate(now=40 + idle, percentage=40, pace=pace) for idle in (1, 60, 600)]
    seconds = [eta.seconds for eta in etas if eta is not None]
    assert len(seconds) == 3
    assert seconds[0] < seconds[1] < seconds[2]


def test_a_restart_begins_a_new_run_keeping_the_pace() -> None:
    """Progress going back (or a new attempt) starts measuring again; the rate stays a prior."""
    pace = paced([(float(t), t) for t in range(31)])
    again = pace.observe(40.0, 0, 1)
    assert (again.start_s, again.start_pct, again.rate) == (40.0, 0, pace.rate)
    assert pace.observe(41.0, 31, 2).start_s == 41.0  # a new attempt


def test_history_learns_in_constant_space_and_predicts() -> None:
    """Finished runs of 100 s (shape: linear) teach the kind; a new run at 25% after 25 s is
    expected to take 75 s more, from history alone before its pace says anything."""
    history = History()
    for i in range(30):
        seconds = 100.0 * (1 + 0.01 * (i % 3))
        pace = paced([(seconds * p / 100, p) for p in range(0, 101, 5)])
        history = history.learn(seconds, pace=pace, ended_s=seconds)
    assert history.count == 30
    assert len(history.shape) == len(KNOTS)
    predicted = history.predict()
    assert predicted is not None
    assert math.exp(predicted[0]) == pytest.approx(101, rel=0.02)
    fresh = Pace.begin(0.0, 0, 1)
    fresh = fresh.observe(25.0, 25, 1)
    eta = estimate(now=25.0, percentage=25, pace=fresh, history=history)
    assert eta is not None
    assert eta.basis == "blend"
    assert eta.seconds == pytest.approx(75, rel=0.1)
    before = estimate(now=0.0, percentage=0, pace=Pace.begin(0.0, 0, 1), history=history)
    assert before is not None
    assert before.basis == "history"
    assert before.seconds == pytest.approx(101, rel=0.05)


def test_history_needs_a_few_jobs_and_survives_json() -> None:
    """Two jobs are not enough to predict; a history written as JSON reads back the same."""
    history = History().learn(10).learn(12)
    assert history.predict() is None
    history = history.learn(11)
    assert history.predict() is not None
    assert History.from_json(history.to_json()) == history
    assert History.from_json({"nonsense": 1}) == History()
    assert History().learn(-5) == History()


def test_history_scales_by_size() -> None:
    """Jobs that gave a total teach a per-item duration: a job of 10 items is expected to take
    ten times one of 1 item."""
    history = History()
    for total in (1, 2, 4, 8, 3, 5):
        history = history.learn(2.0 * total, total=total)
    small, large = history.predict(1), history.predict(10)
    assert small is not None
    assert large is not None
    assert math.exp(large[0]) / math.exp(small[0]) == pytest.approx(10)


def test_an_outlier_moves_the_history_a_little() -> None:
    """A run a thousand times longer than the rest moves the mean by a bounded amount."""
    history = History()
    for _ in range(20):
        history = history.learn(100)
    history = history.learn(100_000)
    predicted = history.predict()
    assert predicted is not None
    assert math.exp(predicted[0]) < 150


def test_parent_eta_adds_running_childrens_rates() -> None:
    """Two children of weight 1 at 50% and 0%, the first running at 1 %/s: 150 left / 1."""
    eta = parent_eta(2, 50, [(1, 1.0)])
    assert eta is not None
    assert eta.seconds == pytest.approx(150)
    assert parent_eta(2, 50, []) is None


def test_start_forecasts_fill_the_earliest_free_worker() -> None:
    """Two workers, busy for 10 and 30 s; three queued jobs of 20 s start at 10, 30 and 30."""
    queue = [QueuedJob("a", 20), QueuedJob("b", 20), QueuedJob("c", 20)]
    running = [RunningJob("w1", 10), RunningJob("w2", 30)]
    assert forecast_starts(queue, running, 2, 100.0) == {"a": 110, "b": 130, "c": 130}
    assert forecast_starts(queue, running, 0, 100.0) == {}
    assert forecast_starts(queue, [], 1, 0.0) == {"a": 0, "b": 20, "c": 40}


reports = st.lists(
    st.tuples(st.floats(0.001, 100, allow_nan=False), st.integers(0, 100)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(reports, st.floats(0, 10_000, allow_nan=False), st.integers(1, 3))
def test_an_estimate_is_positive_and_inside_its_range(
    steps: list[tuple[float, int]], idle: float, attempt: int
) -> None:
    """Whatever the reports (any gaps, progress back and forth), an ETA is finite, positive,
    and between its p10 and p90."""
    t = 0.0
    pace = Pace.begin(0.0, steps[0][1], attempt)
    for gap, pct in steps:
        t += gap
        pace = pace.observe(t, pct, attempt)
        assert Pace.from_json(pace.to_json()) == pace
    eta = estimate(now=t + idle, percentage=steps[-1][1], pace=pace)
    if eta is not None:
        assert math.isfinite(eta.seconds)
        assert 0 < eta.low <= eta.seconds <= eta.high


def _linear_history(seconds: float = 100.0, runs: int = 10) -> History:
    history = History()
    for _ in range(runs):
        pace = paced([(seconds * p / 100, p) for p in range(0, 101, 5)])
        history = history.learn(seconds, pace=pace, ended_s=seconds)
    return history


def test_below_the_first_knot_the_kinds_duration_counts_not_the_shape() -> None:
    """A run at 0-4% has no learned knot below it: its ETA is the kind's duration less the
    time run, not a knot's ratio times a few seconds."""
    history = _linear_history()
    for now, pct in ((2.0, 0), (3.0, 1), (4.0, 4)):
        eta = estimate(now=now, percentage=pct, pace=Pace.begin(0.0, 0, 1), history=history)
        assert eta is not None
        assert eta.seconds == pytest.approx(100 - now, rel=0.05)


def test_a_reporter_clock_behind_ours_is_not_idleness() -> None:
    """A reporter whose clock is 300 s behind: the reader's now is shifted by the skew, so a
    steady 1 %/s job at 50% has about 50 s left, not thousands."""
    skew = 300.0
    pace = Pace.begin(0.0, 0, 1, skew=skew)
    for t in range(1, 51):
        pace = pace.observe(float(t), t, 1, received=t + skew)
    eta = estimate(now=50 + skew, percentage=50, pace=pace)
    assert eta is not None
    assert eta.seconds == pytest.approx(50, rel=0.05)


def test_a_reporter_clock_jump_begins_a_new_run() -> None:
    """Stamps from 1970, then the right time: the jump begins a new run, not one window of
    fifty years."""
    pace = Pace.begin(10.0, 10, 1, skew=1.7e9)
    pace = pace.observe(1.7e9 + 20, 20, 1, received=1.7e9 + 20)
    assert (pace.start_s, pace.start_pct, pace.rate) == (1.7e9 + 20, 20, None)


def test_an_all_but_stopped_job_gets_a_bounded_eta() -> None:
    """A job that moved 1% in a year: the ETA is finite and at most ten years."""
    pace = paced([(0.0, 0), (3.15e7, 1)])
    eta = estimate(now=3.15e9, percentage=1, pace=pace)
    assert eta is not None
    assert math.isfinite(eta.high)
    assert eta.seconds <= eta.high <= 10 * 365 * 86400


def test_a_history_follows_drift_after_identical_jobs() -> None:
    """Five identical 10 s jobs, then 300 of 100 s: the expected duration moves to 100 s."""
    history = History()
    for seconds in [10.0] * 5 + [100.0] * 300:
        history = history.learn(seconds)
    predicted = history.predict()
    assert predicted is not None
    assert math.exp(predicted[0]) == pytest.approx(100, rel=0.05)


def test_a_restarted_run_teaches_no_shape() -> None:
    """A run that began at 30% (after a restart) times its knots from there: it teaches the
    kind's duration, not its shape."""
    pace = paced([(0.0, 30), (10.0, 60), (20.0, 100)])
    history = History().learn(20, pace=pace, ended_s=20)
    assert all(count == 0 for count, _, _ in history.shape)
    assert history.count == 1
