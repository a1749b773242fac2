"""Value objects: job status, parsed progress events, updates, job snapshots, feed events.

These are plain frozen dataclasses: pydantic lives at the boundaries (HTTP bodies, settings).
The status rules that need the job's current state run inside the store's conditional UPDATE
(``store/sql.py``); what can be decided without it lives here.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from operator import attrgetter, itemgetter
from typing import TYPE_CHECKING, Any

import orjson

from morag_progress.audit import ACTOR_LENGTH
from morag_progress.bounds import (
    MAX_ID,
    MAX_NAME,
    MAX_STAGE,
    check_checkpoint,
    check_id,
    check_text,
    check_timestamp,
    clean_text,
)
from morag_progress.errors import (
    InvalidInputError,
    JobConflictError,
    JobNotFoundError,
    JobStateError,
)

if TYPE_CHECKING:  # the estimator is imported when a job is first estimated
    from morag_progress.eta import Eta, History

__all__ = [
    "TERMINAL_STATUSES",
    "FeedEvent",
    "Job",
    "JobStatus",
    "ProgressEvent",
    "ProgressUpdate",
    "UpdateOutcome",
    "UpdateResult",
    "as_utc",
    "status_for_percentage",
    "utcnow",
]


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Return ``value`` in UTC; a naive datetime is taken to be UTC already."""
    tz = value.tzinfo
    if tz is UTC:
        return value
    if tz is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class JobStatus(enum.StrEnum):
    """Where a job is in its life. The values are the MoRAG database values."""

    PENDING = "PENDING"
    """Created, nothing reported yet (or reported 0%)."""
    WAITING_FOR_REMOTE_WORKER = "WAITING_FOR_REMOTE_WORKER"
    """Queued for a remote worker to claim."""
    PROCESSING = "PROCESSING"
    """Reported between 1% and 99%, or explicitly marked processing."""
    STALLED = "STALLED"
    """Processing, but no update or heartbeat within the job's stall timeout."""
    FINISHED = "FINISHED"
    """Done (reported 100% or completed). Terminal."""
    FAILED = "FAILED"
    """Failed; the last percentage is kept. Terminal."""
    CANCELLED = "CANCELLED"
    """Cancelled before or while it ran. Terminal."""

    @property
    def is_terminal(self) -> bool:
        """True for FINISHED, FAILED and CANCELLED: no later update is applied."""
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELLED})


def status_for_percentage(percentage: float) -> JobStatus:
    """The seed's mapping: 0 -> PENDING, 1..99 -> PROCESSING, 100 -> FINISHED."""
    if percentage >= 100:
        return JobStatus.FINISHED
    if percentage >= 1:
        return JobStatus.PROCESSING
    return JobStatus.PENDING


class ProgressEvent:
    """One piece of progress found in a log line (or built by a caller).

    The constructor takes MoRAG's arguments in MoRAG's order, so
    ``ProgressEvent(75, "Transcribing", timestamp, "remote_worker", "info")`` works as it did.
    A missing timestamp means now (and ``timestamp_inferred`` is then True, so that a tracker
    orders the event by the time it receives it); a naive one is taken as UTC.

    A plain slotted class rather than a dataclass: MoRAG's event was mutable, and the parser
    builds one per progress line, where a frozen dataclass's ``__init__`` costs twice as much.
    """

    __slots__ = (
        "current",
        "level",
        "logger_name",
        "message",
        "percentage",
        "raw_event",
        "timestamp",
        "timestamp_inferred",
        "total",
    )

    def __init__(
        self,
        percentage: int,
        message: str,
        timestamp: datetime | None = None,
        logger_name: str | None = None,
        level: str = "info",
        raw_event: dict[str, Any] | None = None,
        current: int | None = None,
        total: int | None = None,
    ) -> None:
        self.percentage = percentage
        # A log line's text as a database can store it, and as long as a summary may be.
        self.message = clean_text(message) if isinstance(message, str) else message
        self.timestamp_inferred = timestamp is None
        if timestamp is None:
            timestamp = utcnow()
        elif timestamp.tzinfo is not UTC:
            timestamp = as_utc(timestamp)
        self.timestamp: datetime = timestamp
        self.logger_name = logger_name
        self.level = level
        self.raw_event: dict[str, Any] = {} if raw_event is None else raw_event
        self.current = current
        self.total = total

    @property
    def source_timestamp(self) -> datetime | None:
        """The time the log line itself gave, or None when it gave none (then a tracker orders
        the event by the time it receives it, not by the parser's clock)."""
        return None if self.timestamp_inferred else self.timestamp

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ProgressEvent):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable, like MoRAG's

    def __repr__(self) -> str:
        return (
            f"ProgressEvent(percentage={self.percentage!r}, message={self.message!r}, "
            f"timestamp={self.timestamp.isoformat()!r}, current={self.current!r}, "
            f"total={self.total!r})"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the timestamp as ISO 8601)."""
        return {
            "percentage": self.percentage,
            "message": self.message,
            "timestamp": self.timestamp.isoformat(),
            "logger_name": self.logger_name,
            "level": self.level,
            "raw_event": self.raw_event,
            "current": self.current,
            "total": self.total,
        }


def _check_percentage(value: object) -> int | None:
    """Validate a percentage: a finite number in 0..100, floored; ``None`` means unchanged."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError("percentage", "must be a number from 0 to 100", value)
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInputError("percentage", "must be a finite number from 0 to 100", value)
    if not 0 <= value <= 100:
        raise InvalidInputError("percentage", "must be between 0 and 100", value)
    return math.floor(value)


_MAX_COUNT = 2**63 - 1  # the columns' range


def _check_count(name: str, value: object, minimum: int = 0) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(name, "must be an integer", value)
    if value < minimum:
        raise InvalidInputError(name, f"must be at least {minimum}", value)
    if value > _MAX_COUNT:
        raise InvalidInputError(name, f"must be at most {_MAX_COUNT}", value)


@dataclass(frozen=True, slots=True)
class ProgressUpdate:
    """One change to a job, as the tracker applies it.

    ``percentage=None`` keeps the job's percentage (failure, cancel, heartbeat).
    ``status=None`` derives the status from the percentage (docs/architecture.md section 3, rule 1).
    ``timestamp``, ``attempt`` and ``seq`` order updates; ``None`` means "time received",
    "the job's current attempt" and "arrival order".
    """

    job_id: str
    percentage: float | None = None
    """0 to 100; floored to an int on construction."""
    message: str | None = None
    status: JobStatus | None = None
    timestamp: datetime | None = None
    current: int | None = None
    total: int | None = None
    stage: str | None = None
    attempt: int | None = None
    seq: int | None = None
    user_id: str | None = None
    error: str | None = None
    worker_id: str | None = None
    claimant: str | None = None
    """The reporting worker's key id: a job another worker claimed is not found for it."""
    actor: str | None = None
    """Who sends it, for the audit trail (``audit.py``); None: the tracker's own actor."""
    checkpoint: dict[str, Any] | None = None
    """The worker's resume state (a JSON object, at most ``MAX_CHECKPOINT_BYTES``): kept with
    the job, handed back to the worker that claims it after a requeue, which resumes at the
    percentage this update leaves."""

    def __post_init__(self) -> None:
        check_id("job_id", self.job_id)
        object.__setattr__(self, "percentage", _check_percentage(self.percentage))
        if self.status is not None:
            try:
                object.__setattr__(self, "status", JobStatus(self.status))
            except ValueError as e:
                allowed = ", ".join(s.value for s in JobStatus)
                raise InvalidInputError("status", f"must be one of {allowed}", self.status) from e
        # Summaries are free text a worker does not always control: made storable and cut to
        # length rather than refused, so the progress they come with is not lost.
        for name in ("message", "error"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, str):
                    raise InvalidInputError(name, "must be a string", value)
                object.__setattr__(self, name, clean_text(value))
        check_text("stage", self.stage, max_length=MAX_STAGE)
        check_text("worker_id", self.worker_id, max_length=MAX_NAME)
        for name in ("user_id", "claimant"):
            check_text(name, getattr(self, name), max_length=MAX_ID)
        check_text("actor", self.actor, max_length=ACTOR_LENGTH)
        if self.timestamp is not None:
            if not isinstance(self.timestamp, datetime):
                raise InvalidInputError("timestamp", "must be a datetime", self.timestamp)
            object.__setattr__(self, "timestamp", check_timestamp("timestamp", self.timestamp))
        _check_count("current", self.current)
        _check_count("total", self.total)
        _check_count("attempt", self.attempt, minimum=1)
        _check_count("seq", self.seq)
        if self.checkpoint is not None:
            check_checkpoint(self.checkpoint)

    @classmethod
    def final(
        cls,
        job_id: str,
        *,
        success: bool,
        message: str | None = None,
        cancelled: bool = False,
        user_id: str | None = None,
        worker_id: str | None = None,
        claimant: str | None = None,
        actor: str | None = None,
    ) -> ProgressUpdate:
        """A worker's final word: FINISHED at 100%, or FAILED (or CANCELLED when it stopped on
        a cancel request) keeping the percentage."""

        def end(
            pct: float | None, text: str, status: JobStatus, error: str | None = None
        ) -> ProgressUpdate:
            return cls(
                job_id,
                pct,
                text,
                status,
                error=error,
                user_id=user_id,
                worker_id=worker_id,
                claimant=claimant,
                actor=actor,
            )

        if success:
            return end(100, message or "Processing completed successfully", JobStatus.FINISHED)
        if cancelled:
            return end(None, message or "Cancelled", JobStatus.CANCELLED)
        error = message or "Processing failed"
        return end(None, error, JobStatus.FAILED, error)


class UpdateOutcome(enum.StrEnum):
    """What became of an update."""

    APPLIED = "applied"
    """Written, with one change-feed row."""
    STALE = "stale"
    """Older than (or the same as) the last applied update of this attempt; not an error."""
    TERMINAL = "terminal"
    """The job is FINISHED, FAILED or CANCELLED already; terminal states are sticky."""
    SUPERSEDED = "superseded"
    """The update belongs to an older attempt than the job's current one."""
    NOT_FOUND = "not_found"
    """No such job, or it belongs to another user."""
    AMBIGUOUS = "ambiguous"
    """Jobs of several users have this id and the caller (in-process, or an admin) did not say
    whose; nothing was written."""

    @property
    def http_status(self) -> int:
        """The status an HTTP answer carries for this outcome (200, 404 or 409)."""
        return _OUTCOME_STATUS[self]


_OUTCOME_STATUS = {
    UpdateOutcome.APPLIED: 200,
    UpdateOutcome.STALE: 200,
    UpdateOutcome.NOT_FOUND: 404,
    UpdateOutcome.TERMINAL: 409,
    UpdateOutcome.SUPERSEDED: 409,
    UpdateOutcome.AMBIGUOUS: 409,
}


@dataclass(frozen=True, slots=True)
class Job:
    """A snapshot of one job entity (docs/architecture.md section 3)."""

    id: str
    user_id: str | None
    document_name: str
    document_type: str
    document_id: str | None
    status: JobStatus
    percentage: int
    summary: str | None
    current: int | None
    total: int | None
    stage: str | None
    worker_id: str | None
    claimed_by: str | None
    attempt: int
    parent_id: str | None
    weight: float
    metadata: dict[str, Any]
    error: str | None
    cancel_requested: bool
    created_at: datetime
    start_date: datetime | None
    updated_at: datetime
    end_date: datetime | None
    last_seen_at: datetime | None
    stall_timeout_s: float | None
    rate: float | None
    """Smoothed progress rate in percent per second over closed measuring windows (see
    ``eta.Pace``); None until one has closed."""
    children: int = 0
    """How many jobs name this one as their parent."""
    children_done: int = 0
    """How many of them have ended (finished, failed or cancelled)."""
    created_by: str | None = None
    """Who created the job (``audit.py``); None for a job created before the audit trail."""
    traceparent: str | None = None
    """The job's span as a W3C ``traceparent`` (``tracing.py``): a worker's spans started in
    it join the trace of whoever created the job."""
    trace_parent_id: str | None = field(default=None, repr=False)
    """The span id of the job's creator, the parent of the job's span (not written out)."""

    children_weight: float = field(default=0.0, repr=False)
    """The children's summed weights (kept for estimates; not written out)."""
    children_progress: float = field(default=0.0, repr=False)
    """The children's weighted percentages, summed (kept for estimates; not written out)."""
    pace: dict[str, Any] | None = field(default=None, repr=False, compare=False)
    """The live pace (``eta.Pace`` as JSON) the store keeps for estimates; not written out."""
    checkpoint: dict[str, Any] | None = field(default=None, repr=False)
    """The worker's latest checkpoint (``ProgressUpdate.checkpoint``): handed back by a claim
    and a read of this one job, never in lists or progress replies (it may be 32 KiB)."""
    checkpoint_percentage: int | None = None
    """The percentage the checkpoint was saved at: a requeued job resumes there."""
    expected_children: int | None = None
    """A parent's children it expects (a distributed run's ranks, ``ranks.py``): it cannot
    finish before that many have ended, and those not yet made count as 0%."""
    straggler: bool = False
    """A child flagged as falling behind its siblings (``store/runs.py``)."""
    stragglers: int = 0
    """A parent's children flagged as stragglers now."""
    behind_since: datetime | None = field(default=None, repr=False)
    """Since when the server has seen this child behind its siblings (not written out)."""
    deadline: datetime | None = None
    """When the job should have ended (``deadlines.py``); None without one."""
    at_risk: str | None = None
    """Why the server marked the running job at risk (``deadlines.Risk``), else None."""

    def estimate(self, now: datetime | None = None, history: History | None = None) -> Eta | None:
        """The job's ETA at ``now`` (default: the current time) from its live pace and, when
        given, its kind's ``history`` (``eta.estimate``); None unless it is PROCESSING."""
        if self.status is not JobStatus.PROCESSING:
            return None
        from morag_progress.eta import Pace, estimate

        return estimate(
            now=(now or utcnow()).timestamp(),
            percentage=self.percentage,
            pace=Pace.from_json(self.pace),
            history=history,
            total=self.total,
        )

    def to_dict(
        self,
        *,
        now: datetime | None = None,
        eta: Eta | bool | None = True,
        expected_start_at: datetime | None = None,
    ) -> dict[str, Any]:
        """A JSON-ready dict, written as the API writes a job everywhere: timestamps in ISO
        8601 UTC with ``Z``, float fields as floats, and the estimate: ``eta`` as given (True:
        the live estimate at ``now``), its range and basis, and ``expected_start_at``."""
        if eta is True:
            eta = self.estimate(now)
        elif eta is False:
            eta = None
        return _written(_job_values(self), eta, expected_start_at)


def _written(
    values: Sequence[Any], eta: Eta | None, expected_start_at: datetime | None
) -> dict[str, Any]:
    """``Job.to_dict``'s dict from the job's written fields' values (``_JOB_FIELDS``, in
    order): one rule for a ``Job`` and for the values the writer reads, before any ``Job``
    is built of them (``UpdateResult``)."""
    data = dict(zip(_JOB_FIELDS, values, strict=True))
    data["expected_start_at"] = expected_start_at
    data["created_by_name"] = None  # a key's name: the API adds it for whoever may know it
    data["checkpoint"] = None  # up to 32 KiB: only a read of the one job carries it
    data["slowest_child"] = None  # a parent's, read with its children (``api/estimates.py``)
    data["time_progress"] = None  # from its kind's history, read for a list (the same)
    for key in _DATETIME_FIELDS:
        value = data[key]
        if value is not None:
            data[key] = _iso(value)
    for key in _FLOAT_FIELDS:
        value = data[key]
        if value is not None:
            data[key] = float(value)
    data["status"] = data["status"].value
    data["metadata"] = dict(data["metadata"])
    if eta is not None and eta.rate is not None:
        data["rate"] = eta.rate
    data["eta_seconds"] = None if eta is None else eta.seconds
    data["eta_low_seconds"] = None if eta is None else eta.low
    data["eta_high_seconds"] = None if eta is None else eta.high
    data["eta_basis"] = None if eta is None else eta.basis
    return data


def _iso(value: datetime) -> str:
    """``value`` in UTC as ISO 8601, ``Z`` for ``+00:00``, microseconds when it has some: as
    ``isoformat`` writes it (``tests/test_models.py`` holds it to that), by orjson's C code,
    five times faster, and every job written out carries four or five dates."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return orjson.dumps(value, option=orjson.OPT_UTC_Z)[1:-1].decode()


_INTERNAL = frozenset(
    {
        "pace",
        "children_weight",
        "children_progress",
        "trace_parent_id",
        "checkpoint",
        "behind_since",
    }
)
_JOB_FIELDS = tuple(f.name for f in fields(Job) if f.name not in _INTERNAL)
_job_values = attrgetter(*_JOB_FIELDS)
_ALL_FIELDS = tuple(f.name for f in fields(Job))
_written_fields = itemgetter(*(_ALL_FIELDS.index(name) for name in _JOB_FIELDS))
"""A job's written fields' values (``_JOB_FIELDS``) out of all of its fields' (``Job``'s
order)."""
_ID_AT, _CANCEL_AT = _ALL_FIELDS.index("id"), _ALL_FIELDS.index("cancel_requested")
_FLOAT_FIELDS = ("weight", "stall_timeout_s", "rate")
_DATETIME_FIELDS = (
    *(f.name for f in fields(Job) if f.name in _JOB_FIELDS and "datetime" in str(f.type)),
    "expected_start_at",
)


class UpdateResult:
    """What the tracker did with an update, and the job as it is afterwards.

    The writer hands over the job's fields (``of_fields``) and the ``Job`` is built when
    ``job`` is first read: the progress route writes its reply from the fields (``job_dict``)
    and never needs one, and building a frozen dataclass of 39 fields cost about a
    twentieth of a report.
    """

    __slots__ = ("_fields", "_job", "event_id", "outcome")

    def __init__(
        self, outcome: UpdateOutcome, job: Job | None = None, event_id: int | None = None
    ) -> None:
        self.outcome = outcome
        self._job = job
        self._fields: Sequence[Any] | None = None
        self.event_id = event_id
        """The change-feed id of the applied change."""

    @classmethod
    def of_fields(
        cls, outcome: UpdateOutcome, fields: Sequence[Any], event_id: int | None = None
    ) -> UpdateResult:
        """A result whose job has ``fields``: ``Job``'s fields in order, as its constructor
        takes them."""
        result = cls(outcome, None, event_id)
        result._fields = fields
        return result

    @property
    def job(self) -> Job | None:
        """The job after the update (None when there is none to show)."""
        if self._job is None and self._fields is not None:
            self._job = Job(*self._fields)
        return self._job

    @property
    def job_id(self) -> str | None:
        """The job's id, without building the job."""
        if self._job is None and self._fields is not None:
            return str(self._fields[_ID_AT])
        return None if self._job is None else self._job.id

    def job_dict(self) -> dict[str, Any] | None:
        """``job.to_dict(eta=False)``, without building the job."""
        if self._job is None and self._fields is not None:
            return _written(_written_fields(self._fields), None, None)
        return None if self._job is None else self._job.to_dict(eta=False)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UpdateResult):
            return NotImplemented
        return (self.outcome, self.job, self.event_id) == (other.outcome, other.job, other.event_id)

    __hash__ = None  # type: ignore[assignment]  # equal results may hold different jobs

    def __repr__(self) -> str:
        return (
            f"UpdateResult(outcome={self.outcome!r}, job={self.job!r}, event_id={self.event_id!r})"
        )

    @property
    def applied(self) -> bool:
        """True when the update was written."""
        return self.outcome is UpdateOutcome.APPLIED

    @property
    def cancel_requested(self) -> bool:
        """True when someone asked the job to stop: the worker should wind down."""
        if self._job is None and self._fields is not None:
            return bool(self._fields[_CANCEL_AT])
        return self._job is not None and self._job.cancel_requested

    def raise_for_outcome(self, job_id: str) -> UpdateResult:
        """Raise for the outcomes a caller must hear about: not found, terminal, superseded.

        A stale update is not an error (it is simply not applied); the result is returned.
        """
        if self.outcome is UpdateOutcome.NOT_FOUND:
            raise JobNotFoundError(job_id)
        if self.outcome is UpdateOutcome.AMBIGUOUS:
            raise JobConflictError(job_id)
        if self.outcome is UpdateOutcome.TERMINAL:
            state = self.job.status.value if self.job else "terminal"
            raise JobStateError(job_id, f"is {state}: a terminal state is final")
        if self.outcome is UpdateOutcome.SUPERSEDED:
            attempt = self.job.attempt if self.job else "a newer attempt"
            raise JobStateError(job_id, f"runs attempt {attempt}: this update's attempt is older")
        return self


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """One row of the change feed: the job's state right after one applied change."""

    id: int
    job_id: str
    user_id: str | None
    status: JobStatus
    percentage: int
    message: str | None
    attempt: int
    current: int | None
    total: int | None
    stage: str | None
    timestamp: datetime
    """When the change happened, as the update said (else when it was received)."""
    recorded_at: datetime
    """When the store wrote it."""
    actor: str | None = None
    """Who made the change (``audit.py``); None for a change made before the audit trail."""
    action: str | None = None
    """What kind of change it was (``audit.Action``)."""
