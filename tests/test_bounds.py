"""Input bounds: ids, storable text, timestamps and metadata, as every boundary checks them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from morag_progress.bounds import (
    MAX_MESSAGE,
    MAX_METADATA_BYTES,
    MAX_METADATA_DEPTH,
    check_id,
    check_metadata,
    check_text,
    check_timestamp,
    clean_text,
)
from morag_progress.errors import InvalidInputError


@pytest.mark.parametrize("job_id", ["job-1", "a", "Job_2:x@y.z", "x" * 128, "..a", ".a"])
def test_ids_in_the_alphabet_are_accepted(job_id: str) -> None:
    """ASCII letters, digits and _ . : @ - up to 128 characters make an id."""
    check_id("id", job_id)


@pytest.mark.parametrize(
    "job_id",
    ["", ".", "..", "ｊｏｂ", "job\u200d1", "a b", "a/b", "job\n", "x" * 129, "é"],
)
def test_ids_outside_the_alphabet_are_refused(job_id: str) -> None:
    """Lookalikes, zero-width joiners, path segments and newlines are not ids."""
    with pytest.raises(InvalidInputError, match="id must be 1 to 128 ASCII letters"):
        check_id("id", job_id)


@pytest.mark.parametrize("text", ["nul\x00here", "lone \ud800 surrogate"])
def test_unstorable_text_is_refused_and_can_be_cleaned(text: str) -> None:
    """NUL and lone surrogates are refused by name, and cleaning replaces them with U+FFFD."""
    with pytest.raises(InvalidInputError, match="message must be UTF-8 text without NUL"):
        check_text("message", text, max_length=100)
    cleaned = clean_text(text)
    assert "\ufffd" in cleaned
    cleaned.encode("utf-8")  # storable now


def test_clean_text_cuts_to_the_limit() -> None:
    """A long message is cut to the limit, ending in an ellipsis."""
    cleaned = clean_text("x" * (MAX_MESSAGE * 3))
    assert len(cleaned) == MAX_MESSAGE
    assert cleaned.endswith("…")


@given(st.text())
def test_clean_text_always_gives_storable_text(text: str) -> None:
    """Whatever the input, the cleaned text passes the storable-text check."""
    check_text("message", clean_text(text), max_length=MAX_MESSAGE)


def test_timestamps_before_1970_or_overflowing_are_refused() -> None:
    """Year 1 with a positive offset cannot be expressed in UTC: a rule error, not a crash."""
    plus_five = timezone(timedelta(hours=5))
    with pytest.raises(InvalidInputError, match="timestamp must be a date-time from 1970 on"):
        check_timestamp("timestamp", datetime(1, 1, 1, tzinfo=plus_five))
    with pytest.raises(InvalidInputError, match="from 1970 on"):
        check_timestamp("timestamp", datetime(1969, 12, 31, 23, 59, tzinfo=UTC))
    naive = check_timestamp("timestamp", datetime(2026, 1, 1, 12))
    assert naive == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert check_timestamp("timestamp", datetime(9999, 12, 31, 23, tzinfo=plus_five)).year == 9999


def _nested(depth: int) -> dict[str, object]:
    value: dict[str, object] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def test_metadata_depth_is_bounded() -> None:
    """Nesting up to the limit is fine; one level more names the path and the rule."""
    check_metadata(_nested(MAX_METADATA_DEPTH))
    with pytest.raises(InvalidInputError, match=f"nested at most {MAX_METADATA_DEPTH} levels"):
        check_metadata(_nested(MAX_METADATA_DEPTH + 1))
    with pytest.raises(InvalidInputError, match="nested at most"):
        check_metadata({"list": [[[[[[[[[[1]]]]]]]]]]})


def test_metadata_size_and_values_are_bounded() -> None:
    """Size as JSON, finite numbers, 64-bit integers and storable strings."""
    with pytest.raises(InvalidInputError, match=f"at most {MAX_METADATA_BYTES} bytes"):
        check_metadata({"x": "y" * MAX_METADATA_BYTES})
    with pytest.raises(InvalidInputError, match=r"metadata\.n must be a finite number"):
        check_metadata({"n": float("inf")})
    with pytest.raises(InvalidInputError, match="within 64 bits"):
        check_metadata({"n": 2**70})
    with pytest.raises(InvalidInputError, match="without NUL"):
        check_metadata({"k\x00": 1})
    with pytest.raises(InvalidInputError, match="must be a JSON object"):
        check_metadata([1, 2])
    assert check_metadata({"ok": [1, 2.5, True, None, "x"]}) == {"ok": [1, 2.5, True, None, "x"]}
