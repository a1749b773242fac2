"""Exceptions raised by morag-progress.

Every exception derives from :class:`ProgressError`, so callers can catch the whole family at once::

    ProgressError
    ├── ConfigurationError      a setting or constructor argument breaks a rule (also ValueError)
    ├── InvalidInputError      a value breaks a rule: range, type, time (also ValueError)
    ├── JobNotFoundError        no such job, or not one the caller may see (also LookupError)
    ├── JobConflictError        an unscoped caller's job id names jobs of several users
    ├── JobStateError           the job's state refuses the change: terminal, or a newer attempt
    ├── LimitExceededError      a per-key or per-user limit is reached (open streams, quotas)
    └── StoreError              the database failed underneath (wraps the driver's error)

The seed-compatible entry points (``JobTracker.update_progress``, every ``ProgressHandler``
method) never raise these: they log them and return ``False``. The richer calls
(``JobTracker.apply``, ``JobTracker.start_job``) raise them so that callers can tell why.
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "InvalidInputError",
    "JobConflictError",
    "JobNotFoundError",
    "JobStateError",
    "LimitExceededError",
    "ProgressError",
    "StoreError",
]


class ProgressError(Exception):
    """Base class of every error this package raises."""


class _RuleError(ProgressError, ValueError):
    """A value breaks a rule; the message names the field, the rule and the value."""

    def __init__(self, field: str, rule: str, value: object) -> None:
        self.field = field
        self.rule = rule
        self.value = value
        super().__init__(f"{field} {rule}, got {value!r}")


class ConfigurationError(_RuleError):
    """A setting or constructor argument breaks a rule."""


class InvalidInputError(_RuleError):
    """A value given to the library breaks a rule (range, type, time)."""


class JobNotFoundError(ProgressError, LookupError):
    """No job has this id, or it belongs to another user (the two are not told apart)."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"job {job_id!r} not found")


class JobConflictError(ProgressError):
    """A job id names jobs of several users, and the caller (in-process, or an admin key)
    did not say whose: ids are unique per user, not across users."""

    def __init__(self, job_id: str, what: str = "job id") -> None:
        self.job_id = job_id
        super().__init__(
            f"{what} {job_id!r} names jobs of several users; name the job's user"
            " (?user=... over HTTP, user_id in Python)"
        )


class JobStateError(ProgressError):
    """The job's state refuses the change: it is terminal, or runs a newer attempt."""

    def __init__(self, job_id: str, reason: str) -> None:
        self.job_id = job_id
        self.reason = reason
        super().__init__(f"job {job_id!r} {reason}")


class LimitExceededError(ProgressError):
    """A limit on what one key or user may hold or do is reached; try again later."""

    def __init__(self, what: str, retry_after: float = 1.0) -> None:
        self.what = what
        self.retry_after = retry_after
        super().__init__(what)


class StoreError(ProgressError):
    """The database failed underneath; ``__cause__`` holds the driver's error."""
