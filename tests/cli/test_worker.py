"""The worker-side commands against a real server: run (a command printing tqdm bars and log
lines, passed through, ending the job from its exit code), tail, report and watch."""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from morag_progress.cli import app, command
from morag_progress.models import JobStatus
from tests.live import CLI, Remote
from tests.live import cli as live_cli
from tests.services import free_port, reap

runner = CliRunner()

SCRIPT = textwrap.dedent(
    """
    import sys, time
    from tqdm import tqdm
    print("starting the conversion", flush=True)
    for _ in tqdm(range(40), total=50, desc="Pages", mininterval=0, file=sys.stderr):
        time.sleep(0.01)
    time.sleep(0.2)  # stdout and stderr are read apart: let the bar's last redraw land first
    print("Processing progress: Writing markdown (95%)", flush=True)
    sys.exit(int(sys.argv[1]))
    """
)


def cli(remote: Remote, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    """``morag-progress ARGS`` against ``remote``, as its worker key unless given ``key``."""
    env = remote.env(key)
    return subprocess.run(
        [sys.executable, "-m", "morag_progress.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def run_python(
    remote: Remote, job_id: str, script: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """``morag-progress run --job JOB`` of a Python ``script``, reporting every 20 ms."""
    command = [sys.executable, "-c", script, *args]
    return cli(remote, "run", "--job", job_id, "--min-interval", "0.02", "--", *command)


def test_run_reports_tqdm_and_fails_on_exit_code(remote: Remote) -> None:
    """A command exiting 3 after tqdm bars: output passed through, progress reported from the
    bars and log lines, the job FAILED at its last percentage, and 3 returned."""
    job_id = remote.new_job()
    done = run_python(remote, job_id, SCRIPT, "3")
    assert done.returncode == 3, done.stderr
    assert "starting the conversion" in done.stdout
    assert "Processing progress: Writing markdown (95%)" in done.stdout
    assert "40/50" in done.stderr  # the bar, unchanged
    job = remote.job(job_id)
    assert (job.status, job.percentage) == (JobStatus.FAILED, 95)
    assert job.error == f"{Path(sys.executable).name} exited with code 3"
    history = [e.percentage for e in remote.tracker.history(job_id)]
    assert history == sorted(history)
    assert any(0 < p < 95 for p in history)  # bars reported on the way


def test_run_names_its_worker(remote: Remote, tmp_path: Path) -> None:
    """``run --worker`` names the job's worker (``host:pid`` without it); a blank name is
    refused before anything runs, naming the option."""
    job_id = remote.new_job()
    done = run_python(remote, job_id, SCRIPT, "0")
    assert done.returncode == 0, done.stderr
    assert (remote.job(job_id).worker_id or "").startswith(f"{socket.gethostname()}:")
    named = remote.new_job()
    command = ["run", "--job", named, "--worker", "render-box", "--min-interval", "0.02", "--"]
    done = cli(remote, *command, sys.executable, "-c", SCRIPT, "0")
    assert done.returncode == 0, done.stderr
    assert remote.job(named).worker_id == "render-box"
    ran = tmp_path / "ran"
    refused = cli(remote, "run", "--job", named, "--worker", " ", "--", "touch", str(ran))
    assert refused.returncode == 2
    assert not ran.exists()
    assert "--worker" in refused.stderr
    assert "non-empty" in refused.stderr


def test_run_create_finishes_on_success(remote: Remote) -> None:
    """--create makes the job (idempotently); exit code 0 finishes it."""
    job_id = "convert-1"
    command = ["--name", "report.pdf", "--", sys.executable, "-c", SCRIPT, "0"]
    # a user's key: a worker's may not create jobs
    done = cli(remote, "run", "--create", "--job", job_id, *command, key=remote.user_key)
    assert done.returncode == 0, done.stderr
    job = remote.job(job_id)
    assert (job.status, job.percentage, job.document_name) == (
        JobStatus.FINISHED,
        100,
        "report.pdf",
    )


def test_run_create_names_the_job_as_a_person_would(remote: Remote) -> None:
    """Without --name, a created job is named by its program and first argument, and keeps
    the whole command line in its metadata (the job page shows it)."""
    command = [sys.executable, "-c", SCRIPT, "0"]
    done = cli(remote, "run", "--create", "--job", "short-1", "--", *command, key=remote.user_key)
    assert done.returncode == 0, done.stderr
    job = remote.job("short-1")
    assert job.document_name == f"{Path(sys.executable).name} -c"
    assert job.metadata == {"command": shlex.join(command)}


def test_run_missing_command_is_127(remote: Remote) -> None:
    """A command that cannot start fails the job and returns 127."""
    job_id = remote.new_job()
    done = cli(remote, "run", "--job", job_id, "--", "/nonexistent/convert")
    assert done.returncode == 127
    assert remote.job(job_id).status is JobStatus.FAILED


def test_run_needs_a_job(remote: Remote) -> None:
    """Without --job or --create, run refuses, naming --job."""
    done = cli(remote, "run", "--", "true")
    assert done.returncode == 2
    assert "--job" in done.stderr


def test_tail_reports_the_latest_progress(remote: Remote, tmp_path: Path) -> None:
    """tail reads structlog JSON and plain lines and reports their progress in order."""
    job_id = remote.new_job()
    log = tmp_path / "worker.log"
    log.write_text(
        '{"event": "Processing progress: Transcribing (30%)", "level": "info"}\n'
        "2025-06-11 11:26:50 INFO [60%] Diarizing\n"
        "no progress here\n"
    )
    done = cli(remote, "tail", str(log), "--job", job_id)
    assert done.returncode == 0, done.stderr
    job = remote.job(job_id)
    assert (job.percentage, job.summary) == (60, "Diarizing")
    assert done.stdout == f"{job_id}: PROCESSING 60%\n"  # one line: what the job now says


def test_tail_on_an_unknown_job_fails_with_one_line(remote: Remote, tmp_path: Path) -> None:
    """A job the server does not know: exit 1 and one line saying so (not exit 0 with a
    logged refusal); a file without progress says that."""
    log = tmp_path / "worker.log"
    log.write_text("[40%] Diarizing\n")
    done = cli(remote, "tail", str(log), "--job", "nope")
    assert done.returncode == 1
    assert "job nope is not known to" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    log.write_text("nothing to see\n")
    quiet = cli(remote, "tail", str(log), "--job", remote.new_job())
    assert quiet.returncode == 0
    assert "no progress found" in quiet.stdout


def test_tail_on_an_ended_job_fails_saying_how_it_ended(remote: Remote, tmp_path: Path) -> None:
    """A job that ended before the file's progress reached it: exit 1 and one line with its
    final status (not 'no progress found' and exit 0); the job is left as it was."""
    job_id = remote.new_job()
    remote.tracker.mark_completed(job_id, "done before")
    log = tmp_path / "worker.log"
    log.write_text("[40%] Diarizing\n")
    done = cli(remote, "tail", str(log), "--job", job_id)
    assert done.returncode == 1
    assert f"job {job_id} had already ended (FINISHED 100" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert done.stdout == ""
    assert remote.job(job_id).summary == "done before"


@contextlib.contextmanager
def following(remote: Remote, log: Path, job_id: str) -> Iterator[subprocess.Popen[bytes]]:
    """``tail LOG --job JOB -f`` running, once it has reported the file's 10% line."""
    log.write_text("Progress: 10% - warming up\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "morag_progress.cli", "tail", str(log), "--job", job_id, "-f"],
        env=remote.env(),
    )
    try:
        deadline = time.monotonic() + 20
        while remote.job(job_id).percentage < 10:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        yield process
    finally:
        reap(process, grace=0)


def test_tail_follow_ends_with_the_job(remote: Remote, tmp_path: Path) -> None:
    """--follow keeps reading a growing file until its progress ends the job."""
    job_id = remote.new_job()
    log = tmp_path / "growing.log"
    with following(remote, log, job_id) as process:
        with log.open("a") as f:
            f.write("Progress: 100% - done\n")
        assert process.wait(20) == 0
    assert remote.job(job_id).status is JobStatus.FINISHED


def test_tail_follow_ends_well_when_its_worker_finishes_the_job_first(
    remote: Remote, tmp_path: Path
) -> None:
    """The worker finishes its job and logs one more line: tail's report of it is refused
    (the job has ended), and tail ends with exit 0, as the job's end is what it followed to."""
    job_id = remote.new_job()
    log = tmp_path / "growing.log"
    with following(remote, log, job_id) as process:
        remote.tracker.mark_completed(job_id, "finished by its worker")
        with log.open("a") as f:
            f.write("Progress: 50% - a line logged late\n")
        assert process.wait(20) == 0
    assert remote.job(job_id).summary == "finished by its worker"


def test_report_prints_the_job(remote: Remote) -> None:
    """report sends one update and prints the job's state; errors exit 1 with the detail."""
    job_id = remote.new_job()
    done = cli(remote, "report", job_id, "45", "Transcribing audio content")
    assert done.returncode == 0, done.stderr
    assert f"{job_id}: PROCESSING 45%" in done.stdout
    missing = cli(remote, "report", "no-such-job", "45")
    assert missing.returncode == 1
    assert "404" in missing.stderr
    bad = cli(remote, "report", job_id, "150")
    assert bad.returncode == 2


def test_report_without_a_server_url_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """No URL configured: a usage error naming --api-url."""
    result = runner.invoke(app, ["report", "job", "10"])
    assert result.exit_code == 2
    assert "pass --api-url or set MORAG_PROGRESS_API_URL" in result.output
    assert "None" not in result.output


def test_watch_ends_when_its_jobs_end(remote: Remote) -> None:
    """watch JOB shows the job live and returns once it has ended."""
    job_id = remote.new_job()
    process = subprocess.Popen(
        [sys.executable, "-m", "morag_progress.cli", "watch", job_id],
        env=remote.env(COLUMNS="150"),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)
        remote.tracker.update_progress(job_id, 50, None, "Halfway")
        time.sleep(0.3)
        remote.tracker.mark_completed(job_id, "All done")
        out, _ = process.communicate(timeout=20)
    finally:
        reap(process, grace=0)
    assert process.returncode == 0
    # Not a terminal: one line per change, with the whole id.
    lines = out.splitlines()
    assert f"{job_id} PROCESSING 50% Halfway" in lines
    assert f"{job_id} FINISHED 100% All done" in lines


def test_run_on_a_job_that_does_not_exist_runs_and_says_so(remote: Remote, tmp_path: Path) -> None:
    """run --job with an unknown id runs the command all the same, returns its exit code, and
    says in one line that nothing was reported, suggesting --create."""
    marker = tmp_path / "ran"
    script = f"open({str(marker)!r}, 'w'); raise SystemExit(4)"
    done = cli(remote, "run", "--job", "ghost", "--", sys.executable, "-c", script)
    assert marker.exists()
    assert done.returncode == 4
    assert "job ghost is not known to" in done.stderr
    assert "add --create" in done.stderr
    assert "(over)" not in done.stderr


def test_run_with_the_server_down_runs_the_command_and_keeps_its_exit_code(
    remote: Remote, tmp_path: Path
) -> None:
    """No server: the command runs at once and its exit code comes back; leaving waits at most
    the close timeout, then one line says the final status was not delivered. --create too."""
    url = f"http://127.0.0.1:{free_port()}"
    marker = tmp_path / "ran"
    for create in ([], ["--create"]):
        marker.unlink(missing_ok=True)
        started = time.monotonic()
        done = subprocess.run(
            [
                *CLI,
                "run",
                "--job",
                "offline-1",
                *create,
                "--",
                sys.executable,
                "-c",
                f"open({str(marker)!r}, 'w'); print('hello'); raise SystemExit(3)",
            ],
            env=remote.env(MORAG_PROGRESS_API_URL=url, MORAG_PROGRESS_CLOSE_TIMEOUT_SECONDS="1"),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert marker.exists()
        assert done.returncode == 3, done.stderr
        assert done.stdout == "hello\n"
        [line] = done.stderr.splitlines()  # one line, no "[Errno 111]" warning before it
        assert "could not be reached" in line
        assert time.monotonic() - started < 10  # nothing waited for but the 1 s close


def test_run_create_with_the_server_down_keeps_the_job_to_make(remote: Remote) -> None:
    """--create while the server is down: the command runs at once; the job's making is kept
    with its reports, and flush makes it (named, with its command) and ends it as the command
    did, once the server is back."""
    remote.server.stop()
    command = ["--name", "late.pdf", "--", sys.executable, "-c", "raise SystemExit(4)"]
    env = remote.env(remote.user_key, MORAG_PROGRESS_CLOSE_TIMEOUT_SECONDS="0.5")
    done = subprocess.run(
        [*CLI, "run", "--create", "--job", "made-later", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 4
    assert "reports were kept to send later" in done.stderr
    remote.server.start()
    assert "2 kept reports sent" in live_cli("flush", env=env)  # the making, the end
    job = remote.job("made-later")
    assert (job.document_name, job.status) == ("late.pdf", JobStatus.FAILED)
    assert job.summary == f"{Path(sys.executable).name} exited with code 4"


def test_run_create_makes_the_job_once_the_server_answers(remote: Remote) -> None:
    """The server comes back while the command runs: the job is made then, and the command's
    progress and end reach it (no report was lost to a job not yet made)."""
    remote.server.stop()
    script = "import time; time.sleep(2.5); print('Progress: 40% - late', flush=True)"
    process = subprocess.Popen(
        [
            *CLI,
            "run",
            "--create",
            "--job",
            "made-during",
            "--min-interval",
            "0.05",
            "--",
            sys.executable,
            "-c",
            script,
        ],
        env=remote.env(remote.user_key),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        remote.server.start()
        _, err = process.communicate(timeout=60)
    finally:
        reap(process, grace=0)
    assert process.returncode == 0, err
    job = remote.job("made-during")
    assert (job.status, job.document_name) == (
        JobStatus.FINISHED,
        f"{Path(sys.executable).name} -c",
    )
    assert "late" in [e.message for e in remote.tracker.history("made-during")]


def test_run_on_an_ended_job_runs_and_says_it_was_left_as_it_was(remote: Remote) -> None:
    """A FINISHED job: the command runs, its code returns, and one line says the job's
    status was left as it was (no internal words)."""
    job_id = remote.new_job()
    remote.tracker.mark_completed(job_id, "done before")
    done = cli(remote, "run", "--job", job_id, "--", sys.executable, "-c", "pass")
    assert done.returncode == 0
    assert f"job {job_id} was left as it was" in done.stderr
    assert "is FINISHED" in done.stderr
    assert "(over)" not in done.stderr
    assert remote.job(job_id).summary == "done before"


def test_tail_follow_ends_when_the_job_ends_elsewhere(remote: Remote, tmp_path: Path) -> None:
    """--follow on a quiet file ends once the job has ended by another path (here: finished
    through the tracker), within a few seconds."""
    job_id = remote.new_job()
    with following(remote, tmp_path / "quiet.log", job_id) as process:
        remote.tracker.mark_completed(job_id, "done elsewhere")
        assert process.wait(15) == 0


HOLD_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from tqdm import tqdm
    print("Processing progress: Converting (52%)", flush=True)
    time.sleep(0.5)  # stdout and stderr are read apart: let the 52% land first
    for _ in tqdm(range(20), total=50, desc="Pages", mininterval=0, file=sys.stderr):
        time.sleep(0.02)
    """
)


def test_run_never_reports_progress_going_back(remote: Remote) -> None:
    """A 52% line followed by a new tqdm bar from 0: the job holds 52% (the bar's lower
    values do not move it back), then finishes."""
    job_id = remote.new_job()
    done = run_python(remote, job_id, HOLD_SCRIPT)
    assert done.returncode == 0, done.stderr
    history = [event.percentage for event in remote.tracker.history(job_id)]
    assert 52 in history
    assert history == sorted(history)
    assert remote.job(job_id).status is JobStatus.FINISHED


def test_watch_reconnects_when_the_server_restarts(server_env: dict[str, str]) -> None:
    """watch JOB survives its server's crash and restart: it says it is reconnecting,
    resumes where it was (a change made while the server was down is shown), and ends 0
    when the job ends."""
    import httpx

    from morag_progress import JobTracker
    from morag_progress.keys import Role
    from morag_progress.models import utcnow
    from morag_progress.store import SQLStore
    from tests.live import ServerProcess

    url = server_env["MORAG_PROGRESS_DATABASE_URL"]
    store = SQLStore(url)
    _, key = store.create_key(user_id="alice", role=Role.USER, name="u", now=utcnow())
    tracker = JobTracker(store=store)
    job_id = tracker.start_job(user_id="alice", document_name="a.pdf", document_type="pdf")
    server = ServerProcess(dict(server_env)).start()
    env = {
        **server_env,
        "MORAG_PROGRESS_API_URL": server.url,
        "MORAG_PROGRESS_API_KEY": key,
        "COLUMNS": "150",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "morag_progress.cli", "watch", job_id],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    assert process.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)  # type: ignore[arg-type]
    reader.start()

    def shown(text: str) -> None:
        deadline = time.monotonic() + 30
        while f"{job_id} {text}\n" not in lines:
            assert time.monotonic() < deadline, (text, lines)
            time.sleep(0.05)

    try:
        time.sleep(1.5)
        tracker.update_progress(job_id, 30, None, "before the crash")
        shown("PROCESSING 30% before the crash")
        server.kill()
        tracker.update_progress(job_id, 60, None, "while it was down")
        time.sleep(1.0)
        server.start()
        shown("PROCESSING 60% while it was down")  # resumed: what it missed
        finished = httpx.put(
            f"{server.url}/api/v1/remote-jobs/{job_id}/result",
            json={"success": True, "message": "All done"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )
        assert finished.status_code == 200
        process.wait(timeout=30)
        reader.join(timeout=10)
    finally:
        reap(process, grace=0)
        server.stop()
        store.close()
        assert process.stderr is not None
        err = process.stderr.read()
        process.stderr.close()
        process.stdout.close()
    assert process.returncode == 0, err
    assert f"{job_id} FINISHED 100% All done\n" in lines
    assert "reconnecting in 1 s" in err


def test_watch_in_a_terminal_says_when_its_stream_is_lost(server_env: dict[str, str]) -> None:
    """In a terminal (a pseudo-terminal here), watch's table says "disconnected since ...:
    reconnecting" while its server is down, and stops saying it once the stream is back."""
    import os
    import pty
    import re

    from morag_progress import JobTracker
    from morag_progress.keys import Role
    from morag_progress.models import utcnow
    from morag_progress.store import SQLStore
    from tests.live import ServerProcess

    store = SQLStore(server_env["MORAG_PROGRESS_DATABASE_URL"])
    _, key = store.create_key(user_id="alice", role=Role.USER, name="u", now=utcnow())
    tracker = JobTracker(store=store)
    job_id = tracker.start_job(user_id="alice", document_name="a.pdf", document_type="pdf")
    server = ServerProcess(dict(server_env)).start()
    env = {
        **server_env,
        "MORAG_PROGRESS_API_URL": server.url,
        "MORAG_PROGRESS_API_KEY": key,
        "COLUMNS": "150",
        "LINES": "20",
        "TERM": "xterm-256color",
    }
    main, child = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "morag_progress.cli", "watch", job_id],
        env=env,
        stdin=child,
        stdout=child,
        stderr=child,
    )
    os.close(child)
    screen: list[str] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:
                return
            if not chunk:
                return
            screen.append(chunk.decode(errors="replace"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def text() -> str:
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", "".join(screen))

    def until(what: str, start: int = 0) -> int:
        deadline = time.monotonic() + 30
        while what not in text()[start:]:
            assert time.monotonic() < deadline, (what, text()[-2000:])
            time.sleep(0.05)
        return len(text())

    try:
        tracker.update_progress(job_id, 30, None, "before the crash")
        until("before the crash")
        server.kill()
        lost = until("disconnected since")
        server.start()
        tracker.update_progress(job_id, 60, None, "after the restart")
        back = until("after the restart", lost)
        tracker.mark_completed(job_id, "All done")
        process.wait(timeout=30)
        assert "disconnected since" not in text()[back:]
    finally:
        reap(process, grace=0)
        server.stop()
        store.close()
        os.close(main)
    assert process.returncode == 0


def test_a_refused_key_is_one_line_naming_the_key_and_where_it_came_from(remote: Remote) -> None:
    """A wrong key: one line on stderr naming the server, the key's first characters and
    its source (the environment, or --api-key), with what to do; exit code 1."""
    wrong = "mpk_" + "x" * 40
    from_env = cli_env(remote, {"MORAG_PROGRESS_API_KEY": wrong}, "jobs", "list")
    assert from_env.returncode == 1
    [line] = from_env.stderr.splitlines()
    assert line.startswith(f"error: the server at {remote.url} refused the API key mpk_xxxx...")
    assert "from MORAG_PROGRESS_API_KEY: invalid or revoked API key" in line
    assert "keys create --user NAME" in line
    given = cli_env(remote, {}, "jobs", "list", "--api-key", wrong)
    assert "mpk_xxxx... given with --api-key" in given.stderr
    none = cli_env(remote, {"MORAG_PROGRESS_API_KEY": ""}, "jobs", "list")
    assert f"the server at {remote.url} needs an API key, and none was given" in none.stderr


def test_a_server_that_is_down_is_one_line_with_its_url_and_a_hint(remote: Remote) -> None:
    """jobs, report and watch against a port nobody listens on: the same one line."""
    down = f"http://127.0.0.1:{free_port()}"
    for args in (["jobs", "list"], ["report", "j", "5"], ["watch"]):
        done = cli_env(remote, {"MORAG_PROGRESS_API_URL": down}, *args)
        assert done.returncode == 1, args
        assert done.stderr.splitlines() == [
            f"error: cannot reach the server at {down}: connection refused (is it running? "
            "`morag-progress serve` starts one; the URL is set in MORAG_PROGRESS_API_URL)"
        ], args


def test_a_bad_value_is_one_line_naming_the_valid_ones(remote: Remote) -> None:
    """A status that does not exist is refused before any request, in one line listing the
    statuses and the command's help (exit 2), not a box or the server's 422; any case goes."""
    user = {"MORAG_PROGRESS_API_KEY": remote.user_key}
    done = cli_env(remote, user, "jobs", "list", "--status", "DONE")
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith(
        "error: Invalid value for '--status': 'DONE' is not one of 'pending', "
        "'waiting_for_remote_worker', 'processing', 'stalled', 'finished', 'failed', "
        "'cancelled' (see `"
    ), line
    assert line.endswith(" jobs list --help`)"), line  # the program as it was started
    remote.new_job()
    assert cli_env(remote, user, "jobs", "list", "--status", "pending").returncode == 0


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["report", "j", "150"], "Invalid value for 'PERCENTAGE': must be 0 to 100, got 150"),
        (["report"], "Missing argument 'JOB'"),
        (["keys", "create", "--user", "a", "--role", "boss"], "'boss' is not one of 'admin'"),
        (["nope"], "No such command 'nope'"),
    ],
)
def test_a_usage_error_is_one_line_with_the_help_to_read(args: list[str], said: str) -> None:
    """A bad or missing argument, option or command: exit 2 and one line on stderr naming it
    and the help to read, where Typer drew the usage and a five-line box."""
    done = subprocess.run(
        [sys.executable, "-m", "morag_progress.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "MORAG_PROGRESS_API_URL": "http://127.0.0.1:9"},
    )
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith("error: "), line
    assert said in line, line
    assert line.endswith("--help`)"), line
    assert "Value error" not in line
    assert "╭" not in line


def test_serve_on_a_port_in_use_says_so_in_one_line(tmp_path: Path) -> None:
    """serve on a taken port: one line naming the address and suggesting --port; exit 2."""
    import os
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "morag_progress.cli", "serve", "--port", str(port)],
            env={**os.environ, "MORAG_PROGRESS_DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"error: 127.0.0.1:{port} is in use (pass --port with another port, or stop what uses it)"
    ]


def cli_env(remote: Remote, extra: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``morag-progress ARGS`` with the remote's environment and ``extra`` over it."""
    return subprocess.run(
        [sys.executable, "-m", "morag_progress.cli", *args],
        env={**remote.env(), **extra},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_one_line_errors_in_process(remote: Remote, capsys: pytest.CaptureFixture[str]) -> None:
    """The same one-line errors, from the command run in this process (as an embedding
    program would): a refused key, no key, a refused value, a server that is down."""
    here = {"MORAG_PROGRESS_API_URL": remote.url}
    wrong = runner.invoke(
        app, ["jobs", "list"], env={**here, "MORAG_PROGRESS_API_KEY": "mpk_" + "y" * 40}
    )
    assert wrong.exit_code == 1
    assert "refused the API key mpk_yyyy... from MORAG_PROGRESS_API_KEY" in wrong.output
    short = runner.invoke(app, ["jobs", "list", "--api-key", "mpk_y"], env=here)
    assert "the (short) API key given with --api-key" in short.output
    none = runner.invoke(app, ["jobs", "list"], env={**here, "MORAG_PROGRESS_API_KEY": ""})
    assert "needs an API key, and none was given" in none.output
    user = {**here, "MORAG_PROGRESS_API_KEY": remote.user_key}
    with pytest.raises(SystemExit) as bad:  # the whole command, as the script runs it
        command().main(["jobs", "list", "--status", "DONE"], prog_name="morag-progress")
    assert bad.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert "'DONE' is not one of 'pending'" in line
    down = f"http://127.0.0.1:{free_port()}"
    for args in (["jobs", "list"], ["watch"]):
        gone = runner.invoke(app, args, env={**user, "MORAG_PROGRESS_API_URL": down})
        assert gone.exit_code == 1, args
        assert f"cannot reach the server at {down}: connection refused" in gone.output, args
