"""Worker-side commands: ``run`` wraps a command, ``tail`` follows a log file, ``report`` sends
one update, ``watch`` shows jobs live."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.live import Live

from morag_progress.cli.failures import http_failure, say, unreachable, within
from morag_progress.cli.text import markup_safe, visible
from morag_progress.cli.view import TERMINAL, JobsView
from morag_progress.client import ProgressReporter, spool
from morag_progress.client._core import Verdict, check_worker, connection
from morag_progress.client.events import ServerEvent, read_events
from morag_progress.client.jobs import job_body
from morag_progress.errors import ConfigurationError
from morag_progress.parser import ProgressEventParser

__all__ = ["report", "run", "tail", "watch"]

ApiUrl = Annotated[
    str | None,
    typer.Option("--api-url", help="Server URL (default: MORAG_PROGRESS_API_URL)."),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key", help="API key (default: MORAG_PROGRESS_API_KEY).", show_default=False
    ),
]
notes = Console(stderr=True)
_PARSER = ProgressEventParser()


def _connection(api_url: str | None, api_key: str | None) -> tuple[str, dict[str, str]]:
    try:
        return connection(api_url, api_key)
    except ConfigurationError as e:
        if e.value is None:
            why = "no server given: pass --api-url or set MORAG_PROGRESS_API_URL"
            raise typer.BadParameter(f"{why} (e.g. http://127.0.0.1:8000)") from e
        raise typer.BadParameter(f"{e.rule}, got {e.value!r}", param_hint="--api-url") from e


def _fail(response: httpx.Response) -> typer.Exit:
    return http_failure(response)


_ASK_EVERY = 2.0  # seconds between tail --follow's looks at whether its job has ended


def _ended(base: str, headers: dict[str, str], job: str) -> dict[str, Any] | None:
    """The job as the server has it now if it has ended, ``{}`` if it is gone (unknown to
    this key); None while it runs, or when the server cannot be reached or says otherwise."""
    try:
        response = httpx.get(f"{base}/api/v1/remote-jobs/{job}/status", headers=headers, timeout=5)
    except httpx.HTTPError:
        return None
    if response.status_code == 404:
        return {}
    if response.status_code != 200:
        return None
    state = response.json()
    return state if isinstance(state, dict) and state.get("status") in TERMINAL else None


def _has_ended(base: str, headers: dict[str, str], job: str) -> bool:
    """Whether the job has ended (or is gone); a server that cannot be reached says no."""
    return _ended(base, headers, job) is not None


def _request(method: str, url: str, headers: dict[str, str], **kwargs: Any) -> httpx.Response:
    try:
        return httpx.request(method, url, headers=headers, timeout=10, **kwargs)
    except httpx.HTTPError as e:
        raise unreachable(url, e) from e


def report(
    job: Annotated[str, typer.Argument(metavar="JOB", help="The job's id.")],
    percentage: Annotated[
        float, typer.Argument(**within("The percentage done", 0, 100), metavar="PERCENTAGE")
    ],
    message: Annotated[
        str | None, typer.Argument(metavar="MESSAGE", help="A summary of what is happening.")
    ] = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Report one job's progress once, and print the job's state."""
    base, headers = _connection(api_url, api_key)
    body: dict[str, Any] = {"percentage": percentage}
    if message is not None:
        body["message"] = message
    response = _request("PUT", f"{base}/api/v1/remote-jobs/{job}/progress", headers, json=body)
    if response.status_code != 200:
        raise _fail(response)
    reply = response.json()
    state = reply["job"]
    applied = "" if reply["applied"] else " (not applied: older than the job's last update)"
    typer.echo(
        f"{visible(state['id'])}: {visible(state['status'])} {state['percentage']}%{applied}"
    )
    if reply["cancel_requested"]:
        notes.print("cancel requested", style="yellow")


class _Lines:
    """Splits a byte stream into lines on ``\\n`` and ``\\r`` (a tqdm bar redraws with
    ``\\r``), passing each to ``emit``; a line longer than ``limit`` is cut there."""

    def __init__(self, emit: Callable[[str], None], limit: int = 1 << 20) -> None:
        self.emit = emit
        self.limit = limit
        self.buffer = b""

    def feed(self, chunk: bytes) -> None:
        *complete, self.buffer = (self.buffer + chunk).replace(b"\r", b"\n").split(b"\n")
        for line in complete:
            if line:
                self.emit(line.decode("utf-8", "replace"))
        if len(self.buffer) > self.limit:
            self.emit(self.buffer.decode("utf-8", "replace"))
            self.buffer = b""

    def close(self) -> None:
        if self.buffer:
            self.emit(self.buffer.decode("utf-8", "replace"))
            self.buffer = b""


def _reporting(
    reporter: ProgressReporter, ceiling: int = 100, *, hold: bool = False
) -> Callable[[str], None]:
    """Parse each line and report its progress, at most ``ceiling`` percent. With ``hold``,
    progress never goes back: a lower percentage than one already reported (a second tqdm
    bar starting at 0 after a 52% line) keeps the highest, with the new line's message."""
    highest = 0
    lock = threading.Lock()  # stdout's and stderr's pumps both call this

    def emit(line: str) -> None:
        nonlocal highest
        event = _PARSER.parse_json_log(line)
        if event is None:
            return
        percentage, current, total = min(event.percentage, ceiling), event.current, event.total
        with lock:
            if hold and percentage < highest:
                percentage, current, total = highest, None, None  # the counts were the bar's
            highest = max(highest, percentage)
            reporter.update(percentage, event.message or None, current=current, total=total)

    return emit


def _pump(source: IO[bytes], sink: IO[bytes], lines: _Lines) -> None:
    """Copy ``source`` to ``sink`` unchanged, as it comes, and feed the parser."""
    fd = source.fileno()
    while chunk := os.read(fd, 65536):
        with contextlib.suppress(OSError, ValueError):  # our own output closed: keep parsing
            sink.write(chunk)
            sink.flush()
        lines.feed(chunk)
    lines.close()


def run(
    command: Annotated[
        list[str],
        typer.Argument(metavar="COMMAND...", help="The command and its arguments, after --."),
    ],
    job: Annotated[
        str | None, typer.Option("--job", help="The job to report on (default with --create: new).")
    ] = None,
    create: Annotated[bool, typer.Option("--create", help="Create the job first.")] = False,
    name: Annotated[str | None, typer.Option(help="The created job's name.")] = None,
    document_type: Annotated[
        str, typer.Option("--type", help="The created job's document type.")
    ] = "command",
    min_interval: Annotated[
        float, typer.Option(**within("Seconds between reports", 0), metavar="SECONDS")
    ] = 0.5,
    worker: Annotated[
        str | None,
        typer.Option(help="The worker's name in the Workers view (default: host:process id)."),
    ] = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Run a command, pass its output through, report the progress found in it (up to 99%,
    and never backwards: a later, lower bar holds the highest percentage seen), and end the
    job from its exit code, which this command returns. The command runs whatever the server's
    state: reports go when they can, and one line at the end says what could not be done."""
    base, _headers = _connection(api_url, api_key)  # checked here, before anything starts
    if worker is not None:
        try:
            check_worker(worker)
        except ConfigurationError as e:
            raise typer.BadParameter(e.rule, param_hint="--worker") from e
    if job is None:
        if not create:
            raise typer.BadParameter("is required unless --create is given", param_hint="--job")
        job = str(uuid.uuid4())
        notes.print(f"job {job}", style="dim")
    # The job is made by the reporter, first, as it sends reports: never waited for, made
    # once the server answers, kept with the reports when it does not before the end.
    made = None
    if create:
        metadata = {"command": shlex.join(command)[:_COMMAND_CHARS]}
        made = job_body(name or short_name(command), document_type, metadata=metadata)
    with _reporter_quiet():
        _run(command, job, base, api_key, min_interval, worker, made)


_COMMAND_CHARS = 4000
"""The most of a command line a job created by ``run`` keeps in its metadata."""


def short_name(command: list[str]) -> str:
    """A job's name for a command: its program and first argument (``ffmpeg -i``), the way a
    person names it; the whole line goes in the job's metadata."""
    words = [Path(command[0]).name, *command[1:2]] if command else ["command"]
    name = " ".join(words)
    return name if len(name) <= 80 else name[:79] + "…"


def _run(
    command: list[str],
    job: str,
    base: str,
    api_key: str | None,
    min_interval: float,
    worker: str | None,
    made: dict[str, Any] | None,
) -> None:
    reporter = ProgressReporter(
        job, api_url=base, api_key=api_key, min_interval=min_interval, worker=worker
    )
    if made is not None:
        reporter.create_first(made)
    reporter.heartbeat()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    except OSError as e:
        reporter.complete(False, f"cannot run {command[0]!r}: {e.strerror}")
        say(f"cannot run {command[0]!r}: {e.strerror}")
        _outcome(reporter, base, reporter.close())
        raise typer.Exit(127) from e
    assert process.stdout is not None
    assert process.stderr is not None
    # 100% in the output (a finished tqdm bar) must not finish the job: the exit code does.
    emit = _reporting(reporter, ceiling=99, hold=True)
    pumps = [
        threading.Thread(target=_pump, args=(process.stdout, sys.stdout.buffer, _Lines(emit))),
        threading.Thread(target=_pump, args=(process.stderr, sys.stderr.buffer, _Lines(emit))),
    ]
    for pump in pumps:
        pump.start()
    try:
        code = process.wait()
    except KeyboardInterrupt:
        process.send_signal(signal.SIGINT)
        code = process.wait()
    for pump in pumps:
        pump.join()
    if code == 0:
        reporter.complete(True)
    else:
        reporter.complete(False, f"{Path(command[0]).name} exited with code {code}")
    _outcome(reporter, base, reporter.close())
    raise typer.Exit(code if code >= 0 else 128 - code)


@contextlib.contextmanager
def _reporter_quiet() -> Iterator[None]:
    """The reporter's own warnings held back (they would interleave with a command's output):
    ``_outcome`` says what matters once, at the end."""
    client = logging.getLogger("morag_progress.client")
    level = client.level
    client.setLevel(logging.ERROR)
    try:
        yield
    finally:
        client.setLevel(level)


def _outcome(reporter: ProgressReporter, base: str, delivered: bool) -> bool:
    """One line when the reports did not all reach the job, saying why; whether it did."""
    job = reporter.job_id
    status, detail = reporter.refusal or (None, "")
    if status == 404:
        why = f"job {job} is not known to {base} for this API key: nothing was reported"
        hint = "create it first, or add --create"
    elif status in (401, 403):
        why = f"{base} refused the API key (HTTP {status}): nothing was reported"
        hint = "check MORAG_PROGRESS_API_KEY or --api-key"
    elif status == 409:
        why = f"job {job} was left as it was on {base}: {markup_safe(detail)}"
        hint = ""
    elif reporter.refusal is not None:
        why, hint = f"{base} refused the job's reports: {markup_safe(detail)}", ""
    elif not delivered and reporter.spooled is not None:
        kept = len(reporter.spooled.calls)
        why = f"{base} could not be reached: the job's last {kept} reports were kept to send later"
        hint = "`morag-progress flush` sends them once `morag-progress serve` runs there"
    elif not delivered:
        why = f"{base} could not be reached: the job's last reports were not delivered"
        hint = "is `morag-progress serve` running there?"
    else:
        return False
    notes.print(f"[yellow]warning:[/yellow] {why}" + (f" ({hint})" if hint else ""), soft_wrap=True)
    return True


def flush(api_url: ApiUrl = None, api_key: ApiKey = None) -> None:
    """Send the reports reporters kept because their close deadline passed before the server
    took them (the spool: MORAG_PROGRESS_SPOOL_DIR), for this server and key, oldest first.
    Exit code 0 once all were taken; 1 while the server cannot take them (they stay kept), or
    when it refused some for good (each named: an ended or unknown job; they are not kept)."""
    base, headers = _connection(api_url, api_key)
    key = spool.fingerprint(headers)
    waiting = spool.pending(base, key)
    others = spool.others(base, key)
    sent = dropped = 0
    with httpx.Client(base_url=base, headers=headers, timeout=10.0) as client:
        for kept in waiting:
            while kept.calls:
                verdict, detail = spool.send_next(client, kept)
                if verdict is Verdict.RETRY:
                    left = sum(len(k.calls) for k in waiting)
                    say(
                        f"{base} did not take job {kept.job_id}'s report ({detail}): "
                        f"{left} reports kept, {sent} sent",
                        "is `morag-progress serve` running there? run flush again later",
                    )
                    raise typer.Exit(1)
                if verdict is Verdict.TAKEN:
                    sent += 1
                else:
                    dropped += 1
                    say(f"job {kept.job_id}: a kept report was refused: {detail}", level="warning")
    if waiting:
        print(f"{sent} kept reports sent to {base}" + (f", {dropped} refused" if dropped else ""))
    else:
        print(f"no reports kept for {base} and this key")
    if others:
        say(
            f"{others} spool files are for another server or key",
            "flush with that MORAG_PROGRESS_API_URL and key",
            level="note",
        )
    if dropped:
        raise typer.Exit(1)


def tail(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="The log file.", dir_okay=False)],
    job: Annotated[str, typer.Option("--job", help="The job to report on.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep reading as the file grows.")
    ] = False,
    poll: Annotated[
        float, typer.Option(**within("Seconds between looks", 0.01), metavar="SECONDS")
    ] = 0.25,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Report the progress in a log file (structlog JSON or the plain formats); with --follow,
    keep reading new lines (surviving rotation) until the job ends or Ctrl-C."""
    base, headers = _connection(api_url, api_key)
    if not follow and not file.is_file():
        raise typer.BadParameter(f"{file} is not a readable file", param_hint="FILE")
    with _reporter_quiet():
        _tail(file, job, follow, poll, base, headers, api_key)


def _tail(
    file: Path,
    job: str,
    follow: bool,
    poll: float,
    base: str,
    headers: dict[str, str],
    api_key: str | None,
) -> None:
    reporter = ProgressReporter(job, api_url=base, api_key=api_key, min_interval=0.25)
    lines = _Lines(_reporting(reporter))
    handle: IO[bytes] | None = None
    inode = None
    ask_at = time.monotonic() + _ASK_EVERY
    try:
        while True:
            if handle is None and file.is_file():
                handle = file.open("rb")
                inode = os.fstat(handle.fileno()).st_ino
            chunk = handle.read(65536) if handle else b""
            if chunk:
                lines.feed(chunk)
                continue
            if not follow:
                break
            state = reporter.job["status"]
            if state in TERMINAL or reporter.stopped:
                break
            if time.monotonic() >= ask_at:  # the job may end by another path (cancel, a UI)
                ask_at = time.monotonic() + _ASK_EVERY
                if _has_ended(base, headers, job):
                    break
            with contextlib.suppress(OSError):  # rotated or truncated: start the new file
                stat = file.stat()
                if handle is not None and (stat.st_ino != inode or stat.st_size < handle.tell()):
                    handle.close()
                    handle = None
            time.sleep(poll)
    except KeyboardInterrupt:
        pass
    finally:
        lines.close()
        if handle is not None:
            handle.close()
        delivered = reporter.close()
    refusal = reporter.refusal
    ended = _ended(base, headers, job) if refusal is not None and refusal[0] == 409 else None
    if ended and reporter.job["status"] is None:  # ended before any of the file's progress
        say(
            f"job {job} had already ended ({ended['status']} {ended['percentage']}%): "
            f"nothing from {file} was reported",
            "tail a job that is still running; `morag-progress jobs show` shows this one",
        )
        raise typer.Exit(1)
    # A line still on its way when the job ended elsewhere (its worker finished it) is refused
    # with 409: following to the job's end is what --follow is for.
    if ended is None and _outcome(reporter, base, delivered):
        raise typer.Exit(1)
    state = ended or reporter.job
    if state["status"] is None:
        typer.echo(f"{visible(job)}: no progress found in {file}")
    else:
        typer.echo(f"{visible(job)}: {visible(state['status'])} {state['percentage']}%")


def watch(
    jobs: Annotated[
        list[str] | None, typer.Argument(metavar="JOB...", help="Jobs to watch (default: all).")
    ] = None,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Show jobs live (bars, status, message, rate, ETA) from the server's event stream. With
    job ids, ends when they have all ended."""
    base, headers = _connection(api_url, api_key)
    view = JobsView(only=set(jobs) if jobs else None)
    console = Console()
    live: Live | None = None
    printed: dict[str, tuple[Any, ...]] = {}

    def changed() -> None:
        nonlocal live
        if not console.is_terminal:  # a pipe or a file: one line per change, whole ids
            for line in view.changed_lines(printed):
                console.print(line, highlight=False, soft_wrap=True, markup=False)
            console.file.flush()
        elif live is None:  # only once there is something to show (not before an error)
            live = Live(view.render(width=console.width), console=console, refresh_per_second=8)
            live.start()
        else:
            live.update(view.render(width=console.width))

    try:
        follow(base, headers, view, changed)
    except KeyboardInterrupt:
        pass
    except httpx.HTTPError as e:
        if live is not None:
            live.stop()
            live = None
        raise unreachable(base, e) from e
    finally:
        if live is not None:
            live.stop()


RECONNECT_WAITS = (1.0, 2.0, 5.0, 10.0)
"""Seconds ``follow`` waits before each reconnect of a lost stream (the last one repeats)."""
RECONNECT_GIVE_UP = 300.0
"""Seconds without a working stream after which ``follow`` gives up."""


def follow(
    base: str,
    headers: dict[str, str],
    view: JobsView,
    changed: Callable[[], None],
    stop: Callable[[], bool] = lambda: False,
) -> None:
    """Feed ``view`` from the event stream of the caller's jobs until every job it watches
    has ended (when it watches given jobs) or ``stop()`` is true. A stream that ends or
    breaks (a server restarting) is resumed from the last event seen, after a wait it says
    on stderr; after ``RECONNECT_GIVE_UP`` seconds without one it gives up (raising the last
    error). A refusal (a revoked key, a job gone) ends it at once."""
    with httpx.Client(base_url=base, headers=headers, timeout=httpx.Timeout(10, read=60)) as client:
        for job_id in sorted(view.only or ()):
            response = client.get(f"/api/v1/jobs/{job_id}")
            if response.status_code != 200:
                raise _fail(response)
            view.snapshot(response.json())
        changed()
        if view.only and view.done:
            return
        last_id: str | None = None
        failures = 0
        lost_at: float | None = None
        opened = False  # a server never reached is an error at once (a wrong URL), not a wait
        while True:
            resume = {} if last_id is None else {"Last-Event-ID": last_id}
            try:
                with client.stream("GET", "/api/v1/events", headers=resume) as response:
                    if response.status_code != 200:
                        response.read()
                        if not _passing(response.status_code):
                            raise _fail(response)
                    else:
                        failures, lost_at, opened = 0, None, True
                        view.lost_since = None  # the snapshot that opens the stream redraws
                        for event in read_events(response):
                            if event.id:
                                last_id = event.id
                            _show(client, view, event)
                            changed()
                            if (view.only and view.done) or stop():
                                return
                    problem = f"the stream ended (HTTP {response.status_code})"
            except httpx.TransportError as e:
                if not opened or (
                    lost_at is not None and time.monotonic() - lost_at >= RECONNECT_GIVE_UP
                ):
                    raise
                problem = f"the connection broke ({markup_safe(e) or type(e).__name__})"
            now = time.monotonic()
            if lost_at is None:
                lost_at = now
            elif now - lost_at >= RECONNECT_GIVE_UP:
                raise httpx.RemoteProtocolError(f"{problem}; gave up reconnecting")
            wait = RECONNECT_WAITS[min(failures, len(RECONNECT_WAITS) - 1)]
            failures += 1
            if view.lost_since is None:
                view.lost_since = time.time()
                changed()  # the table says it is no longer live
            notes.print(f"[yellow]{problem}; reconnecting in {wait:g} s[/yellow]")
            time.sleep(wait)


def _passing(status: int) -> bool:
    """A stream refused for now, worth asking again (busy, or the server starting)."""
    return status == 429 or status >= 500


def _show(client: httpx.Client, view: JobsView, event: ServerEvent) -> None:
    """Apply one stream event to ``view``."""
    if event.event == "snapshot":
        for job in event.json():
            view.snapshot(job)
    elif event.event == "progress":
        data = event.json()
        job_id = data["job_id"]
        if view.wants(job_id) and (not view.apply(data) or view.due(job_id)):
            # A new job, or estimates gone stale: the server's numbers.
            job = client.get(f"/api/v1/jobs/{job_id}")
            if job.status_code == 200:
                view.snapshot(job.json())
