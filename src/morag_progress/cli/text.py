"""What the server says, as a terminal may show it.

A job's name, message, error, stage and worker are anyone's text: a worker may log escape
sequences (ANSI colours, a clear-screen, a window title, OSC 52's clipboard write), and rich
reads ``[link=...]`` or ``[/x]`` in a string as markup (a link, or a MarkupError). So every
string from the server goes to the terminal through :func:`visible` (control characters written
as escapes: ``\\x1b``, ``\\n``) and into rich as :func:`cell` (a ``Text``, never parsed as
markup). JSON output (``--json``) is the API's, untouched: its encoder escapes them already.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich.markup import escape
from rich.text import Text

__all__ = ["cell", "column_width", "markup_safe", "visible"]

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CONTROLS = {
    code: _NAMED.get(chr(code), f"\\x{code:02x}") for code in (*range(0x20), *range(0x7F, 0xA0))
}
# Bidirectional overrides and isolates reorder what follows them on screen ("Trojan Source").
_CONTROLS.update(
    {code: f"\\u{code:04x}" for code in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}
)


def visible(value: object) -> str:
    """``value`` as text with every control character shown as an escape; None is ``""``."""
    return "" if value is None else str(value).translate(_CONTROLS)


def cell(value: object, style: str = "") -> Text:
    """``value`` for a rich table or print: visible, and plain text whatever brackets it holds."""
    return Text(visible(value), style=style)


def markup_safe(value: object) -> str:
    """``value`` to put inside a rich markup string (``f"[red]error:[/red] {...}"``)."""
    return escape(visible(value))


def column_width(name: str, values: Iterable[object], options: Mapping[str, Any]) -> int:
    """How wide a table's column must be: its widest value (or its header), within its rich
    options' ``min_width`` and ``max_width``. A column that takes what is left (``ratio``)
    needs only its ``min_width``."""
    if "ratio" in options:
        return int(options.get("min_width", 0))
    widest = max([len(name), *(len(visible(value)) for value in values)])
    return min(max(widest, int(options.get("min_width", 0))), int(options.get("max_width", widest)))
