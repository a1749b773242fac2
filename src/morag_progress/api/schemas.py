"""The HTTP contract: request and response bodies (pydantic), as OpenAPI documents them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from morag_progress.bounds import (
    ID_PATTERN,
    MAX_CHECKPOINT_BYTES,
    MAX_EXPECTED_CHILDREN,
    MAX_ID,
    MAX_MESSAGE,
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    MAX_NAME,
    MAX_SECONDS_OR_WEIGHT,
    MAX_STAGE,
    MAX_TYPE,
    check_checkpoint,
    check_id,
    check_metadata,
    check_timestamp,
    text_rule,
)
from morag_progress.chat import LIVE_DEFAULT_URL, is_live
from morag_progress.eta import Eta
from morag_progress.models import FeedEvent, Job, JobStatus

__all__ = [
    "BatchIn",
    "BatchItem",
    "BatchItemOut",
    "BatchOut",
    "ClaimIn",
    "DeliveryOut",
    "FeedEventOut",
    "HeartbeatIn",
    "JobCreate",
    "JobList",
    "JobOut",
    "LogsOut",
    "ProgressIn",
    "ProgressOut",
    "ResultIn",
    "SearchText",
    "StreamTokenIn",
    "StreamTokenOut",
    "WebhookCreated",
    "WebhookIn",
    "WebhookOut",
    "WorkerList",
    "WorkerOut",
]

# The columns' ranges: a larger number is a 422 naming the field, not a database error.
_INT = 2**31 - 1
_BIGINT = 2**63 - 1


def _storable(value: str) -> str:
    rule = text_rule(value)
    if rule is not None:
        raise ValueError(rule)
    return value


def _job_id(value: str) -> str:
    check_id("id", value)
    return value


def _not_a_fraction(value: float) -> float:
    if 0 < value < 1:
        raise ValueError(
            "must be 0 or from 1 to 100: a value between 0 and 1 would be floored to 0; "
            "send a fraction of the work as progress (0..1)"
        )
    return value


def _not_blank(value: str) -> str:
    if value and not value.strip():
        raise ValueError("must not be blank")
    return value


_Storable = AfterValidator(_storable)
Message = Annotated[str, StringConstraints(max_length=MAX_MESSAGE), _Storable]
Stage = Annotated[str, StringConstraints(max_length=MAX_STAGE), _Storable]
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_NAME), _Storable, AfterValidator(_not_blank)
]
_WORKER = (
    "The reporting worker's name (the Python reporter and `run` send their host and process), "
    "shown in the Workers view. It names a job that has no worker yet: a claimed job keeps its "
    "claim's name."
)
DocumentId = Annotated[str, StringConstraints(max_length=MAX_NAME), _Storable]
DocumentType = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TYPE), _Storable]
SearchText = Annotated[str, StringConstraints(max_length=200), _Storable]
Url = Annotated[str, StringConstraints(min_length=1, max_length=2048), _Storable]
JobId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID),
    AfterValidator(_job_id),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": MAX_ID, "pattern": ID_PATTERN}),
]


def _iso_text(value: Any) -> Any:
    # Lax mode would read a number (or a string of digits) as Unix seconds; the contract is an
    # ISO 8601 string.
    if not isinstance(value, str | datetime) or (
        isinstance(value, str) and value.strip().lstrip("-").replace(".", "", 1).isdigit()
    ):
        raise ValueError("must be an ISO 8601 date-time string")
    return value


def _in_range(value: datetime) -> datetime:
    return check_timestamp("timestamp", value)


IsoDateTime = Annotated[datetime, BeforeValidator(_iso_text), AfterValidator(_in_range)]
Metadata = Annotated[dict[str, Any], AfterValidator(check_metadata)]


Checkpoint = Annotated[
    dict[str, Any],
    AfterValidator(check_checkpoint),
    Field(
        description=f"The worker's resume state: a JSON object of at most "
        f"{MAX_CHECKPOINT_BYTES} bytes, {MAX_METADATA_DEPTH} levels deep. The job keeps the "
        "latest one and the percentage it was saved at; requeued, the job resumes at that "
        "percentage and its next claim hands the checkpoint back (docs/resume.md)."
    ),
]


class _Body(BaseModel):
    # An unknown field is most likely a typo ("percent" for "percentage"): refuse it by name.
    model_config = ConfigDict(extra="forbid")


class ProgressIn(_Body):
    """A progress report from a worker (the seed's body, plus ordering and counts)."""

    # strict: true/false are not numbers here (lax mode would read them as 1 and 0).
    percentage: Annotated[float, AfterValidator(_not_a_fraction)] | None = Field(
        default=None,
        ge=0,
        le=100,
        allow_inf_nan=False,
        strict=True,
        description="0 to 100 in whole percents: 52.7 is 52. A value between 0 and 1 is "
        "refused (it is almost always a fraction: send it as `progress`). Give this or "
        "`progress`.",
    )
    progress: float | None = Field(
        default=None,
        ge=0,
        le=1,
        allow_inf_nan=False,
        strict=True,
        description="0 to 1, the fraction done (0.5 is 50%), as Celery callbacks report it. "
        "Give this or `percentage`.",
    )
    message: Message | None = Field(default=None, description="Summary.")
    timestamp: IsoDateTime | None = Field(
        default=None,
        description="When it happened (ISO 8601; naive means UTC); default: when received. "
        "More than 5 minutes in the future is refused.",
    )
    current: int | None = Field(
        default=None, ge=0, le=_BIGINT, strict=True, description="Items done."
    )
    total: int | None = Field(
        default=None, ge=0, le=_BIGINT, strict=True, description="Items in all."
    )
    stage: Stage | None = Field(default=None, description="Current stage name.")
    worker_id: Name | None = Field(default=None, description=_WORKER)
    attempt: int | None = Field(
        default=None, ge=1, le=_INT, strict=True, description="Attempt this report belongs to."
    )
    seq: int | None = Field(
        default=None,
        ge=0,
        le=_BIGINT,
        strict=True,
        description="Orders reports with equal timestamps.",
    )
    checkpoint: Checkpoint | None = None

    @model_validator(mode="after")
    def _one_amount(self) -> ProgressIn:
        if (self.percentage is None) == (self.progress is None):
            raise ValueError("give exactly one of percentage (0..100) or progress (0..1)")
        return self

    @property
    def percent(self) -> float:
        """The report as a percentage 0..100 (``progress`` scaled; the tracker floors it)."""
        if self.percentage is not None:
            return self.percentage
        assert self.progress is not None
        # 0.29 * 100 is 28.999999999999996: round off the float error before the floor.
        return round(self.progress * 100, 6)


class BatchItem(ProgressIn):
    """One report of a batch: a progress report and the job it is for."""

    job_id: JobId


class BatchIn(_Body):
    """Reports for many jobs, applied in order by the server's writer in one transaction
    (shared with other reports); answered once it has committed."""

    updates: list[BatchItem] = Field(min_length=1, max_length=1000)


class BatchItemOut(BaseModel):
    """What became of one report of a batch."""

    job_id: str
    status: int = Field(description="As for a single report: 200, 404, 409 or 422.")
    applied: bool
    cancel_requested: bool
    detail: str | None = None


class BatchOut(BaseModel):
    """One result per report, in the order sent."""

    results: list[BatchItemOut]


class ClaimIn(_Body):
    """A worker asking for the next job waiting for a remote worker."""

    worker_id: Name = Field(description="The worker's name.")
    document_types: list[DocumentType] | None = Field(
        default=None, max_length=50, description="Only jobs of these types."
    )


class ResultIn(_Body):
    """A worker's final word on a job."""

    success: bool = Field(strict=True, description="true or false (not a string).")
    message: Message | None = None
    cancelled: bool = Field(
        default=False,
        description="With success false: the worker stopped on a cancel request (CANCELLED).",
    )
    worker_id: Name | None = Field(default=None, description=_WORKER)


class HeartbeatIn(_Body):
    """A heartbeat's optional body: who sends it, and a checkpoint to keep."""

    worker_id: Name | None = Field(default=None, description=_WORKER)
    checkpoint: Checkpoint | None = None
    checkpoint_percentage: int | None = Field(
        default=None,
        ge=0,
        le=100,
        strict=True,
        description="The percentage the checkpoint stands for (the job resumes there if "
        "requeued); default: the job's percentage now. Only with `checkpoint`.",
    )

    @model_validator(mode="after")
    def _with_its_checkpoint(self) -> HeartbeatIn:
        if self.checkpoint_percentage is not None and self.checkpoint is None:
            raise ValueError("checkpoint_percentage needs a checkpoint")
        return self


class JobCreate(_Body):
    """A new job. A client-chosen ``id`` is idempotent: the same request twice makes one job."""

    document_name: Name
    document_type: DocumentType
    document_id: DocumentId | None = None
    summary: Message | None = None
    metadata: Metadata | None = Field(
        default=None,
        description=f"Free-form JSON object: at most {MAX_METADATA_DEPTH} levels deep and "
        f"{MAX_METADATA_BYTES} bytes.",
    )
    parent_id: JobId | None = None
    weight: float = Field(default=1.0, gt=0, le=1e9, allow_inf_nan=False, strict=True)
    stall_timeout_s: float | None = Field(
        default=None, gt=0, le=1e9, allow_inf_nan=False, strict=True
    )
    id: JobId | None = None
    remote: bool = Field(
        default=False,
        description="Queue it for a remote worker to claim (WAITING_FOR_REMOTE_WORKER).",
    )
    expected_children: int | None = Field(
        default=None,
        ge=1,
        le=MAX_EXPECTED_CHILDREN,
        strict=True,
        description="The children this job will have (a distributed run's ranks, each made "
        "by its own process): it cannot finish before that many have ended, those not made "
        "yet count as 0%, and the server flags a child that falls behind its siblings "
        "(docs/ranks.md).",
    )
    deadline: IsoDateTime | None = Field(
        default=None,
        description="When the job should have ended (ISO 8601): while it runs, the server "
        "marks it at risk once its predicted finish makes a miss likely (docs/deadlines.md).",
    )
    deadline_seconds: float | None = Field(
        default=None,
        gt=0,
        le=MAX_SECONDS_OR_WEIGHT,
        allow_inf_nan=False,
        strict=True,
        description="The deadline as seconds from now, instead of ``deadline``.",
    )

    @model_validator(mode="after")
    def _one_deadline(self) -> JobCreate:
        if self.deadline is not None and self.deadline_seconds is not None:
            raise ValueError("give deadline or deadline_seconds, not both")
        return self


class ChildOut(BaseModel):
    """One child of a job, in brief."""

    id: str
    percentage: int
    straggler: bool


class JobOut(BaseModel):
    """A job as it is now."""

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
    claimed_by: str | None = Field(description="Id of the worker key that claimed the job.")
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
    rate: float | None = Field(
        description="Percent per second now, measured over spans of at least a second (a "
        "running job's slows while it is silent); null until known."
    )
    eta_seconds: float | None = Field(
        description="Seconds left (docs/eta.md); null when nothing supports an estimate or "
        "the job is not running."
    )
    eta_low_seconds: float | None = Field(description="The estimate's p10.")
    eta_high_seconds: float | None = Field(description="The estimate's p90.")
    eta_basis: Literal["live", "history", "blend"] | None = Field(
        description="What the estimate rests on: this job's pace, finished jobs of its kind, "
        "or both."
    )
    expected_start_at: datetime | None = Field(
        description="For a job waiting for a remote worker: when it is expected to start."
    )
    children: int = Field(description="Jobs that name this one as their parent.")
    children_done: int = Field(description="How many of those have ended.")
    traceparent: str | None = Field(
        description="The job's span as a W3C traceparent: a worker's spans started in it join "
        "the trace of whoever created the job (docs/operations.md)."
    )
    created_by: str | None = Field(
        description="Who created the job: ``<role>:<key id>`` of an API key, ``server``, or "
        "``local:<host>`` for a process writing the store directly; null for a job created "
        "before the audit trail."
    )
    checkpoint_percentage: int | None = Field(
        default=None,
        description="The percentage the job's latest checkpoint was saved at (a requeue "
        "resumes the job there); null when its worker saved none.",
    )
    expected_children: int | None = Field(
        default=None,
        description="The children the job expects (a distributed run's ranks): it cannot "
        "finish before that many have ended (docs/ranks.md); null for any other job.",
    )
    straggler: bool = Field(
        default=False,
        description="A child the server flagged as falling behind its siblings (a slow rank "
        "of a run).",
    )
    stragglers: int = Field(
        default=0, description="How many of the job's children are flagged as stragglers now."
    )
    deadline: datetime | None = Field(
        default=None, description="When the job should have ended; null without one."
    )
    at_risk: Literal["deadline", "long"] | None = Field(
        default=None,
        description="Why the server marked the running job at risk: deadline (its predicted "
        "finish makes a miss likely, or it is past its deadline) or long (it has run longer "
        "than the p95 of its kind's finished jobs); null while it is not. Set by the monitor "
        "while the job runs: a job that stopped running keeps its last verdict "
        "(docs/deadlines.md).",
    )
    time_progress: int | None = Field(
        default=None,
        description="How far along in time the running job is (0-100): the share of their "
        "time finished jobs of its kind had spent at its percentage, which differs from the "
        "percentage where its stages take uneven time (docs/eta.md); null without that "
        "history, and for jobs that do not run.",
    )
    slowest_child: ChildOut | None = Field(
        default=None,
        description="A running parent's running child with the lowest percentage (a run's "
        "slowest rank); null for any other job.",
    )
    checkpoint: dict[str, Any] | None = Field(
        default=None,
        description="The latest checkpoint itself: in a claim's answer and a read of the one "
        "job (`GET /api/v1/jobs/{id}`); null in lists and progress replies, which may hold "
        "many jobs or come many times a second.",
    )
    created_by_name: str | None = Field(
        default=None,
        description="The name of the key in ``created_by`` (``keys create --name``), when it "
        "has one and is the caller's own (an admin sees every key's); null otherwise, and in "
        "the answer to a progress report.",
    )

    @classmethod
    def of(
        cls,
        job: Job,
        *,
        eta: Eta | bool | None = True,
        expected_start_at: datetime | None = None,
        checkpoint: bool = False,
    ) -> JobOut:
        """A job as the API writes it; the estimate as given (True: the live one now); with
        ``checkpoint``, the checkpoint itself (a claim's answer, a read of the one job)."""
        data = job.to_dict(eta=eta, expected_start_at=expected_start_at)
        if checkpoint:
            data["checkpoint"] = job.checkpoint
        return cls.model_validate(data)


class ProgressOut(BaseModel):
    """What became of a progress report."""

    success: bool
    message: str
    applied: bool = Field(description="False when the report was older than the job's state.")
    cancel_requested: bool = Field(description="True when the worker should stop.")
    job: JobOut


class LogsOut(BaseModel):
    """What the server found in uploaded log lines."""

    lines: int = Field(description="Lines received.")
    events: int = Field(description="Lines that carried progress.")
    coalesced: int = Field(
        description="Of those, lines not applied one by one: of each run of equal percentage "
        "only the last is, and at most 50 per upload (evenly spread, the latest always)."
    )
    applied: int = Field(description="Progress events applied (the rest were older).")
    cancel_requested: bool
    job: JobOut


class JobList(BaseModel):
    """A page of jobs, newest first."""

    jobs: list[JobOut]
    next_cursor: str | None = Field(description="Pass as ``cursor`` for the next page.")


class FeedEventOut(BaseModel):
    """One applied change of a job."""

    id: int
    job_id: str
    status: JobStatus
    percentage: int
    message: str | None
    attempt: int
    current: int | None
    total: int | None
    stage: str | None
    timestamp: datetime
    recorded_at: datetime
    actor: str | None = Field(
        description="Who made the change (as a job's ``created_by``); null before the audit trail."
    )
    actor_name: str | None = Field(
        default=None,
        description="The name of the key in ``actor``, as a job's ``created_by_name``.",
    )
    action: str | None = Field(
        description="What kind of change: create, report (progress, result or failure), start "
        "(a heartbeat woke the job), claim, cancel (asked to stop), requeue, stall, abandon, "
        "rollup (a parent followed its children), straggler (one of a run's ranks fell behind "
        "its siblings), at_risk (the job will likely miss its deadline, or runs longer than "
        "usual)."
    )

    @classmethod
    def of(cls, event: FeedEvent, names: Mapping[str, str] | None = None) -> FeedEventOut:
        """An event as the API writes it; ``names``: actors' key names (``Estimates.names``)."""
        return cls(
            id=event.id,
            job_id=event.job_id,
            status=event.status,
            percentage=event.percentage,
            message=event.message,
            attempt=event.attempt,
            current=event.current,
            total=event.total,
            stage=event.stage,
            timestamp=event.timestamp,
            recorded_at=event.recorded_at,
            actor=event.actor,
            actor_name=None if names is None or event.actor is None else names.get(event.actor),
            action=event.action,
        )


class StreamTokenOut(BaseModel):
    """A short-lived token that opens event streams: ``GET /api/v1/events?token=...``."""

    token: str
    expires_at: datetime
    expires_in: float = Field(description="Seconds the token stays valid for opening streams.")


class StreamTokenIn(_Body):
    """A stream token to revoke."""

    token: str = Field(min_length=1, max_length=128, description="The token, as it was made.")


WebhookEvent = Literal[
    "job.progress",
    "job.stalled",
    "job.finished",
    "job.failed",
    "job.cancelled",
    "job.straggler",
    "job.at_risk",
]


_TELEGRAM_TOKEN = r"^[0-9]{1,20}:[A-Za-z0-9_-]{20,100}$"
_CHAT_TOKEN = r"^[\x21-\x7e]{1,512}$"


class WebhookIn(_Body):
    """A URL to call on job events, or a chat to keep one live message per job in."""

    url: Url | None = Field(
        default=None,
        description="An http(s) URL. For ntfy, the topic's (``https://ntfy.sh/my-jobs``); "
        "for slack with a token and for telegram, the API's, which it defaults to "
        "(``https://slack.com/api``, ``https://api.telegram.org``).",
    )
    events: list[WebhookEvent] = Field(min_length=1, max_length=len(get_args(WebhookEvent)))
    progress_interval_s: float = Field(
        default=10.0,
        ge=1,
        le=86_400,
        allow_inf_nan=False,
        description="At most one job.progress per job this often.",
    )
    format: Literal["json", "slack", "discord", "telegram", "ntfy"] = Field(
        default="json",
        description="json: our signed event; slack (without a token) or discord: their "
        "incoming webhooks' body (one line of text an event); slack with a bot token, "
        "telegram or ntfy: one live message per job, posted once and edited as it moves.",
    )
    max_per_hour: int | None = Field(
        default=None,
        ge=1,
        le=3600,
        description="At most this many deliveries an hour; later ones in the hour are dropped. "
        "Default: none for json, 30 for slack and discord. For a live message, the pace of "
        "its sends (none dropped: the newest state waits): 3,000 for Slack, 1,200 for "
        "Telegram, 720 for ntfy by default, within each platform's published limits.",
    )
    token: str | None = Field(
        default=None,
        pattern=_CHAT_TOKEN,
        description="slack: a bot token (xoxb-..., with chat:write); telegram: the bot's "
        "token; ntfy: an access token, for a protected topic. Stored, never shown.",
    )
    channel: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        pattern=r"^[\x21-\x7e]+$",
        description="slack: the channel's id (C...) or name; telegram: the chat's id or "
        "@channelusername.",
    )

    @model_validator(mode="after")
    def _platform(self) -> WebhookIn:
        live = is_live(self.format, self.token)
        if not live and (self.token is not None or self.channel is not None):
            raise ValueError(
                f"token, channel: format {self.format} takes neither (only slack with a bot "
                "token, telegram and ntfy do)"
            )
        if self.format in ("slack", "telegram") and live and self.channel is None:
            raise ValueError(f"channel: format {self.format} needs the chat to post in")
        if self.format == "telegram" and not re.fullmatch(_TELEGRAM_TOKEN, self.token or ""):
            raise ValueError("token: format telegram needs the bot's token (<digits>:<letters>)")
        if self.format == "ntfy" and self.channel is not None:
            raise ValueError("channel: format ntfy takes none (its topic is in the url)")
        if self.url is None:
            if not live or self.format not in LIVE_DEFAULT_URL:
                raise ValueError("url: is required for this format")
            self.url = LIVE_DEFAULT_URL[self.format]
        if live and "progress_interval_s" not in self.model_fields_set:
            self.progress_interval_s = 1.0  # a live message moves about once a second
        return self


class WebhookOut(BaseModel):
    """A registered webhook (without its secret or token)."""

    id: str
    url: str
    events: list[str]
    progress_interval_s: float
    format: str
    max_per_hour: int | None
    created_at: datetime
    channel: str | None = Field(default=None, description="Where its live messages post.")
    live: bool = Field(
        default=False,
        description="It keeps one message per job up to date (slack with a "
        "bot token, telegram, ntfy).",
    )


class WebhookCreated(WebhookOut):
    """A new webhook, with the secret that signs its deliveries. Shown this once."""

    secret: str = Field(description="HMAC-SHA256 key of X-Morag-Signature; keep it safe.")


class DeliveryOut(BaseModel):
    """One delivery of an event to a webhook, and what became of it."""

    id: int
    event_id: int
    event_type: str
    job_id: str
    state: Literal["pending", "delivered", "failed", "superseded"] = Field(
        description="superseded: a job's progress delivery replaced, while it waited, by the "
        "job's next one."
    )
    attempts: int
    last_status: int | None = Field(description="The receiver's last HTTP status.")
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime
    delivered_at: datetime | None


class WorkerOut(BaseModel):
    """One worker, as the jobs it reported on show it."""

    worker_id: str
    user_id: str | None = Field(description="Whose worker (an admin sees every user's).")
    last_seen: datetime = Field(description="Its last report or heartbeat on any job.")
    current_job: JobOut | None = Field(description="The job it runs now (the latest), if any.")
    finished: int = Field(description="Jobs it finished in the window.")
    failed: int = Field(description="Jobs it failed in the window.")
    state: Literal["running", "stalled", "idle", "offline"] = Field(
        description="running a job; stalled (its job fell silent past its stall timeout); "
        "idle (seen lately, running nothing); offline (not seen for the stall timeout, 5 "
        "minutes by default). A worker is seen only through its jobs' reports."
    )
    stalled_job: JobOut | None = Field(
        default=None, description="The job it fell silent on, when it is stalled."
    )


class WorkerList(BaseModel):
    """Workers seen in the window or running a job now, the most recently seen first."""

    window_seconds: int
    workers: list[WorkerOut]
