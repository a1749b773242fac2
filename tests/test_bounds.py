"""Input bounds: ids, storable text, timestamps and metadata, as every boundary checks them."""

from __future__ import annotations

import time
from collections.abc import Callable
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


_TEXT = "must be UTF-8 text without NUL characters or lone surrogates"
_ID_RULE = "must be 1 to 128 ASCII letters, digits or _ . : @ -, and not . or .."
_NOT_TEXT = "must be a non-empty string"


class _Key:
    """A metadata key that is not a string (JSON has none; a Python caller may pass one)."""

    def __repr__(self) -> str:
        return "<key>"


_KEY = _Key()


@pytest.mark.parametrize(
    ("check", "field", "rule", "value"),
    [
        (lambda: check_text("name", 5, max_length=9), "name", _NOT_TEXT, 5),
        (lambda: check_text("name", None, max_length=9, required=True), "name", _NOT_TEXT, None),
        (lambda: check_text("name", " \t", max_length=9, required=True), "name", _NOT_TEXT, " \t"),
        (lambda: check_text("name", "x" * 10, max_length=9), "name", "must be at most 9 characters", "x" * 10),
        (lambda: check_text("name", "a\x00", max_length=9), "name", _TEXT, "a\x00"),
        (lambda: check_text("name", "é\ud800", max_length=9), "name", _TEXT, "é\ud800"),
        (lambda: check_id("parent_id", "a b"), "parent_id", _ID_RULE, "a b"),
        (lambda: check_id("parent_id", 7), "parent_id", _ID_RULE, 7),
        (lambda: check_metadata("x"), "metadata", "must be a JSON object", "str"),
        (lambda: check_metadata(None, "meta"), "meta", "must be a JSON object", "NoneType"),
        (lambda: check_metadata({"a": {_KEY: 1}}), "metadata.a", "must have string keys", _KEY),
        (lambda: check_metadata({"a": {"b\x00": 1}}), "metadata.a", _TEXT, "b\x00"),
        (lambda: check_metadata({"a": ["x", "\ud800"]}), "metadata.a.1", _TEXT, "\ud800"),
        (lambda: check_metadata({"n": 2**63}), "metadata.n", "must be an integer within 64 bits", 2**63),
        (lambda: check_metadata({"n": -(2**63)}), "metadata.n", "must be an integer within 64 bits", -(2**63)),
        (lambda: check_metadata({"f": float("nan")}), "metadata.f", "must be a finite number", pytest.approx(float("nan"), nan_ok=True)),
        (lambda: check_metadata({"s": {1, 2}}), "metadata.s", "must be a JSON value", "set"),
        (lambda: check_metadata(_nested(MAX_METADATA_DEPTH + 1)), "metadata" + ".a" * MAX_METADATA_DEPTH, f"must be nested at most {MAX_METADATA_DEPTH} levels deep", "[...]"),
    ],
)  # fmt: skip
def test_each_refusal_names_its_field_its_rule_and_the_value(
    check: Callable[[], object], field: str, rule: str, value: object
) -> None:
    """An error says where (the field, or the path inside metadata), which rule, and what was
    given, each exactly: a client shows them to a person."""
    with pytest.raises(InvalidInputError) as refused:
        check()
    assert (refused.value.field, refused.value.rule, refused.value.value) == (field, rule, value)


def test_exact_limits_are_accepted() -> None:
    """Every limit is inclusive: text of exactly ``max_length``, integers of exactly
    +-(2**63 - 1), metadata of exactly 16 KiB, and 1970-01-01T00:00Z itself."""
    check_text("name", "x" * 9, max_length=9)
    check_text("name", None, max_length=9)  # optional text may be absent
    check_metadata({"n": 2**63 - 1, "m": -(2**63 - 1)})
    padding = MAX_METADATA_BYTES - len(b'{"x":""}')
    assert check_metadata({"x": "y" * padding}) == {"x": "y" * padding}
    with pytest.raises(InvalidInputError) as over:
        check_metadata({"x": "y" * (padding + 1)})
    assert (over.value.field, over.value.value) == ("metadata", f"{MAX_METADATA_BYTES + 1} bytes")
    assert over.value.rule == f"must be at most {MAX_METADATA_BYTES} bytes as JSON"
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert check_timestamp("timestamp", epoch) == epoch


def test_clean_text_keeps_what_fits_and_marks_what_it_replaced() -> None:
    """Text at the limit is kept whole; one character more is cut to the limit with an
    ellipsis; each unstorable character becomes exactly U+FFFD."""
    assert clean_text("x" * 5, max_length=5) == "x" * 5
    assert clean_text("x" * 6, max_length=5) == "xxxx…"
    assert clean_text("a\x00b\ud800", max_length=9) == "a\ufffdb\ufffd"


def test_an_offset_is_converted_to_utc_not_relabelled() -> None:
    """12:00+02:00 is 10:00 UTC, and the result says UTC (the same instant labelled +02:00
    compares equal, so the hour and the zone are checked)."""
    got = check_timestamp(
        "timestamp", datetime(2026, 5, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    )
    assert (got.hour, got.tzinfo) == (10, UTC)
    assert check_timestamp("timestamp", datetime(2026, 5, 1, 12, tzinfo=UTC)).tzinfo is UTC


def test_a_naive_time_is_utc_whatever_the_machine_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    """A naive timestamp means UTC, not the server's local time."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        got = check_timestamp("timestamp", datetime(2026, 5, 1, 12))
    finally:
        monkeypatch.undo()
        time.tzset()
    assert (got.hour, got.tzinfo) == (12, UTC)


def test_a_time_out_of_utc_range_is_a_rule_error() -> None:
    """Year 1 at +05:00 overflows when converted: the error names the field and the value."""
    early = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5)))
    with pytest.raises(InvalidInputError) as refused:
        check_timestamp("started", early)
    assert (refused.value.field, refused.value.value) == ("started", early)
    before = datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)
    with pytest.raises(InvalidInputError) as refused:
        check_timestamp("started", before)
    assert (refused.value.field, refused.value.rule, refused.value.value) == (
        "started",
        "must be a date-time from 1970 on",
        before,
    )


@given(
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9998, 1, 1)),
    st.integers(min_value=-23 * 60, max_value=23 * 60),
)
def test_any_offset_gives_the_same_instant_in_utc(moment: datetime, minutes: int) -> None:
    """For every offset, the checked time is the same instant, labelled UTC."""
    aware = moment.replace(tzinfo=timezone(timedelta(minutes=minutes)))
    got = check_timestamp("timestamp", aware)
    assert got.tzinfo is UTC
    assert got.replace(tzinfo=None) == moment - timedelta(minutes=minutes)


def test_a_checkpoint_is_metadata_with_a_bound_of_its_own() -> None:
    """Up to 32 KiB as compact JSON (twice metadata's bound); past it, or not an object, an
    error naming ``checkpoint``."""
    from morag_progress.bounds import MAX_CHECKPOINT_BYTES, check_checkpoint

    fits = {"b": "x" * (MAX_CHECKPOINT_BYTES - len('{"b":""}'))}
    assert check_checkpoint(fits) is fits
    for bad in ({"b": "x" * MAX_CHECKPOINT_BYTES}, [1], {"b": float("nan")}):
        with pytest.raises(InvalidInputError) as e:
            check_checkpoint(bad)
        assert e.value.field.startswith("checkpoint")
