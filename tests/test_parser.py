"""ProgressEventParser: the formats, what is not progress, and the never-raise contract."""

from __future__ import annotations

import json
from datetime import UTC, datetime

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
