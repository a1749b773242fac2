"""errors: one family, messages that name what went wrong."""

from __future__ import annotations

import pytest

from morag_progress import errors


@pytest.mark.parametrize(
    "error",
    [
        errors.ConfigurationError("database_url", "must be a URL", "x"),
        errors.InvalidInputError("percentage", "must be between 0 and 100", 150),
        errors.JobNotFoundError("job-1"),
        errors.JobConflictError("job-1"),
        errors.StoreError("commit failed"),
    ],
)
def test_every_error_is_a_progress_error(error: errors.ProgressError) -> None:
    """Callers can catch every error of the package as ProgressError."""
    assert isinstance(error, errors.ProgressError)


def test_messages_name_field_rule_and_value() -> None:
    """Rule errors read "<field> <rule>, got <value>"."""
    error = errors.InvalidInputError("percentage", "must be between 0 and 100", 150)
    assert str(error) == "percentage must be between 0 and 100, got 150"
    assert (error.field, error.rule, error.value) == (
        "percentage",
        "must be between 0 and 100",
        150,
    )
    assert "job-1" in str(errors.JobNotFoundError("job-1"))
    assert isinstance(errors.JobNotFoundError("x"), LookupError)
