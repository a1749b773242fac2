"""The reporter's decisions without I/O: coalescing, throttling, stages, retries, ordering."""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from morag_progress.bounds import MAX_MESSAGE
from morag_progress.client._core import (
    Call,
    CallKind,
    ReporterCore,
    Verdict,
    connection,
    default_worker,
    job_body,
    resolve_close_timeout,
    retry_after_seconds,
    verdict_of_status,
)
from morag_progress.errors import ConfigurationError
from morag_progress.ranks import Rank


class Ticks:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(min_interval: float = 0.5, **kwargs: Any) -> tuple[ReporterCore, Ticks]:
    ticks = Ticks()
    core = ReporterCore("job-1", min_interval=min_interval, clock=ticks, **kwargs)
    return core, ticks


def ok(job: dict[str, Any] | None = None, cancel: bool = False) -> dict[str, Any]:
    return {"success": True, "cancel_requested": cancel, "job": job or {"status": "PROCESSING"}}


def send(core: ReporterCore) -> Call:
    call = core.next_call()
    assert call is not None
    return call


def test_updates_coalesce_to_the_latest() -> None:
    """Many updates between two sends go out as one: the latest."""
    core, ticks = make()
    core.update(1, "first")
    core.settle_http(send(core), 200, ok())
    for p in range(2, 60):
        core.update(p, f"at {p}")
    assert core.next_call() is None  # throttled
    ticks.now += 0.5
    call = send(core)
    assert call.body is not None
    assert (call.body["percentage"], call.body["message"]) == (59, "at 59")


def test_first_update_goes_at_once_then_throttled() -> None:
    """The first update is due at once; the next waits out min_interval."""
    core, ticks = make(min_interval=2)
    core.update(5)
    core.settle_http(send(core), 200, ok())
    core.update(6)
    assert core.delay() == pytest.approx(2)
    ticks.now += 1.5
    assert core.next_call() is None
    ticks.now += 0.5
    assert send(core).body["percentage"] == 6  # type: ignore[index]


def test_a_parked_shell_is_woken_by_the_next_update() -> None:
    """Once nothing is due the shell waits without a deadline; the next update wakes it."""
    core, ticks = make(min_interval=0.5)
    wakes: list[int] = []
    core.wake = lambda: wakes.append(1)
    core.update(1)
    core.settle_http(send(core), 200, ok())
    ticks.now += 1
    assert core.delay() is None  # parked
    before = len(wakes)
    core.update(2)
    assert len(wakes) == before + 1
    core.update(3)  # not parked any more: no second wake-up
    assert len(wakes) == before + 1


def test_stage_change_goes_at_once_and_maps_its_range() -> None:
    """A stage's start is sent without waiting; progress inside maps to start + p * weight."""
    core, ticks = make(min_interval=10)
    core.update(5)
    core.settle_http(send(core), 200, ok())
    callback = core.stage("processing", 60, start=10)
    call = send(core)
    assert call.body is not None
    assert (call.body["percentage"], call.body["stage"]) == (10, "processing")
    core.settle_http(call, 200, ok())
    callback(0.5, "halfway")
    ticks.now += 10
    body = send(core).body
    assert body is not None
    assert (body["percentage"], body["message"], body["stage"]) == (40, "halfway", "processing")


def test_stages_follow_each_other() -> None:
    """A stage without a start begins where the previous one ended."""
    core, _ = make()
    first = core.stage("download", 10)
    second = core.stage("transcribe", 80)
    assert (first.start, first.end, second.start, second.end) == (0, 10, 10, 90)


@pytest.mark.parametrize(
    ("name", "weight", "start", "field"),
    [
        ("", 10, None, "name"),
        ("s", -1, None, "weight"),
        ("s", 60, 50, "weight"),
        ("s", "x", 0, "weight"),
    ],
)
def test_bad_stage_names_the_field(name: str, weight: Any, start: Any, field: str) -> None:
    """A stage outside 0..100 or without a name is a ConfigurationError naming the field."""
    core, _ = make()
    with pytest.raises(ConfigurationError) as info:
        core.stage(name, weight, start=start)
    assert info.value.field == field


def test_stage_callback_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    """A stage callback given garbage logs it and reports nothing."""
    core, _ = make()
    callback = core.stage("s", 50)
    core.settle_http(send(core), 200, ok())
    with caplog.at_level(logging.WARNING):
        callback("abc")  # type: ignore[arg-type]
        callback(float("nan"))
    assert core.next_call() is None
    assert "progress must be a number" in caplog.text


@pytest.mark.parametrize("value", [150, -1, float("nan"), "abc", None, float("inf")])
def test_bad_percentage_is_logged_and_dropped(value: Any, caplog: pytest.LogCaptureFixture) -> None:
    """An out-of-range or non-numeric percentage never raises into the worker."""
    core, _ = make()
    with caplog.at_level(logging.WARNING):
        core.update(value)
    assert core.next_call() is None
    assert "percentage must be a number 0..100" in caplog.text


def test_progress_callback_takes_a_fraction() -> None:
    """The seed's callback: 0.75 reports 75%; garbage is dropped."""
    core, _ = make()
    core.progress_callback("x")  # type: ignore[arg-type]
    core.progress_callback(0.75, "Transcribing")
    body = send(core).body
    assert body is not None
    assert (body["percentage"], body["message"]) == (75, "Transcribing")


def test_long_message_is_truncated() -> None:
    """A message over the server's limit is cut to exactly that limit, not refused; text the
    server cannot store (NUL, a lone surrogate) is replaced, not refused."""
    core, _ = make()
    core.update(1, "x" * 10_000)
    body = send(core).body
    assert body is not None
    assert len(body["message"]) == MAX_MESSAGE
    core, _ = make()
    core.update(2, "bad\x00text\ud800")
    body = send(core).body
    assert body is not None
    assert body["message"] == "bad\ufffdtext\ufffd"


def test_final_waits_for_pending_progress() -> None:
    """Pending progress goes out before the final status, so a failure keeps it."""
    core, _ = make(min_interval=60, worker="gpu-01")
    core.update(10)
    core.settle_http(send(core), 200, ok())
    core.update(42)
    core.complete(False, "GPU lost")
    progress = send(core)
    assert (progress.kind, progress.body["percentage"]) == (CallKind.PROGRESS, 42)  # type: ignore[index]
    core.settle_http(progress, 200, ok())
    result = send(core)
    assert result.kind is CallKind.RESULT
    assert result.body == {"success": False, "message": "GPU lost", "worker_id": "gpu-01"}
    assert not core.finished
    core.settle_http(result, 200, ok({"status": "FAILED"}))
    assert core.finished
    assert core.idle
    core.complete(True)  # the first call won
    assert core.next_call() is None


def test_cancelled_final() -> None:
    """finish(cancelled=True) asks for CANCELLED."""
    core, _ = make(worker="gpu-01")
    core.complete(False, cancelled=True)
    body = {"success": False, "message": None, "worker_id": "gpu-01", "cancelled": True}
    assert send(core).body == body


def test_heartbeat_names_the_worker() -> None:
    """A heartbeat carries the worker's name, so a job that only heartbeats (``run`` of a
    command that prints no progress) still shows its worker."""
    core, _ = make(worker="gpu-01")
    core.heartbeat()
    call = send(core)
    assert (call.kind, call.body) == (CallKind.HEARTBEAT, {"worker_id": "gpu-01"})


def test_retry_after_is_honoured() -> None:
    """A 429's Retry-After sets the earliest retry."""
    core, _ = make(min_interval=0)
    core.update(10)
    core.settle_http(send(core), 429, {"detail": "slow down"}, retry_after="7")
    assert core.delay() == pytest.approx(7, abs=0.01)


def test_backoff_is_capped() -> None:
    """However many failures, the wait stays under max_backoff."""
    core, ticks = make(min_interval=0, max_backoff=2)
    core.update(10)
    for _ in range(30):
        core.settle_http(send(core), 500)
        delay = core.delay()
        assert delay is not None
        assert delay <= 2
        ticks.now += delay


@pytest.mark.parametrize("status", [401, 404, 409])
def test_permanent_refusal_stops_reporting(status: int, caplog: pytest.LogCaptureFixture) -> None:
    """401, 404 and 409 cannot be fixed by retrying: the reporter logs and stops."""
    core, _ = make(min_interval=0)
    core.update(10)
    with caplog.at_level(logging.WARNING):
        core.settle_http(send(core), status, {"detail": "job 'job-1' not found"})
    assert "the server refused the progress report; reporting stops" in caplog.text
    assert core.refusal == (status, f"HTTP {status}: job 'job-1' not found")
    core.update(20)
    core.complete(True)
    assert core.next_call() is None
    assert core.idle
    assert core.stopped
    assert not core.finished  # the job did not end: the server would not have it


def test_unprocessable_update_is_dropped_not_retried() -> None:
    """A 422 drops that update; the next one still goes."""
    core, _ = make(min_interval=0)
    core.update(10)
    core.settle_http(send(core), 422, {"detail": "bad"})
    assert core.next_call() is None
    core.update(11)
    assert send(core).body["percentage"] == 11  # type: ignore[index]


def test_reply_sets_cancel_requested_and_job() -> None:
    """cancel_requested and the job come from the server's replies (heartbeats too)."""
    core, _ = make()
    core.heartbeat()
    call = send(core)
    assert (call.kind, call.method) == (CallKind.HEARTBEAT, "POST")
    core.settle_http(call, 200, ok({"status": "PROCESSING", "percentage": 3}, cancel=True))
    assert core.cancel_requested
    assert core.job == {"status": "PROCESSING", "percentage": 3}


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.TAKEN),
        (None, Verdict.RETRY),
        (429, Verdict.RETRY),
        (503, Verdict.RETRY),
        (401, Verdict.OVER),
        (403, Verdict.OVER),
        (404, Verdict.OVER),
        (409, Verdict.OVER),
        (400, Verdict.REFUSED),
        (413, Verdict.REFUSED),
        (422, Verdict.REFUSED),
    ],
)
def test_http_statuses_carry_verdicts(status: int | None, verdict: Verdict) -> None:
    assert verdict_of_status(status) is verdict


def test_a_verdict_without_http_settles_the_same() -> None:
    """The in-process path settles on verdicts and values, no status codes or reply dicts."""
    core, _ = make(min_interval=0)
    core.update(10)
    core.settle(send(core), Verdict.TAKEN, job={"status": "PROCESSING"}, cancel_requested=True)
    assert core.cancel_requested
    assert core.job == {"status": "PROCESSING"}
    core.update(20)
    core.settle(send(core), Verdict.OVER, detail="terminal")
    core.update(30)
    assert core.next_call() is None


def test_failed_heartbeat_is_retried() -> None:
    """A heartbeat lost to a network error is asked for again."""
    core, ticks = make()
    core.heartbeat()
    core.settle_http(send(core), None)
    ticks.now += 60
    assert send(core).kind is CallKind.HEARTBEAT


def test_job_that_ended_on_the_server_stops_reporting() -> None:
    """A reply showing a terminal job (100% finishes it) makes later reports moot."""
    core, _ = make(min_interval=0)
    core.update(100)
    core.settle_http(send(core), 200, ok({"status": "FINISHED"}))
    core.update(50)
    core.complete(True)
    assert core.next_call() is None
    assert core.finished


def test_updates_carry_time_seq_and_attempt() -> None:
    """Each update says when it was sent, its order and the attempt it belongs to."""
    core = ReporterCore("j", min_interval=0, attempt=2, wall_clock=lambda: 1_750_000_000.5)
    core.update(1)
    body = send(core).body
    assert body is not None
    assert body["seq"] == 1
    assert body["attempt"] == 2
    assert datetime.fromisoformat(body["timestamp"]) == datetime.fromtimestamp(1_750_000_000.5, UTC)


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("job_id", {"job_id": ""}),
        ("min_interval", {"min_interval": -1}),
        ("min_interval", {"min_interval": "1"}),
        ("attempt", {"attempt": 0}),
        ("attempt", {"attempt": 1.5}),
    ],
)
def test_bad_configuration_names_the_field(field: str, kwargs: dict[str, Any]) -> None:
    """Constructor arguments are checked and the error names the field."""
    args: dict[str, Any] = {"job_id": "j", **kwargs}
    with pytest.raises(ConfigurationError) as info:
        ReporterCore(args.pop("job_id"), **args)
    assert info.value.field == field


def test_retry_after_header_forms() -> None:
    """Retry-After as seconds or an HTTP date; garbage is ignored."""
    assert retry_after_seconds("3") == 3
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("nan") is None
    assert retry_after_seconds("-5") == 0
    when = datetime(2030, 1, 1, tzinfo=UTC)
    assert retry_after_seconds(format_datetime(when, usegmt=True), now=when.timestamp() - 9) == 9


@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("note"), st.integers(0, 100)),
            st.tuples(st.just("send"), st.sampled_from([200, 200, 500, 429, None, 422])),
            st.tuples(st.just("tick"), st.floats(0, 5)),
        ),
        max_size=60,
    )
)
def test_sent_updates_never_go_backwards(steps: list[tuple[str, Any]]) -> None:
    """Whatever fails and is retried, acknowledged updates are in the order they were made,
    and the last one made is the last one delivered (unless the server refused it)."""
    core, ticks = make(min_interval=0.5)
    made = 0
    delivered: list[int] = []
    refused: list[int] = []
    for kind, value in steps:
        if kind == "note":
            made += 1
            core.update(0, str(made))  # the message carries the order the update was made in
        elif kind == "tick":
            ticks.now += value
        else:
            call = core.next_call()
            if call is not None:
                core.settle_http(call, value, ok())
                if value == 200:
                    delivered.append(int(call.body["message"]))  # type: ignore[index]
                elif value == 422:
                    refused.append(int(call.body["message"]))  # type: ignore[index]
    # Drain: with the server healthy, the latest update arrives.
    for _ in range(100):
        ticks.now += 60
        call = core.next_call()
        if call is None:
            break
        core.settle_http(call, 200, ok())
        delivered.append(int(call.body["message"]))  # type: ignore[index]
    assert delivered == sorted(set(delivered))
    assert core.idle
    if made:
        assert max(delivered + refused) == made


def test_the_first_update_and_each_stage_start_are_each_sent() -> None:
    """A worker that moves on at once (the README's example) still gets its first update and
    each stage's start to the job, in order, before the latest; the throttle then applies."""
    core, ticks = make(min_interval=10)
    core.update(5, "Downloading")
    callback = core.stage("processing", 60, start=10)
    for page in range(1, 41):
        callback(page / 40, f"Page {page} of 40")
    second = core.stage("writing", 30)
    second(0.5, "half")
    sent = []
    while (call := core.next_call()) is not None:
        assert call.body is not None
        sent.append((call.body["percentage"], call.body.get("message"), call.body["seq"]))
        core.settle_http(call, 200, ok())
    assert [(p, m) for p, m, _ in sent] == [
        (5, "Downloading"),
        (10, "Stage: processing"),
        (70, "Stage: writing"),
    ]
    assert [seq for _, _, seq in sent] == sorted(seq for _, _, seq in sent)
    ticks.now += 10  # the latest waits its turn: at most one a min_interval
    assert send(core).body["percentage"] == 85  # type: ignore[index]


def test_a_first_update_that_failed_is_sent_again_first() -> None:
    """The server down for the first update: once it answers, the first update goes first,
    then the latest."""
    core, ticks = make(min_interval=0)
    core.update(5, "Downloading")
    core.update(40, "later")
    first = send(core)
    assert first.body is not None
    assert first.body["percentage"] == 5
    core.settle_http(first, None)  # a network error
    ticks.now += 60
    again = send(core)
    assert again.body is not None
    assert again.body["percentage"] == 5
    core.settle_http(again, 200, ok())
    assert send(core).body["percentage"] == 40  # type: ignore[index]


def test_job_before_any_answer_is_what_the_reporter_knows() -> None:
    core, _ = make()
    assert core.job == {"id": "job-1", "status": None, "percentage": None, "message": None}
    core.update(12.5, "working")
    assert core.job == {"id": "job-1", "status": None, "percentage": 12.5, "message": "working"}
    core.settle_http(send(core), 200, ok({"status": "PROCESSING", "percentage": 12}))
    assert core.job == {"status": "PROCESSING", "percentage": 12}


def test_the_close_timeout_is_stated_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MORAG_PROGRESS_CLOSE_TIMEOUT_SECONDS", raising=False)
    assert resolve_close_timeout(None) == 2.0
    assert resolve_close_timeout(0.5) == 0.5
    monkeypatch.setenv("MORAG_PROGRESS_CLOSE_TIMEOUT_SECONDS", "7")
    assert resolve_close_timeout(None) == 7.0
    for bad in (-1, "soon", True, 1e9):
        with pytest.raises(ConfigurationError) as info:
            resolve_close_timeout(bad)  # type: ignore[arg-type]
        assert info.value.field == "close_timeout"
    monkeypatch.setenv("MORAG_PROGRESS_CLOSE_TIMEOUT_SECONDS", "-3")
    with pytest.raises(ConfigurationError) as info:
        resolve_close_timeout(None)
    assert "CLOSE_TIMEOUT_SECONDS" in str(info.value)


def test_a_queued_note_keeps_the_time_it_was_made_at() -> None:
    """The first update, sent only once the server is back, says when it was made: the job's
    history tells when the work began, not when the outage ended."""
    wall = [1_700_000_000.0]
    core, ticks = make(min_interval=0, wall_clock=lambda: wall[0])
    core.update(5, "Downloading")
    failed = send(core)
    core.settle_http(failed, 503)
    wall[0] += 120
    ticks.now += 60
    again = send(core)
    assert again.body is not None
    assert again.body["timestamp"] == "2023-11-14T22:13:20Z"  # the first note's own time
    core.settle_http(again, 200, ok())
    core.update(6, "later")
    later = send(core)
    assert later.body is not None
    assert later.body["timestamp"] == "2023-11-14T22:15:20Z"  # a plain note: when it is sent


def test_the_job_is_made_first_and_retried_like_a_report() -> None:
    """create_first: the making goes before the heartbeat and the first update, is retried
    after a backoff while the server cannot be reached (the update waits behind it), and once
    made the job is as the server answered it; then the update goes."""
    core, ticks = make(min_interval=0)
    core.create_first({"document_name": "a.pdf", "document_type": "pdf", "id": "other"})
    core.heartbeat()
    core.update(10, "first")
    call = send(core)
    assert (call.kind, call.method, call.path) == (CallKind.CREATE, "POST", "/api/v1/jobs")
    assert call.body == {"document_name": "a.pdf", "document_type": "pdf", "id": "job-1"}
    kept = [c.kind for c in core.undelivered()]
    assert kept[0] is CallKind.CREATE
    assert set(kept[1:]) == {CallKind.PROGRESS}
    core.settle_http(call, None)
    delay = core.delay()
    assert delay is not None
    ticks.now += delay
    assert send(core).kind is CallKind.CREATE
    core.settle_http(call, 201, {"id": "job-1", "status": "PENDING"})
    assert core.job["status"] == "PENDING"
    assert send(core).kind is CallKind.PROGRESS
    assert CallKind.CREATE not in [c.kind for c in core.undelivered()]


@pytest.mark.parametrize("status", [409, 422])
def test_a_job_that_cannot_be_made_stops_reporting(status: int) -> None:
    """A refused making (an id another job has, a bad field): nothing else is sent, and
    ``refusal`` says why."""
    core, _ = make(min_interval=0)
    core.create_first({"document_name": "a.pdf", "document_type": "pdf"})
    core.update(10)
    core.settle_http(send(core), status, {"detail": "no"})
    assert core.refusal == (status, f"HTTP {status}: no")
    assert core.next_call() is None
    assert core.stopped
    assert core.undelivered() == []


def test_jobs_made_first_go_in_order_and_only_this_jobs_answer_is_kept() -> None:
    """create_first twice (a run's job, then this rank's): the run's first, then this job's,
    each after the one before it was made; the run's answer is not this reporter's job. Kept
    undelivered in that order, whichever is in flight."""
    core, _ = make(min_interval=0)
    core.create_first({"document_name": "r", "document_type": "t"}, job_id="run")
    core.create_first({"document_name": "a", "document_type": "t"})
    core.update(10)
    first = send(core)
    assert (first.kind, first.body["id"]) == (CallKind.CREATE, "run")  # type: ignore[index]
    assert [c.body["id"] for c in core.undelivered()[:2]] == ["run", "job-1"]  # type: ignore[index]
    assert core.next_call() is None  # one at a time
    assert [c.body["id"] for c in core.undelivered()[:2]] == ["run", "job-1"]  # type: ignore[index]
    core.settle_http(first, 201, {"id": "run", "status": "PENDING", "children": 0})
    assert core.job["id"] == "job-1"  # what the reporter knows of its own, not the run
    second = send(core)
    assert (second.kind, second.body["id"]) == (CallKind.CREATE, "job-1")  # type: ignore[index]
    assert [c.kind for c in core.undelivered()] == [CallKind.CREATE, CallKind.PROGRESS]
    core.settle_http(second, 201, {"id": "job-1", "status": "PENDING"})
    assert core.job == {"id": "job-1", "status": "PENDING"}
    assert send(core).kind is CallKind.PROGRESS


def test_a_refused_run_job_stops_the_rank_from_being_made() -> None:
    core, _ = make(min_interval=0)
    core.create_first({"document_name": "r", "document_type": "t"}, job_id="run")
    core.create_first({"document_name": "a", "document_type": "t"})
    core.settle_http(send(core), 422, {"detail": "bad"})
    assert core.next_call() is None
    assert core.undelivered() == []


def test_a_rank_reporter_makes_its_run_then_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """for_rank under torchrun's variables: the run's job (expecting WORLD_SIZE children,
    with the caller's metadata), then this rank's under it, named and described by its
    rank; the reporter reports on the rank's job."""
    env = {"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "0", "TORCHELASTIC_RUN_ID": "abc"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MORAG_PROGRESS_RUN_ID", raising=False)
    core = ReporterCore.for_rank("train", "llm", metadata={"lr": 0.1}, min_interval=0)
    assert (core.job_id, core.rank) == ("torch-abc:rank-2", Rank(2, 4, "torch-abc", 0, "torch"))
    run, mine = (call.body for call in core.undelivered())
    assert run == {
        "id": "torch-abc",
        "document_name": "train",
        "document_type": "llm",
        "weight": 1.0,
        "remote": False,
        "metadata": {"lr": 0.1},
        "expected_children": 4,
    }
    assert mine == {
        "id": "torch-abc:rank-2",
        "document_name": "train · rank 2 of 4",
        "document_type": "llm",
        "weight": 1.0,
        "remote": False,
        "parent_id": "torch-abc",
        "metadata": {"lr": 0.1, "rank": 2, "world_size": 4, "local_rank": 0, "launcher": "torch"},
    }


def test_a_job_body_cuts_the_name_and_type_to_what_the_server_keeps() -> None:
    body = job_body("n" * 300, "t" * 70)
    assert body == {
        "document_name": "n" * 255,
        "document_type": "t" * 64,
        "weight": 1.0,
        "remote": False,
    }
    full = job_body(
        "a",
        "b",
        job_id="j",
        parent_id="p",
        weight=2.0,
        remote=True,
        metadata={"k": 1},
        expected_children=3,
    )
    assert full == {
        "document_name": "a",
        "document_type": "b",
        "weight": 2.0,
        "remote": True,
        "id": "j",
        "parent_id": "p",
        "metadata": {"k": 1},
        "expected_children": 3,
    }


def test_a_rank_reporter_outside_a_launcher_is_a_run_of_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMI_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("PMIX_RANK", raising=False)
    monkeypatch.delenv("MORAG_PROGRESS_RUN_ID", raising=False)
    core = ReporterCore.for_rank("train", run_id="solo")
    assert (core.job_id, core.rank) == ("solo:rank-0", Rank(0, 1, "solo"))
    run, mine = (call.body for call in core.undelivered())
    assert (run["expected_children"], run["document_type"]) == (1, "run")  # type: ignore[index]
    assert mine["metadata"]["launcher"] == "given"  # type: ignore[index]
    unnamed = ReporterCore.for_rank("train")
    assert unnamed.rank is not None
    assert unnamed.rank.run_id == default_worker()
    given = ReporterCore.for_rank("t", rank=Rank(1, 2, "x"), run_id="ignored")
    assert given.job_id == "x:rank-1"


def test_a_rank_reporters_run_id_and_options_are_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under a launcher, the run id given wins over the launcher's; the reporter's options
    (min_interval here) are the reporter's."""
    for name, value in {"RANK": "1", "WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "elastic"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("MORAG_PROGRESS_RUN_ID", raising=False)
    core = ReporterCore.for_rank("t", run_id="mine", min_interval=7)
    assert (core.job_id, core.min_interval) == ("mine:rank-1", 7)


# -- the rules each argument is held to, and the small pure helpers ---------------------------


def _refused(call: Any) -> ConfigurationError:
    with pytest.raises(ConfigurationError) as refused:
        call()
    return refused.value


@pytest.mark.parametrize(
    ("kwargs", "field", "rule", "value"),
    [
        ({"job_id": ""}, "job_id", "must be a non-empty string of at most 128", ""),
        ({"job_id": "x" * 129}, "job_id", "must be a non-empty string of at most 128", "x" * 129),
        ({"job_id": 5}, "job_id", "must be a non-empty string of at most 128", 5),
        ({"min_interval": "1"}, "min_interval", "must be a number of seconds", "1"),
        ({"min_interval": True}, "min_interval", "must be a number of seconds", True),
        ({"min_interval": -0.1}, "min_interval", "must be between 0 and 3600", -0.1),
        ({"min_interval": 3600.5}, "min_interval", "must be between 0 and 3600", 3600.5),
        ({"attempt": 0}, "attempt", "must be a positive integer", 0),
        ({"attempt": 1.0}, "attempt", "must be a positive integer", 1.0),
        ({"attempt": True}, "attempt", "must be a positive integer", True),
        ({"worker": ""}, "worker", "must be a non-empty string", ""),
        ({"worker": " "}, "worker", "must be a non-empty string", " "),
        ({"worker": "w" * 256}, "worker", "must be at most 255 characters", "w" * 256),
    ],
)
def test_each_bad_argument_names_its_field_its_rule_and_the_value(
    kwargs: dict[str, Any], field: str, rule: str, value: object
) -> None:
    """A reporter made with a bad argument fails at once, saying which, why and what."""
    arguments = {"job_id": "job-1", **kwargs}
    error = _refused(lambda: ReporterCore(**arguments))
    assert (error.field, error.rule, error.value) == (field, rule, value)


def test_the_limits_themselves_are_allowed() -> None:
    """An id of 128 characters, intervals of 0 and 3600 s, attempt 1 and a 255-character
    worker name are all within the rules; the defaults are 0.5 s and 30 s of backoff at most."""
    core = ReporterCore("x" * 128, min_interval=0, attempt=1, worker="w" * 255)
    assert (core.job_id, core.min_interval, core.attempt, core.worker) == (
        "x" * 128,
        0.0,
        1,
        "w" * 255,
    )
    assert ReporterCore("j", min_interval=3600).min_interval == 3600.0
    default = ReporterCore("j")
    assert (default.min_interval, default.max_backoff) == (0.5, 30.0)
    assert default.worker.endswith(f":{os.getpid()}")
    assert default.cancel_requested is False
    assert default.refusal is None


@pytest.mark.parametrize(
    ("args", "field", "rule", "value"),
    [
        (("", 10), "name", "must be a non-empty string of at most 255", ""),
        (("s" * 256, 10), "name", "must be a non-empty string of at most 255", "s" * 256),
        (("s", "10"), "weight", "must be a number", "10"),
        (("s", float("nan")), "weight", "must be a number", pytest.approx(float("nan"), nan_ok=True)),
        (("s", 10, "5"), "start", "must be a number", "5"),
        (("s", -1), "weight", "with start 0.0 must stay within 0..100", -1),
        (("s", 60, 50), "weight", "with start 50 must stay within 0..100", 60),
        (("s", 10, -1), "weight", "with start -1 must stay within 0..100", 10),
    ],
)  # fmt: skip
def test_a_bad_stage_names_its_field_its_rule_and_the_value(
    args: tuple[Any, ...], field: str, rule: str, value: object
) -> None:
    """A stage outside 0..100 or with a name or number that is not one is refused by name."""
    core, _ = make()
    name, weight, *start = args
    error = _refused(lambda: core.stage(name, weight, **({"start": start[0]} if start else {})))
    assert (error.field, error.rule, error.value) == (field, rule, value)


def test_a_stage_may_end_exactly_at_100_and_have_no_weight() -> None:
    """Start 40 with weight 60 ends at 100; a weight of 0 is a marker stage; a 255-character
    name is allowed; the stage's start is reported at once."""
    core, _ = make(min_interval=60)
    marker = core.stage("m" * 255, 0, start=40)
    assert (marker.start, marker.end) == (40.0, 40.0)
    last = core.stage("rest", 60)
    assert (last.start, last.end) == (40.0, 100.0)
    last(1.0)
    first = send(core)
    assert first.body is not None
    assert (first.body["percentage"], first.body["stage"]) == (40, "m" * 255)
    assert first.body["message"] == f"Stage: {'m' * 255}"


def test_a_stage_callback_clamps_to_its_range_and_logs_a_bad_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Progress above 1 is the stage's end, never past it; a value that is not a number is
    logged with the stage's name and the value, and dropped."""
    core, _ = make(min_interval=0)
    stage = core.stage("encode", 30, start=20)
    core.settle_http(send(core), 200, ok())
    stage(1.7, "over")
    call = send(core)
    assert call.body is not None
    assert call.body["percentage"] == 50
    core.settle_http(call, 200, ok())
    with caplog.at_level(logging.WARNING, logger="morag_progress"):
        stage("half", "bad")  # type: ignore[arg-type]
        stage(float("nan"))  # max(0.0, nan) is 0.0: it must not report the stage's start
    assert [r.getMessage() for r in caplog.records if "0..1" in r.getMessage()] == [
        "stage 'encode': progress must be a number 0..1, got 'half'",
        "stage 'encode': progress must be a number 0..1, got nan",
    ]
    assert core.next_call() is None


def test_leaving_the_block_finishes_or_fails_with_the_exception() -> None:
    """A clean exit asks for FINISHED; an exception asks for FAILED with its type and text."""
    clean, _ = make(worker="w")
    clean._complete_on_exit(None)
    assert send(clean).body == {"success": True, "message": None, "worker_id": "w"}
    failed, _ = make(worker="w")
    failed._complete_on_exit(KeyError("page 7"))
    assert send(failed).body == {
        "success": False,
        "message": "KeyError: 'page 7'",
        "worker_id": "w",
    }


def test_a_message_that_is_not_text_is_sent_as_its_text() -> None:
    """complete(False, 42) sends "42": the worker's value is shown, not refused."""
    core, _ = make(worker="w")
    core.complete(False, 42)  # type: ignore[arg-type]
    assert send(core).body == {"success": False, "message": "42", "worker_id": "w"}


@pytest.mark.parametrize("status", ["FAILED", "CANCELLED", "FINISHED"])
def test_a_reply_that_the_job_ended_stops_the_reporter(status: str) -> None:
    """When the server's answer to a report says the job has ended (any terminal status), the
    reporter sends nothing more, and a result asked for later counts as delivered."""
    core, _ = make(min_interval=0)
    core.update(40)
    core.settle_http(send(core), 200, ok({"status": status}))
    core.update(50)
    core.complete(True)
    assert core.next_call() is None
    assert core.finished
    assert core.stopped


@pytest.mark.parametrize(
    ("status", "verdict"),
    [(200, Verdict.TAKEN), (299, Verdict.TAKEN), (300, Verdict.REFUSED), (199, Verdict.REFUSED)],
)
def test_only_2xx_is_taken(status: int, verdict: Verdict) -> None:
    """2xx is taken; 300 and 199 are not answers the reporter can use."""
    assert verdict_of_status(status) is verdict


def test_retry_after_as_a_date_without_a_zone_is_utc_and_counts_from_now() -> None:
    """An HTTP date with ``-0000`` (no zone given) is UTC; without ``now``, the wait counts from
    the wall clock."""
    when = datetime(2030, 1, 1, 12, tzinfo=UTC)
    at = when.timestamp() - 90
    assert retry_after_seconds("Tue, 01 Jan 2030 12:00:00 -0000", now=at) == pytest.approx(90)
    assert retry_after_seconds("Tue, 01 Jan 2030 12:00:00 +0100", now=at) == pytest.approx(0)
    ahead = format_datetime(datetime.now(UTC).replace(microsecond=0), usegmt=True)
    assert retry_after_seconds(ahead) == pytest.approx(0, abs=2)
    assert retry_after_seconds(" 7 ") == 7.0


def test_close_timeout_limits() -> None:
    """0 and 3600 s are allowed; a bool, text or more than 3600 s is refused by name."""
    assert resolve_close_timeout(0) == 0.0
    assert resolve_close_timeout(3600) == 3600.0
    for bad in (True, "2", 3600.5, -1):
        error = _refused(lambda bad=bad: resolve_close_timeout(bad))
        assert (error.field, error.rule, error.value) == (
            "close_timeout",
            "must be a number of seconds, 0 to 3600",
            bad,
        )


def test_connection_takes_arguments_before_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The URL and key given win; either missing is read from the settings; the URL loses its
    trailing slash; the key goes in a bearer header beside the reporter's user agent."""
    monkeypatch.setenv("MORAG_PROGRESS_API_URL", "http://settings.example:9000/")
    monkeypatch.setenv("MORAG_PROGRESS_API_KEY", "from-settings")
    base, headers = connection("https://given.example/root/", "given-key")
    assert base == "https://given.example/root"
    assert dict(httpx.Headers(headers)) == {
        "user-agent": "morag-progress-reporter",
        "authorization": "Bearer given-key",
    }
    base, headers = connection(None, None)
    assert base == "http://settings.example:9000"
    assert httpx.Headers(headers)["authorization"] == "Bearer from-settings"
    assert connection("http://h", None)[1]["Authorization"] == "Bearer from-settings"
    assert connection(None, "k")[0] == "http://settings.example:9000"
    monkeypatch.delenv("MORAG_PROGRESS_API_KEY")
    assert "Authorization" not in connection("http://h", None)[1]


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        (None, "must be given or set in MORAG_PROGRESS_API_URL"),
        ("", "must be given or set in MORAG_PROGRESS_API_URL"),
        ("ftp://h", "must be an http(s) URL with a host"),
        ("http://", "must be an http(s) URL with a host"),
        ("http://[::1", "must be an http(s) URL with a host"),
    ],
)
def test_connection_refuses_a_url_it_cannot_use(
    url: str | None, rule: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No URL anywhere, another scheme, no host, or one that does not parse (it raised
    UnboundLocalError before): refused by name."""
    monkeypatch.delenv("MORAG_PROGRESS_API_URL", raising=False)
    error = _refused(lambda: connection(url, "k"))
    assert (error.field, error.rule, error.value) == ("api_url", rule, url)


def test_calls_name_their_method_and_path() -> None:
    """Progress is a PUT to .../progress, the result a PUT to .../result, a heartbeat a POST
    to .../heartbeat: each on this job."""
    core, _ = make(min_interval=0)
    core.update(5)
    progress = send(core)
    assert (progress.method, progress.path) == ("PUT", "/api/v1/remote-jobs/job-1/progress")
    core.settle_http(progress, 200, ok())
    core.heartbeat()
    beat = send(core)
    assert (beat.method, beat.path) == ("POST", "/api/v1/remote-jobs/job-1/heartbeat")
    core.settle_http(beat, 200, ok())
    core.complete()  # success by default
    result = send(core)
    assert (result.method, result.path) == ("PUT", "/api/v1/remote-jobs/job-1/result")
    assert result.body is not None
    assert result.body["success"] is True


def test_counts_are_sent_as_given_and_bad_ones_are_logged_and_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Integer ``current``/``total`` (0 included) go in the body; a negative, fractional or
    boolean count is logged by name and the update dropped, never raised."""
    core, _ = make(min_interval=0)
    core.update(10, "pages", current=0, total=40)
    call = send(core)
    assert call.body is not None
    assert (call.body["current"], call.body["total"]) == (0, 40)
    core.settle_http(call, 200, ok())
    cases: list[tuple[dict[str, Any], str]] = [
        ({"current": -1}, "current must be an integer >= 0, got -1"),
        ({"total": 2.5}, "total must be an integer >= 0, got 2.5"),
        ({"current": True}, "current must be an integer >= 0, got True"),
    ]
    for kwargs, shown in cases:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="morag_progress"):
            core.update(20, **kwargs)
            assert core.next_call() is None
        assert [r.getMessage() for r in caplog.records] == [f"job job-1: {shown}"]


def test_a_percentage_past_100_is_logged_and_dropped(caplog: pytest.LogCaptureFixture) -> None:
    """100 is sent; 100.5 is logged with the job and the value, and dropped."""
    core, _ = make(min_interval=0)
    core.update(100)
    assert send(core).value == (100, None, None, None, None)
    core2, _ = make(min_interval=0)
    with caplog.at_level(logging.WARNING, logger="morag_progress"):
        core2.update(100.5)
        assert core2.next_call() is None
    assert [r.getMessage() for r in caplog.records] == [
        "job job-1: percentage must be a number 0..100, got 100.5"
    ]


def test_the_callback_takes_a_fraction_and_drops_what_is_not_a_number(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``progress_callback(0.37)`` is 37%; a value that is not a number is logged as given."""
    core, _ = make(min_interval=0)
    core.progress_callback(0.37, "reading")
    assert send(core).value == (37, "reading", None, None, None)
    other, _ = make(min_interval=0)
    with caplog.at_level(logging.WARNING, logger="morag_progress"):
        other.progress_callback(None)  # type: ignore[arg-type]
        assert other.next_call() is None
    assert [r.getMessage() for r in caplog.records] == [
        "job job-1: percentage must be a number 0..100, got None"
    ]


def test_an_unchanged_report_is_not_sent_again_but_any_changed_field_is() -> None:
    """The same percentage, message, counts and stage as the last one delivered say nothing
    new; a change in any one of them is sent."""
    core, _ = make(min_interval=0)
    core.update(10, "m", current=1, total=9)
    core.settle_http(send(core), 200, ok())
    core.update(10, "m", current=1, total=9)
    assert core.next_call() is None
    changes: list[dict[str, Any]] = [
        {"message": "n"},
        {"current": 2},
        {"total": 8},
        {"percentage": 11},
    ]
    for changed in changes:
        args: dict[str, Any] = {"percentage": 10, "message": "m", "current": 1, "total": 9}
        args.update(changed)
        core.update(**args)
        call = send(core)
        assert call.kind is CallKind.PROGRESS, changed
        core.settle_http(call, 200, ok())
        core.update(10, "m", current=1, total=9)  # back to the first
        core.settle_http(send(core), 200, ok())


@pytest.mark.parametrize("status", [None, 429, 500, 503])
def test_backoff_doubles_from_a_tenth_of_a_second_to_its_cap(
    status: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Network errors, 429 and 5xx keep the update and retry it: they wait 0.1, 0.2, 0.4 s...
    (jittered down to half), capped at ``max_backoff``; a Retry-After longer than that is
    obeyed up to 300 s; a success starts over."""
    core, ticks = make(min_interval=0, max_backoff=1.0)
    high = [True]
    monkeypatch.setattr(
        "morag_progress.client._core.random.uniform", lambda a, b: b if high[0] else a
    )
    core.update(5)
    waits = []
    for _ in range(6):
        core.settle_http(send(core), status)
        wait = core.delay()
        assert wait is not None
        waits.append(round(wait, 6))
        ticks.now += wait
    assert waits == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    high[0] = False
    core.settle_http(send(core), 503)
    assert core.delay() == pytest.approx(0.5)  # half of the capped 1.0
    ticks.now += 1
    core.settle_http(send(core), 429, {"detail": "slow down"}, retry_after="400")
    assert core.delay() == pytest.approx(300.0)
    ticks.now += 300
    core.settle_http(send(core), 200, ok())
    core.update(6)
    core.settle_http(send(core), None)
    assert core.delay() == pytest.approx(0.05)


def test_a_refusal_is_logged_once_saying_whether_reporting_stops(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A refused report (422) is logged with its kind and the server's word; a refusal for
    good (404) says reporting stops, records the status, and nothing is sent after it."""
    core, _ = make(min_interval=0)
    with caplog.at_level(logging.WARNING, logger="morag_progress"):
        core.update(5)
        core.settle_http(send(core), 422, {"detail": "bad"})
        core.update(6)
        core.settle_http(send(core), 404, {"detail": "no job"})
    assert [r.getMessage() for r in caplog.records] == [
        "job job-1: the server refused the progress report: HTTP 422: bad",
        "job job-1: the server refused the progress report; reporting stops: HTTP 404: no job",
    ]
    assert core.refusal == (404, "HTTP 404: no job")
    core.update(7)
    core.complete(True)
    assert core.next_call() is None
    assert core.undelivered() == []


def test_what_is_undelivered_is_every_request_still_owed_in_order() -> None:
    """Made to close with everything pending: the request in flight, then the queued stage
    start, then the latest update, then the result, each as the request that sends it; a
    heartbeat in flight is not owed."""
    core, _ = make(min_interval=60, worker="w")
    core.update(10, "first")  # the first update goes at once
    in_flight = send(core)
    core.stage("encode", 50)  # a stage's start is queued to be sent in turn
    core.update(30, "latest")
    core.complete(False, "boom")
    owed = core.undelivered()
    assert [(c.kind, c.method, c.path) for c in owed] == [
        (CallKind.PROGRESS, "PUT", "/api/v1/remote-jobs/job-1/progress"),
        (CallKind.PROGRESS, "PUT", "/api/v1/remote-jobs/job-1/progress"),
        (CallKind.PROGRESS, "PUT", "/api/v1/remote-jobs/job-1/progress"),
        (CallKind.RESULT, "PUT", "/api/v1/remote-jobs/job-1/result"),
    ]
    assert owed[0] is in_flight
    assert [c.body["message"] for c in owed[:3] if c.body] == ["first", "Stage: encode", "latest"]
    assert owed[3].body == {"success": False, "message": "boom", "worker_id": "w"}
    beating, _ = make(min_interval=60)
    beating.heartbeat()
    send(beating)
    assert beating.undelivered() == []


def test_a_reply_of_the_wrong_shape_is_taken_without_its_job() -> None:
    """A 200 whose ``job`` is not an object or whose ``cancel_requested`` is not a bool is
    still taken, and neither is believed."""
    core, _ = make(min_interval=0)
    core.update(5)
    core.settle_http(send(core), 200, {"job": "FINISHED", "cancel_requested": "yes"})
    assert core.cancel_requested is False
    assert not core.finished
    core.update(6)
    assert send(core).kind is CallKind.PROGRESS


def test_the_worker_wakes_the_sender_once_until_it_parks_again() -> None:
    """The first update wakes the sender; while it is awake, updates do not wake it again; a
    stage wakes it; once it has sent all and parked, the next update wakes it once."""
    woken: list[int] = []
    core, _ = make(min_interval=60)
    core.wake = lambda: woken.append(1)
    core.update(5)
    core.update(6)
    assert len(woken) == 1
    stage = core.stage("encode", 50)
    assert len(woken) == 2  # a stage always wakes it
    while (call := core.next_call()) is not None:
        core.settle_http(call, 200, ok())
    stage(0.5)  # parked with nothing due: woken
    stage(0.6)
    assert len(woken) == 3


def test_at_most_16_stage_starts_wait_in_turn() -> None:
    """Stage starts queued while nothing is sent are bounded: the oldest give way (the first
    update and 15 of the 20 stages are dropped in favour of the newest 16)."""
    core, _ = make(min_interval=0)
    for i in range(20):
        core.stage(f"s{i}", 5)
    messages = []
    while (call := core.next_call()) is not None:
        assert call.body is not None
        messages.append(call.body["message"])
        core.settle_http(call, 200, ok())
    assert messages == [f"Stage: s{i}" for i in range(4, 20)]


def test_the_first_update_is_due_at_once_whatever_the_clock_reads() -> None:
    """A monotonic clock near 0 (a fresh boot) still sends the first update at once."""
    core, ticks = make(min_interval=5)
    ticks.now = 0.0
    core.update(5)
    assert core.delay() == 0.0


def test_a_stage_ending_past_100_by_a_fraction_is_refused() -> None:
    """Start 50 with weight 50.5 ends at 100.5: refused; the callback at 1.0 is 100%."""
    core, _ = make(min_interval=0)
    error = _refused(lambda: core.stage("s", 50.5, start=50))
    assert (error.field, error.value) == ("weight", 50.5)
    core.progress_callback(1.0)
    assert send(core).value == (100, None, None, None, None)


def test_the_callback_logs_a_value_that_is_not_a_number_as_given(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``progress_callback("x")`` is logged as ``'x'`` and dropped (it was multiplied into a
    hundred x's); a bool is not a fraction either."""
    core, _ = make(min_interval=0)
    with caplog.at_level(logging.WARNING, logger="morag_progress"):
        core.progress_callback("x")  # type: ignore[arg-type]
        assert core.next_call() is None
    assert [r.getMessage() for r in caplog.records] == [
        "job job-1: percentage must be a number 0..100, got 'x'"
    ]


def test_a_given_traceparent_is_kept_and_one_learned_from_the_server_is_used() -> None:
    """A traceparent given at the start wins; without one, the job's as the server answered."""
    given = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert ReporterCore("j", traceparent=given).traceparent == given
    core, _ = make(min_interval=0)
    assert core.traceparent is None
    core.update(5)
    core.settle_http(send(core), 200, ok({"status": "PROCESSING", "traceparent": given}))
    assert core.traceparent == given


def test_connection_strips_only_trailing_slashes() -> None:
    """``http://hostX/`` keeps its X: only slashes are stripped from the end."""
    assert connection("http://hostX/", "k")[0] == "http://hostX"
    assert connection("http://h/a//", "k")[0] == "http://h/a"


def test_a_progress_body_is_exactly_what_the_server_takes() -> None:
    """Percentage, message, counts, stage, attempt, the worker's name, when and the order."""
    core, _ = make(min_interval=0, worker="gpu-01", attempt=2, wall_clock=lambda: 1_750_000_000.5)
    core.update(12.9, "m", 3, 9)
    assert send(core).body == {
        "percentage": 12,
        "timestamp": "2025-06-15T15:06:40.500000Z",
        "seq": 1,
        "message": "m",
        "current": 3,
        "total": 9,
        "attempt": 2,
        "worker_id": "gpu-01",
    }


def test_a_response_is_read_for_its_status_body_and_retry_after() -> None:
    """``settle_response`` reads the status, the JSON reply (none when it is not JSON) and
    ``Retry-After``, as ``settle_http`` would be told them."""
    core, _ = make(min_interval=0)
    core.update(5)
    busy = httpx.Response(503, headers={"Retry-After": "7"}, text="<html>busy</html>")
    core.settle_response(send(core), busy)
    assert core.delay() == pytest.approx(7.0)
    core.update(6)
    core._clock = lambda: 2000.0  # past the wait
    reply = httpx.Response(200, json=ok({"status": "FINISHED"}, cancel=True))
    core.settle_response(send(core), reply)
    assert core.cancel_requested is True
    assert core.stopped
    refused, _ = make(min_interval=0)
    refused.update(5)
    refused.settle_response(send(refused), httpx.Response(404, json={"detail": "gone"}))
    assert refused.refusal == (404, "HTTP 404: gone")


def test_an_acknowledged_result_ends_everything_and_a_refused_one_stops_it() -> None:
    """After the result is taken, nothing more is sent (an update after it is not); a result
    the server refuses for good (409: ended already) stops the reporter, not finished."""
    core, _ = make(min_interval=0)
    core.complete(True)
    core.settle_http(send(core), 200, ok({"status": "FINISHED"}))
    core.update(50)
    assert core.next_call() is None
    assert core.finished
    refused, _ = make(min_interval=0)
    refused.complete(True)
    refused.settle_http(send(refused), 409, {"detail": "ended"})
    assert refused.stopped
    assert refused.idle
    assert not refused.finished


def test_a_job_to_make_is_owed_first_and_queued_notes_keep_their_time() -> None:
    """Made to close before anything went out: the create call first, then each queued note
    stamped with the wall time it was noted at, not the time of the close."""
    wall = [1_750_000_000.0]
    core, _ = make(min_interval=60, wall_clock=lambda: wall[0])
    core.create_first({"id": "job-1", "document_name": "a", "document_type": "t"})
    core.update(10)
    wall[0] += 30
    owed = core.undelivered()
    assert [c.kind for c in owed] == [CallKind.CREATE, CallKind.PROGRESS]
    assert owed[1].body is not None
    assert owed[1].body["timestamp"] == "2025-06-15T15:06:40Z"


def test_a_retry_after_date_without_a_zone_is_utc_in_any_local_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``-0000`` means UTC whatever the machine's zone (not local time)."""
    when = datetime(2030, 1, 1, 12, tzinfo=UTC).timestamp()
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        wait = retry_after_seconds("Tue, 01 Jan 2030 12:00:00 -0000", now=when - 90)
    finally:
        monkeypatch.undo()
        time.tzset()
    assert wait == pytest.approx(90)


# -- checkpoints ------------------------------------------------------------------------------


def test_a_checkpoint_goes_in_a_heartbeat_at_the_percentage_last_noted() -> None:
    """Progress due goes first; the checkpoint follows in a heartbeat saying the percentage
    it stands for (the one noted when it was saved, not a later one); a newer checkpoint
    replaces one not yet sent; once acknowledged it is not sent again, and checkpoints go at
    most every ``min_interval``."""
    core, ticks = make()
    core.update(10.7)
    core.save_checkpoint({"step": 1})
    core.save_checkpoint({"step": 2})  # the newer wins
    core.update(20)  # noted after the save: the checkpoint still stands for 10%
    first = send(core)
    assert first.kind is CallKind.PROGRESS
    assert "checkpoint" not in (first.body or {})
    core.settle_http(first, 200, ok())
    ticks.now += 0.5
    second = send(core)
    assert (second.kind, (second.body or {}).get("percentage")) == (CallKind.PROGRESS, 20)
    core.settle_http(second, 200, ok())
    assert core.delay() == pytest.approx(0.5)  # at most every min_interval, as progress
    ticks.now += 0.5
    call = send(core)
    assert (call.kind, call.body) == (
        CallKind.HEARTBEAT,
        {"worker_id": core.worker, "checkpoint": {"step": 2}, "checkpoint_percentage": 10},
    )
    core.settle_http(call, 200, ok())
    assert core.idle
    core.save_checkpoint({"step": 3})
    assert core.delay() == pytest.approx(0.5)  # min_interval since the last one
    ticks.now += 0.5
    assert (send(core).body or {}).get("checkpoint") == {"step": 3}
    assert core.resume is None


def test_a_checkpoint_before_any_update_names_no_percentage() -> None:
    core, _ = make()
    core.save_checkpoint({"step": 0})
    assert send(core).body == {"worker_id": core.worker, "checkpoint": {"step": 0}}


def test_a_checkpoint_alone_goes_as_a_heartbeat_and_is_retried() -> None:
    """With no report due, a checkpoint goes in a heartbeat (naming the worker); a failed send
    keeps it for the next one; one saved while it was in flight still goes."""
    core, ticks = make(worker="gpu-1")
    core.update(40)
    core.settle_http(send(core), 200, ok())
    core.save_checkpoint({"step": 400})
    ticks.now += 0.5
    call = send(core)
    assert (call.kind, call.body) == (
        CallKind.HEARTBEAT,
        {"worker_id": "gpu-1", "checkpoint": {"step": 400}, "checkpoint_percentage": 40},
    )
    core.settle_http(call, None)  # the server is down
    assert not core.idle
    ticks.now += 60
    again = send(core)
    assert (again.kind, (again.body or {}).get("checkpoint")) == (CallKind.HEARTBEAT, {"step": 400})
    core.save_checkpoint({"step": 410})  # while the retry is in flight
    core.settle_http(again, 200, ok())
    ticks.now += 1
    newer = send(core)
    assert (newer.body or {}).get("checkpoint") == {"step": 410}
    core.settle_http(newer, 200, ok())
    assert core.idle


def test_a_checkpoint_saved_last_is_kept_before_the_final_status() -> None:
    """A worker that saves a checkpoint and then fails: the checkpoint is delivered first (a
    requeue resumes from it), and it is among what a close would spool."""
    core, _ = make()
    core.update(70)
    core.settle_http(send(core), 200, ok())
    core.save_checkpoint({"step": 700})
    core.complete(False, "node lost")
    assert [c.kind for c in core.undelivered()] == [CallKind.HEARTBEAT, CallKind.RESULT]
    first = send(core)
    assert (first.kind, (first.body or {}).get("checkpoint")) == (
        CallKind.HEARTBEAT,
        {"step": 700},
    )
    core.settle_http(first, 200, ok())
    assert send(core).kind is CallKind.RESULT


@pytest.mark.parametrize("state", [[1, 2], {"blob": "x" * 40_000}, {"bad": float("nan")}, {1: "a"}])
def test_a_bad_checkpoint_is_logged_and_dropped(
    state: Any, caplog: pytest.LogCaptureFixture
) -> None:
    core, _ = make()
    with caplog.at_level(logging.WARNING):
        core.save_checkpoint(state)
    assert "checkpoint not kept" in caplog.text
    assert core.idle


def test_a_reporter_resumes_from_the_checkpoint_it_is_given() -> None:
    core, _ = make(resume={"step": 700})
    assert core.resume == {"step": 700}
    with pytest.raises(ConfigurationError, match="resume"):
        make(resume=[1])


def test_a_checkpoint_is_checked_by_its_own_bound_and_named(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A checkpoint may be 32 KiB (twice metadata's 16 KiB); past that it is dropped with a
    warning naming the job, the field and the bound."""
    core, _ = make()
    core.save_checkpoint({"blob": "x" * 20_000})  # over metadata's bound, within its own
    assert (send(core).body or {}).get("checkpoint") == {"blob": "x" * 20_000}
    with caplog.at_level(logging.WARNING):
        core.save_checkpoint({"blob": "x" * 40_000})
    assert "job job-1: checkpoint not kept: checkpoint must be at most 32768 bytes" in caplog.text


@pytest.mark.parametrize(
    ("noted", "at"), [(0, 0), (0.5, 0), (99.9, 99), (100, 100), (100.5, None), (True, None)]
)
def test_a_checkpoint_stands_for_a_valid_percentage_only(noted: Any, at: int | None) -> None:
    core, ticks = make()
    core.update(noted)
    core.save_checkpoint({"n": 1})
    call = send(core)
    if call.kind is CallKind.PROGRESS:  # the update's own report first (a valid one)
        core.settle_http(call, 200, ok())
        ticks.now += 1
        call = send(core)
    body = call.body or {}
    assert body.get("checkpoint_percentage") == at
    assert body["checkpoint"] == {"n": 1}


def test_a_plain_heartbeat_leaves_the_progress_throttle_alone() -> None:
    """A heartbeat without a checkpoint does not count toward ``min_interval`` (a checkpoint
    does); once one is acknowledged, nothing is due."""
    core, ticks = make()
    core.update(5)
    core.settle_http(send(core), 200, ok())
    ticks.now += 0.6
    core.heartbeat()
    beat = send(core)
    assert beat.body == {"worker_id": core.worker}
    core.settle_http(beat, 200, ok())
    assert core.delay() is None
    core.update(6)
    assert core.delay() == 0
    core.settle_http(send(core), 200, ok())
    ticks.now += 0.6
    core.save_checkpoint({"n": 1})
    core.settle_http(send(core), 200, ok())
    core.update(7)
    assert core.delay() == pytest.approx(0.5)


def test_a_bad_resume_is_refused_naming_it() -> None:
    with pytest.raises(ConfigurationError) as e:
        make(resume=[1])
    assert (e.value.field, e.value.rule, e.value.value) == (
        "resume",
        "must be a JSON object (a claim's checkpoint)",
        [1],
    )
