"""Settings from ``MORAG_PROGRESS_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import platformdirs
from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from morag_progress.bounds import MAX_SECONDS_OR_WEIGHT
from morag_progress.deadlines import LIKELY
from morag_progress.errors import ConfigurationError

__all__ = ["Settings", "default_database_url", "load_settings"]

_APP_NAME = "morag-progress"


def default_database_url() -> str:
    """A SQLite file in the user's data directory (created on first use)."""
    path = Path(platformdirs.user_data_dir(_APP_NAME)) / "progress.db"
    return f"sqlite:///{path}"


class Settings(BaseSettings):
    """Every setting, read from the environment with the ``MORAG_PROGRESS_`` prefix."""

    model_config = SettingsConfigDict(env_prefix="MORAG_PROGRESS_", extra="ignore")

    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the store; default: a SQLite file in the user data dir.",
    )
    sqlite_synchronous: Literal["NORMAL", "FULL"] = Field(
        default="NORMAL",
        description="NORMAL survives a killed process; FULL also survives power loss, slower.",
    )
    busy_timeout_ms: int = Field(
        default=30_000, ge=0, description="How long a SQLite writer waits for the lock."
    )

    host: str = Field(default="127.0.0.1", description="Address the server binds.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port the server binds.")
    rate_limit_per_second: float = Field(
        default=50.0, ge=0, description="Requests per second per API key; 0 turns the limit off."
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis for state the replicas share (per-key rate limits); unset: each "
        "server process keeps its own.",
    )
    max_body_bytes: int = Field(default=64 * 1024, gt=0, description="Largest request body.")
    max_log_body_bytes: int = Field(
        default=1024 * 1024, gt=0, description="Largest body of a log upload or a batch."
    )
    key_cache_seconds: float = Field(
        default=5.0, ge=0, description="How long a checked key is trusted before a re-check."
    )
    auth_failures_per_minute: float = Field(
        default=30.0,
        ge=0,
        description="Failed sign-ins (bad key or token) one client address may make a minute "
        "before it is answered 429 (0: no limit).",
    )
    max_streams_per_key: int = Field(
        default=32, ge=1, description="Event streams one key (or its tokens) may hold open."
    )
    stream_recheck_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How often an open event stream checks that its key still works.",
    )
    max_connections: int | None = Field(
        default=None,
        ge=1,
        description="Connections the server holds at once; more are closed at once. Default: "
        "the process's file limit less a reserve for the database and logs.",
    )
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How long a connection may take to send a request's headers.",
    )
    body_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How long a request's body may take to arrive after its headers.",
    )
    send_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description=(
            "How long a client may read nothing of an answer the server is sending (its"
            " connection's buffer full) before the connection is dropped, buffer and all."
        ),
    )
    max_header_bytes: int = Field(
        default=64 * 1024, ge=1024, description="Largest request line and headers together."
    )
    access_log: bool = Field(
        default=False,
        description="One log line per request (off by default, as gunicorn's: at the rate "
        "workers report, formatting and writing it costs about a quarter of the server's CPU; "
        "/metrics times every route without it). Secrets in URLs are redacted either way.",
    )
    log_format: Literal["auto", "text", "json"] = Field(
        default="auto",
        description="How serve writes its log on stderr: text lines for a person, one JSON "
        "object a line for a collector, or auto (text in a terminal, JSON otherwise).",
    )
    log_parse_processes: int = Field(
        default=1,
        ge=0,
        le=64,
        description="Worker processes that parse log uploads apart from the server's event "
        "loop; 0 parses them in a thread of the server.",
    )
    forwarded_allow_ips: str | None = Field(
        default=None,
        description="Addresses of the reverse proxies whose X-Forwarded-For names the client "
        "(comma-separated, or *); unset: the TCP peer is the client.",
    )
    metrics_access: Literal["loopback", "key", "open", "off"] = Field(
        default="loopback",
        description="Who may read /metrics: clients on loopback; any admin key; anyone; nobody.",
    )
    jobs_per_minute_per_user: float = Field(
        default=600.0, ge=0, description="Jobs one user may create a minute (0: no limit)."
    )
    max_open_jobs_per_user: int = Field(
        default=0,
        ge=0,
        description="Jobs not yet ended one user may have at once (0: no limit).",
    )

    stream_token_seconds: float = Field(
        default=300.0, gt=0, description="How long a browser's stream token opens streams."
    )
    sse_ping_seconds: float = Field(
        default=15.0,
        gt=0,
        description="The longest an idle event stream goes without a keep-alive comment.",
    )
    feed_poll_seconds: float = Field(
        default=0.25,
        gt=0,
        description="How often streams look for changes made by other processes.",
    )

    stall_timeout_seconds: float | None = Field(
        default=300.0,
        gt=0,
        description="A PROCESSING job silent this long becomes STALLED (a job's own "
        "stall_timeout_s wins); unset to turn stall detection off.",
    )
    abandon_timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        description="A running job silent this long has lost its worker and is handled by "
        "abandon_policy; unset (the default) to leave such jobs STALLED.",
    )
    abandon_policy: Literal["fail", "requeue"] = Field(
        default="fail",
        description="fail: FAILED; requeue: a claimed remote job goes back to the queue for "
        "another worker (others fail).",
    )
    monitor_interval_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How often the server looks for stalled jobs and straggling ranks.",
    )
    straggler_share: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="A rank of a distributed run behind its siblings' median by more than "
        "this share of it (0.1: 10%) for straggler_seconds is flagged on the run; 0 turns "
        "straggler detection off.",
    )
    deadline_seconds_by_type: dict[
        str, Annotated[float, Field(gt=0, le=MAX_SECONDS_OR_WEIGHT, allow_inf_nan=False)]
    ] = Field(
        default_factory=dict,
        description="Each job type's limit in seconds from a job's start, for jobs made "
        'without a deadline, as JSON: {"video": 3600}. A running job likely to miss it '
        "is marked at risk (docs/deadlines.md).",
    )
    deadline_warn_chance: float = Field(
        default=LIKELY,
        gt=0,
        lt=1,
        description="The chance of missing its deadline (from the predicted finish's range) "
        "at which a running job is marked at risk.",
    )
    warn_long_running: bool = Field(
        default=True,
        description="Mark a running job without a deadline at risk once it has run longer "
        "than the p95 of its kind's finished jobs.",
    )
    straggler_seconds: float = Field(
        default=60.0,
        gt=0,
        le=86_400,
        description="How long a rank must stay behind before it is flagged as a straggler.",
    )
    retention_days: float = Field(
        default=90.0,
        ge=0,
        description="Jobs that ended more than this many days ago are deleted with their change "
        "feed, and so are webhook deliveries older than it (0: keep everything).",
    )
    retention_interval_seconds: float = Field(
        default=600.0, gt=0, description="How often the server prunes (in small batches)."
    )
    otel_traces: bool = Field(
        default=False,
        description="Export each job that ends as an OpenTelemetry span, over OTLP/HTTP to where "
        "the standard OTEL_EXPORTER_OTLP_* variables say (needs morag-progress[otel]).",
    )
    otel_interval_seconds: float = Field(
        default=2.0, gt=0, le=3600, description="How often the server exports ended jobs' spans."
    )

    webhook_allow_private: bool = Field(
        default=False,
        description="Allow webhook URLs to private, loopback and link-local addresses.",
    )
    webhook_max_attempts: int = Field(
        default=10, ge=1, le=100, description="Deliveries tried this often, then marked failed."
    )
    webhook_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="How long one webhook delivery may take in all (connect, send, answer).",
    )
    max_webhooks_per_user: int = Field(
        default=20, ge=1, le=10_000, description="Webhooks one user may have at once."
    )
    webhook_max_in_flight: int = Field(
        default=32, ge=1, le=1000, description="Webhook deliveries sent at once, at most."
    )
    webhook_max_in_flight_per_hook: int = Field(
        default=4,
        ge=1,
        le=1000,
        description="Deliveries to one webhook sent at once, at most: a slow receiver holds "
        "only these.",
    )
    webhook_max_in_flight_per_user: int = Field(
        default=8,
        ge=1,
        le=1000,
        description="Deliveries to one user's webhooks sent at once, at most: one user's slow "
        "receivers cannot take every slot.",
    )
    webhook_pause_after_failures: int = Field(
        default=5,
        ge=1,
        le=1000,
        description="A webhook whose last attempts failed this many times in a row pauses "
        "(30 s, doubling up to 10 minutes while it keeps failing), then is tried again.",
    )
    webhook_poll_seconds: float = Field(
        default=0.5, gt=0, description="How often the outbox looks for new changes and retries."
    )

    api_url: str | None = Field(
        default=None,
        description="Where workers report (ProgressReporter, the CLI's report/run/tail/watch).",
    )
    api_key: SecretStr | None = Field(
        default=None, description="The API key workers and the CLI send as a bearer token."
    )
    close_timeout_seconds: float = Field(
        default=2.0,
        ge=0,
        le=3600,
        description="How long a reporter's close (the end of its with block) waits to deliver "
        "what is pending, the final status included, before it gives up and returns.",
    )

    expensive_reads_per_user: int = Field(
        default=1,
        ge=1,
        le=100,
        description="Expensive reads (a search, counts, a stream's resume) one user runs at "
        "a time; the rest wait their turn (up to 10 s, then 429).",
    )
    expensive_reads: int = Field(
        default=4,
        ge=1,
        le=1000,
        description="Expensive reads all users together run at a time.",
    )
    spool_dir: Path | None = Field(
        default=None,
        description="Where a reporter keeps the reports it could not deliver before its close "
        "deadline, for `morag-progress flush` or its next start (default: spool in the user's "
        "data directory).",
    )

    @property
    def resolved_database_url(self) -> str:
        """``database_url``, or the default SQLite file."""
        return self.database_url or default_database_url()

    @property
    def resolved_spool_dir(self) -> Path:
        """``spool_dir``, or ``spool`` in the user's data directory."""
        return self.spool_dir or Path(platformdirs.user_data_dir(_APP_NAME)) / "spool"


def load_settings() -> Settings:
    """Read the settings; a bad value raises ConfigurationError naming the variable and rule."""
    try:
        return Settings()
    except ValidationError as e:
        error = e.errors()[0]
        field = "MORAG_PROGRESS_" + str(error["loc"][0]).upper() if error["loc"] else "settings"
        raise ConfigurationError(field, error["msg"].lower(), error.get("input")) from e
