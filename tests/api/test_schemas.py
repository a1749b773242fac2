"""The HTTP bodies' rules, each at its exact boundary: what is taken, what is refused, and the
field and rule a refusal names."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from morag_progress.api.schemas import (
    BatchIn,
    ClaimIn,
    HeartbeatIn,
    JobCreate,
    ProgressIn,
    ResultIn,
    StreamTokenIn,
    WebhookIn,
)
from morag_progress.bounds import MAX_ID, MAX_MESSAGE, MAX_NAME, MAX_STAGE, MAX_TYPE
from morag_progress.store.webhooks import EVENT_TYPES

BIGINT = 2**63 - 1
INT = 2**31 - 1


def _refused(model: type[BaseModel], body: dict[str, Any]) -> tuple[tuple[Any, ...], str]:
    """The first error's place and message for a body ``model`` refuses."""
    with pytest.raises(ValidationError) as e:
        model.model_validate(body)
    first = e.value.errors()[0]
    return first["loc"], first["msg"]


@pytest.mark.parametrize("value", [0, 1, 1.0, 52.7, 100, 100.0])
def test_a_percentage_from_0_or_1_to_100_is_taken(value: float) -> None:
    assert ProgressIn.model_validate({"percentage": value}).percent == value


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        (0.5, "must be 0 or from 1 to 100"),
        (0.999, "must be 0 or from 1 to 100"),
        (100.0001, "less than or equal to 100"),
        (-0.001, "greater than or equal to 0"),
        (True, "valid number"),
        ("50", "valid number"),
        (float("nan"), ""),  # pydantic names the first rule it breaks
    ],
)
def test_a_percentage_out_of_its_rule_is_refused_by_name(value: Any, rule: str) -> None:
    loc, msg = _refused(ProgressIn, {"percentage": value})
    assert loc == ("percentage",)
    assert rule in msg


@pytest.mark.parametrize(
    ("progress", "percent"), [(0, 0), (0.29, 29), (0.5, 50), (0.999, 99.9), (1, 100)]
)
def test_progress_is_a_fraction_read_as_a_percentage(progress: float, percent: float) -> None:
    """0.29 * 100 is 28.999999999999996 in floating point: read as 29, not floored to 28."""
    assert ProgressIn.model_validate({"progress": progress}).percent == percent


@given(st.integers(min_value=0, max_value=1000))
def test_every_thousandth_reads_as_its_own_percentage(thousandths: int) -> None:
    percent = ProgressIn.model_validate({"progress": thousandths / 1000}).percent
    assert percent == thousandths / 10


@pytest.mark.parametrize("value", [1.0001, -0.0001, False, float("inf")])
def test_progress_out_of_0_to_1_is_refused(value: Any) -> None:
    assert _refused(ProgressIn, {"progress": value})[0] == ("progress",)


@pytest.mark.parametrize("body", [{}, {"percentage": 5, "progress": 0.05}])
def test_exactly_one_amount_is_given(body: dict[str, Any]) -> None:
    loc, msg = _refused(ProgressIn, body)
    assert loc == ()
    assert "give exactly one of percentage (0..100) or progress (0..1)" in msg


@pytest.mark.parametrize(
    ("field", "largest"), [("current", BIGINT), ("total", BIGINT), ("seq", BIGINT)]
)
def test_counts_fit_their_column(field: str, largest: int) -> None:
    """Each count is taken from 0 up to the column's largest value; one more, a negative
    one, a float or a string is refused naming it."""
    for value in (0, largest):
        ProgressIn.model_validate({"percentage": 1, field: value})
    for wrong in (largest + 1, -1, 1.5, "3"):
        assert _refused(ProgressIn, {"percentage": 1, field: wrong})[0] == (field,)


def test_an_attempt_is_from_1_to_the_largest_integer_column() -> None:
    for value in (1, INT):
        assert ProgressIn.model_validate({"percentage": 1, "attempt": value}).attempt == value
    for value in (0, INT + 1):
        assert _refused(ProgressIn, {"percentage": 1, "attempt": value})[0] == ("attempt",)


@pytest.mark.parametrize(("field", "limit"), [("message", MAX_MESSAGE), ("stage", MAX_STAGE)])
def test_texts_are_taken_up_to_their_length(field: str, limit: int) -> None:
    assert getattr(ProgressIn.model_validate({"percentage": 1, field: "x" * limit}), field)
    loc, msg = _refused(ProgressIn, {"percentage": 1, field: "x" * (limit + 1)})
    assert (loc, f"at most {limit} characters" in msg) == ((field,), True)


@pytest.mark.parametrize("field", ["message", "stage", "worker_id"])
def test_texts_a_database_cannot_store_are_refused(field: str) -> None:
    """A NUL or a lone surrogate cannot be stored (PostgreSQL refuses NUL): a 422 naming the
    field, never a 500."""
    for text in ("a\x00b", "a\ud800b"):
        assert _refused(ProgressIn, {"percentage": 1, field: text})[0] == (field,)


def test_a_worker_name_is_not_blank_and_fits() -> None:
    for value in ("", "   "):
        assert _refused(ProgressIn, {"percentage": 1, "worker_id": value})[0] == ("worker_id",)
    ProgressIn.model_validate({"percentage": 1, "worker_id": "w" * MAX_NAME})
    too_long = {"percentage": 1, "worker_id": "w" * (MAX_NAME + 1)}
    assert _refused(ProgressIn, too_long)[0] == ("worker_id",)
    assert HeartbeatIn.model_validate({}).worker_id is None
    assert _refused(HeartbeatIn, {"worker_id": " "})[0] == ("worker_id",)


def test_a_timestamp_is_iso_text_and_not_far_in_the_future() -> None:
    """ISO 8601 text (naive is UTC) from 1970 on is taken; a number or digits (which pydantic
    would read as Unix seconds) is refused. (A time too far ahead is the tracker's rule: it
    needs the server's clock.)"""
    body = {"percentage": 1, "timestamp": "2026-01-01T12:00:00+02:00"}
    assert ProgressIn.model_validate(body).timestamp == datetime(2026, 1, 1, 10, tzinfo=UTC)
    naive = ProgressIn.model_validate({"percentage": 1, "timestamp": "2026-01-01T12:00:00"})
    assert naive.timestamp is not None
    for value in (1767225600, "1767225600", "1767225600.5", " 12 "):
        loc, msg = _refused(ProgressIn, {"percentage": 1, "timestamp": value})
        assert (loc, "ISO 8601" in msg) == (("timestamp",), True)
    loc, msg = _refused(ProgressIn, {"percentage": 1, "timestamp": "1969-12-31T23:59:59Z"})
    assert (loc, "from 1970 on" in msg) == (("timestamp",), True)
    edge = ProgressIn.model_validate({"percentage": 1, "timestamp": "1970-01-01T00:00:00Z"})
    assert edge.timestamp == datetime(1970, 1, 1, tzinfo=UTC)


def test_an_unknown_field_is_refused_by_its_name() -> None:
    """A typo (``percent``) is named, not silently ignored."""
    loc, msg = _refused(ProgressIn, {"percentage": 1, "percent": 5})
    assert (loc, msg) == (("percent",), "Extra inputs are not permitted")


def test_a_batch_holds_1_to_1000_reports_each_naming_its_job() -> None:
    item = {"job_id": "j-1", "percentage": 5}
    assert len(BatchIn.model_validate({"updates": [item] * 1000}).updates) == 1000
    for updates in ([], [item] * 1001):
        assert _refused(BatchIn, {"updates": updates})[0] == ("updates",)
    loc, _ = _refused(BatchIn, {"updates": [item, {"job_id": "../x", "percentage": 5}]})
    assert loc == ("updates", 1, "job_id")
    assert _refused(BatchIn, {"updates": [{"percentage": 5}]})[0] == ("updates", 0, "job_id")


@pytest.mark.parametrize("job_id", ["a", "A.b_c:d@e-f", "x" * MAX_ID])
def test_a_job_id_of_the_id_rule_is_taken(job_id: str) -> None:
    assert JobCreate.model_validate({"document_name": "n", "document_type": "t", "id": job_id})


@pytest.mark.parametrize("job_id", ["", ".", "..", "a/b", "a b", "x" * (MAX_ID + 1), "é"])
def test_a_job_id_outside_the_id_rule_is_refused(job_id: str) -> None:
    body = {"document_name": "n", "document_type": "t", "id": job_id}
    assert _refused(JobCreate, body)[0] == ("id",)


def test_a_new_job_has_a_name_a_type_and_a_positive_weight() -> None:
    made = JobCreate.model_validate({"document_name": "a.pdf", "document_type": "pdf"})
    assert (made.weight, made.remote, made.metadata, made.parent_id) == (1.0, False, None, None)
    for field, value in (
        ("document_name", ""),
        ("document_name", " "),
        ("document_name", "n" * (MAX_NAME + 1)),
        ("document_type", ""),
        ("document_type", "t" * (MAX_TYPE + 1)),
        ("weight", 0),
        ("weight", 1e9 + 1),
        ("weight", float("inf")),
        ("stall_timeout_s", 0),
        ("stall_timeout_s", "5"),
        ("metadata", {"a": "x" * 20_000}),
        ("parent_id", "a b"),
    ):
        body = {"document_name": "a.pdf", "document_type": "pdf", field: value}
        assert _refused(JobCreate, body)[0] == (field,), (field, value)
    edge = {"document_name": "a", "document_type": "t", "weight": 1e9, "stall_timeout_s": 1e9}
    assert JobCreate.model_validate(edge).weight == 1e9


def test_a_claim_names_its_worker_and_at_most_50_types() -> None:
    assert ClaimIn.model_validate({"worker_id": "gpu", "document_types": ["t"] * 50})
    assert _refused(ClaimIn, {"worker_id": "gpu", "document_types": ["t"] * 51})[0] == (
        "document_types",
    )
    assert _refused(ClaimIn, {"worker_id": "gpu", "document_types": [""]})[0] == (
        "document_types",
        0,
    )
    assert _refused(ClaimIn, {})[0] == ("worker_id",)


def test_a_result_says_success_as_a_boolean() -> None:
    result = ResultIn.model_validate({"success": False, "cancelled": True})
    assert (result.success, result.cancelled, result.message) == (False, True, None)
    for value in ("false", 0, None):
        assert _refused(ResultIn, {"success": value})[0] == ("success",)


def test_a_webhook_asks_for_known_events_within_its_limits() -> None:
    hook = WebhookIn.model_validate({"url": "https://x.example", "events": ["job.finished"]})
    assert (hook.progress_interval_s, hook.format, hook.max_per_hour) == (10.0, "json", None)
    base = {"url": "https://x.example", "events": ["job.finished"]}
    for field, value in (
        ("events", []),
        ("events", ["job.started"]),
        ("events", ["job.progress"] * (len(EVENT_TYPES) + 1)),
        ("url", ""),
        ("url", "https://x.example/" + "a" * 2048),
        ("progress_interval_s", 0.99),
        ("progress_interval_s", 86_401),
        ("format", "teams"),
        ("max_per_hour", 0),
        ("max_per_hour", 3601),
    ):
        assert _refused(WebhookIn, {**base, field: value})[0][0] == field, (field, value)
    every = WebhookIn.model_validate({**base, "events": list(EVENT_TYPES)})
    assert every.events == list(EVENT_TYPES)  # each event the outbox makes may be asked for
    edge = {**base, "progress_interval_s": 1, "max_per_hour": 3600}
    assert WebhookIn.model_validate(edge).max_per_hour == 3600


def test_a_stream_token_to_revoke_is_1_to_128_characters() -> None:
    assert StreamTokenIn.model_validate({"token": "t" * 128}).token == "t" * 128
    for token in ("", "t" * 129):
        assert _refused(StreamTokenIn, {"token": token})[0] == ("token",)
