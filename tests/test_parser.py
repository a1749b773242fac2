"""ProgressEventParser: the formats, what is not progress, and the never-raise contract."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from morag_progress import ProgressEvent, ProgressEventParser

parser = ProgressEventParser()

SEED_TS = "2025-06-11T11:26:50.780725Z"

# (line, percentage, message)
POSITIVE = [
    # The seed's six formats, with the values the seed implies.
    (
        "Processing progress: Audio processing: Initializing audio processing (52%)",
        52,
        "Audio processing: Initializing audio processing",
    ),
    ("Processing... 75%", 75, "Processing..."),
    ("Progress: 45% - Converting video", 45, "Converting video"),
    ("Stage: transcription (67%)", 67, "transcription"),
    ("Audio processing: 80% complete", 80, "Audio processing"),
    ("[75%] Processing audio content", 75, "Processing audio content"),
    # Case-insensitive, decimals floored, bounds.
    ("PROCESSING PROGRESS: Video (30%)", 30, "Video"),
    ("processing... 5%", 5, "processing..."),
    ("progress: 99.9% - almost", 99, "almost"),
    ("STAGE: ocr (0%)", 0, "ocr"),
    ("Upload: 100% complete", 100, "Upload"),
    ("[ 12.5 % ] chunking", 12, "chunking"),
    ("Download progress: 45.7%", 45, "Download progress"),
    # The first (p%) after the prefix, as MoRAG's lazy match found it.
    ("Processing progress: step (1 of 3) (33%)", 33, "step (1 of 3)"),
    # tqdm bars.
    ("Encoding:  45%|####      | 45/100 [00:01<00:02, 30.0it/s]", 45, "Encoding"),
    ("100%|██████████| 10/10 [00:00<00:00, 1.0it/s]", 100, "Processing at 100%"),
    ("Batches:   7%|▋         | 7/100 [00:03<00:40,  2.31it/s]", 7, "Batches"),
]

# Plain lines with a log prefix: the prefix is not part of the message.
PREFIXED = [
    ("2025-06-11T11:26:50Z INFO Processing... 75%", 75, "Processing..."),
    ("2025-06-11 11:26:50,780 - WARNING - Stage: diarisation (40%)", 40, "diarisation"),
    ("[2025-06-11 11:26:50] [75%] Processing audio content", 75, "Processing audio content"),
    # structlog's console renderer: padded level, colours, key=value pairs after the event.
    ("2025-06-11 11:26:50 [info     ] Audio processing: 80% complete", 80, "Audio processing"),
    (
        "\x1b[2m2025-06-11 11:26:50\x1b[0m [\x1b[32m\x1b[1minfo     \x1b[0m] "
        "\x1b[1mStage: diarisation (40%)\x1b[0m   logger=remote_converter",
        40,
        "diarisation",
    ),
    ("INFO:remote_converter:Processing progress: Audio (52%)", 52, "Audio"),
]

NEGATIVE = [
    "GPU utilisation 87%",
    "accuracy improved by 3%",
    "Disk is 95% full",
    "Processing... 150%",
    "Stage: transcription (101%)",
    "[-5%] nope",
    "Progress: -3% - backwards",
    "Audio processing: 80% done",
    "Processing progress: no percentage here",
    "Stage: ocr (abc%)",
    "loss=0.42 acc=97.5%",
    "Memory: 45%|",  # a table cell, not a tqdm bar (no closing bar)
    "1000%|##########| 10/10",
    "",
    "   ",
    "Not a progress line",
    "{}",
    "[]",
    "null",
    '{"event": "Some other event", "timestamp": "2025-06-11T11:26:53.780725Z"}',
    '{"event": "GPU utilisation 87%"}',
    '{"event": "Downloading", "percentage": 150}',
    '{"event": "Downloading", "progress": 4.5}',
    '{"event": "Downloading", "percent": true}',
    '{"event": 75}',
]


@pytest.mark.parametrize(("line", "percentage", "message"), POSITIVE + PREFIXED)
def test_plain_line_formats(line: str, percentage: int, message: str) -> None:
    """Each supported plain-text format parses to its percentage and message."""
    event = parser.parse_plain_text_log(line)
    assert event is not None
    assert (event.percentage, event.message) == (percentage, message)


@pytest.mark.parametrize(("line", "percentage", "message"), POSITIVE)
def test_formats_inside_structlog_event(line: str, percentage: int, message: str) -> None:
    """The same formats inside a structlog JSON ``event`` field parse the same way."""
    event = parser.parse_json_log(json.dumps({"event": line, "timestamp": SEED_TS}))
    assert event is not None
    assert (event.percentage, event.message) == (percentage, message)
    assert event.timestamp == datetime(2025, 6, 11, 11, 26, 50, 780725, tzinfo=UTC)


@pytest.mark.parametrize("line", NEGATIVE)
def test_not_progress(line: str) -> None:
    """Lines that merely mention a percent, or carry an out-of-range number, are not progress."""
    assert parser.parse_json_log(line) is None
    assert parser.parse_plain_text_log(line) is None


def test_json_fields_of_a_structlog_line() -> None:
    """Logger, level and timestamp come from the JSON line; the raw dict is kept."""
    line = json.dumps(
        {
            "event": "Processing progress: Audio processing: Initializing audio processing (52%)",
            "logger": "remote_converter",
            "level": "info",
            "timestamp": SEED_TS,
        }
    )
    event = parser.parse_json_log(line)
    assert event is not None
    assert event.logger_name == "remote_converter"
    assert event.level == "info"
    assert event.raw_event["logger"] == "remote_converter"
    assert event.to_dict()["timestamp"] == "2025-06-11T11:26:50.780725+00:00"


@pytest.mark.parametrize(
    ("fields", "percentage"),
    [
        ({"percentage": 45}, 45),
        ({"percent": 45.9}, 45),
        ({"progress": 0.29}, 29),
        ({"progress": 1}, 100),
        ({"progress": 0}, 0),
        ({"percentage": 150, "progress": 0.5}, 50),
    ],
)
def test_structured_json_fields(fields: dict[str, object], percentage: int) -> None:
    """``percentage``/``percent`` (0..100) and ``progress`` (0..1) fields are progress."""
    event = parser.parse_json_log(json.dumps({"event": "Downloading model", **fields}))
    assert event is not None
    assert event.percentage == percentage
    assert event.message == "Downloading model"


def test_structured_fields_carry_counts() -> None:
    """``current`` and ``total`` beside a structured percentage are kept."""
    event = parser.parse_json_log('{"event": "pages", "percentage": 50, "current": 5, "total": 10}')
    assert event is not None
    assert (event.current, event.total) == (5, 10)


def test_tqdm_counts() -> None:
    """A tqdm bar gives current and total as well as the percentage."""
    event = parser.parse_plain_text_log("Encoding:  45%|####      | 45/100 [00:01<00:02, 30.0it/s]")
    assert event is not None
    assert (event.current, event.total) == (45, 100)


def test_tqdm_carriage_returns_keep_the_last_redraw() -> None:
    """A tqdm bar redrawn with carriage returns counts as its last state."""
    line = (
        "Files:  10%|#         | 1/10\rFiles:  20%|##        | 2/10\rFiles:  30%|###       | 3/10\r"
    )
    event = parser.parse_plain_text_log(line)
    assert event is not None
    assert (event.percentage, event.current) == (30, 3)


def test_messages_in_other_json_keys() -> None:
    """Loggers that write ``message`` or ``msg`` instead of ``event`` are read too."""
    assert parser.parse_json_log('{"message": "Processing... 40%"}').percentage == 40  # type: ignore[union-attr]
    assert parser.parse_json_log('{"msg": "[41%] x", "levelname": "INFO"}').level == "info"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        ("2025-06-11T11:26:50.780725Z", datetime(2025, 6, 11, 11, 26, 50, 780725, tzinfo=UTC)),
        ("2025-06-11T13:26:50+02:00", datetime(2025, 6, 11, 11, 26, 50, tzinfo=UTC)),
        ("2025-06-11T11:26:50", datetime(2025, 6, 11, 11, 26, 50, tzinfo=UTC)),
        (1749641210, datetime(2025, 6, 11, 11, 26, 50, tzinfo=UTC)),
        (1749641210000, datetime(2025, 6, 11, 11, 26, 50, tzinfo=UTC)),
    ],
)
def test_timestamps_are_utc(stamp: object, expected: datetime) -> None:
    """Timestamps (ISO 8601 with Z or offset, naive, epoch s or ms) come back as aware UTC."""
    event = parser.parse_json_log(json.dumps({"event": "Processing... 5%", "timestamp": stamp}))
    assert event is not None
    assert event.timestamp == expected
    assert event.timestamp.tzinfo is UTC


@pytest.mark.parametrize("stamp", ["yesterday", "", 1e30, None, [1]])
def test_unreadable_timestamp_means_parse_time(stamp: object) -> None:
    """A timestamp that cannot be read is replaced by the time of parsing, in UTC."""
    before = datetime.now(UTC)
    event = parser.parse_json_log(json.dumps({"event": "Processing... 5%", "timestamp": stamp}))
    assert event is not None
    assert before <= event.timestamp <= datetime.now(UTC)


def test_plain_line_keeps_the_original_line() -> None:
    """A plain-text event records the line it came from, as MoRAG's did."""
    event = parser.parse_plain_text_log("Processing progress: Video conversion (75%)")
    assert event is not None
    assert event.raw_event == {"original_line": "Processing progress: Video conversion (75%)"}


def test_parse_log_stream_keeps_order_and_skips_the_rest() -> None:
    """A stream yields its progress events in order and nothing for other lines."""
    lines = [
        json.dumps({"event": "Processing progress: Starting (10%)", "timestamp": SEED_TS}),
        "Not a progress line",
        b"[50%] bytes are decoded",
        None,
        12,
        json.dumps({"event": "Processing progress: Finishing (90%)"}),
    ]
    events = parser.parse_log_stream(lines)  # type: ignore[arg-type]
    assert [e.percentage for e in events] == [10, 50, 90]


def test_get_latest_progress_is_by_timestamp() -> None:
    """The latest event is the one with the latest timestamp, not the last line."""
    lines = [
        json.dumps(
            {"event": "Processing progress: Starting (10%)", "timestamp": "2025-06-11T11:26:50Z"}
        ),
        json.dumps(
            {"event": "Processing progress: Middle (50%)", "timestamp": "2025-06-11T11:26:52Z"}
        ),
        json.dumps(
            {"event": "Processing progress: Earlier (30%)", "timestamp": "2025-06-11T11:26:51Z"}
        ),
    ]
    latest = parser.get_latest_progress(lines)
    assert latest is not None
    assert latest.percentage == 50


def test_get_latest_progress_of_nothing() -> None:
    """No progress lines (or no lines) gives None."""
    assert parser.get_latest_progress([]) is None
    assert parser.get_latest_progress(["hello"]) is None
    assert parser.get_latest_progress(None) is None  # type: ignore[arg-type]


def test_iter_events_is_lazy() -> None:
    """iter_events consumes its input only as far as it is read."""
    consumed = []

    def lines():
        for i in range(1, 100):
            consumed.append(i)
            yield f"[{i}%] step"

    first = next(parser.iter_events(lines()))
    assert first.percentage == 1
    assert consumed == [1]


@pytest.mark.parametrize(
    "line",
    [
        None,
        b"\xff\xfe\x00\x01",
        bytearray(b"[5%] x"),
        "\x00" * 1000,
        "{" * 100_000,
        '{"a":' * 100_000 + "1" + "}" * 100_000,
        "[" * 100_000 + "5%",
        '{"event": "%"' + ', "x": [' * 50_000,
        "Stage:" * 50_000,
        "Processing progress:" + "(" * 50_000 + "%",
        ": " * 50_000 + "% complete",
        "1" * 200_000 + "%|",
        ("9" * 50 + ".") * 2_000 + "%",
        "\ud800[5%] lone surrogate",
        "%" * 100_000,
        "x%|" * 33_000,
        "5%|" * 33_000,
    ],
)
def test_hostile_input_returns_quickly_without_raising(line: object) -> None:
    """Binary, huge, deeply nested or backtracking-bait input: no exception, no hang."""
    parser.parse_json_log(line)  # type: ignore[arg-type]
    parser.parse_plain_text_log(line)  # type: ignore[arg-type]
    parser.parse_log_stream([line])  # type: ignore[list-item]


def test_bytes_are_decoded() -> None:
    """A bytes line parses like its UTF-8 text."""
    event = parser.parse_json_log(b'{"event": "Processing... 75%"}')
    assert event is not None
    assert event.percentage == 75


def test_progress_event_defaults() -> None:
    """MoRAG's constructor arguments work; a missing timestamp is now, a naive one is UTC."""
    event = ProgressEvent(10, "x", None, "remote_worker", "info")
    assert event.timestamp.tzinfo is UTC
    naive = ProgressEvent(10, "x", datetime(2025, 1, 1))
    assert naive.timestamp == datetime(2025, 1, 1, tzinfo=UTC)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.binary(), st.none(), st.integers(), st.lists(st.text())))
def test_never_raises_on_anything(value: object) -> None:
    """Any value at all: the parser returns None or an event, never raises."""
    for result in (parser.parse_json_log(value), parser.parse_plain_text_log(value)):  # type: ignore[arg-type]
        assert result is None or 0 <= result.percentage <= 100


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "event",
                "message",
                "percentage",
                "percent",
                "progress",
                "timestamp",
                "level",
                "logger",
                "current",
                "total",
            ]
        ),
        json_values,
    )
)
def test_never_raises_on_json_objects(data: dict[str, object]) -> None:
    """Any JSON object with the keys the parser reads: a valid event or None, never an error."""
    result = parser.parse_json_log(json.dumps(data))
    if result is not None:
        assert 0 <= result.percentage <= 100
        assert result.timestamp.tzinfo is UTC


def test_coloured_line_takes_its_timestamp() -> None:
    """Colour codes do not hide a console line's timestamp and level."""
    line = "\x1b[2m2025-06-11 11:26:50\x1b[0m [\x1b[33mwarning  \x1b[0m] [10%] x"
    event = parser.parse_plain_text_log(line)
    assert event is not None
    assert (event.timestamp, event.level) == (
        datetime(2025, 6, 11, 11, 26, 50, tzinfo=UTC),
        "warning",
    )
    assert event.raw_event == {"original_line": line}


def test_prefixed_line_takes_its_timestamp_and_level() -> None:
    """A plain line's leading timestamp and level become the event's."""
    event = parser.parse_plain_text_log("2025-06-11 11:26:50,780 - WARNING - Stage: ocr (40%)")
    assert event is not None
    assert event.timestamp == datetime(2025, 6, 11, 11, 26, 50, 780000, tzinfo=UTC)
    assert event.level == "warning"


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(POSITIVE),
    st.text(alphabet=st.characters(blacklist_characters="%\r\n(["), max_size=40),
)
def test_leading_text_does_not_change_the_percentage(
    case: tuple[str, int, str], prefix: str
) -> None:
    """Text before a progress message (a logger name, say) leaves its percentage alone."""
    line, percentage, _ = case
    event = parser.parse_plain_text_log(f"{prefix} {line}")
    assert event is not None
    assert event.percentage == percentage


def _seen(event: ProgressEvent) -> tuple[object, ...]:
    """An event as a line gave it (its parse-time stamp, when it had none, left out)."""
    return (
        event.percentage,
        event.message,
        event.source_timestamp,
        event.current,
        event.total,
        event.level,
        event.logger_name,
        event.raw_event,
    )


LINES = (
    [line for line, _, _ in [*POSITIVE, *PREFIXED]]
    + NEGATIVE
    + [
        json.dumps({"event": "Stage: ocr (10%)", "timestamp": "2025-06-11T11:26:50Z"}),
        json.dumps({"event": "chunk", "percentage": 40, "current": 4, "total": 10}),
        "GPU utilisation 87%",
        "an ordinary line",
    ]
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(LINES), st.text(max_size=60)), max_size=12))
def test_sightings_are_the_events_before_they_are_built(lines: list[str]) -> None:
    """Each sighting carries its line's percentage and own time, and builds the very event
    iter_events yields for that line."""
    events = list(parser.iter_events(lines))
    sightings = list(parser.iter_sightings(lines))
    assert [_seen(s.event()) for s in sightings] == [_seen(e) for e in events]
    assert [(s.percentage, s.source_timestamp) for s in sightings] == [
        (e.percentage, e.source_timestamp) for e in events
    ]


# -- boundaries, fallback keys, precedence and positions (closing mutation-testing holes) --

LOGGER = "morag_progress.parser"
STAMP = "2025-06-11T11:26:50Z"
STAMP_DT = datetime(2025, 6, 11, 11, 26, 50, tzinfo=UTC)
EPOCH = 1749641210  # STAMP in epoch seconds


def _event(line: str | bytes) -> ProgressEvent:
    event = parser.parse_json_log(line)
    assert event is not None
    return event


def _plain(line: str | bytes) -> ProgressEvent:
    event = parser.parse_plain_text_log(line)
    assert event is not None
    return event


def _mapped(data: Mapping[str, Any]) -> ProgressEvent:
    event = parser.parse_mapping(data)
    assert event is not None
    return event


class _Hostile(str):
    """A string whose methods the parser uses raise: it stands for any unexpected failure."""

    __slots__ = ()

    def strip(self, chars: str | None = None) -> str:
        raise RuntimeError("boom")

    def lower(self) -> str:
        raise RuntimeError("boom")


class _HostileMapping(Mapping[str, Any]):
    """A mapping that fails when its values are read."""

    def __getitem__(self, key: str) -> Any:
        raise RuntimeError("boom")

    def __iter__(self) -> Iterator[str]:
        return iter(["event"])

    def __len__(self) -> int:
        return 1


class _ReadOnly(Mapping[str, Any]):
    """A Mapping that is not a dict."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def _parser_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER]


# --- Percentages: bounds and flooring ------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "percentage"),
    [
        ("Processing... 0%", 0),
        ("Processing... 100%", 100),
        ("Processing... 0.999%", 0),
        ("Processing... 99.999%", 99),
        ("Processing... 100.0%", 100),
        ("Processing... 007%", 7),
    ],
)
def test_text_percentage_bounds_and_floor(line: str, percentage: int) -> None:
    """A text percentage is floored and may be exactly 0 or 100."""
    assert _plain(line).percentage == percentage


@pytest.mark.parametrize("line", ["Processing... 101%", "Processing... 101.0%"])
def test_text_percentage_just_over_100_is_not_progress(line: str) -> None:
    """A text percentage just over 100 is not progress."""
    assert parser.parse_plain_text_log(line) is None


def test_long_out_of_range_number_is_just_not_progress(caplog: pytest.LogCaptureFixture) -> None:
    """A 400-digit whole number is out of range: not progress, and not an unparseable line."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    assert parser.parse_plain_text_log("Processing... " + "9" * 400 + "%") is None
    assert _parser_records(caplog) == []


@pytest.mark.parametrize(
    ("fields", "percentage"),
    [
        ({"percentage": 0}, 0),
        ({"percentage": 100}, 100),
        ({"percent": 0}, 0),
        ({"percent": 100}, 100),
        ({"percentage": 99.999}, 99),
        ({"progress": 0.999}, 99),
        ({"progress": 1.0}, 100),
        ({"progress": 0.299}, 29),
        ({"progress": 0.289999999}, 29),
    ],
)
def test_structured_percentage_bounds(fields: dict[str, Any], percentage: int) -> None:
    """Structured fields accept 0 and 100 (or 1.0 as a fraction) and are floored."""
    assert _mapped({"event": "Downloading", **fields}).percentage == percentage
    assert _event(json.dumps({"event": "Downloading", **fields})).percentage == percentage


@pytest.mark.parametrize(
    "fields", [{"percentage": 100.5}, {"percent": 101}, {"progress": 1.5}, {"progress": -0.1}]
)
def test_structured_percentage_just_out_of_range(fields: dict[str, Any]) -> None:
    """A structured value just outside its range is not progress."""
    assert parser.parse_mapping({"event": "Downloading", **fields}) is None


def test_one_is_a_fraction_only_in_progress() -> None:
    """``progress: 1`` is 100% while ``percentage: 1`` is 1%."""
    assert _mapped({"progress": 1}).percentage == 100
    assert _mapped({"percentage": 1}).percentage == 1


def test_huge_structured_integer_falls_back_to_the_message() -> None:
    """An out-of-range huge integer percentage is ignored and the message's percentage used."""
    event = _mapped({"event": "Processing... 40%", "percentage": 10**400})
    assert event.percentage == 40


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_structured_values_are_not_progress(value: float) -> None:
    """NaN and infinities are not progress."""
    assert parser.parse_mapping({"event": "x", "percentage": value, "progress": value}) is None


def test_structured_percentage_without_message() -> None:
    """A structured percentage without a message gets the default message."""
    event = _mapped({"percentage": 40})
    assert (event.percentage, event.message) == (40, "Processing at 40%")


def test_zero_counts_are_kept() -> None:
    """A count of zero is a count; a negative or boolean one is dropped."""
    event = _mapped({"event": "pages", "percentage": 0, "current": 0, "total": 0})
    assert (event.current, event.total) == (0, 0)
    event = _mapped({"event": "pages", "percentage": 0, "current": -1, "total": True})
    assert (event.current, event.total) == (None, None)


# --- Secondary fields and fallback keys -----------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "level"),
    [
        ({}, "info"),
        ({"level": ""}, "info"),
        ({"level": "ERROR"}, "error"),
        ({"level": "debug"}, "debug"),
        ({"levelname": "WARNING"}, "warning"),
        ({"level": 5, "levelname": "CRITICAL"}, "critical"),
        ({"level": "error", "levelname": "DEBUG"}, "error"),
    ],
)
def test_json_level(fields: dict[str, Any], level: str) -> None:
    """The level comes from ``level``, else ``levelname``, lowered; ``info`` when absent."""
    assert _event(json.dumps({"event": "[5%] x", **fields})).level == level


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({}, None),
        ({"logger": "a"}, "a"),
        ({"logger_name": "b"}, "b"),
        ({"name": "c"}, "c"),
        ({"logger": 3, "name": "c"}, "c"),
        ({"logger": "a", "logger_name": "b"}, "a"),
    ],
)
def test_json_logger_name(fields: dict[str, Any], name: str | None) -> None:
    """The logger comes from ``logger``, else ``logger_name``, else ``name``."""
    assert _event(json.dumps({"event": "[5%] x", **fields})).logger_name == name


@pytest.mark.parametrize("key", ["timestamp", "time", "@timestamp", "ts"])
def test_json_timestamp_keys(key: str) -> None:
    """``timestamp``, ``time``, ``@timestamp`` and ``ts`` each give the event its time."""
    event = _event(json.dumps({"event": "[5%] x", key: STAMP}))
    assert event.source_timestamp == STAMP_DT
    event = _event(json.dumps({"event": "[5%] x", key: EPOCH}))
    assert event.source_timestamp == STAMP_DT


def test_timestamp_key_wins_over_fallbacks() -> None:
    """``timestamp`` is preferred to ``time``."""
    event = _event(json.dumps({"event": "[5%] x", "time": EPOCH + 60, "timestamp": STAMP}))
    assert event.source_timestamp == STAMP_DT


def test_missing_timestamp_is_inferred() -> None:
    """A JSON line without a time has no source timestamp."""
    event = _event(json.dumps({"event": "[5%] x"}))
    assert event.source_timestamp is None
    assert event.timestamp_inferred


@pytest.mark.parametrize(
    ("stamp", "expected"),
    [
        (100_000_000_000, datetime.fromtimestamp(100_000_000_000, UTC)),
        (100_000_000_001, datetime.fromtimestamp(100_000_000.001, UTC)),
        (99_999_999_999, datetime.fromtimestamp(99_999_999_999, UTC)),
        (EPOCH + 0.5, datetime(2025, 6, 11, 11, 26, 50, 500000, tzinfo=UTC)),
    ],
)
def test_epoch_seconds_and_milliseconds_threshold(stamp: float, expected: datetime) -> None:
    """Epoch numbers up to 1e11 are seconds; above it they are milliseconds."""
    assert _mapped({"event": "[5%] x", "ts": stamp}).source_timestamp == expected


@pytest.fixture
def tokyo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The machine's local time zone set to Asia/Tokyo for one test."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("tokyo")
def test_epoch_timestamps_are_utc_whatever_the_local_zone() -> None:
    """An epoch timestamp means the same instant in any local time zone."""
    assert _mapped({"event": "[5%] x", "ts": EPOCH}).timestamp == STAMP_DT
    assert _mapped({"event": "[5%] x", "ts": EPOCH * 1000}).timestamp == STAMP_DT


def test_lookalike_keys_are_not_read() -> None:
    """Only the exact field names are read: other cases, decorations or a None key are not."""
    data: dict[Any, Any] = {"percentage": 40}
    for key in ("event", "timestamp", "logger", "level"):
        data[key.upper()] = STAMP
        data[f"XX{key}XX"] = STAMP
    data[None] = STAMP
    event = _mapped(data)
    assert event.message == "Processing at 40%"
    assert event.source_timestamp is None
    assert event.logger_name is None
    assert event.level == "info"


def test_message_keys_in_order() -> None:
    """The message is ``event``, else ``message``, else ``msg``; a non-string is skipped."""
    assert _mapped({"event": 7, "message": "[5%] m", "msg": "[6%] n"}).message == "m"
    assert _mapped({"msg": "[6%] n"}).message == "n"
    assert _mapped({"event": "[4%] e", "message": "[5%] m"}).message == "e"


# --- parse_mapping ---------------------------------------------------------------------------


def test_parse_mapping_reads_structured_fields_and_text() -> None:
    """parse_mapping reads structured fields and text formats like a JSON line does."""
    event = _mapped(
        {
            "event": "pages",
            "percentage": 40,
            "current": 4,
            "total": 10,
            "timestamp": STAMP,
            "logger": "worker",
            "level": "WARNING",
        }
    )
    assert (event.percentage, event.message, event.current, event.total) == (40, "pages", 4, 10)
    assert (event.source_timestamp, event.logger_name, event.level) == (
        STAMP_DT,
        "worker",
        "warning",
    )
    assert _mapped({"event": "Stage: ocr (30%)"}).percentage == 30
    assert _mapped({"progress": 0.5}).percentage == 50


def test_parse_mapping_keeps_a_dict_itself() -> None:
    """A dict given to parse_mapping is the event's raw event, not a copy."""
    data = {"event": "[5%] x"}
    assert _mapped(data).raw_event is data


@pytest.mark.parametrize(
    "data",
    [MappingProxyType({"event": "[5%] x", "level": "error"}), _ReadOnly({"event": "[5%] x"})],
)
def test_parse_mapping_accepts_any_mapping(data: Mapping[str, Any]) -> None:
    """A Mapping that is not a dict is read too, and its raw event is a plain dict copy."""
    event = _mapped(data)
    assert event.percentage == 5
    assert type(event.raw_event) is dict
    assert event.raw_event == dict(data)


@pytest.mark.parametrize(
    "data", [None, "[5%] x", b"[5%] x", [("event", "[5%] x")], 5, {"event": "no progress"}]
)
def test_parse_mapping_of_non_mappings(data: object, caplog: pytest.LogCaptureFixture) -> None:
    """Anything that is not a progress mapping gives None, quietly."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    assert parser.parse_mapping(data) is None  # type: ignore[arg-type]
    assert _parser_records(caplog) == []


def test_parse_mapping_logs_a_failing_mapping(caplog: pytest.LogCaptureFixture) -> None:
    """A mapping that fails when read gives None and a debug record with its traceback."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    assert parser.parse_mapping(_HostileMapping()) is None
    [record] = _parser_records(caplog)
    assert record.levelno == logging.DEBUG
    assert record.getMessage() == "unparseable log event ignored"
    assert record.exc_info is not None
    assert record.exc_info[0] is RuntimeError


# --- The never-raise contract and its log record --------------------------------------------


@pytest.mark.parametrize("method", ["parse_json_log", "parse_plain_text_log"])
def test_failing_line_is_logged_and_ignored(method: str, caplog: pytest.LogCaptureFixture) -> None:
    """A line that makes the parser fail gives None and one debug record with the traceback."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    assert getattr(parser, method)(_Hostile("[40%] x")) is None
    [record] = _parser_records(caplog)
    assert record.levelno == logging.DEBUG
    assert record.getMessage() == "unparseable log line ignored"
    assert record.exc_info is not None
    assert record.exc_info[0] is RuntimeError


def test_stream_skips_a_failing_line_and_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    """In a stream, a line that makes the parser fail is logged and the next lines still parse."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    events = parser.parse_log_stream(["[10%] a", _Hostile("[20%] b"), "[30%] c"])
    assert [e.percentage for e in events] == [10, 30]
    [record] = _parser_records(caplog)
    assert record.getMessage() == "unparseable log line ignored"
    assert record.exc_info is not None
    assert record.exc_info[0] is RuntimeError


@pytest.mark.parametrize(
    "line",
    [
        None,
        12,
        "hello",
        "hello 5%",
        "[job] 95% complete",
        "Stage: ocr, 40%",
        "Processing progress: nothing here %",
        '{"event": "hello"}',
        '{"event": "[job] 95% complete"}',
        b"\xff\xfe 5%",
    ],
)
def test_non_progress_lines_are_not_logged(line: object, caplog: pytest.LogCaptureFixture) -> None:
    """A line that is simply not progress gives None without an 'unparseable' record."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    assert parser.parse_json_log(line) is None  # type: ignore[arg-type]
    assert parser.parse_plain_text_log(line) is None  # type: ignore[arg-type]
    assert parser.parse_log_stream([line]) == []  # type: ignore[list-item]
    assert _parser_records(caplog) == []


# --- Which format wins, and where in the line ------------------------------------------------


@pytest.mark.parametrize(
    ("line", "percentage", "message"),
    [
        # tqdm is tried first.
        ("Processing progress: Encoding:  45%|####| 45/100", 45, "Processing progress: Encoding"),
        ("Processing... Encoding:  45%|####| 45/100", 45, "Processing... Encoding"),
        ("Stage: Encoding:  45%|####| 45/100", 45, "Stage: Encoding"),
        # Then the seed's order: processing progress, processing..., progress:, stage:, complete.
        ("Processing progress: a (10%) Processing... 20%", 10, "a"),
        ("Processing... 20%, Stage: a (10%)", 20, "Processing... , Stage: a (10%)"),
        ("Progress: 30% - Stage: a (10%)", 30, "Stage: a (10%)"),
        ("Stage: a (10%) b: 20% complete", 10, "a"),
        ("b: 20% complete [30%] c", 20, "b"),
        # An anchor without its number lets a later format answer.
        ("Stage: ocr: 40% complete", 40, "Stage: ocr"),
        ("[40%] upload complete", 40, "upload complete"),
        ("Processing progress: Processing... 40%", 40, "Processing progress: Processing..."),
    ],
)
def test_which_format_wins(line: str, percentage: int, message: str) -> None:
    """When a line matches two formats, the earlier format in the documented order wins."""
    event = _plain(line)
    assert (event.percentage, event.message) == (percentage, message)


@pytest.mark.parametrize(
    ("line", "percentage", "message"),
    [
        ("Stage: a Stage: b (40%)", 40, "a Stage: b"),
        ("(10%) Stage: ocr (40%)", 40, "ocr"),
        ("Processing progress: (5%) a (10%)", 5, "Processing at 5%"),
        ("x Processing progress: a (10%) (20%)", 10, "a"),
        ("Progress: 10% - a Progress: 20% - b", 10, "a Progress: 20% - b"),
        ("[10%] a [20%] b", 10, "a [20%] b"),
        ("a: 10% complete, b: 20% complete", 10, "a"),
    ],
)
def test_first_occurrence_counts(line: str, percentage: int, message: str) -> None:
    """A repeated anchor or number: the first anchor and the first number after it count."""
    event = _plain(line)
    assert (event.percentage, event.message) == (percentage, message)


@pytest.mark.parametrize(
    ("line", "percentage", "message"),
    [
        ("İİ Stage: ocr (40%)", 40, "ocr"),
        ("İstanbul Processing progress: upload (52%)", 52, "upload"),
        ("İ Stage: a Stage: b (40%)", 40, "a Stage: b"),
    ],
)
def test_anchor_after_letters_that_lengthen_when_lowered(
    line: str, percentage: int, message: str
) -> None:
    """A letter whose lower case is longer (İ) before the anchor does not shift the message."""
    event = _plain(line)
    assert (event.percentage, event.message) == (percentage, message)


def test_processing_dots_joins_the_text_around_the_number() -> None:
    """``Processing... <p>%`` keeps the text before and after the number, joined by a space."""
    assert _plain("Processing... 75%: a.mp3").message == "Processing... : a.mp3"
    assert _plain("Processing...75%").message == "Processing..."


# --- tqdm bars -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "percentage", "message", "current", "total"),
    [
        ("45%|####| 45/100", 45, "Processing at 45%", 45, 100),
        ("Enc:  45%|####|45/100 [00:01<00:02]", 45, "Enc", 45, 100),
        ("Enc:  45%|####|", 45, "Enc", None, None),
        ("Enc:  45%|####| 45/100 | eta 2s", 45, "Enc", 45, 100),
        ("Enc:  0%|| 0/10", 0, "Enc", 0, 10),
        ("BOX:  50%|#####| 5/10", 50, "BOX", 5, 10),
        ("Files\n5%|#| 1/10", 5, "Files", 1, 10),
        ("log line. Enc: 45%|####| 45/100 rest", 45, "log line. Enc", 45, 100),
        ("A: 10%|#| 1/10 B: 20%|##| 2/10", 10, "A", 1, 10),
        ("col%| Enc: 45%|####| 45/100", 45, "col%| Enc", 45, 100),
        ("%|x| Enc: 50%|####| 5/10", 50, "%|x| Enc", 5, 10),
        ("col%| A: 45%|##| 4/10 B: 60%|###| 6/10", 45, "col%| A", 4, 10),
        ("x 000000000050%|###| 5/10", 50, "x", 5, 10),
    ],
)
def test_tqdm_positions_and_counts(
    line: str, percentage: int, message: str, current: int | None, total: int | None
) -> None:
    """The first real ``<p>%|<bar>|`` anywhere in the line counts, with its description and
    counts."""
    event = _plain(line)
    assert (event.percentage, event.message, event.current, event.total) == (
        percentage,
        message,
        current,
        total,
    )


@pytest.mark.parametrize(
    "line",
    [
        "step45%|##| 4/10",
        "a_45%|##| 4/10",
        "Memory: 45%|\n| 5/10",
        "x 0000000000050%|###| 5/10",
        "%|" * 8 + " Enc: 45%|####| 45/100",
    ],
)
def test_not_a_tqdm_bar(line: str) -> None:
    """A number glued to a word, a bar broken by a newline, a number longer than a dozen
    characters, or a bar after the eighth ``%|`` is not a tqdm bar."""
    assert parser.parse_plain_text_log(line) is None


def test_tqdm_bar_after_seven_other_candidates() -> None:
    """A bar after seven other ``%|`` is still found (the limit is eight candidates)."""
    assert _plain("%|" * 7 + " Enc: 45%|####| 45/100").percentage == 45


# --- Plain-line prefix -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "stamp", "level"),
    [
        ("[2025-06-11 11:26:50] [75%] x", STAMP_DT, "info"),
        ("[2025-06-11 11:26:50,5] ERROR [75%] x", STAMP_DT.replace(microsecond=500000), "error"),
        ("2025-06-11T11:26:50Z [75%] x", STAMP_DT, "info"),
        ("[75%] x", None, "info"),
        ("x2025-06-11 11:26:50 [75%] x", None, "info"),
    ],
)
def test_plain_prefix_timestamp_and_level(line: str, stamp: datetime | None, level: str) -> None:
    """A plain line's leading (bracketed) timestamp and level are read; ``info`` by default."""
    event = _plain(line)
    assert (event.percentage, event.source_timestamp, event.level) == (75, stamp, level)


# --- Bytes ----------------------------------------------------------------------------------


def test_bytes_and_invalid_utf8() -> None:
    """Bytes are decoded as UTF-8, invalid bytes replaced, in every entry point."""
    assert _plain("Stage: café (40%)".encode()).message == "café"
    assert _plain(b"Stage: caf\xe9 (40%)").message == "caf\ufffd"
    assert _event(memoryview(b"[5%] x")).percentage == 5  # type: ignore[arg-type]
    assert [e.message for e in parser.iter_events([b"[5%] \xff"])] == ["\ufffd"]


# --- The raw-line prefilter -----------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        '{"event": "Processing... 75\\u0025"}',
        '{"event": "Stage\\u003a ocr (40%)"}',
        '{"event": "Stage\\u003a ocr (40%)", "tags": []}',
    ],
)
def test_json_line_without_a_raw_anchor_is_dismissed(line: str) -> None:
    """A JSON line whose ``%`` or anchor appears only escaped is dismissed before decoding."""
    assert json.loads(line)["event"] in ("Processing... 75%", "Stage: ocr (40%)")
    assert parser.parse_json_log(line) is None


def test_json_field_names_are_looked_for_in_the_raw_line() -> None:
    """Structured fields count only when their names appear as written in the raw line."""
    assert _event('{"event": "[40%] x", "\\u0070ercent": 10}').percentage == 40
    assert _event('{"event": "[40%] x", "percent": 10}').percentage == 10


@pytest.mark.parametrize(
    ("line", "percentage"),
    [
        ('{"event": "Downloading", "percent": 40}', 40),
        ('{"event": "Downloading", "percentage": 41}', 41),
        ('{"event": "Downloading", "progress": 0.42}', 42),
    ],
)
def test_stream_reads_structured_lines_without_a_percent_sign(line: str, percentage: int) -> None:
    """A stream line with a structured field but no ``%`` is still progress."""
    assert [e.percentage for e in parser.iter_events([line])] == [percentage]
    assert [s.percentage for s in parser.iter_sightings([line.encode()])] == [percentage]


# --- Streams ---------------------------------------------------------------------------------


def test_latest_progress_tie_goes_to_the_later_line() -> None:
    """Two events with the same timestamp: the later line is the latest."""
    lines = [
        json.dumps({"event": "[10%] a", "timestamp": STAMP}),
        json.dumps({"event": "[20%] b", "timestamp": STAMP}),
    ]
    latest = parser.get_latest_progress(lines)
    assert latest is not None
    assert latest.percentage == 20


# --- Properties ------------------------------------------------------------------------------

TEMPLATES = [
    "Processing progress: job ({p}%)",
    "Processing... {p}%",
    "Progress: {p}% - job",
    "Stage: job ({p}%)",
    "job: {p}% complete",
    "[{p}%] job",
    "job: {p}%|####| 1/2",
]

_filler = st.text(alphabet=st.characters(blacklist_characters="%\r\n([]|:"), max_size=30)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(TEMPLATES), st.integers(0, 100), _filler, _filler)
def test_every_format_anywhere_in_a_line(template: str, pct: int, before: str, after: str) -> None:
    """Every format is found with its percentage wherever it sits in a line."""
    line = f"{before} {template.format(p=pct)} {after}"
    event = parser.parse_plain_text_log(line)
    assert event is not None
    assert event.percentage == pct
    assert _event(json.dumps({"event": line})).percentage == pct


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(TEMPLATES), st.integers(101, 10**6))
def test_every_format_rejects_out_of_range(template: str, pct: int) -> None:
    """No format turns a number over 100 into progress."""
    assert parser.parse_plain_text_log(template.format(p=pct)) is None


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["event", "percentage", "percent", "progress", "ts", "level", "current"]),
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
    )
)
def test_parse_mapping_never_raises(data: dict[str, Any]) -> None:
    """Any mapping gives a valid event or None."""
    event = parser.parse_mapping(data)
    assert event is None or 0 <= event.percentage <= 100


@pytest.mark.parametrize("line", ["Processing... 100.5%", "[100.000001%] x", "Stage: s (100.2%)"])
def test_a_text_percentage_just_over_100_is_not_progress(line: str) -> None:
    """100.5% is outside 0..100 before it is floored: not read as 100 (which would finish the
    job), as the JSON path already refused it."""
    assert parser.parse_plain_text_log(line) is None


@pytest.mark.parametrize(
    ("line", "percentage"),
    [("\x1b[1mStage\x1b[0m: ocr (40%)", 40), ("[\x1b[1m40%\x1b[0m] x", 40)],
)
def test_colour_codes_inside_a_marker_do_not_hide_the_line(line: str, percentage: int) -> None:
    """The quick test for a format reads the line without its colour codes, as the parse does."""
    assert _plain(line).percentage == percentage
