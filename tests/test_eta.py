"""The estimator (``eta.py``): windows of time make rates, silence grows an ETA, history is
learned in O(1) and blended in, ranges hold the estimate, start forecasts fill free workers."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from morag_progress.eta import (
    KNOTS,
    Eta,
    History,
    Pace,
    QueuedJob,
    RunningJob,
    estimate,
    forecast_starts,
    parent_eta,
)
from morag_progress.eta import _knots_at_start as knots_at_start


@pytest.fixture(autouse=True)
def _knots_learned_afresh() -> None:
    """Each test computes the knots a run begins with itself, not from what an earlier test
    left in the cache (a mutation run would otherwise not see a changed ``_reached``)."""
    knots_at_start.cache_clear()


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


def test_a_resumed_run_goes_on_without_its_pause_or_its_lost_work() -> None:
    """A run at 1%/s from 10% (t=100) to 84% (t=174), paused at a checkpoint of 70%: the
    next report, from another attempt and another clock, continues the run as if the work had
    reached 70% at t=160 and gone on at once: 60 s of run before it, the knots past 70%
    forgotten (their work is done again), those up to it kept, the rate and spread kept."""
    pace = paced([(100.0 + t, 10 + t) for t in range(0, 75)])
    paused = pace.resume(70)
    assert paused.resumes_at == 70
    assert paused.observe(400.0, 30, 1).resumes_at is None  # whatever comes next goes on
    going = paused.observe(1000.0, 71, 2, received=1005.0)
    assert (going.attempt, going.start_pct, going.anchor_s, going.anchor_pct) == (2, 10, 1000.0, 71)
    assert 1000.0 - going.start_s == pytest.approx(60.0)
    assert (going.rate, going.spread, going.window_s, going.skew) == (
        pace.rate,
        pace.spread,
        pace.window_s,
        5.0,
    )
    before = dict(zip(KNOTS, pace.knots, strict=True))
    after = dict(zip(KNOTS, going.knots, strict=True))
    assert before[80] is not None
    assert (after[20], after[70], after[80]) == (before[20], before[70], None)
    eta = estimate(now=1005.0, percentage=71, pace=going)
    assert eta is not None
    assert eta.seconds == pytest.approx(29, rel=0.1)  # 29% at 1%/s: the pause not counted
    leap = paused.observe(1000.0, 80, 2)  # the first report is past a knot: reached now
    assert dict(zip(KNOTS, leap.knots, strict=True))[80] == pytest.approx(60.0)


def test_a_knot_at_the_checkpoint_keeps_the_time_it_was_reached() -> None:
    """A run fast to 50% and slow after: the knot of the checkpoint's own percentage keeps
    when it was really reached, not the even share of time the resume gives the checkpoint."""
    reports = [(float(t), 10.0 + t) for t in range(0, 41)]
    reports += [(40.0 + t, 50.0 + t / 2) for t in range(1, 69)]
    pace = paced([(t, math.floor(pct)) for t, pct in reports])
    going = pace.resume(70).observe(1000.0, 71, 2)
    reached = dict(zip(KNOTS, pace.knots, strict=True))[70]
    assert reached == pytest.approx(80.0, abs=2.0)
    assert dict(zip(KNOTS, going.knots, strict=True))[70] == reached
    assert 1000.0 - going.start_s != pytest.approx(reached, abs=2.0)  # the even share differs


def test_a_resume_outside_what_the_run_did_is_held_to_it() -> None:
    """A checkpoint above the last anchor (saved between reports) or at or below the run's
    start is taken as the nearest of the two: the run's time never grows or goes negative; a
    run that made no progress, or half a point, keeps the time it took for it."""
    pace = paced([(50.0 + t, t) for t in range(0, 41)])
    ahead = pace.resume(90).observe(500.0, 45, 2)
    assert 500.0 - ahead.start_s == pytest.approx(pace.anchor_s - pace.start_s)
    for low in (-5, 0):
        assert pace.resume(low).observe(500.0, 1, 2).start_s == 500.0
    fresh = Pace.begin(10.0, 30, 1).resume(30).observe(20.0, 31, 2)  # nothing done yet
    assert (fresh.start_s, fresh.start_pct, fresh.anchor_pct) == (20.0, 30, 31)
    half = Pace.begin(0.0, 30, 1).observe(2.0, 30.5, 1)
    assert half.anchor_pct == 30.5
    assert half.resume(30.5).observe(100.0, 31, 2).start_s == pytest.approx(98.0)
    old = Pace(1, 0.0, 0, 40.0, 40, 1.0)  # a pace kept before knots were
    assert len(old.resume(20).observe(100.0, 50, 2).knots) == len(KNOTS)


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


# -- each rule's numbers exactly (closing mutation-testing holes) --------------------------

Z90 = 1.2815515655446004
"""The standard normal's 90th percentile: p10..p90 of a log-normal is exp(mu -/+ Z90 sigma)."""
LIVE_SIGMA = 0.25
PRIOR = 0.35
SMOOTHING = 0.7
STEADY = 0.1
TIGHT = 1e-9
NONE_KNOTS: tuple[float | None, ...] = (None,) * len(KNOTS)


def _knots(elapsed: float, reached: int) -> tuple[float | None, ...]:
    """The first ``reached`` knots at ``elapsed``, the rest not reached."""
    return (elapsed,) * reached + (None,) * (len(KNOTS) - reached)


def _steady(recent: float, average: float) -> float:
    """The live rate from a recent rate and the run's average: geometric blend, the average
    weighted by how close (in log, a Gaussian of width ``STEADY``) the two are."""
    apart = math.log(recent / average)
    weight = math.exp(-apart * apart / (2 * STEADY * STEADY))
    return math.exp(weight * math.log(average) + (1 - weight) * math.log(recent))


def _range(seconds: float, sigma: float) -> tuple[float, float, float]:
    """(estimate, p10, p90) of a log-normal with median ``seconds`` and log-spread ``sigma``."""
    return seconds, seconds * math.exp(-Z90 * sigma), seconds * math.exp(Z90 * sigma)


def _sigma(values: list[float]) -> float:
    """A kind's log-spread: the sample variance pulled toward the prior's by n / (n + 3)."""
    n = len(values)
    weight = n / (n + 3)
    return math.sqrt(weight * statistics.variance(values) + (1 - weight) * PRIOR**2)


def _assert_eta(
    got: Eta | None, seconds: float, sigma: float, basis: str, rate: float | None
) -> None:
    """``got`` is the ETA of median ``seconds``, log-spread ``sigma``, ``basis`` and ``rate``."""
    assert got is not None
    want = _range(seconds, sigma)
    assert (got.seconds, got.low, got.high) == pytest.approx(want, rel=TIGHT)
    assert got.basis == basis
    if rate is None:
        assert got.rate is None
    else:
        assert got.rate == pytest.approx(rate, rel=TIGHT)


# -- Pace: beginning, windows, knots, restarts -------------------------------------------------


def test_a_run_begins_with_no_spread_no_window_and_no_skew() -> None:
    """Pace.begin sets both anchors at the first report, zero spread, window and skew, and the
    knots at or below its percentage as reached at once."""
    pace = Pace.begin(1000.0, 12.0, 2)
    assert pace == Pace(2, 1000.0, 12.0, 1000.0, 12.0, None, 0.0, _knots(0.0, 2), 0.0, 0.0)
    assert Pace.begin(5.0, 0.0, 3, rate=2.5, skew=-4.0).rate == 2.5
    assert Pace.begin(5.0, 0.0, 3, rate=2.5, skew=-4.0).skew == -4.0


@pytest.mark.parametrize(
    ("t", "span"),
    [(1000.0, 1.0), (1010.0, 1.0), (1020.0, 1.0), (1040.0, 2.0), (2200.0, 60.0), (5000.0, 60.0)],
)
def test_the_minimum_window_is_a_twentieth_of_the_run_between_1_and_60_s(
    t: float, span: float
) -> None:
    """A run that began at 1000 s: its windows last at least 5% of the time since, 1 to 60 s."""
    assert Pace.begin(1000.0, 0.0, 1).min_span(t) == pytest.approx(span, rel=TIGHT)


def test_a_window_closes_with_its_rate_span_knots_and_skew() -> None:
    """0% at 1000 s, 20% at 1010 s (received 7 s later): one window of 2 %/s lasting 10 s, the
    knots 5, 10 and 20 reached 10 s in, the skew 7 s."""
    pace = Pace.begin(1000.0, 0.0, 3, skew=7.0).observe(1010.0, 20.0, 3, received=1017.0)
    assert pace == Pace(3, 1000.0, 0.0, 1010.0, 20.0, 2.0, 0.0, _knots(10.0, 3), 10.0, 7.0)


def test_windows_smooth_the_rate_and_spread_in_logs() -> None:
    """Windows of 2, 0.5 and 1 %/s: each moves the log-rate 70% of the way to the window and the
    spread is 0.3 of the old plus 0.7 of the squared log deviation."""
    pace = Pace.begin(1000.0, 0.0, 3, skew=7.0)
    pace = pace.observe(1010.0, 20.0, 3, received=1017.0)
    pace = pace.observe(1030.0, 30.0, 3, received=1037.0)
    rate2 = 2.0 * 0.25**SMOOTHING
    spread2 = SMOOTHING * math.log(0.25) ** 2
    assert pace.rate == pytest.approx(rate2, rel=TIGHT)
    assert pace.spread == pytest.approx(spread2, rel=TIGHT)
    assert (pace.anchor_s, pace.anchor_pct, pace.window_s, pace.skew) == (1030.0, 30.0, 20.0, 7.0)
    pace = pace.observe(1040.0, 40.0, 3, received=1047.0)
    deviation = math.log(1.0 / rate2)
    assert pace.rate == pytest.approx(rate2 * math.exp(SMOOTHING * deviation), rel=TIGHT)
    want = (1 - SMOOTHING) * spread2 + SMOOTHING * deviation**2
    assert pace.spread == pytest.approx(want, rel=TIGHT)
    assert pace.window_s == 10.0
    assert pace.start_s == 1000.0


def test_a_window_closes_at_exactly_the_minimum_span() -> None:
    """A report exactly 1 s after the start (the minimum window) closes the window."""
    pace = Pace.begin(1000.0, 0.0, 1).observe(1001.0, 2.5, 1)
    assert pace.rate == pytest.approx(2.5, rel=TIGHT)
    assert (pace.anchor_s, pace.anchor_pct, pace.window_s) == (1001.0, 2.5, 1.0)


def test_a_short_window_records_a_knot_but_no_rate() -> None:
    """6% half a second in: too short for a rate, but knot 5 is reached at 0.5 s."""
    pace = Pace.begin(1000.0, 0.0, 1)
    after = pace.observe(1000.5, 6.0, 1)
    assert after == Pace(1, 1000.0, 0.0, 1000.0, 0.0, None, 0.0, _knots(0.5, 1), 0.0, 0.0)
    assert after.observe(1000.7, 7.0, 1) == after  # no new knot, no window: nothing changes


def test_knots_are_timed_from_the_start_of_the_run() -> None:
    """A run from 1000 s reaching 12% at 1003 s and 55% at 1005 s: knots 5-10 at 3 s, 20-50 at
    5 s, the rest not yet."""
    pace = Pace.begin(1000.0, 0.0, 1).observe(1003.0, 12.0, 1).observe(1005.0, 55.0, 1)
    assert pace.knots == (3.0, 3.0, 5.0, 5.0, 5.0, 5.0, None, None, None, None, None)


def test_a_report_stamped_at_the_anchor_still_records_its_knots() -> None:
    """A report at the very time the window opened (not before it) records the knots it
    reaches, after 0 s."""
    pace = Pace.begin(1000.0, 0.0, 1).observe(1000.0, 12.0, 1)
    assert pace.knots == _knots(0.0, 2)
    assert pace.anchor_s == 1000.0
    assert pace.observe(999.0, 50.0, 1) == pace  # stamped before the window: nothing


def test_a_repeated_percentage_does_not_restart_the_run() -> None:
    """The same percentage reported again later is no restart: the run keeps its start."""
    pace = Pace.begin(1000.0, 0.0, 1).observe(1010.0, 20.0, 1)
    again = pace.observe(1020.0, 20.0, 1)
    assert again == pace
    assert again.start_s == 1000.0


def test_a_restart_keeps_attempt_skew_and_rate() -> None:
    """Progress going back begins a new run with the same attempt and skew and the old rate; a
    new attempt begins one with that attempt."""
    pace = Pace.begin(1000.0, 0.0, 3, skew=7.0).observe(1010.0, 20.0, 3, received=1017.0)
    back = pace.observe(1020.0, 10.0, 3)
    assert back == Pace(3, 1020.0, 10.0, 1020.0, 10.0, 2.0, 0.0, _knots(0.0, 2), 0.0, 7.0)
    new = pace.observe(1020.0, 25.0, 4)
    assert (new.attempt, new.start_s, new.start_pct, new.rate, new.skew) == (
        4,
        1020.0,
        25.0,
        2.0,
        7.0,
    )


def test_a_clock_moving_by_exactly_a_minute_is_no_jump() -> None:
    """A skew change of exactly 60 s keeps the run (only over a minute begins a new one)."""
    pace = Pace.begin(1000.0, 0.0, 1, skew=7.0)
    same = pace.observe(1010.0, 20.0, 1, received=1010.0 + 67.0)
    assert (same.start_s, same.rate, same.skew) == (1000.0, 2.0, 67.0)
    jumped = pace.observe(1010.0, 20.0, 1, received=1010.0 + 67.5)
    assert (jumped.start_s, jumped.start_pct, jumped.rate, jumped.skew) == (
        1010.0,
        20.0,
        None,
        67.5,
    )


def test_pace_json_round_trips_and_rejects() -> None:
    """A pace reads back equal from its JSON (knots a list); a missing knots key reads as none;
    nothing, an empty object or unknown fields read as no pace."""
    pace = Pace.begin(1000.0, 0.0, 3, skew=7.0).observe(1010.0, 20.0, 3, received=1017.0)
    data = pace.to_json()
    assert data["knots"] == list(_knots(10.0, 3))
    assert Pace.from_json(data) == pace
    bare = {"attempt": 2, "start_s": 5.0, "start_pct": 1.0, "anchor_s": 6.0, "anchor_pct": 2.0}
    assert Pace.from_json(bare) == Pace(2, 5.0, 1.0, 6.0, 2.0)
    assert Pace.from_json(None) is None
    assert Pace.from_json({}) is None
    assert Pace.from_json({**bare, "bogus": 1}) is None
    assert Pace.from_json({"attempt": 2}) is None


# -- live_rate --------------------------------------------------------------------------------


def test_an_open_window_of_exactly_the_minimum_span_makes_a_rate() -> None:
    """No closed window; 3% after exactly 1 s (the minimum span) is 3 %/s, after 0.5 s none."""
    pace = Pace.begin(1000.0, 0.0, 1)
    assert pace.live_rate(1001.0, 3.0) == pytest.approx(3.0, rel=TIGHT)
    assert pace.live_rate(1000.5, 3.0) is None


def test_an_open_window_rate_is_progress_over_its_time() -> None:
    """No closed window; 6% after 4 s is 1.5 %/s."""
    rate = Pace.begin(1000.0, 0.0, 1).live_rate(1004.0, 6.0)
    assert rate == pytest.approx(1.5, rel=TIGHT)


def test_an_open_window_without_progress_makes_no_rate() -> None:
    """No closed window and no progress in 5 s: no rate (not zero, not a guess)."""
    assert Pace.begin(1000.0, 10.0, 1).live_rate(1005.0, 10.0) is None
    assert estimate(now=1005.0, percentage=10.0, pace=Pace.begin(1000.0, 10.0, 1)) is None


def test_a_prior_rate_stands_at_the_start_of_a_run() -> None:
    """A run just begun with a prior rate of 2 %/s: that rate, with no time run yet."""
    pace = Pace.begin(1000.0, 10.0, 1, rate=2.0)
    assert pace.live_rate(1000.0, 15.0) == 2.0


def test_a_prior_rate_blends_with_a_second_s_average() -> None:
    """Prior 2 %/s, 2.2% done in the run's first second (average 2.2 %/s, within the grace):
    the steady blend of the two."""
    pace = Pace.begin(1000.0, 10.0, 1, rate=2.0)
    assert pace.live_rate(1001.0, 12.2) == pytest.approx(_steady(2.0, 2.2), rel=TIGHT)


def test_the_recent_rate_blends_with_the_runs_average() -> None:
    """A run from 20% at 1000 s with a prior of 2.4 %/s, one window of 2 %/s: its rate blends
    with the average (2 %/s) by how close they are."""
    pace = Pace.begin(1000.0, 20.0, 1, rate=2.4).observe(1010.0, 40.0, 1)
    recent = 2.4 * (2.0 / 2.4) ** SMOOTHING
    assert pace.rate == pytest.approx(recent, rel=TIGHT)
    assert pace.live_rate(1010.0, 40.0) == pytest.approx(_steady(recent, 2.0), rel=TIGHT)


def test_silence_past_the_grace_mixes_in_the_open_window() -> None:
    """2 %/s over a 10 s window, then 10% in 20 s: past the 10 s grace the open window's
    0.5 %/s takes half the weight (1.25 %/s), blended with the average of 1 %/s."""
    pace = Pace.begin(1000.0, 0.0, 1).observe(1010.0, 20.0, 1)
    assert pace.live_rate(1030.0, 30.0) == pytest.approx(_steady(1.25, 1.0), rel=TIGHT)
    # at exactly the grace the window's rate stands alone
    assert pace.live_rate(1020.0, 25.0) == pytest.approx(_steady(2.0, 1.25), rel=TIGHT)


# -- estimate: live ---------------------------------------------------------------------------


def test_a_live_estimate_and_its_range() -> None:
    """2 %/s at 20% (steady): 40 s left, log-spread 0.25 sqrt(0.8 / 0.2) = 0.5."""
    pace = Pace.begin(1000.0, 0.0, 1).observe(1010.0, 20.0, 1)
    eta = estimate(now=1010.0, percentage=20.0, pace=pace)
    _assert_eta(eta, 40.0, 0.5, "live", 2.0)


def test_the_windows_spread_widens_the_live_range() -> None:
    """Windows that varied (spread s): the live log-spread is sqrt(0.25^2 + s) sqrt(left/done)."""
    pace = Pace.begin(1000.0, 0.0, 3, skew=7.0)
    for t, pct in ((1010.0, 20.0), (1030.0, 30.0), (1040.0, 40.0)):
        pace = pace.observe(t, pct, 3, received=t + 7.0)
    assert pace.rate is not None
    rate = _steady(pace.rate, 1.0)
    sigma = math.sqrt(LIVE_SIGMA**2 + pace.spread) * math.sqrt(0.6 / 0.4)
    eta = estimate(now=1047.0, percentage=40.0, pace=pace)
    _assert_eta(eta, 60.0 / rate, sigma, "live", rate)


def test_a_live_estimate_below_one_percent() -> None:
    """0.5% in 10 s (0.05 %/s): 1990 s left, log-spread 0.25 sqrt(0.995 / 0.005)."""
    pace = Pace.begin(1000.0, 0.0, 1).observe(1010.0, 0.5, 1)
    eta = estimate(now=1010.0, percentage=0.5, pace=pace)
    _assert_eta(eta, 1990.0, 0.25 * math.sqrt(0.995 / 0.005), "live", 0.05)


def test_a_finished_job_has_no_estimate() -> None:
    """At 100% (or beyond) nothing is left to estimate; at 0% a rate alone gives none."""
    pace = Pace.begin(1000.0, 0.0, 1, rate=2.0)
    assert estimate(now=1000.0, percentage=100.0, pace=pace) is None
    assert estimate(now=1000.0, percentage=100.5, pace=pace) is None
    assert estimate(now=1000.0, percentage=0.0, pace=pace) is None


# -- History: the running statistics ----------------------------------------------------------


def test_three_jobs_predict_their_mean_with_a_pulled_spread() -> None:
    """Jobs of e^0, e^1 and e^2 s: log-mean 1, variance 1 weighed 3/6 against the prior's."""
    history = History()
    for x in (0.0, 1.0, 2.0):
        history = history.learn(math.exp(x))
    predicted = history.predict()
    assert predicted is not None
    assert predicted == pytest.approx((1.0, math.sqrt(0.5 * 1.0 + 0.5 * PRIOR**2)), rel=TIGHT)
    assert history.count == 3
    assert history.m2 == pytest.approx(2.0, rel=TIGHT)


def test_a_zero_or_infinite_duration_teaches_nothing() -> None:
    """A job of 0 s (or an infinite one) leaves the history as it was."""
    assert History().learn(0.0) == History()
    assert History().learn(math.inf) == History()


def test_per_item_durations_are_learned_from_totals() -> None:
    """Jobs of 20 s / 4, 30 s / 6 and 10 s / 2 items (5 s an item): a job of 8 items is
    expected to take 40 s; without a total (or a total of 0) the whole jobs' mean counts."""
    history = History().learn(6.0, total=3)
    assert history.item_mean == pytest.approx(math.log(2.0), rel=TIGHT)
    history = History()
    for seconds, total in ((20.0, 4), (30.0, 6), (10.0, 2)):
        history = history.learn(seconds, total=total)
    assert history.predict(8) == pytest.approx((math.log(40.0), math.sqrt(0.5) * PRIOR))
    whole = math.log(6000.0) / 3
    whole_sigma = _sigma([math.log(20.0), math.log(30.0), math.log(10.0)])
    assert history.predict() == pytest.approx((whole, whole_sigma), rel=TIGHT)
    assert history.predict(0) == pytest.approx((whole, whole_sigma), rel=TIGHT)
    eta = estimate(now=0.0, percentage=0.0, pace=None, history=history, total=8)
    _assert_eta(eta, 40.0, math.sqrt(0.5) * PRIOR, "history", None)


def test_the_sixth_job_is_clipped_to_three_sigma() -> None:
    """Five jobs of log-duration 0..4 (sigma sqrt(2.5)), then one far above and one far below:
    each counts as mean +/- 3 sigma."""
    base = History()
    for x in range(5):
        base = base.learn(math.exp(x))
    for far, clipped in ((100.0, 2 + 3 * math.sqrt(2.5)), (-100.0, 2 - 3 * math.sqrt(2.5))):
        history = base.learn(math.exp(far))
        values = [0.0, 1.0, 2.0, 3.0, 4.0, clipped]
        assert history.count == 6
        assert history.mean == pytest.approx(statistics.fmean(values), rel=TIGHT)
        assert history.m2 == pytest.approx(5 * statistics.variance(values), rel=TIGHT)


def test_the_clip_is_never_narrower_than_the_prior() -> None:
    """Five identical jobs of 100 s, then one e^5 times longer: it counts as 3 x 0.35 above."""
    history = History()
    for _ in range(5):
        history = history.learn(100.0)
    history = history.learn(100.0 * math.exp(5))
    assert history.mean == pytest.approx(math.log(100.0) + 3 * PRIOR / 6, rel=TIGHT)


def test_beyond_200_jobs_the_history_is_exponentially_weighted() -> None:
    """A history of 200 jobs (mean 4, variance 0.1) learning a job of log 4.5: the count stays
    200, the mean moves 1/200 of the way, the variance as an exponentially weighted one."""
    history = History(count=200, mean=4.0, m2=19.9).learn(math.exp(4.5))
    a = 1 / 200
    assert history.count == 200
    assert history.mean == pytest.approx(4.0 + a * 0.5, rel=TIGHT)
    variance = (1 - a) * (0.1 + a * 0.25)
    assert history.m2 == pytest.approx(variance * 199, rel=TIGHT)


def test_the_200th_job_is_still_counted() -> None:
    """199 jobs, then the 200th: counted (200), the plain mean."""
    history = History(count=199, mean=4.0, m2=0.0).learn(math.exp(4.2))
    assert history.count == 200
    assert history.mean == pytest.approx(4.0 + 0.2 / 200, rel=TIGHT)
    assert history.learn(math.exp(4.0)).count == 200


def test_history_json_round_trips_and_rejects() -> None:
    """A history with a shape reads back equal from JSON (shape as lists); a missing shape
    reads as none; nothing or unknown fields read as an empty history."""
    history = _shaped_history()
    data = history.to_json()
    as_json = {**data, "shape": [list(stats) for stats in data["shape"]]}
    assert History.from_json(as_json) == history
    assert History.from_json({"count": 3, "mean": 1.5, "m2": 0.5}) == History(3, 1.5, 0.5)
    assert History.from_json(None) == History()
    assert History.from_json({"count": 3, "bogus": 1}) == History()


# -- History: the shape of progress -----------------------------------------------------------

POWERS = (1.5, 2.0, 2.5)
"""Three finished runs whose time at x (the done share) is seconds x^power: slowing runs."""
DURATIONS = (100.0, 200.0, 50.0)
START = 1000.0


def _run(seconds: float, power: float, upto: int = 100) -> Pace:
    """A run from START reporting each knot up to ``upto`` at ``seconds (p/100)^power``, then
    100% at ``seconds``."""
    pace = Pace.begin(START, 0.0, 1)
    for p in [k for k in KNOTS if k <= upto]:
        pace = pace.observe(START + seconds * (p / 100) ** power, float(p), 1)
    return pace.observe(START + seconds, 100.0, 1)


def _shaped_history(upto: int = 100) -> History:
    history = History()
    for seconds, power in zip(DURATIONS, POWERS, strict=True):
        history = history.learn(seconds, pace=_run(seconds, power, upto), ended_s=START + seconds)
    return history


def _ratios(p: float) -> list[float]:
    """ln(time left / time spent) at p% of each run."""
    x = p / 100
    return [math.log((1 - x**k) / x**k) for k in POWERS]


def _at(p: float) -> tuple[float, float]:
    """(mean, log-spread) the kind learned at knot p."""
    return statistics.fmean(_ratios(p)), _sigma(_ratios(p))


def test_the_shape_learned_at_each_knot() -> None:
    """Three slowing runs teach each knot the mean and spread of ln(left / spent) there."""
    history = _shaped_history()
    assert history.count == 3
    assert history.mean == pytest.approx(math.log(100.0), rel=TIGHT)
    for (count, mean, m2), p in zip(history.shape, KNOTS, strict=True):
        ratios = _ratios(p)
        assert count == 3
        assert mean == pytest.approx(statistics.fmean(ratios), rel=1e-7)
        assert m2 == pytest.approx(2 * statistics.variance(ratios), rel=1e-6)


def test_knots_reached_only_at_the_end_teach_nothing() -> None:
    """Runs that jump from 50% to 100% at their end teach knots 5-50, not 60-95 (no time was
    left there); a run ending before reaching a knot teaches nothing there."""
    history = _shaped_history(upto=50)
    counts = [count for count, _, _ in history.shape]
    assert counts == [3] * 6 + [0] * 5
    assert history.shape[6:] == ((0, 0.0, 0.0),) * 5
    pace = Pace.begin(START, 0.0, 1).observe(START + 10.0, 30.0, 1)
    unfinished = History().learn(40.0, pace=pace, ended_s=START + 40.0)
    assert unfinished.shape == ((1, math.log(3.0), 0.0),) * 4 + ((0, 0.0, 0.0),) * 7


def test_a_run_from_exactly_the_first_knot_teaches_no_shape() -> None:
    """A run that began at 5% (not below it) teaches the kind's duration, not its shape."""
    pace = Pace.begin(START, 5.0, 1).observe(START + 10.0, 50.0, 1)
    history = History().learn(40.0, pace=pace, ended_s=START + 40.0)
    assert history.shape == ((0, 0.0, 0.0),) * len(KNOTS)
    assert history.count == 1


def test_the_shape_is_learned_only_with_a_pace_and_an_end() -> None:
    """Without the run's pace, its end, or knots of the right length, no shape is learned."""
    pace = _run(100.0, 2.0)
    empty = ((0, 0.0, 0.0),) * len(KNOTS)
    assert History().learn(100.0, pace=pace).shape == empty
    assert History().learn(100.0, ended_s=START + 100.0).shape == empty
    odd = Pace(1, START, 0.0, START, 0.0, knots=(1.0, 2.0))
    assert History().learn(100.0, pace=odd, ended_s=START + 100.0).shape == empty


def test_the_shape_interpolates_between_knots() -> None:
    """At 35% after 35 s: ln 35 plus the midpoint of knots 30 and 40 (mean and spread)."""
    history = _shaped_history()
    (m30, s30), (m40, s40) = _at(30), _at(40)
    got = history.time_left(35.0, 35.0)
    assert got == pytest.approx((math.log(35.0) + (m30 + m40) / 2, (s30 + s40) / 2), rel=1e-7)
    got = history.time_left(47.5, 12.0)
    m50, s50 = _at(50)
    share = 0.75
    want = (math.log(12.0) + m40 + share * (m50 - m40), s40 + share * (s50 - s40))
    assert got == pytest.approx(want, rel=1e-7)


@pytest.mark.parametrize("p", [5, 30, 95])
def test_the_shape_at_a_knot_is_that_knots(p: int) -> None:
    """Exactly at a knot (the first, a middle one, the last): that knot's mean and spread."""
    history = _shaped_history()
    mean, sigma = _at(p)
    got = history.time_left(float(p), 20.0)
    assert got == pytest.approx((math.log(20.0) + mean, sigma), rel=1e-7)


def test_exactly_at_a_knot_later_knots_do_not_count() -> None:
    """Exactly at knot 30 only knot 30 counts: knot 40 holding an overflowed (infinite) mean, as
    a stored history may, does not spoil it."""
    stats = [(3, 0.5, 0.2)] * len(KNOTS)
    stats[KNOTS.index(40)] = (3, math.inf, 0.0)
    history = History(count=3, shape=tuple(stats))
    got = history.time_left(30.0, 10.0)
    sigma = math.sqrt(0.5 * 0.1 + 0.5 * PRIOR**2)
    assert got == pytest.approx((math.log(10.0) + 0.5, sigma), rel=TIGHT)


def test_past_the_last_learned_knot_that_knot_counts() -> None:
    """Runs learned up to 50%: at 70% after 0.5 s, knot 50's ratio applies."""
    history = _shaped_history(upto=50)
    mean, sigma = _at(50)
    got = history.time_left(70.0, 0.5)
    assert got == pytest.approx((math.log(0.5) + mean, sigma), rel=1e-7)
    mean, sigma = _at(95)
    full = _shaped_history().time_left(98.0, 30.0)
    assert full == pytest.approx((math.log(30.0) + mean, sigma), rel=1e-7)


def test_the_shape_says_nothing_too_early_or_without_runs() -> None:
    """Before any time is spent, before the first learned knot, or with fewer than three runs,
    the shape gives nothing."""
    history = _shaped_history()
    assert history.time_left(50.0, 0.0) is None
    assert history.time_left(50.0, -1.0) is None
    assert history.time_left(4.0, 10.0) is None
    assert History().time_left(50.0, 10.0) is None
    two = History().learn(100.0, pace=_run(100.0, 2.0), ended_s=START + 100.0)
    two = two.learn(50.0, pace=_run(50.0, 1.5), ended_s=START + 50.0)
    assert two.time_left(50.0, 10.0) is None


# -- estimate: history and blend --------------------------------------------------------------


def test_history_alone_before_any_pace() -> None:
    """No pace at all, at 0%: the kind's median duration (100 s) and its spread."""
    history = _shaped_history()
    sigma = _sigma([math.log(d) for d in DURATIONS])
    eta = estimate(now=5000.0, percentage=0.0, pace=None, history=history)
    _assert_eta(eta, 100.0, sigma, "history", None)


def test_history_alone_uses_the_learned_shape() -> None:
    """No rate yet, 35% after 12 s of a run from 0%: the shape's ratio times the 12 s spent."""
    history = _shaped_history()
    pace = Pace(1, START, 0.0, START + 12.0, 35.0, skew=3.0)
    got = history.time_left(35.0, 12.0)
    assert got is not None
    mean, sigma = got
    (m30, s30), (m40, s40) = _at(30), _at(40)
    assert (mean, sigma) == pytest.approx(
        (math.log(12.0) + (m30 + m40) / 2, (s30 + s40) / 2), rel=1e-7
    )
    eta = estimate(now=START + 15.0, percentage=35.0, pace=pace, history=history)
    _assert_eta(eta, math.exp(mean), sigma, "history", None)


def test_a_live_estimate_blends_with_the_shape_by_precision() -> None:
    """1 %/s to 30%, asked at 35% 35 s in: live ln 65 (spread 0.25 sqrt(0.65/0.35)) and the
    shape's estimate blend in logs, each weighted by its precision."""
    history = _shaped_history()
    pace = Pace.of((START + p, float(p), 1) for p in (0, 10, 20, 30))
    assert pace is not None
    a, sa = math.log(65.0), LIVE_SIGMA * math.sqrt(0.65 / 0.35)
    (m30, s30), (m40, s40) = _at(30), _at(40)
    b, sb = math.log(35.0) + (m30 + m40) / 2, (s30 + s40) / 2
    mu = (a / sa**2 + b / sb**2) / (1 / sa**2 + 1 / sb**2)
    sigma = (1 / sa**2 + 1 / sb**2) ** -0.5
    eta = estimate(now=START + 35.0, percentage=35.0, pace=pace, history=history)
    _assert_eta(eta, math.exp(mu), sigma, "blend", 1.0)


@pytest.mark.parametrize(("since", "left"), [(10.0, 90.0), (80.0, 70.0)])
def test_a_restarted_run_expects_the_kinds_duration_less_the_time_run(
    since: float, left: float
) -> None:
    """A run restarted at 30% (reporter's clock 7 s behind), no rate yet: the kind's 100 s less
    the time since, at least the unfinished 70% of it; not the shape."""
    history = _shaped_history()
    sigma = _sigma([math.log(d) for d in DURATIONS])
    pace = Pace.begin(START, 30.0, 2, skew=7.0)
    eta = estimate(now=START + 7.0 + since, percentage=30.0, pace=pace, history=history)
    _assert_eta(eta, left, sigma, "history", None)


def test_a_run_from_the_first_knot_does_not_use_the_shape() -> None:
    """A run that began at exactly 5%, 10 s in: the kind's duration (95% of 100 s left)."""
    history = _shaped_history()
    sigma = _sigma([math.log(d) for d in DURATIONS])
    pace = Pace.begin(START, 5.0, 1)
    eta = estimate(now=START + 10.0, percentage=5.0, pace=pace, history=history)
    _assert_eta(eta, 95.0, sigma, "history", None)


def test_a_kind_of_very_short_jobs_gives_a_small_positive_eta() -> None:
    """A kind of 0.5 s jobs, 10 s into a run at 50%: its unfinished half, 0.25 s; a kind whose
    duration rounds to 0 s gives 1 ms, not zero."""
    pace = Pace.begin(START, 50.0, 1)
    short = History(count=3, mean=math.log(0.5))
    eta = estimate(now=START + 10.0, percentage=50.0, pace=pace, history=short)
    _assert_eta(eta, 0.25, PRIOR / math.sqrt(2), "history", None)
    instant = History(count=3, mean=-1000.0)
    eta = estimate(now=START + 10.0, percentage=50.0, pace=pace, history=instant)
    _assert_eta(eta, 1e-3, PRIOR / math.sqrt(2), "history", None)


# -- parents ----------------------------------------------------------------------------------


def test_a_parents_eta_weighs_its_childrens_rates() -> None:
    """Weight 5 with 230 done; children of weight 2 at 0.5 %/s and 3 at 1.5 %/s (5.5 a second;
    stopped and negative rates left out): 270 / 5.5 s, rate 1.1 %/s, spread 0.25."""
    rates = [(2.0, 0.5), (3.0, 1.5), (1.0, 0.0), (4.0, -2.0)]
    eta = parent_eta(5.0, 230.0, rates)
    _assert_eta(eta, 270.0 / 5.5, LIVE_SIGMA, "live", 1.1)


def test_a_parents_eta_at_its_boundaries() -> None:
    """Weight 1 is a parent; weight 0 is none; nothing left (exactly) is none; half a percent
    left is 1/12 s at 6 %/s of weight."""
    eta = parent_eta(1.0, 40.0, [(1.0, 0.5)])
    _assert_eta(eta, 120.0, LIVE_SIGMA, "live", 0.5)
    assert parent_eta(0.0, -10.0, [(1.0, 1.0)]) is None
    assert parent_eta(3.0, 300.0, [(3.0, 2.0)]) is None
    eta = parent_eta(3.0, 299.5, [(3.0, 2.0)])
    _assert_eta(eta, 0.5 / 6.0, LIVE_SIGMA, "live", 2.0)
    assert parent_eta(3.0, 100.0, [(3.0, 0.0)]) is None


@settings(max_examples=200, deadline=None)
@given(
    st.floats(0.5, 50),
    st.floats(0, 0.99),
    st.floats(0, 0.99),
    st.lists(st.tuples(st.floats(0.1, 10), st.floats(0.01, 10)), min_size=1, max_size=5),
)
def test_a_parents_eta_is_its_work_left_over_its_rate(
    weight: float, first: float, second: float, rates: list[tuple[float, float]]
) -> None:
    """Any parent: seconds = work left / summed weighted rate, the range exp(-/+ Z90 0.25) of
    it, and less work left never takes longer."""
    less, more = sorted((first, second))
    total = sum(w * r for w, r in rates)
    etas = [parent_eta(weight, done * weight * 100, rates) for done in (less, more)]
    assert etas[0] is not None
    assert etas[1] is not None
    assert etas[0].seconds == pytest.approx((1 - less) * weight * 100 / total, rel=1e-9)
    assert etas[0].high / etas[0].seconds == pytest.approx(math.exp(Z90 * LIVE_SIGMA))
    assert etas[1].seconds <= etas[0].seconds


# -- start forecasts --------------------------------------------------------------------------


def test_start_forecasts_with_short_and_overdue_jobs() -> None:
    """A worker free in 0.5 s, one overdue (free now); queued jobs of 0.25, 3 and 2 s start at
    now, now + 0.25 and now + 0.5."""
    running = [RunningJob("w1", 0.5), RunningJob("w2", -4.0)]
    queue = [QueuedJob("a", 0.25), QueuedJob("b", 3.0), QueuedJob("c", 2.0)]
    assert forecast_starts(queue, running, 2, 100.0) == {"a": 100.0, "b": 100.25, "c": 100.5}


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-10, 100), max_size=5),
    st.lists(st.floats(-10, 100), max_size=8),
    st.integers(1, 4),
)
def test_start_forecasts_are_never_before_now_and_keep_queue_order(
    running: list[float], queued: list[float], workers: int
) -> None:
    """Every queued job starts at or after now, and no job starts before one ahead of it."""
    starts = forecast_starts(
        [QueuedJob(str(i), s) for i, s in enumerate(queued)],
        [RunningJob(f"w{i}", s) for i, s in enumerate(running)],
        workers,
        50.0,
    )
    times = [starts[str(i)] for i in range(len(queued))]
    assert all(t >= 50.0 for t in times)
    assert times == sorted(times)


# -- invariants -------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.floats(0.01, 30), st.integers(0, 8)), min_size=1, max_size=20),
    st.floats(0, 500),
    st.booleans(),
)
def test_an_estimate_with_history_is_positive_and_inside_its_range(
    steps: list[tuple[float, int]], idle: float, learned: bool
) -> None:
    """Any run in whole percents (with or without the kind's shape): a positive, finite ETA
    within its p10-p90."""
    history = _shaped_history() if learned else None
    t, pct = START, 0.0
    pace = Pace.begin(t, pct, 1)
    for gap, step in steps:
        t, pct = t + gap, min(99.0, pct + step)
        pace = pace.observe(t, pct, 1)
    eta = estimate(now=t + idle, percentage=pct, pace=pace, history=history)
    if eta is not None:
        assert math.isfinite(eta.seconds)
        assert 0 < eta.low <= eta.seconds <= eta.high


@settings(max_examples=200, deadline=None)
@given(st.floats(5, 99), st.floats(0.01, 1e5), st.floats(1.01, 100))
def test_the_shapes_time_left_scales_with_the_time_spent(
    percentage: float, elapsed: float, factor: float
) -> None:
    """Twice the time spent to reach a percentage, twice the time left; the spread unchanged."""
    history = _shaped_history()
    one = history.time_left(percentage, elapsed)
    other = history.time_left(percentage, elapsed * factor)
    assert one is not None
    assert other is not None
    assert other[0] - one[0] == pytest.approx(math.log(factor), rel=1e-9, abs=1e-9)
    assert other[1] == one[1]


@settings(max_examples=200, deadline=None)
@given(st.floats(0.5, 99.5), st.floats(0.01, 100))
def test_a_live_estimate_is_work_left_over_rate(percentage: float, rate: float) -> None:
    """A run just begun at ``percentage`` with a prior rate: (100 - percentage) / rate left,
    the range exp(-/+ Z90 0.25 sqrt(left/done))."""
    pace = Pace.begin(START, percentage, 1, rate=rate)
    eta = estimate(now=START, percentage=percentage, pace=pace)
    done = percentage / 100
    sigma = LIVE_SIGMA * math.sqrt((1 - done) / done)
    _assert_eta(eta, (100 - percentage) / rate, sigma, "live", rate)


def test_without_a_pace_history_gives_the_unfinished_share() -> None:
    """A job first seen at 90% (no pace: how long it has run is not known) of a kind whose
    runs take 100 s has 10 s left by its history, not the whole 100 s (docs/eta.md)."""
    history = History().learn(100).learn(100).learn(100)
    eta = estimate(now=0.0, percentage=90.0, pace=None, history=history)
    assert eta is not None
    assert eta.basis == "history"
    assert eta.seconds == pytest.approx(10.0)


def _shaped(shares: dict[int, tuple[int, float]]) -> History:
    """A history whose knots in ``shares`` had (count, share of the time spent there)."""
    shape = tuple(
        (shares[at][0], math.log(1 / shares[at][1] - 1), 0.0) if at in shares else (0, 0.0, 0.0)
        for at in KNOTS
    )
    return History(count=10, shape=shape)


def test_time_share_follows_the_kinds_stages() -> None:
    """A kind that spends 10% of its time on its first 10% and 80% on 10-70%: a run at 40%
    is half way in time; between learned knots the share is interpolated, from 0 at 0% to
    all of it at 100%."""
    history = _shaped({10: (3, 0.1), 70: (5, 0.9)})
    expected = {-5: 0.0, 0: 0.0, 5: 0.05, 10: 0.1, 40: 0.5, 70: 0.9, 85: 0.95, 100: 1.0, 150: 1.0}
    for pct, share in expected.items():
        found = history.time_share(pct)
        assert found == pytest.approx(share), pct


def test_time_share_needs_enough_runs_at_a_knot_and_never_goes_back() -> None:
    assert History().time_share(50) is None
    assert _shaped({10: (2, 0.1), 70: (2, 0.9)}).time_share(50) is None
    assert _shaped({10: (2, 0.1), 70: (3, 0.9)}).time_share(35) == pytest.approx(0.45)
    # A later knot that says less time was spent (noise) does not take the share back.
    backwards = _shaped({10: (3, 0.5), 20: (3, 0.3)})
    assert backwards.time_share(20) == pytest.approx(0.5)
    assert backwards.time_share(60) == pytest.approx(0.75)
