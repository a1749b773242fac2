"""The reporter's decisions, with no I/O: what to send next, when, and what a reply means.

The sync and async reporters are thin shells around :class:`ReporterCore` (the way httpx drives
one ``auth_flow`` generator from both clients): they ask :meth:`ReporterCore.next_call` for the
next request, send it, and hand the outcome back to :meth:`ReporterCore.settle`. Everything a
worker calls (``note``, ``finish``) only stores a value, so a call costs a few hundred
nanoseconds and can never block on the network.

Rules (docs/architecture.md section 5, and docs/integrations/reporter.md):

- Updates coalesce: only the latest is sent, at most every ``min_interval`` seconds.
- The first update, each stage's start and the final status are sent at once, each of them:
  they are kept in a short queue ahead of the latest update, so a worker moving on at once does
  not coalesce them away.
- Each update carries the time of the call and a sequence number, so a report that is retried
  can never overwrite a newer one on the server, whatever order the network delivers them in.
- 429 and 5xx replies and network errors are retried with exponential backoff and jitter,
  honouring ``Retry-After``; other 4xx replies are dropped (retrying cannot fix them) and logged.
- The final status is retried until acknowledged; progress is not sent after it.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import itertools
import logging
import math
import numbers
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

from morag_progress.bounds import MAX_NAME, check_checkpoint, check_text, clean_text
from morag_progress.errors import ConfigurationError, InvalidInputError
from morag_progress.ranks import Rank
from morag_progress.trace_context import attached

if TYPE_CHECKING:
    from httpx import Response

__all__ = [
    "Call",
    "CallKind",
    "ReporterCore",
    "Stage",
    "Verdict",
    "connection",
    "job_body",
    "resolve_close_timeout",
    "retry_after_seconds",
    "verdict_of_status",
]

logger = logging.getLogger("morag_progress.client")


class Verdict(enum.Enum):
    """What became of a report, whatever carried it."""

    TAKEN = "taken"
    """The job has it: applied, or older than what the job has (not an error)."""
    RETRY = "retry"
    """Not now: unreachable, busy or over the rate; send it again after a backoff."""
    REFUSED = "refused"
    """Never this one (a value the job will not take); later reports may be taken."""
    OVER = "over"
    """Never anything again: no such job, not the caller's, or the job has ended."""


def verdict_of_status(status: int | None) -> Verdict:
    """The verdict an HTTP status carries (None: the request did not get an answer)."""
    if status is not None and 200 <= status < 300:
        return Verdict.TAKEN
    if status is None or status == 429 or status >= 500:
        return Verdict.RETRY
    if status in (401, 403, 404, 409):
        return Verdict.OVER
    return Verdict.REFUSED


class CallKind(enum.StrEnum):
    """What a request to the server is for."""

    PROGRESS = "progress"
    HEARTBEAT = "heartbeat"
    RESULT = "result"
    CREATE = "create"


@dataclass(frozen=True, slots=True)
class Call:
    """One request the shell should send: ``method path`` with a JSON ``body``."""

    kind: CallKind
    method: str
    path: str
    body: dict[str, Any] | None
    value: _Note | None = None
    """The checked values it carries (progress calls)."""
    note: _Note | None = None
    """The note it was made from: once acknowledged, that note and any older are delivered."""


# A note is what update() stores, as given: (percentage, message, current, total, stage). It is
# checked when the sender takes it, so that the worker's call only stores a tuple.
_Note = tuple[Any, Any, Any, Any, "str | None"]


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = _http_date(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _http_date(value: str) -> datetime:
    from email.utils import parsedate_to_datetime  # only for a Retry-After given as a date

    return parsedate_to_datetime(value)


def connection(api_url: str | None, api_key: str | None) -> tuple[str, dict[str, str]]:
    """The server's base URL and request headers, from the arguments or the settings
    (``MORAG_PROGRESS_API_URL``, ``MORAG_PROGRESS_API_KEY``)."""
    if api_url is None or api_key is None:
        from morag_progress.settings import load_settings  # pydantic: only when needed

        settings = load_settings()
        api_url = api_url or settings.api_url
        if api_key is None and settings.api_key is not None:
            api_key = settings.api_key.get_secret_value()
    if not api_url:
        raise ConfigurationError(
            "api_url", "must be given or set in MORAG_PROGRESS_API_URL", api_url
        )
    try:
        url = urlsplit(api_url)
        usable = url.scheme in ("http", "https") and bool(url.hostname)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        usable = False
    if not usable:
        raise ConfigurationError("api_url", "must be an http(s) URL with a host", api_url)
    headers = {"User-Agent": "morag-progress-reporter"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return str(api_url).rstrip("/"), headers


def resolve_close_timeout(value: float | None) -> float:
    """How long a reporter's close waits for delivery: ``value``, or the setting
    ``MORAG_PROGRESS_CLOSE_TIMEOUT_SECONDS`` (2 s by default)."""
    if value is None:
        from morag_progress.settings import load_settings  # pydantic: only when needed

        return load_settings().close_timeout_seconds
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 3600:
        raise ConfigurationError("close_timeout", "must be a number of seconds, 0 to 3600", value)
    return float(value)


_URGENT = 16
"""The most first-update and stage-start notes held to be sent in turn (the oldest give way)."""


def _clip(message: object) -> str:
    """A message as the server takes it: storable text, at most its length limit."""
    return clean_text(message if isinstance(message, str) else str(message))


def check_worker(worker: object) -> None:
    """Raise ConfigurationError unless ``worker`` is a worker name a report may carry (the
    rule the server holds ``worker_id`` to)."""
    try:
        check_text("worker", worker, max_length=MAX_NAME, required=True)
    except InvalidInputError as e:
        raise ConfigurationError(e.field, e.rule, e.value) from e


def default_worker() -> str:
    """A reporter's worker name when it is given none: ``<host>:<process id>``."""
    import socket  # here: a worker's import of the client stays light

    return f"{socket.gethostname()}:{os.getpid()}"[:MAX_NAME]


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Stage:
    """A named sub-range of the job's percentage: progress 0..1 inside it maps to
    ``start + progress * weight``. Calling it is the seed's ``progress_callback(progress,
    message)``, so ``options["progress_callback"] = reporter.stage("processing", 60, start=10)``
    is MoRAG's ``10 + int(progress * 60)`` in one line."""

    name: str
    start: float
    weight: float
    _report: Callable[[float, str | None, str], None]

    @property
    def end(self) -> float:
        return self.start + self.weight

    def __call__(self, progress: float, message: str | None = None) -> None:
        # Never raises into the worker: a bad value is logged and dropped.
        try:
            # NaN first: max(0.0, nan) is 0.0, which would report the stage's start
            clamped = None if progress != progress else min(1.0, max(0.0, progress))
        except TypeError:
            clamped = None
        if clamped is None:
            logger.warning("stage %r: progress must be a number 0..1, got %r", self.name, progress)
            return
        self._report(self.start + clamped * self.weight, message, self.name)

    progress_callback = __call__


class ReporterCore:
    """State and decisions of one job's reporter, and the calls a worker makes; the shells
    (``sync.py``, ``aio.py``) subclass it and add only the sending. Safe for worker threads and
    one sender: a worker's call replaces ``_latest`` (one atomic assignment), the sender reads
    it."""

    def __init__(
        self,
        job_id: str,
        *,
        min_interval: float = 0.5,
        attempt: int | None = None,
        traceparent: str | None = None,
        worker: str | None = None,
        resume: Mapping[str, Any] | None = None,
        max_backoff: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(job_id, str) or not job_id or len(job_id) > 128:
            raise ConfigurationError("job_id", "must be a non-empty string of at most 128", job_id)
        if worker is not None:
            check_worker(worker)
        if isinstance(min_interval, bool) or not isinstance(min_interval, int | float):
            raise ConfigurationError("min_interval", "must be a number of seconds", min_interval)
        if not 0 <= min_interval <= 3600:
            raise ConfigurationError("min_interval", "must be between 0 and 3600", min_interval)
        if attempt is not None and (isinstance(attempt, bool) or not isinstance(attempt, int)):
            raise ConfigurationError("attempt", "must be a positive integer", attempt)
        if attempt is not None and attempt < 1:
            raise ConfigurationError("attempt", "must be a positive integer", attempt)
        if resume is not None and not isinstance(resume, Mapping):
            raise ConfigurationError(
                "resume", "must be a JSON object (a claim's checkpoint)", resume
            )
        self.job_id = job_id
        self.resume: dict[str, Any] | None = None if resume is None else dict(resume)
        """The checkpoint this run resumes from (a claim's ``checkpoint``, as given): None for
        a run that starts from the beginning."""
        # The checkpoint saved last and not yet acknowledged, with the percentage it stands
        # for: one tuple, replaced in one assignment by the worker, read once by the sender.
        self._checkpoint: tuple[dict[str, Any], int | None] | None = None
        self._checkpoint_in_flight: tuple[dict[str, Any], int | None] | None = None
        self.worker = default_worker() if worker is None else worker
        """The worker's name, sent with each report: the job's worker in the Workers view,
        unless it already has one (a claim's)."""
        self.min_interval = float(min_interval)
        self.attempt = attempt
        self.max_backoff = max_backoff
        self._clock = clock
        self._wall = wall_clock
        self._seq = itertools.count(1)
        self._latest: _Note | None = None
        # Notes that must each reach the job (the first update, each stage's start), in order,
        # ahead of the latest one; appended by the worker, taken by the sender.
        # Each with the wall time it was made at, which it is sent with: after an outage the
        # job's history still says when the stage began.
        self._urgent: collections.deque[tuple[_Note, float]] = collections.deque(maxlen=_URGENT)
        self._noted = False
        self._urgent_in_flight: tuple[_Note, float] | None = None
        self._sent: _Note | None = None  # the note last acknowledged (or given up on)
        self._stage_name: str | None = None
        self._sent_stage: str | None = None
        self._last_sent_at: float | None = None
        self._heartbeat_wanted = False
        self._final: dict[str, Any] | None = None
        self._final_done = False
        self._create: Call | None = None  # the job to make before anything else is sent
        self._creates: collections.deque[Call] = collections.deque()  # and those after it
        self._in_flight: Call | None = None
        self._not_before = 0.0
        self._failures = 0
        self._stage: Stage | None = None
        self._job_over = False  # the server refused for good (404, 409, 401...): stop sending
        self._job_ended = False  # the server said the job has ended (its answer, or our result)
        # The shell waits for a wake-up with nothing due; it starts so: the first update wakes it.
        self._parked = True
        self.cancel_requested = False
        self._job: dict[str, Any] | None = None
        self.refusal: tuple[int | None, str] | None = None
        """Why the server last refused a report for good: its HTTP status (None in process)
        and what it said; None while nothing was refused."""
        self._traceparent = traceparent
        self.rank: Rank | None = None
        """The rank of a distributed run this reporter reports for (``for_rank``), else None."""
        self.wake: Callable[[], None] = lambda: None
        """Set by the shell: called when something must go out before ``min_interval``."""

    @classmethod
    def for_rank(
        cls,
        name: str,
        job_type: str = "run",
        *,
        run_id: str | None = None,
        rank: Rank | None = None,
        metadata: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Self:
        """A reporter for this process's rank of a distributed run (torchrun, accelerate,
        DeepSpeed, SLURM, MPI: ``ranks.Rank.detect`` reads which from the environment): every
        rank makes the run's job (the same id in every process, so it is made once, expecting
        ``world_size`` children) and its own job under it, without waiting, then reports on
        its own as any reporter does. The run's job shows the run's progress and flags a rank
        that falls behind. ``run_id`` names the run (default: ``MORAG_PROGRESS_RUN_ID``, else
        the launcher's); ``rank`` is given instead of read; ``options`` are the reporter's.
        Outside a launcher it is a run of one. Raises InvalidInputError naming the variable
        when the environment's rank is unusable (before any work starts)."""
        if rank is None:
            rank = Rank.detect(run_id=run_id) or Rank(0, 1, run_id or default_worker())
        reporter = cls(rank.job_id, **options)
        run = job_body(name, job_type, metadata=metadata, expected_children=rank.world_size)
        about = {
            "rank": rank.rank,
            "world_size": rank.world_size,
            "local_rank": rank.local_rank,
            "launcher": rank.launcher,
        }
        mine = job_body(
            f"{name} · rank {rank.rank} of {rank.world_size}",
            job_type,
            parent_id=rank.run_job_id,
            metadata={**(metadata or {}), **about},
        )
        reporter.create_first(run, job_id=rank.run_job_id)
        reporter.create_first(mine)
        reporter.rank = rank
        return reporter

    # -- the worker's side: store and return ---------------------------------------------------

    @property
    def traceparent(self) -> str | None:
        """The job's span (W3C ``traceparent``): as given (from a claim, a created job), else
        as the server's last answer said; None until known."""
        if self._traceparent is None and self._job is not None:
            value = self._job.get("traceparent")
            self._traceparent = value if isinstance(value, str) else None
        return self._traceparent

    @property
    def job(self) -> dict[str, Any]:
        """The job as the server last answered it. Until it has answered (the server is down,
        or refused every report), what this reporter knows: its id, the last percentage and
        message noted, and ``status`` None, as nothing is confirmed."""
        if self._job is not None:
            return self._job
        latest = self._latest
        return {
            "id": self.job_id,
            "status": None,
            "percentage": None if latest is None else latest[0],
            "message": None if latest is None else latest[1],
        }

    def traced(self) -> contextlib.AbstractContextManager[None]:
        """Run a block inside the job's span: OpenTelemetry spans started in it join the trace
        of whoever created the job (``tracing.attached``)."""
        return attached(self.traceparent)

    def update(
        self,
        percentage: float,
        message: str | None = None,
        current: int | None = None,
        total: int | None = None,
    ) -> None:
        """Report ``percentage`` (0..100). Returns at once: the value is stored and the sender
        takes the latest one; a bad value is logged and dropped there, never raised here.
        (No keyword-only parameters: they cost this hot call a third more.)"""
        note = (percentage, message, current, total, self._stage_name)
        self._latest = note
        if not self._noted:
            self._noted = True
            self._urgent.append((note, self._wall()))
        if self._parked:
            self._parked = False
            self.wake()

    def _note(
        self, percentage: float, message: str | None, stage: str | None, urgent: bool = False
    ) -> None:
        note = (percentage, message, None, None, stage)
        self._latest = note
        if urgent or not self._noted:
            self._urgent.append((note, self._wall()))
        self._noted = True
        if self._parked or stage != self._sent_stage:
            self._parked = False
            self.wake()

    def stage(self, name: str, weight: float, *, start: float | None = None) -> Stage:
        """Start a stage covering ``weight`` percent from ``start`` (default: where the previous
        stage ended, or 0). Reports the stage's start at once."""
        if not isinstance(name, str) or not name or len(name) > 255:
            raise ConfigurationError("name", "must be a non-empty string of at most 255", name)
        begin = (self._stage.end if self._stage else 0.0) if start is None else start
        for field, value in (("weight", weight), ("start", begin)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
                raise ConfigurationError(field, "must be a number", value)
        if begin < 0 or weight < 0 or begin + weight > 100:
            raise ConfigurationError(
                "weight", f"with start {begin} must stay within 0..100", weight
            )
        self._stage = Stage(name, float(begin), float(weight), self._note)
        self._stage_name = name
        self._note(begin, f"Stage: {name}", name, urgent=True)
        return self._stage

    def progress_callback(self, progress: float, message: str | None = None) -> None:
        """The seed's ``progress_callback(progress, message)``: ``progress`` from 0 to 1."""
        # Anything but a real number goes as it is, for the sender to log and drop ("5" * 100
        # would be a string of a hundred fives).
        real = isinstance(progress, numbers.Real) and not isinstance(progress, bool)
        self.update(progress * 100 if real else progress, message)

    def heartbeat(self) -> None:
        """Ask for a heartbeat (sent unless progress goes out first, which counts as one)."""
        self._heartbeat_wanted = True
        self.wake()

    def save_checkpoint(self, state: Mapping[str, Any]) -> None:
        """Keep ``state`` (a JSON object of at most 32 KiB: where the work is, what is done)
        with the job, as the state of the work at the percentage last given to ``update``.
        Returns at once: a heartbeat takes it to the server (at most every ``min_interval``,
        a newer one replacing it until then, and before the final status). If the job is
        requeued, the worker that claims it gets it back (``resume``) and the job resumes at
        that percentage. A state that is not such an object is logged and dropped, never
        raised."""
        try:
            checked = check_checkpoint(dict(state))
        except (TypeError, ValueError) as e:  # InvalidInputError is a ValueError
            logger.warning("job %s: checkpoint not kept: %s", self.job_id, e)
            return
        # It stands for the work done up to the percentage last noted: the job resumes there.
        latest = self._latest
        at = None if latest is None else latest[0]
        valid = isinstance(at, int | float) and not isinstance(at, bool) and 0 <= at <= 100
        self._checkpoint = (checked, math.floor(at) if valid else None)  # type: ignore[arg-type]
        self.wake()  # a pending checkpoint is sent as a heartbeat (``next_call``)

    def create_first(self, body: Mapping[str, Any], *, job_id: str | None = None) -> None:
        """Make the job on the server before anything else is sent: ``body`` is
        ``POST /api/v1/jobs``'s (``client.job_body``), with this reporter's job id, or
        ``job_id`` for another job to make first (a run's, before its rank's). Called again,
        the jobs are made in the order given. It is sent as a report is, never waited for:
        retried while the server cannot be reached, kept in the spool with the reports if
        the close comes first. The same id twice makes one job; a refusal (an id another job
        has) is the reporter's ``refusal``, and nothing more is sent. Call it before the
        first report."""
        body = {**body, "id": job_id or self.job_id}
        call = Call(CallKind.CREATE, "POST", "/api/v1/jobs", body)
        if self._create is None:
            self._create = call
        else:
            self._creates.append(call)
        self.wake()

    def complete(
        self, success: bool = True, message: str | None = None, *, cancelled: bool = False
    ) -> None:
        """Finish the job (FINISHED at 100%), fail it (FAILED, percentage kept) or, with
        ``cancelled``, end it as CANCELLED after a cancel request. The first call wins; it is
        delivered before the reporter closes, or retried until the close deadline."""
        if self._final is not None:
            return
        if message is not None:
            message = _clip(message)
        self._final = {"success": bool(success), "message": message, "worker_id": self.worker}
        if cancelled and not success:
            self._final["cancelled"] = True
        if self._job_over:
            # The job ended on the server already (finished at 100%, cancelled): nothing to send.
            self._final_done = True
        self.wake()

    def _complete_on_exit(self, exc: BaseException | None) -> None:
        """Leaving a ``with`` block: FINISHED, or FAILED with the exception that ended it."""
        if exc is None:
            self.complete(True)
        else:
            self.complete(False, f"{type(exc).__name__}: {exc}")

    # -- the shell's side: what to send, and what came back ------------------------------------

    @property
    def finished(self) -> bool:
        """The job has ended on the server with nothing left to send: the final status was
        acknowledged, or the server's answer showed the job had ended already. False when the
        server could not be reached or refused the reports (``refusal`` says why)."""
        return self._final_done and self._job_ended

    @property
    def stopped(self) -> bool:
        """Nothing more will be sent: the job has ended, or the server refused its reports for
        good (an unknown job, a wrong key, an ended job: ``refusal``)."""
        return self._job_over

    @property
    def idle(self) -> bool:
        """Nothing is waiting to be sent."""
        if self._in_flight is not None:
            return False
        if self._job_over:
            return True
        if self._create is not None or (self._final is not None and not self._final_done):
            return False
        return not self._progress_pending() and self._checkpoint is None

    def _progress_pending(self) -> bool:
        latest = self._latest
        return bool(self._urgent) or (latest is not None and latest is not self._sent)

    def delay(self) -> float | None:
        """Seconds until :meth:`next_call` may return something; None when idle (then the next
        note wakes the shell)."""
        # Parked first, looked second: a note made while we look still wakes the shell.
        self._parked = True
        wait = self._delay()
        if wait is not None:
            self._parked = False
        return wait

    def _delay(self) -> float | None:
        if self._in_flight is not None or self._job_over:
            return None
        now = self._clock()
        wait = max(0.0, self._not_before - now)
        if self._create is not None or (self._final is not None and not self._final_done):
            return wait
        if self._progress_pending():
            return max(wait, self._throttle_wait(now))
        if self._checkpoint is not None:  # at most every min_interval, as progress
            last = self._last_sent_at
            return wait if last is None else max(wait, last + self.min_interval - now)
        if self._heartbeat_wanted:
            return wait
        return None

    def _throttle_wait(self, now: float) -> float:
        latest = self._latest
        if self._urgent or self._last_sent_at is None:
            return 0.0
        if latest is not None and latest[4] != self._sent_stage:
            return 0.0
        return max(0.0, self._last_sent_at + self.min_interval - now)

    def next_call(self) -> Call | None:
        """The request to send now, or None (then wait :meth:`delay` seconds)."""
        wait = self.delay()
        if wait is None or wait > 0:
            return None
        call: Call | None = None
        latest = self._latest
        if self._create is not None:
            call = self._create
        elif self._urgent:
            note, made_at = queued = self._urgent.popleft()
            call = self._progress_call(note, made_at)
            if call is None:  # refused by the checks, or what the job has already
                if note is latest:  # given up on: not checked (and logged) twice
                    self._sent = note
                return self.next_call()
            self._urgent_in_flight = queued
        elif latest is not None and latest is not self._sent:
            # Pending progress goes first, also before the final status: a failure keeps the
            # percentage, so it must be the latest one.
            call = self._progress_call(latest)
            if call is None:  # refused by the checks, or no change since the last one sent
                self._sent = latest
                return self.next_call()
        elif self._final is not None and not self._final_done and self._checkpoint is None:
            call = Call(
                CallKind.RESULT, "PUT", f"/api/v1/remote-jobs/{self.job_id}/result", self._final
            )
        else:  # a heartbeat, or the checkpoint saved last, before the final status
            saved = self._checkpoint  # read once: the worker may save a newer one meanwhile
            call = self._heartbeat_call(saved)
            self._checkpoint_in_flight = saved
            self._heartbeat_wanted = False
        self._in_flight = call
        return call

    def _heartbeat_call(self, saved: tuple[dict[str, Any], int | None] | None) -> Call:
        """A heartbeat, with ``saved`` (a checkpoint and its percentage) if there is one."""
        body: dict[str, Any] = {"worker_id": self.worker}
        if saved is not None:
            body["checkpoint"], at = saved
            if at is not None:
                body["checkpoint_percentage"] = at
        return Call(
            CallKind.HEARTBEAT, "POST", f"/api/v1/remote-jobs/{self.job_id}/heartbeat", body
        )

    def _progress_call(self, note: _Note, made_at: float | None = None) -> Call | None:
        percentage, message, current, total, stage = note
        try:
            if isinstance(percentage, bool) or not 0 <= percentage <= 100:  # NaN fails too
                raise ValueError
            # Whole percents, as the server keeps them: a fraction below 1 would be refused
            # there as a likely 0..1 value, and is 0% here.
            percentage = math.floor(percentage)
        except (TypeError, ValueError):
            logger.warning(
                "job %s: percentage must be a number 0..100, got %r", self.job_id, percentage
            )
            return None
        for name, count in (("current", current), ("total", total)):
            if count is not None and (
                isinstance(count, bool) or not isinstance(count, int) or count < 0
            ):
                logger.warning(
                    "job %s: %s must be an integer >= 0, got %r", self.job_id, name, count
                )
                return None
        if message is not None:
            message = _clip(message)
        sent = self._sent
        if (
            sent is not None
            and sent[0] == percentage
            and (message, current, total, stage) == (sent[1], sent[2], sent[3], sent[4])
        ):
            return None  # the same as the last one delivered: nothing new to say
        body: dict[str, Any] = {
            "percentage": percentage,
            "timestamp": _iso(self._wall() if made_at is None else made_at),
            "seq": next(self._seq),
        }
        if message is not None:
            body["message"] = message
        if current is not None:
            body["current"] = current
        if total is not None:
            body["total"] = total
        if stage is not None:
            body["stage"] = stage
        if self.attempt is not None:
            body["attempt"] = self.attempt
        body["worker_id"] = self.worker
        return Call(
            CallKind.PROGRESS,
            "PUT",
            f"/api/v1/remote-jobs/{self.job_id}/progress",
            body,
            (percentage, message, current, total, stage),
            note,
        )

    def undelivered(self) -> list[Call]:
        """What is still to be sent, in order, as the requests that would send it (a spool
        keeps them when the close deadline passes): the request in flight, the queued notes,
        the latest update and the final status. Nothing once the server refused for good.
        Each progress request carries the time its note was made and a new sequence number,
        so sending it again, or after a newer one, changes nothing the job has."""
        if self._job_over:
            return []
        calls: list[Call] = []
        in_flight = self._in_flight
        if self._create is not None and in_flight is not self._create:
            calls.append(self._create)
        if in_flight is not None and in_flight.kind is not CallKind.HEARTBEAT:
            calls.append(in_flight)
        calls += self._creates
        queued = list(self._urgent)
        for note, made_at in queued:
            call = self._progress_call(note, made_at)
            if call is not None:
                calls.append(call)
        latest = self._latest
        # The latest, unless it is owed already (in flight, or queued: the first update).
        owed = [note for note, _ in queued] + ([in_flight.note] if in_flight else [])
        if latest is not None and latest is not self._sent and all(n is not latest for n in owed):
            call = self._progress_call(latest)
            if call is not None:
                calls.append(call)
        saved = self._checkpoint
        if saved is not None:  # kept before the final status, as it is sent
            calls.append(self._heartbeat_call(saved))
        final_in_flight = in_flight is not None and in_flight.kind is CallKind.RESULT
        if self._final is not None and not self._final_done and not final_in_flight:
            calls.append(
                Call(
                    CallKind.RESULT,
                    "PUT",
                    f"/api/v1/remote-jobs/{self.job_id}/result",
                    self._final,
                )
            )
        return calls

    def settle(
        self,
        call: Call,
        verdict: Verdict,
        *,
        job: dict[str, Any] | None = None,
        cancel_requested: bool | None = None,
        detail: object = None,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        """Record what became of ``call``, whatever carried it (HTTP, or a tracker in the same
        process): with TAKEN, the job as it now is and whether a cancel was asked for; with
        RETRY, a wait the other side asked for; with REFUSED or OVER, why (and the HTTP
        ``status`` that said so)."""
        self._in_flight = None
        urgent, self._urgent_in_flight = self._urgent_in_flight, None
        checkpoint, self._checkpoint_in_flight = self._checkpoint_in_flight, None
        # Kept (or refused for good): forgotten, unless a newer one was saved meanwhile.
        # Retried, it stays pending and goes in the next heartbeat.
        if (
            verdict is not Verdict.RETRY
            and checkpoint is not None
            and self._checkpoint is checkpoint
        ):
            self._checkpoint = None
        now = self._clock()
        # Sent again first once the server is back; when the queue is full, the oldest (this
        # one) gives way, as it does on the worker's side.
        if verdict is Verdict.RETRY and urgent is not None and len(self._urgent) < _URGENT:
            self._urgent.appendleft(urgent)
        if verdict is Verdict.TAKEN:
            self._failures = 0
            self._not_before = 0.0
            self._accept(call, job, cancel_requested, now)
            return
        if verdict is Verdict.RETRY:
            self._failures += 1
            backoff = min(self.max_backoff, 0.1 * 2 ** min(self._failures - 1, 16))
            backoff = random.uniform(backoff / 2, backoff)  # jitter: replicas do not stampede
            if retry_after is not None:
                backoff = max(backoff, min(retry_after, 300.0))
            self._not_before = now + backoff
            if call.kind is CallKind.HEARTBEAT:
                self._heartbeat_wanted = True
            # A failed progress call stays pending by itself: _sent did not move.
            return
        # Never this report, and with OVER never anything again (nor after a job not made).
        if call.kind is CallKind.CREATE:
            self._create = None
            self._creates.clear()
            verdict = Verdict.OVER
        if verdict is Verdict.OVER:
            self.refusal = (status, str(detail))
        logger.warning(
            "job %s: the server refused the %s report%s: %s",
            self.job_id,
            call.kind.value,
            "; reporting stops" if verdict is Verdict.OVER else "",
            detail,
        )
        if call.kind is CallKind.PROGRESS:
            self._mark_sent(call)
        if verdict is Verdict.OVER:
            self._job_over = True
            if call.kind is CallKind.RESULT or self._final is not None:
                self._final_done = True

    def settle_http(
        self, call: Call, status: int | None, reply: Any = None, retry_after: str | None = None
    ) -> None:
        """Record an HTTP answer to ``call``: its ``status`` and decoded ``reply``, or
        ``status=None`` for a network error."""
        verdict = verdict_of_status(status)
        if verdict is Verdict.TAKEN and isinstance(reply, dict):
            job = reply if call.kind is CallKind.CREATE else reply.get("job")
            cancel = reply.get("cancel_requested")
            self.settle(
                call,
                verdict,
                job=job if isinstance(job, dict) else None,
                cancel_requested=cancel if isinstance(cancel, bool) else None,
            )
            return
        detail = reply.get("detail") if isinstance(reply, dict) else reply
        if status is not None and verdict is not Verdict.TAKEN:
            detail = f"HTTP {status}: {detail}"
        self.settle(
            call,
            verdict,
            detail=detail,
            retry_after=retry_after_seconds(retry_after),
            status=status,
        )

    def _mark_sent(self, call: Call) -> None:
        # The note itself if it is still the latest; otherwise a newer one is pending, and the
        # checked value stands for what the server has (so a repeat of it is not sent again).
        self._sent = call.note if self._latest is call.note else call.value

    def settle_response(self, call: Call, response: Response) -> None:
        """Record a received (and read) HTTP response to ``call``."""
        try:
            reply: Any = response.json()
        except ValueError:
            reply = None
        self.settle_http(call, response.status_code, reply, response.headers.get("retry-after"))

    def _accept(
        self, call: Call, job: dict[str, Any] | None, cancel_requested: bool | None, now: float
    ) -> None:
        if cancel_requested is not None:
            self.cancel_requested = cancel_requested
        if job is not None and (call.body or {}).get("id", self.job_id) == self.job_id:
            self._job = job  # not another job made first (a run's)
        if call.kind is CallKind.CREATE:
            self._create = self._creates.popleft() if self._creates else None
        elif call.kind is CallKind.PROGRESS:
            self._mark_sent(call)
            self._sent_stage = call.body.get("stage") if call.body else None
            self._last_sent_at = now
            self._heartbeat_wanted = False
            if self._job and self._job.get("status") in ("FINISHED", "FAILED", "CANCELLED"):
                # Terminal states are sticky: later progress and results would be refused.
                self._job_over = True
                self._job_ended = True
                self._final_done = self._final is not None
        elif call.kind is CallKind.HEARTBEAT and call.body and "checkpoint" in call.body:
            self._last_sent_at = now  # a checkpoint counts toward min_interval, as progress
        elif call.kind is CallKind.RESULT:
            self._final_done = True
            self._job_over = True
            self._job_ended = True


def job_body(
    document_name: str,
    document_type: str,
    *,
    job_id: str | None = None,
    parent_id: str | None = None,
    weight: float = 1.0,
    remote: bool = False,
    metadata: Mapping[str, Any] | None = None,
    expected_children: int | None = None,
) -> dict[str, Any]:
    """The body of ``POST /api/v1/jobs`` for these fields (the name and type cut to what the
    server keeps), as ``client.create_job`` sends it and a reporter's ``create_first`` does.
    ``expected_children``: the children the job will have (a run's ranks, docs/ranks.md)."""
    body: dict[str, Any] = {
        "document_name": document_name[:255],
        "document_type": document_type[:64],
        "weight": weight,
        "remote": remote,
    }
    if job_id is not None:
        body["id"] = job_id
    if parent_id is not None:
        body["parent_id"] = parent_id
    if metadata is not None:
        body["metadata"] = dict(metadata)
    if expected_children is not None:
        body["expected_children"] = expected_children
    return body
