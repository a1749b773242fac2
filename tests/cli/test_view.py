"""The live view's model: snapshots, progress events, the server's rate and ETA, rendering, and
the server-sent-event reader."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console

from morag_progress.cli.view import JobsView


def job(job_id: str = "j1", **fields: object) -> dict[str, object]:
    return {
        "id": job_id,
        "document_name": "talk.mp3",
        "status": "PROCESSING",
        "percentage": 0,
        "summary": None,
        "created_at": "2026-01-01T00:00:00Z",
        **fields,
    }


def event(
    percentage: int, at: str, status: str = "PROCESSING", job_id: str = "j1"
) -> dict[str, object]:
    return {
        "job_id": job_id,
        "status": status,
        "percentage": percentage,
        "message": f"at {percentage}",
        "timestamp": at,
    }


def test_events_move_jobs_and_estimates_come_from_the_server() -> None:
    """An event moves a job's status, percentage and message at once; its rate and ETA stay
    the server's until the job is fetched again, which is due every 2 s."""
    view = JobsView()
    view.snapshot(job(rate=2.0, eta_seconds=50.0), now=100.0)
    assert view.apply(event(20, "2026-01-01T00:00:10Z"))
    state = view.jobs["j1"]
    assert (state["percentage"], state["summary"], state["rate"]) == (20, "at 20", 2.0)
    assert state["eta_seconds"] == 50.0
    assert not view.due("j1", now=101.0)
    assert view.due("j1", now=102.0)
    assert view.due("never-fetched", now=0.0)
    assert not view.apply(event(5, "2026-01-01T00:00:00Z", job_id="other"))


def test_a_waiting_job_shows_when_it_is_expected_to_start() -> None:
    """A queued job with a start forecast says "starts in m:ss" where the ETA goes."""
    view = JobsView()
    soon = datetime.now(UTC) + timedelta(seconds=200)
    view.snapshot(job(status="WAITING_FOR_REMOTE_WORKER", expected_start_at=soon.isoformat()))
    console = Console(width=160, record=True)
    console.print(view.render())
    assert "starts in 3:1" in console.export_text()


def test_only_given_jobs_and_done() -> None:
    """A view of given jobs ignores others and is done when all of them ended."""
    view = JobsView(only={"j1"})
    assert not view.done
    view.snapshot(job("j2"))
    view.snapshot(job("j1"))
    assert list(view.jobs) == ["j1"]
    view.apply(event(100, "bad time", status="FINISHED"))
    assert view.done
    assert view.jobs["j1"]["eta_seconds"] is None


def test_render_shows_status_bar_message_rate_and_eta() -> None:
    """The table has the job's name, status, percentage, message, rate and ETA."""
    view = JobsView()
    view.snapshot(job(percentage=40, summary="Transcribing", rate=2.5, eta_seconds=3725))
    console = Console(width=160, record=True)
    console.print(view.render(title="Jobs"))
    text = console.export_text()
    for expected in ("talk.mp3", "PROCESSING", "40%", "Transcribing", "2.5%/s", "1:02:05"):
        assert expected in text


def test_a_job_of_uneven_stages_shows_how_far_along_in_time_it_is() -> None:
    """``time_progress`` beside the percentage where it differs by 5 points or more, and only
    while the job runs."""

    def shown(**fields: object) -> str:
        view = JobsView()
        view.snapshot(job("j1", **fields))
        console = Console(width=160, record=True)
        console.print(view.render())
        return console.export_text()

    assert "40% (52% time)" in shown(percentage=40, time_progress=52)
    assert "time)" not in shown(percentage=40, time_progress=44)
    assert "40% (35% time)" in shown(percentage=40, time_progress=35)
    assert "time)" not in shown(percentage=40, time_progress=52, status="STALLED")
    assert "time)" not in shown(percentage=40, time_progress=None)


def _ago(seconds: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat()


def test_a_silent_job_shows_its_silence_not_an_estimate() -> None:
    """A running or stalled job not heard from for 30 s or more shows "no report for m:ss"
    where its ETA was (an estimate counting down for a job nobody hears from looks live); a
    report from its worker makes it current again, a change by the server does not."""
    view = JobsView()
    view.snapshot(job(percentage=40, eta_seconds=600, last_seen_at=_ago(95)))
    view.snapshot(job("j2", status="STALLED", percentage=10, last_seen_at=_ago(400)))
    view.snapshot(job("j3", percentage=70, eta_seconds=600, last_seen_at=_ago(5)))
    console = Console(width=160, record=True)
    console.print(view.render())
    text = console.export_text()
    assert "no report for 1:35" in text or "no report for 1:36" in text
    assert "no report for 6:4" in text
    assert "10:00" in text  # j3: heard from, its estimate stands
    stall = {**event(40, _ago(0)), "action": "stall", "recorded_at": _ago(0)}
    view.apply(stall)
    assert view.jobs["j1"]["last_seen_at"] < _ago(90)
    view.apply({**event(45, _ago(0)), "action": "report", "recorded_at": _ago(0)})
    console = Console(width=160, record=True)
    console.print(view.render())
    assert "no report for 1:3" not in console.export_text()


def test_a_lost_stream_is_said_above_the_table() -> None:
    """While the event stream is down the table's title says since when, so what it shows is
    not taken for live."""
    view = JobsView()
    view.snapshot(job(percentage=40))
    view.lost_since = datetime(2026, 1, 1, 10, 4, 31).timestamp()
    console = Console(width=160, record=True)
    console.print(view.render())
    assert "disconnected since 10:04:31: reconnecting" in console.export_text()
    view.lost_since = None
    console = Console(width=160, record=True)
    console.print(view.render())
    assert "disconnected" not in console.export_text()


def test_names_and_messages_are_shown_as_text_live_and_in_a_pipe() -> None:
    """``watch``'s table and its lines for a pipe show markup and escape sequences as text."""
    view = JobsView()
    view.snapshot(
        job(document_name="a [/x] b\x1b]0;t\x07", summary="[link=http://e]x[/link]\x1b[2J")
    )
    console = Console(width=200, record=True, force_terminal=True, no_color=True)
    console.print(view.render())  # a MarkupError before
    text = console.export_text()
    assert "a [/x] b\\x1b]0;t\\x07" in text
    assert "[link=http://e]x[/link]\\x1b[2J" in text
    [line] = view.changed_lines({})
    assert line == "j1 PROCESSING 0% [link=http://e]x[/link]\\x1b[2J"


def _rendered(view: JobsView, width: int, **options: Any) -> list[str]:
    console = Console(width=width, force_terminal=True, no_color=True, record=True)
    console.print(view.render(width=width, **options))
    return console.export_text().splitlines()


def test_the_table_gives_way_to_the_bar_in_a_narrow_terminal() -> None:
    """At 80 columns the table fits, keeping a bar of at least 10 characters: the rate, then
    the message give way, then ids are cut to 8 characters; at 150 every column shows."""
    view = JobsView()
    for name, status, pct in [
        ("lecture.mp3", "FINISHED", 100),
        ("podcast.wav", "PROCESSING", 48),
        ("slides.pptx", "WAITING_FOR_REMOTE_WORKER", 0),
    ]:
        view.snapshot(
            {
                "id": str(uuid.uuid4()),
                "document_name": name,
                "status": status,
                "percentage": pct,
                "summary": "Transcribing segment 12 of 25 of a rather long recording",
                "rate": 4.7,
                "eta_seconds": 83,
                "created_at": name,
            }
        )
    narrow = _rendered(view, 80)
    assert max(len(line) for line in narrow) <= 80
    assert narrow[0].split() == ["job", "name", "status", "progress", "%", "ETA"]
    finished = next(line for line in narrow if "lecture.mp3" in line)
    assert "━" * 10 in finished  # the whole bar of a finished job, 10 characters or more
    assert finished.split()[0] in {job_id[:8] for job_id in view.jobs}
    wide = _rendered(view, 150)
    assert wide[0].split() == ["job", "name", "status", "progress", "%", "message", "rate", "ETA"]
    assert any(job_id in line for line in wide for job_id in view.jobs)  # whole ids
