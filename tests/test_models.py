"""Value objects: update validation, status mapping, job snapshots."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from morag_progress import (
    Job,
    JobStatus,
    ProgressEvent,
    ProgressUpdate,
    UpdateOutcome,
    UpdateResult,
)
from morag_progress.errors import InvalidInputError, ProgressError
from morag_progress.eta import Pace
from morag_progress.models import status_for_percentage


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"job_id": ""}, "job_id must be 1 to 128 ASCII letters"),
        ({"percentage": 101}, "percentage must be between 0 and 100, got 101"),
        ({"percentage": -0.5}, "percentage must be between 0 and 100"),
        ({"percentage": float("nan")}, "percentage must be a finite number"),
        ({"percentage": "50"}, "percentage must be a number"),
        ({"percentage": False}, "percentage must be a number"),
        ({"status": "DONE"}, "status must be one of PENDING, "),
        ({"message": 5}, "message must be a string"),
        ({"timestamp": "2025-01-01"}, "timestamp must be a datetime"),
        ({"current": -1}, "current must be at least 0"),
        ({"total": 1.5}, "total must be an integer"),
        ({"attempt": 0}, "attempt must be at least 1"),
        ({"seq": -3}, "seq must be at least 0"),
        ({"total": 2**63}, "total must be at most 9223372036854775807"),
    ],
)
def test_update_validation_names_field_and_rule(kwargs: dict[str, object], message: str) -> None:
    """A bad update field raises InvalidInputError naming the field, the rule and the value."""
    args: dict[str, object] = {"job_id": "j", **kwargs}
    with pytest.raises(InvalidInputError, match=message) as info:
        ProgressUpdate(**args)  # type: ignore[arg-type]
    assert isinstance(info.value, ProgressError)
    assert isinstance(info.value, ValueError)
    assert info.value.field == next(iter(kwargs))


def test_update_normalises() -> None:
    """Percentages are floored, status strings become JobStatus, timestamps become UTC."""
    plus2 = timezone(timedelta(hours=2))
    u = ProgressUpdate("j", 99.9, status="FAILED", timestamp=datetime(2026, 1, 1, 14, tzinfo=plus2))  # type: ignore[arg-type]
    assert u.percentage == 99
    assert u.status is JobStatus.FAILED
    assert u.timestamp == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert ProgressUpdate("j", timestamp=datetime(2026, 1, 1)).timestamp == datetime(
        2026, 1, 1, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("percentage", "status"),
    [
        (0, JobStatus.PENDING),
        (1, JobStatus.PROCESSING),
        (99, JobStatus.PROCESSING),
        (100, JobStatus.FINISHED),
    ],
)
def test_status_for_percentage(percentage: int, status: JobStatus) -> None:
    """The seed's mapping from percentage to status."""
    assert status_for_percentage(percentage) is status


def test_terminal_statuses() -> None:
    """FINISHED, FAILED and CANCELLED are terminal; the rest are not."""
    assert {s for s in JobStatus if s.is_terminal} == {
        JobStatus.FINISHED,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
    }


def _job(**overrides: object) -> Job:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    fields: dict[str, object] = dict(
        id="j",
        user_id="u",
        document_name="d",
        document_type="pdf",
        document_id=None,
        status=JobStatus.PROCESSING,
        percentage=40,
        summary=None,
        current=None,
        total=None,
        stage=None,
        worker_id=None,
        claimed_by=None,
        attempt=1,
        parent_id=None,
        weight=1.0,
        metadata={},
        error=None,
        cancel_requested=False,
        created_at=now,
        start_date=now,
        updated_at=now,
        end_date=None,
        last_seen_at=now,
        stall_timeout_s=None,
        rate=2.0,
    )
    fields.update(overrides)
    return Job(**fields)  # type: ignore[arg-type]


def _paced(**overrides: object) -> Job:
    """A job at 40% whose last measuring window closed at 2 %/s just now (the run's average
    too): its ETA is 30 s."""
    start = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    pace = Pace(1, start - 20, 0, start, 40, 2.0, 0.0)
    return _job(pace=pace.to_json(), **overrides)


def test_eta_only_while_processing_with_a_pace() -> None:
    """The estimate comes from the job's pace while PROCESSING; None otherwise."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    eta = _paced().estimate(now)
    assert eta is not None
    assert eta.seconds == pytest.approx(30.0)
    assert eta.low < 30 < eta.high
    assert eta.basis == "live"
    assert _job().estimate(now) is None  # no pace: nothing supports one
    assert _paced(status=JobStatus.STALLED).estimate(now) is None
    assert _paced(status=JobStatus.FINISHED, percentage=100).estimate(now) is None


def test_job_to_dict_is_json_ready() -> None:
    """to_dict gives ISO timestamps (UTC, ``Z``), the status value, the estimate (with its
    range and basis) and no pace."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    data = _paced().to_dict(now=now)
    assert data["created_at"] == "2026-01-01T00:00:00Z"
    assert data["status"] == "PROCESSING"
    assert data["eta_seconds"] == pytest.approx(30.0)
    assert data["eta_basis"] == "live"
    assert data["eta_low_seconds"] < 30 < data["eta_high_seconds"]
    assert data["end_date"] is None
    assert "pace" not in data
    assert _paced().to_dict(now=now, eta=False)["eta_seconds"] is None


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=11))]
        ),
    )
)
def test_job_dates_are_written_in_utc_with_z_as_isoformat_would(value: datetime) -> None:
    """Every date a job is written with: the instant in UTC, as ``isoformat`` writes it
    (microseconds only when there are some), with ``Z`` for ``+00:00``."""
    data = _job(created_at=value, end_date=value).to_dict(eta=False)
    expected = value.astimezone(UTC).isoformat().removesuffix("+00:00") + "Z"
    assert data["created_at"] == data["end_date"] == expected


def test_an_update_result_of_fields_is_the_result_of_its_job() -> None:
    """A result made from a job's fields (as the writer makes it) says what one made from
    the job says: its dict, its cancel request, its id, equality, and the job itself."""
    job = _paced(cancel_requested=True)
    fields = [getattr(job, f.name) for f in dataclasses.fields(Job)]
    lazy = UpdateResult.of_fields(UpdateOutcome.APPLIED, fields, 7)
    eager = UpdateResult(UpdateOutcome.APPLIED, job, 7)
    assert lazy.job_dict() == eager.job_dict() == job.to_dict(eta=False)
    assert lazy.cancel_requested
    assert eager.cancel_requested
    assert lazy.job_id == eager.job_id == job.id
    assert lazy == eager
    assert lazy.job == job
    assert repr(lazy) == repr(eager)
    assert lazy.job_dict() == job.to_dict(eta=False)  # the same after the job is built
    empty = UpdateResult(UpdateOutcome.NOT_FOUND)
    assert (empty.job, empty.job_id, empty.job_dict(), empty.cancel_requested) == (
        None,
        None,
        None,
        False,
    )


def test_update_result_flags() -> None:
    """applied and cancel_requested read from the outcome and the job."""
    assert UpdateResult(UpdateOutcome.APPLIED, _job(cancel_requested=True)).cancel_requested
    assert not UpdateResult(UpdateOutcome.STALE).applied
    assert not UpdateResult(UpdateOutcome.NOT_FOUND).cancel_requested


def test_progress_event_equality_and_repr() -> None:
    """Events compare by value and show their fields."""
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    a, b = ProgressEvent(5, "x", ts), ProgressEvent(5, "x", ts)
    assert a == b
    assert a != ProgressEvent(6, "x", ts)
    assert a != "x"
    assert "percentage=5" in repr(a)
    assert not a.timestamp_inferred
    assert ProgressEvent(5, "x").timestamp_inferred


def test_source_timestamp() -> None:
    """An event's own time is its source timestamp; a defaulted one is not."""
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    assert ProgressEvent(5, "x", ts).source_timestamp == ts
    assert ProgressEvent(5, "x").source_timestamp is None
