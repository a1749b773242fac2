"""Server text as the terminal shows it: no control character gets through, markup is text."""

from __future__ import annotations

import unicodedata

from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from morag_progress.cli.text import cell, markup_safe, visible


@given(st.text())
def test_no_control_character_gets_through(value: str) -> None:
    shown = visible(value)
    assert not any(unicodedata.category(c) == "Cc" for c in shown)
    assert not any(0x202A <= ord(c) <= 0x202E or 0x2066 <= ord(c) <= 0x2069 for c in shown)


def test_escapes_are_readable_and_plain_text_is_left_alone() -> None:
    assert visible("tab\there\nnew\x1b[2J\x9b\u202e") == "tab\\there\\nnew\\x1b[2J\\x9b\\u202e"
    assert visible("Transcribing — 50% 日本") == "Transcribing — 50% 日本"
    assert visible(None) == ""


def test_markup_stays_text() -> None:
    console = Console(record=True, width=80)
    console.print(cell("[bold]x[/bold] [/y]"))
    console.print(f"error: {markup_safe('[link=http://e]z[/link]')}")
    assert console.export_text() == "[bold]x[/bold] [/y]\nerror: [link=http://e]z[/link]\n"
