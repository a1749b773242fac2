"""Input bounds: the limits every boundary enforces, in one place (``docs/limits.md``).

The HTTP schemas (pydantic) and the library's value objects call the same checks, so an id, a
text or a metadata object that one path refuses is refused by every path, with an error that
names the field and the rule. Text is refused when no database could store it: a NUL character
(PostgreSQL text cannot hold one) or a lone surrogate (not encodable as UTF-8).
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

import orjson

from morag_progress.errors import InvalidInputError

__all__ = [
    "ID_PATTERN",
    "MAX_CHECKPOINT_BYTES",
    "MAX_EXPECTED_CHILDREN",
    "MAX_ID",
    "MAX_MESSAGE",
    "MAX_METADATA_BYTES",
    "MAX_METADATA_DEPTH",
    "MAX_NAME",
    "MAX_SECONDS_OR_WEIGHT",
    "MAX_STAGE",
    "MAX_TYPE",
    "MIN_TIMESTAMP",
    "check_checkpoint",
    "check_id",
    "check_metadata",
    "check_text",
    "check_timestamp",
    "clean_text",
    "text_rule",
]

MAX_ID = 128
"""Job ids (and parent ids, cursors): characters."""
ID_PATTERN = r"^(?!\.\.?$)[A-Za-z0-9_.:@-]{1,128}$"
"""ASCII letters, digits and ``_ . : @ -``; not ``.`` or ``..`` alone (they mean something in a
URL path). ASCII only: no lookalike letters, and an id always fits a ``Location`` header."""
MAX_NAME = 255
"""``document_name``, ``document_id``, ``worker_id``: characters."""
MAX_TYPE = 64
"""``document_type``: characters."""
MAX_STAGE = 255
"""``stage``: characters."""
MAX_MESSAGE = 2000
"""``message``, ``summary``, ``error``: characters (the library truncates longer messages)."""
MAX_METADATA_BYTES = 16 * 1024
"""``metadata``: its size as compact JSON."""
MAX_CHECKPOINT_BYTES = 32 * 1024
"""``checkpoint``: a worker's resume state, its size as compact JSON (half a request body's
64 KiB: a report carrying one fits with its longest message)."""
MAX_METADATA_DEPTH = 8
"""``metadata``: objects and arrays nested at most this deep (the object itself is depth 1)."""
MAX_SECONDS_OR_WEIGHT = 1e9
"""``weight`` and ``stall_timeout_s``: above 0 and at most this."""
MAX_EXPECTED_CHILDREN = 10_000
"""``expected_children``: the children a parent may expect (a run's ranks); the server's
straggler sweep reads at most this many children of a run at once."""
MIN_TIMESTAMP = datetime(1970, 1, 1, tzinfo=UTC)
"""The earliest timestamp a report may carry (the latest: 5 minutes past the server's clock)."""

_MAX_INT = 2**63 - 1
_ID = re.compile(ID_PATTERN)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_TEXT_RULE = "must be UTF-8 text without NUL characters or lone surrogates"


def text_rule(value: str) -> str | None:
    """What is wrong with ``value`` as stored text, or None when nothing is."""
    if "\x00" in value:
        return _TEXT_RULE
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return _TEXT_RULE
    return None


def check_text(field: str, value: object, *, max_length: int, required: bool = False) -> None:
    """Raise InvalidInputError unless ``value`` is storable text of at most ``max_length``
    characters (``None`` is allowed unless ``required``; required text is not blank)."""
    if value is None and not required:
        return
    if not isinstance(value, str) or (required and not value.strip()):
        raise InvalidInputError(field, "must be a non-empty string", value)
    if len(value) > max_length:
        raise InvalidInputError(field, f"must be at most {max_length} characters", value)
    rule = text_rule(value)
    if rule is not None:
        raise InvalidInputError(field, rule, value)


def clean_text(value: str, max_length: int = MAX_MESSAGE) -> str:
    """``value`` made storable: NUL characters and lone surrogates replaced by U+FFFD, and cut
    to ``max_length`` characters (with an ellipsis). For text the caller does not control, such
    as a log line's message, where refusing would lose the progress it carries."""
    if text_rule(value) is not None:
        value = _UNSTORABLE.sub("\ufffd", value)
    if len(value) > max_length:
        value = value[: max_length - 1] + "…"
    return value


def check_id(field: str, value: object) -> None:
    """Raise InvalidInputError unless ``value`` is a valid job id (:data:`ID_PATTERN`)."""
    if not isinstance(value, str) or _ID.fullmatch(value) is None:
        raise InvalidInputError(
            field,
            f"must be 1 to {MAX_ID} ASCII letters, digits or _ . : @ -, and not . or ..",
            value,
        )


def check_timestamp(field: str, value: datetime) -> datetime:
    """``value`` in UTC (naive means UTC), or InvalidInputError when it is before 1970 or
    cannot be expressed in UTC (year 1 with a positive offset overflows)."""
    try:
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        elif value.tzinfo is not UTC:
            value = value.astimezone(UTC)
    except OverflowError as e:
        raise InvalidInputError(field, "must be a date-time from 1970 on", value) from e
    if value < MIN_TIMESTAMP:
        raise InvalidInputError(field, "must be a date-time from 1970 on", value)
    return value


def check_metadata(
    value: object, field: str = "metadata", *, max_bytes: int = MAX_METADATA_BYTES
) -> dict[str, Any]:
    """Raise InvalidInputError unless ``value`` is a JSON object within the bounds: nested at
    most :data:`MAX_METADATA_DEPTH` deep, at most ``max_bytes`` as compact JSON
    (:data:`MAX_METADATA_BYTES`; a checkpoint's is :data:`MAX_CHECKPOINT_BYTES`), with
    storable strings, finite numbers and 64-bit integers. Returns it."""
    if not isinstance(value, dict):
        raise InvalidInputError(field, "must be a JSON object", type(value).__name__)
    _walk(value, field, 1)
    size = len(orjson.dumps(value))
    if size > max_bytes:
        raise InvalidInputError(
            field, f"must be at most {max_bytes} bytes as JSON", f"{size} bytes"
        )
    return value


def check_checkpoint(value: object) -> dict[str, Any]:
    """Raise InvalidInputError unless ``value`` is a checkpoint: a JSON object under
    ``check_metadata``'s rules, at most :data:`MAX_CHECKPOINT_BYTES`. Returns it."""
    return check_metadata(value, "checkpoint", max_bytes=MAX_CHECKPOINT_BYTES)


def _walk(value: object, path: str, depth: int) -> None:
    if isinstance(value, dict | list):
        if depth > MAX_METADATA_DEPTH:
            raise InvalidInputError(
                path, f"must be nested at most {MAX_METADATA_DEPTH} levels deep", "[...]"
            )
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(value, dict):
                if not isinstance(key, str):
                    raise InvalidInputError(path, "must have string keys", key)
                _walk_text(key, path)
            _walk(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, str):
        _walk_text(value, path)
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int):
        if not -_MAX_INT <= value <= _MAX_INT:
            raise InvalidInputError(path, "must be an integer within 64 bits", value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInputError(path, "must be a finite number", value)
    else:
        raise InvalidInputError(path, "must be a JSON value", type(value).__name__)


def _walk_text(value: str, path: str) -> None:
    rule = text_rule(value)
    if rule is not None:
        raise InvalidInputError(path, rule, value)
