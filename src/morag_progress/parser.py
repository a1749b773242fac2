"""ProgressEventParser: finds progress in log lines. Pure, never raises, linear in line length.

Formats (case-insensitive; inside a structlog JSON ``event`` field or as a plain line, which may
start with an ISO 8601 timestamp and a level):

====================================================  ==========================================
``Processing progress: <msg> (<p>%)``                 the seed's remote converter
``Processing... <p>%``
``Progress: <p>% - <msg>`` (or ``... progress: <p>%``)
``Stage: <msg> (<p>%)``
``<msg>: <p>% complete``
``[<p>%] <msg>``
``<desc>:  45%|####      | 45/100 [00:01<00:02, ...]``  a tqdm bar (current and total too)
JSON fields ``percentage``/``percent`` (0..100) or ``progress`` (a 0..1 fraction)
====================================================  ==========================================

Decimal percentages are floored (99.9 is not 100); numbers outside 0..100 are not progress, nor is
a line that merely mentions a percent ("GPU utilisation 87%").

Why it is fast: a line without ``%`` (and, for JSON, without a progress field name) is dismissed
by substring tests before anything else runs, so an ordinary log stream costs a few substring
scans a line. Why it is linear: each format is located by a literal anchor and matched by a regex
with no nested unbounded repetition; the only free-standing number (tqdm's) is read backwards
from its ``%|`` for at most a dozen characters.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeGuard

import orjson

from morag_progress.models import ProgressEvent, as_utc

__all__ = ["ProgressEventParser", "Sighting"]

logger = logging.getLogger(__name__)

_NUM = r"(\d+(?:\.\d+)?)"
_FLAGS = re.IGNORECASE

# Each pattern is tried only when a cheap substring test says it can match (see _extract).
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_NUMBER_CHARS = frozenset("0123456789.")
_MAX_NUMBER = 12  # longest number read before a tqdm "%|": "100" or "99.999999999"
_MAX_TQDM_CANDIDATES = 8  # a tqdm line has one "%|"; a line with thousands is not a bar
_TQDM_COUNTS = re.compile(r"\s*(\d+)/(\d+)(?![\w.])")
_PAREN_PCT = re.compile(r"\(\s*" + _NUM + r"\s*%\s*\)")
_PROCESSING_PROGRESS = re.compile(r"processing progress:", _FLAGS)
_PROCESSING_DOTS = re.compile(r"processing\.\.\.\s*" + _NUM + "%", _FLAGS)
_PROGRESS_COLON = re.compile(r"progress:\s*" + _NUM + r"%(?:\s*-\s*(.*))?", _FLAGS)
_STAGE = re.compile(r"stage:", _FLAGS)
_COMPLETE = re.compile(r":\s*" + _NUM + r"%\s*complete", _FLAGS)
_BRACKET_CLOSE = re.compile(r"%\s*\]")
_BRACKET = re.compile(r"\[\s*" + _NUM + r"\s*%\s*\]\s*(.*)")

# Colour codes of console renderers (structlog's dev renderer, rich, colorlog).
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

# A plain line may start with "2025-06-11T11:26:50.78Z", "[2025-06-11 11:26:50,780]" and a level
# ("INFO", "[info     ]" as structlog's console renderer pads it).
_LINE_PREFIX = re.compile(
    r"\[?(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d{1,9})?(?:Z|[+-]\d{2}:?\d{2})?)\]?"
    r"\s*(?:[-|]\s*)?"
    r"(?:\[?\s*(DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL|TRACE)\s*\]?\s*(?:[-|:]\s*)?)?",
    _FLAGS,
)

_MESSAGE_KEYS = ("event", "message", "msg")
_TIMESTAMP_KEYS = ("timestamp", "time", "@timestamp", "ts")
_LOGGER_KEYS = ("logger", "logger_name", "name")
_LEVEL_KEYS = ("level", "levelname")
_EPOCH_MS_THRESHOLD = 1e11  # a numeric timestamp above this is in milliseconds


# (percentage, message, current, total). A plain tuple: this is the hot path, and a NamedTuple's
# constructor is a Python-level call.
_Found = tuple[int, str, int | None, int | None]
# What a progress line holds before it becomes an event: what was found, the line's own time,
# its logger, its level and the raw record.
_Hit = tuple[_Found, datetime | None, str | None, str, dict[str, Any]]


class Sighting(NamedTuple):
    """Progress seen on a line, before its event is built: the percentage and the line's own
    time are known; the message is cleaned and the event made only if ``event()`` is called.
    A reader that keeps a few lines of many (a log upload) pays for events only for those."""

    percentage: int
    source_timestamp: datetime | None
    hit: _Hit

    def event(self) -> ProgressEvent:
        """The line's progress event."""
        return _event(self.hit)


def _event(hit: _Hit) -> ProgressEvent:
    (pct, message, current, total), timestamp, logger_name, level, raw = hit
    return ProgressEvent(pct, message, timestamp, logger_name, level, raw, current, total)


def _percentage(text: str) -> int | None:
    """Floor a matched number; None when it is outside 0..100 (100.5 is, before flooring)."""
    value = float(text)
    return math.floor(value) if 0 <= value <= 100 else None


def _found(pct: int, message: str, current: int | None = None, total: int | None = None) -> _Found:
    return (pct, message.strip() or f"Processing at {pct}%", current, total)


def _find(text: str, low: str, needle: str, pattern: re.Pattern[str]) -> int:
    """End of the first case-insensitive ``needle`` in ``text``, or -1.

    ``str.find`` on the lowered text is several times faster than an IGNORECASE regex; its
    offsets are the text's own unless lowering changed the length (a few non-ASCII letters),
    in which case the regex answers.
    """
    if len(low) == len(text):
        i = low.find(needle)
        return -1 if i < 0 else i + len(needle)
    m = pattern.search(text)
    return -1 if m is None else m.end()


def _tqdm(text: str) -> _Found | None:
    """``<desc>: 45%|<bar>| 45/100 ...``, anchored on each ``%|`` (str.find, not a regex scan:
    a long run of digits before ``%|`` would otherwise be backtracked through digit by digit)."""
    end = text.find("%|")
    for _ in range(_MAX_TQDM_CANDIDATES):
        if end < 0:
            break
        start = end
        while start > 0 and end - start < _MAX_NUMBER and text[start - 1] in _NUMBER_CHARS:
            start -= 1
        number = text[start:end]
        before = text[start - 1] if start else " "
        closing = text.find("|", end + 2)
        if (
            _NUMBER.fullmatch(number)
            and not (before.isalnum() or before in "._")
            and closing >= 0
            and "\n" not in text[end + 2 : closing]
        ):
            pct = _percentage(number)
            if pct is None:
                return None
            counts = _TQDM_COUNTS.match(text, closing + 1)
            current = total = None
            if counts is not None:
                current, total = int(counts.group(1)), int(counts.group(2))
            return _found(pct, text[:start].rstrip().rstrip(":"), current, total)
        end = text.find("%|", end + 2)
    return None


def _search(pattern: re.Pattern[str], text: str, pos: int = 0) -> tuple[re.Match[str], int] | None:
    """The first match of ``pattern`` and its percentage (group 1), if it is in 0..100."""
    m = pattern.search(text, pos)
    if m is None:
        return None
    pct = _percentage(m.group(1))
    return None if pct is None else (m, pct)


def _after_prefix(text: str, low: str, needle: str, pattern: re.Pattern[str]) -> _Found | None:
    """``<prefix> <msg> (<p>%)``: the message runs from the prefix to the first ``(p%)``."""
    start = _find(text, low, needle, pattern)
    hit = _search(_PAREN_PCT, text, start) if start >= 0 else None
    return None if hit is None else _found(hit[1], text[start : hit[0].start()])


def _processing_dots(text: str) -> _Found | None:
    hit = _search(_PROCESSING_DOTS, text)
    if hit is None:
        return None
    m, pct = hit
    return _found(pct, text[: m.start(1)].rstrip() + " " + text[m.end() :])


def _progress_colon(text: str) -> _Found | None:
    hit = _search(_PROGRESS_COLON, text)
    if hit is None:
        return None
    m, pct = hit
    described = m.group(2)
    if described is None or not described.strip():
        described = text[: m.start() + len("progress")]
    return _found(pct, described)


def _complete(text: str) -> _Found | None:
    hit = _search(_COMPLETE, text)
    return None if hit is None else _found(hit[1], text[: hit[0].start()])


def _bracket(text: str) -> _Found | None:
    hit = _search(_BRACKET, text)
    return None if hit is None else _found(hit[1], hit[0].group(2))


def _may_carry_a_format(raw: str) -> bool:
    """Cheap test: could this line (plain, or raw JSON) hold one of the text formats?

    Every format needs a percent sign and one of these anchors, all plain ASCII that JSON never
    escapes, so a line without them is dismissed before it is decoded or its prefix parsed.
    """
    if "%" not in raw:
        return False
    if "\x1b" in raw:  # colour codes inside a marker word ("Stage") are read through
        raw = _ANSI.sub("", raw)
    if "%|" in raw or "%]" in raw or ("]" in raw and _BRACKET_CLOSE.search(raw) is not None):
        return True
    low = raw.lower()
    # An explicit chain: any() over a generator costs more than all the scans together.
    return "progress:" in low or "processing..." in low or "stage:" in low or "complete" in low


def _extract(text: str) -> _Found | None:
    """Find progress in a message; the seed's formats in the seed's order, tqdm first."""
    if "%" not in text:
        return None
    low = text.lower()
    found = None
    if "%|" in text:
        found = _tqdm(text)
    if found is None and "processing progress:" in low:
        found = _after_prefix(text, low, "processing progress:", _PROCESSING_PROGRESS)
    if found is None and "processing..." in low:
        found = _processing_dots(text)
    if found is None and "progress:" in low:
        found = _progress_colon(text)
    if found is None and "stage:" in low:
        found = _after_prefix(text, low, "stage:", _STAGE)
    if found is None and "complete" in low:
        found = _complete(text)
    if found is None and "[" in text:
        found = _bracket(text)
    return found


def _structured(data: dict[str, Any]) -> int | None:
    """Progress from JSON fields: ``percentage``/``percent`` 0..100 or ``progress`` 0..1."""
    for key in ("percentage", "percent"):
        value = data.get(key)
        if _is_number(value) and 0 <= value <= 100:
            return math.floor(value)
    value = data.get("progress")
    if _is_number(value) and 0 <= value <= 1:
        # round first: 0.29 * 100 is 28.999999999999996, which is 29% to anyone reading it.
        return math.floor(round(value * 100, 6))
    return None


def _is_number(value: object) -> TypeGuard[int | float]:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and (not isinstance(value, float) or math.isfinite(value))
    )


def _count(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _parse_timestamp(value: object) -> datetime | None:
    """ISO 8601 (``Z`` accepted) or epoch seconds/milliseconds; None when unreadable."""
    try:
        if isinstance(value, str):
            return as_utc(datetime.fromisoformat(value.strip()))
        if _is_number(value):
            seconds = float(value)
            if seconds > _EPOCH_MS_THRESHOLD:
                seconds /= 1000
            return datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def _first_str(data: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str):
            return value
    return None


def _first_value(data: dict[str, Any], keys: tuple[str, ...]) -> object:
    for key in keys:
        if key in data:
            return data[key]
    return None


def _as_text(line: object) -> str | None:
    if isinstance(line, str):
        return line
    if isinstance(line, bytes | bytearray | memoryview):
        return bytes(line).decode("utf-8", errors="replace")
    return None


class ProgressEventParser:
    """Parses progress out of structlog JSON lines and plain-text lines.

    Every method accepts anything (None, bytes, binary junk, huge lines, deeply nested JSON) and
    returns None, or an empty result, for whatever is not progress. Nothing is raised.
    """

    def parse_json_log(self, log_line: str | bytes | None) -> ProgressEvent | None:
        """Parse one line: a JSON object if it is one, otherwise a plain-text line."""
        try:
            text = log_line if type(log_line) is str else _as_text(log_line)
            if text is None:
                return None
            return self._parse(text)
        except Exception:  # the parser's contract is to never raise
            logger.debug("unparseable log line ignored", exc_info=True)
            return None

    def parse_plain_text_log(self, log_line: str | bytes | None) -> ProgressEvent | None:
        """Parse one plain-text line (no JSON decoding)."""
        try:
            text = _as_text(log_line)
            if text is None or not _may_carry_a_format(text):
                return None
            return self._parse_plain(text)
        except Exception:  # the parser's contract is to never raise
            logger.debug("unparseable log line ignored", exc_info=True)
            return None

    def parse_mapping(self, data: Mapping[str, Any] | None) -> ProgressEvent | None:
        """Parse a structured log event that is already a mapping (a structlog event dict, a
        decoded JSON line) with the rules of a JSON line, without encoding it first."""
        try:
            if not isinstance(data, Mapping):
                return None
            mapping = data if isinstance(data, dict) else dict(data)
            return self._parse_mapping(mapping, structured=True)
        except Exception:  # the parser's contract is to never raise
            logger.debug("unparseable log event ignored", exc_info=True)
            return None

    def iter_events(self, log_lines: Iterable[str | bytes]) -> Iterator[ProgressEvent]:
        """Yield the progress events of a stream of lines, lazily, in order."""
        for sighting in self.iter_sightings(log_lines):
            yield _event(sighting.hit)

    def iter_sightings(self, log_lines: Iterable[str | bytes]) -> Iterator[Sighting]:
        """Yield the progress of a stream of lines as ``Sighting``s, lazily, in order: what
        ``iter_events`` finds, with each event built only when asked for."""
        try:
            iterator = iter(log_lines)
        except TypeError:
            return
        hit_of = self._hit
        make = tuple.__new__  # Sighting's own constructor is a Python-level call
        for raw in iterator:
            line = raw if type(raw) is str else _as_text(raw)
            if line is None:
                continue
            # The substring tests dismiss ordinary lines without a function call.
            if "%" in line or "percent" in line or "progress" in line:
                try:
                    hit = hit_of(line)
                except Exception:  # the parser's contract is to never raise
                    logger.debug("unparseable log line ignored", exc_info=True)
                    continue
                if hit is not None:
                    yield make(Sighting, (hit[0][0], hit[1], hit))

    def parse_log_stream(self, log_lines: Iterable[str | bytes]) -> list[ProgressEvent]:
        """All progress events of the lines, in order."""
        return list(self.iter_events(log_lines))

    def get_latest_progress(self, log_lines: Iterable[str | bytes]) -> ProgressEvent | None:
        """The event with the latest timestamp (the later line wins a tie)."""
        latest: ProgressEvent | None = None
        for event in self.iter_events(log_lines):
            if latest is None or event.timestamp >= latest.timestamp:
                latest = event
        return latest

    def _parse(self, text: str) -> ProgressEvent | None:
        hit = self._hit(text)
        return None if hit is None else _event(hit)

    def _hit(self, text: str) -> _Hit | None:
        stripped = text.strip()
        if stripped.startswith("{"):
            # Field names are tested on the raw line: most JSON lines never reach the decoder.
            structured = "percent" in stripped or '"progress"' in stripped
            if not structured and not _may_carry_a_format(stripped):
                return None
            try:
                data = orjson.loads(stripped)
            except orjson.JSONDecodeError:
                data = None  # MoRAG reads a line that is not JSON as plain text; so do we
            if isinstance(data, dict):
                return self._mapping_hit(data, structured)
        if not _may_carry_a_format(stripped):
            return None
        return self._plain_hit(stripped)

    def _parse_mapping(self, data: dict[str, Any], structured: bool) -> ProgressEvent | None:
        hit = self._mapping_hit(data, structured)
        return None if hit is None else _event(hit)

    def _mapping_hit(self, data: dict[str, Any], structured: bool) -> _Hit | None:
        text = data.get("event")
        if not isinstance(text, str):
            text = _first_str(data, _MESSAGE_KEYS)
        percentage = _structured(data) if structured else None
        found: _Found | None
        if percentage is not None:
            found = _found(
                percentage, text or "", _count(data.get("current")), _count(data.get("total"))
            )
        elif text is None:
            return None
        else:
            found = _extract(text)
            if found is None:
                return None
        stamp = data.get("timestamp")
        if stamp is None:
            stamp = _first_value(data, _TIMESTAMP_KEYS)
        logger_name = data.get("logger")
        if not isinstance(logger_name, str):
            logger_name = _first_str(data, _LOGGER_KEYS)
        level = data.get("level")
        if not isinstance(level, str):
            level = _first_str(data, _LEVEL_KEYS)
        return (
            found,
            _parse_timestamp(stamp),
            logger_name,
            level.lower() if level else "info",
            data,
        )

    def _parse_plain(self, text: str) -> ProgressEvent | None:
        hit = self._plain_hit(text)
        return None if hit is None else _event(hit)

    def _plain_hit(self, text: str) -> _Hit | None:
        if "\r" in text:  # a tqdm bar redraws itself with carriage returns: the last one counts
            text = next((part for part in reversed(text.split("\r")) if part.strip()), "")
        original = text
        if "\x1b" in text:
            text = _ANSI.sub("", text)
        timestamp = None
        level = "info"
        # The prefix starts with a year: four digits, after a "[" or not.
        if text[:4].isdigit() or (text[:1] == "[" and text[1:5].isdigit()):
            m = _LINE_PREFIX.match(text)
            if m is not None:
                timestamp = _parse_timestamp(m.group(1).replace(",", "."))
                if m.group(2):
                    level = m.group(2).lower()
                text = text[m.end() :]
        found = _extract(text)
        if found is None:
            return None
        return (found, timestamp, None, level, {"original_line": original})
