"""``morag-progress jobs``: list, show, create, cancel and requeue against a real server."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import timedelta

from morag_progress.deadlines import Risk, Verdict
from morag_progress.keys import Role
from morag_progress.models import JobStatus, ProgressUpdate, utcnow
from tests.live import Remote


def jobs(remote: Remote, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``morag-progress jobs ARGS`` as alice's user key, in a pipe, 150 columns wide unless
    ``env`` says otherwise."""
    return subprocess.run(
        [sys.executable, "-m", "morag_progress.cli", "jobs", *args],
        env=remote.env(remote.user_key, **{"COLUMNS": "150", **env}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_create_show_list_and_cancel(remote: Remote) -> None:
    """A job made with create is shown, listed (table and JSON), and cancelled (before it
    runs: CANCELLED at once)."""
    created = jobs(remote, "create", "manual.pdf", "--type", "document", "--id", "cli-1", "--json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["id"] == "cli-1"

    shown = jobs(remote, "show", "cli-1")
    assert shown.returncode == 0, shown.stderr
    assert "manual.pdf" in shown.stdout
    assert "PENDING" in shown.stdout
    assert "created_by" in shown.stdout  # who made it, and its span for the worker's
    assert json.loads(created.stdout)["traceparent"][3:35] in shown.stdout

    listed = jobs(remote, "list", "--json")
    assert "cli-1" in [job["id"] for job in json.loads(listed.stdout)["jobs"]]
    piped = jobs(remote, "list", "--status", "PENDING")
    assert piped.stdout.splitlines()[1].split("\t")[:4] == [
        "cli-1", "manual.pdf", "document", "PENDING 0%"
    ]  # fmt: skip
    table = jobs(remote, "list", FORCE_COLOR="1", NO_COLOR="1")  # as on a terminal
    assert "cli-1" in table.stdout
    assert "PENDING 0%" in table.stdout
    assert "\t" not in table.stdout

    cancelled = jobs(remote, "cancel", "cli-1")
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == "cli-1: CANCELLED"
    assert remote.job("cli-1").status is JobStatus.CANCELLED


def test_tables_fit_80_columns_with_every_column_and_an_ellipsis(remote: Remote) -> None:
    """At 80 columns ``jobs history`` and ``jobs list`` (of short ids) keep every column, and
    cut a long message (and name) with an ellipsis."""
    job_id = "fit-1"
    name = "a very long document name indeed.pdf"
    assert jobs(remote, "create", name, "--type", "pdf", "--id", job_id).returncode == 0
    long = "a fairly long message that says something about pages 10 of 40"
    remote.tracker.update_progress(job_id, 45, None, long, "alice")
    for args, headers in [
        (("history", job_id), ["when UTC", "status", "change", "by", "message"]),
        (("list",), ["id", "name", "type", "status", "created UTC", "message"]),
    ]:
        out = jobs(remote, *args, FORCE_COLOR="1", NO_COLOR="1", COLUMNS="80").stdout
        plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
        lines = plain.splitlines()
        assert max(len(line) for line in lines) <= 80, plain
        assert lines[0].split() == " ".join(headers).split(), plain
        assert any(line.endswith("…") and long[:8] in line for line in lines), plain


def test_a_narrow_terminal_leaves_columns_out_in_order_and_keeps_ids_whole(
    remote: Remote,
) -> None:
    """Server-made ids are 36 characters: at 80 columns ``jobs list`` leaves out type and
    created time, then (narrower) the message, and never cuts an id (it is what ``jobs show``
    takes); a name narrows with an ellipsis. ``jobs history`` leaves out the change, then who
    (at 80 columns it has them all: ``test_tables_fit_80_columns...``)."""
    made = jobs(remote, "create", "quarterly report of the north.pdf", "--type", "pdf", "--json")
    job_id = json.loads(made.stdout)["id"]
    remote.tracker.update_progress(job_id, 45, None, "Transcribing chunk 4 of 10", "alice")
    for command, width, headers in [
        ("list", "80", ["id", "name", "status", "message"]),
        ("list", "70", ["id", "name", "status"]),
        ("history", "60", ["when UTC", "status", "message"]),
    ]:
        args = (command,) if command == "list" else (command, job_id)
        out = jobs(remote, *args, FORCE_COLOR="1", NO_COLOR="1", COLUMNS=width).stdout
        lines = re.sub(r"\x1b\[[0-9;]*m", "", out).splitlines()
        assert lines[0].split() == " ".join(headers).split(), (width, out)
        assert max(len(line) for line in lines) <= int(width), out
        if command == "list":
            assert any(line.startswith(f"{job_id}  quarterly") for line in lines), out
            assert "…" in out


def test_show_has_the_counts(remote: Remote) -> None:
    """``jobs show`` has a job's items done and in all, as the API has them, and where its
    checkpoint was saved (the checkpoint itself with ``--json``)."""
    job_id = remote.new_job()
    remote.tracker.update_progress(job_id, 30, None, "Pages", "alice", current=12, total=40)
    shown = jobs(remote, "show", job_id)
    rows = {line.split()[0]: line.split()[1:] for line in shown.stdout.splitlines() if line}
    assert (rows["current"], rows["total"]) == (["12"], ["40"])
    assert "checkpoint" not in rows
    remote.tracker.apply(ProgressUpdate(job_id, 35, user_id="alice", checkpoint={"page": 14}))
    shown = jobs(remote, "show", job_id)
    rows = {line.split()[0]: line.split()[1:] for line in shown.stdout.splitlines() if line}
    assert rows["checkpoint"] == ["saved", "at", "35%"]
    as_json = json.loads(jobs(remote, "show", job_id, "--json").stdout)
    assert as_json["checkpoint"] == {"page": 14}


def test_show_has_a_runs_ranks_its_slowest_and_its_stragglers(remote: Remote) -> None:
    """A run expecting four ranks with two started: how many ended of how many, the slowest
    running rank, and once the sweep flags it, that it straggles and how many do."""
    run = remote.new_job(job_id="run", expected_children=4)
    for rank, pct in ((0, 60), (1, 20)):
        remote.new_job(job_id=f"run:rank-{rank}", parent_id=run)
        remote.tracker.update_progress(f"run:rank-{rank}", pct, None, "", "alice")

    def rows() -> dict[str, list[str]]:
        shown = jobs(remote, "show", run)
        assert shown.returncode == 0, shown.stderr
        return {line.split()[0]: line.split()[1:] for line in shown.stdout.splitlines() if line}

    before = rows()
    assert before["children"] == ["0", "of", "4", "ended", "(2", "started)"]
    assert before["slowest"] == ["run:rank-1", "at", "20%"]
    assert "stragglers" not in before
    now = utcnow()
    store = remote.tracker.store
    store.sweep_stragglers(now=now, share=0.1, hold=60)
    store.sweep_stragglers(now=now + timedelta(seconds=60), share=0.1, hold=60)
    after = rows()
    assert after["slowest"] == ["run:rank-1", "at", "20%", "(straggler)"]
    assert after["stragglers"] == ["1"]


def test_show_says_a_job_is_at_risk_and_its_deadline(remote: Remote) -> None:
    deadline = utcnow() + timedelta(hours=1)
    job_id = remote.new_job(deadline=deadline)
    remote.tracker.update_progress(job_id, 10, None, "slow", "alice")
    job = remote.job(job_id)
    assert remote.tracker.store.mark_risk(
        job, Verdict(Risk.DEADLINE, "Likely to miss its deadline"), now=utcnow()
    )
    shown = jobs(remote, "show", job_id)
    lines = {line.split()[0]: line for line in shown.stdout.splitlines() if line}
    assert lines["deadline"].split()[1].startswith(f"{deadline:%Y-%m-%dT%H:%M:%S}")
    assert lines["at"].split(None, 2)[2].strip() == "likely to miss its deadline"
    remote.tracker.mark_completed(job_id, "done", "alice")
    assert "at risk" not in jobs(remote, "show", job_id).stdout  # ended: no longer at risk


def test_a_running_job_is_asked_to_stop(remote: Remote) -> None:
    job_id = remote.new_job()
    remote.tracker.update_progress(job_id, 30, None, "Working")
    done = jobs(remote, "cancel", job_id)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{job_id}: cancel requested (PROCESSING 30%)"
    assert remote.job(job_id).cancel_requested


def test_pages_and_errors(remote: Remote) -> None:
    """list pages with --cursor; an unknown job is exit 1 with the server's word."""
    for i in range(3):
        remote.new_job(job_id=f"page-{i}")
    first = jobs(remote, "list", "--limit", "2")
    lines = first.stdout.splitlines()  # a pipe: a header, then a tab-separated line a job
    assert lines[0].split("\t") == ["id", "name", "type", "status", "created UTC", "message"]
    assert len(lines) == 3
    assert "more: --cursor" in first.stderr  # beside the data, not in it
    cursor = first.stderr.rsplit("--cursor", 1)[1].split()[0]
    second = json.loads(jobs(remote, "list", "--limit", "2", "--cursor", cursor, "--json").stdout)
    assert second["jobs"]
    missing = jobs(remote, "show", "no-such-job")
    assert missing.returncode == 1
    assert "404" in missing.stderr


def test_a_value_the_server_refuses_is_named_as_its_option(remote: Remote) -> None:
    """The server's 422 names a query parameter (``query.q``) and says pydantic's words
    ("Value error, "); the CLI names the option the user typed, once, with the rule."""
    long = jobs(remote, "list", "--search", "x" * 201)
    assert long.returncode == 1
    assert long.stderr.splitlines() == [
        "error: --search: String should have at most 200 characters (HTTP 422)"
    ]
    bad = jobs(remote, "list", "--parent", "a b")
    [line] = bad.stderr.splitlines()
    assert line.startswith("error: --parent: id must be 1 to 128 ASCII letters"), line
    assert jobs(remote, "show", "x" * 300).stderr.startswith("error: JOB: String should have")


def test_search_and_requeue(remote: Remote) -> None:
    """list --search finds a job by its message; requeue puts a failed remote job back in the
    queue, and refuses one that is running with the server's reason (exit 1)."""
    job_id = remote.new_job(status=JobStatus.WAITING_FOR_REMOTE_WORKER)
    assert remote.tracker.claim("gpu-01", claimant="k1", user_id="alice") is not None
    remote.tracker.update_progress(job_id, 30, None, "Decoding VIDEO frames", "alice")
    found = jobs(remote, "list", "--search", "video frames")
    assert [line.split("\t")[0] for line in found.stdout.splitlines()[1:]] == [job_id]
    running = jobs(remote, "requeue", job_id)
    assert running.returncode == 1
    assert "is PROCESSING" in running.stderr
    remote.tracker.mark_failed(job_id, "CUDA out of memory", "alice")
    done = jobs(remote, "requeue", job_id)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{job_id}: requeued as attempt 2, waiting for a worker"
    assert remote.job(job_id).status is JobStatus.WAITING_FOR_REMOTE_WORKER


def test_history_says_who_did_what(remote: Remote) -> None:
    """``jobs history`` prints the audit trail newest first, as the dashboard does
    (``--oldest-first`` turns it): into a pipe as tab-separated lines, on a terminal as a table,
    and as JSON."""
    created = jobs(remote, "create", "notes.txt", "--type", "text", "--id", "cli-h", "--json")
    by = json.loads(created.stdout)["created_by"]
    assert by.startswith("user:")
    remote.tracker.update_progress("cli-h", 40, None, "Reading", "alice")
    assert jobs(remote, "cancel", "cli-h").returncode == 0
    piped = jobs(remote, "history", "cli-h")
    assert piped.returncode == 0, piped.stderr
    lines = [line.split("\t") for line in piped.stdout.splitlines()]
    assert lines[0] == ["when UTC", "status", "change", "by", "message"]
    oldest_first = [
        ["PENDING 0%", "created", "u"],  # alice's key, by its name
        ["PROCESSING 40%", "report", remote.tracker.actor],
        ["PROCESSING 40%", "cancel requested", "u"],  # the dashboard's words
    ]
    assert [line[1:4] for line in lines[1:]] == oldest_first[::-1]
    turned = jobs(remote, "history", "cli-h", "--oldest-first").stdout.splitlines()
    assert [line.split("\t")[1:4] for line in turned[1:]] == oldest_first
    latest = jobs(remote, "history", "cli-h", "--limit", "1", "--json")
    assert [(e["action"], e["actor"], e["actor_name"]) for e in json.loads(latest.stdout)] == [
        ("cancel", by, "u")
    ]
    table = jobs(remote, "history", "cli-h", FORCE_COLOR="1", NO_COLOR="1")
    assert "cancel" in table.stdout
    assert remote.tracker.actor in table.stdout  # whole, at 150 columns and at 100
    narrow = jobs(remote, "history", "cli-h", FORCE_COLOR="1", NO_COLOR="1", COLUMNS="100")
    assert remote.tracker.actor in narrow.stdout
    assert "\t" not in table.stdout
    missing = jobs(remote, "history", "no-such-job")
    assert missing.returncode != 0
    assert "no-such-job" in missing.stderr


def test_history_and_show_name_a_key_that_has_a_name(remote: Remote) -> None:
    """A key made with ``--name`` is shown by its name in ``jobs history``, and by its name
    and actor in ``jobs show``."""
    made, secret = remote.tracker.store.create_key(
        user_id="alice", role=Role.USER, name="alice-laptop", now=utcnow()
    )

    def as_named(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "morag_progress.cli", "jobs", *args],
            env=remote.env(secret, COLUMNS="150"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert as_named("create", "notes.txt", "--type", "text", "--id", "cli-n").returncode == 0
    piped = as_named("history", "cli-n")
    assert [line.split("\t")[2:4] for line in piped.stdout.splitlines()[1:]] == [
        ["created", "alice-laptop"]
    ]
    shown = as_named("show", "cli-n")
    assert f"alice-laptop (user:{made.id})" in shown.stdout


HOSTILE_NAME = "report [/x] final\x1b]0;pwned\x07"
HOSTILE_MESSAGE = "[link=https://evil.example]click[/link] \x1b[2J\x1b]52;c;ZXZpbA==\x07\u202edone"
ESCAPES = ("\x1b[2J", "\x1b]52", "\x1b]0;", "\x07", "\u202e")  # rich's own styles may stay


def test_what_the_server_holds_is_shown_as_text(remote: Remote) -> None:
    """A job's name and message may hold markup and escape sequences (a clear-screen, a window
    title, an OSC 52 clipboard write, a bidi override): every view shows them as visible text,
    in a table and in a pipe; JSON is the API's, untouched."""
    job_id = remote.new_job(document_name=HOSTILE_NAME)
    remote.tracker.update_progress(job_id, 40, None, HOSTILE_MESSAGE)
    outputs = {
        "list (pipe)": jobs(remote, "list"),
        "list (terminal)": jobs(remote, "list", FORCE_COLOR="1", NO_COLOR="1"),
        "show (terminal)": jobs(remote, "show", job_id, FORCE_COLOR="1", NO_COLOR="1"),
        "history (pipe)": jobs(remote, "history", job_id),
    }
    for what, done in outputs.items():
        assert done.returncode == 0, (what, done.stderr)
        assert not any(e in done.stdout for e in ESCAPES), what
        assert "\\x1b" in done.stdout, what  # shown, as an escape
        assert "MarkupError" not in done.stderr, what
    assert "[/x]" in outputs["list (pipe)"].stdout
    assert "[link=https://evil.example]" in outputs["show (terminal)"].stdout  # as text
    raw = jobs(remote, "show", job_id, "--json")
    assert json.loads(raw.stdout)["document_name"] == HOSTILE_NAME
