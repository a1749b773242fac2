"""How the command line says that something went wrong: one line on stderr, with a hint.

An error names what failed and, where the user can do something about it, what to do: which
key was refused and where it came from, which server could not be reached, which field broke
which rule. It is never wrapped (a pipe gets it whole) and never a traceback or a dump.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import typer
from rich.console import Console

from morag_progress.cli.text import markup_safe

__all__ = ["http_failure", "say", "unreachable", "within"]

T = TypeVar("T")

_stderr = Console(stderr=True, highlight=False)

_KEY_ENV = "MORAG_PROGRESS_API_KEY"
_URL_ENV = "MORAG_PROGRESS_API_URL"


def within(what: str, low: float, high: float | None = None) -> dict[str, Any]:
    """A number option's help (``what``, then its range in words) and its callback, which
    refuses a number outside ``low`` to ``high`` (no upper bound when None), NaN too. Typer's
    own ``min``/``max`` print ``[0<=x<=65535]`` in the help::

        typer.Option(**within("Port", 0, 65535), metavar="PORT")
    """
    span = f"at least {low:g}" if high is None else f"{low:g} to {high:g}"

    def check(value: T) -> T:
        if value is None:
            return value
        # Written so that NaN, which compares false with everything, is refused too.
        if not (low <= value and (high is None or value <= high)):  # type: ignore[operator]
            raise typer.BadParameter(f"must be {span}, got {value:g}")
        return value

    return {"help": f"{what}, {span}.", "callback": check}


def say(what: str, hint: str | None = None, *, level: str = "error") -> None:
    """One line on stderr: ``error: what (hint)``; ``what`` and ``hint`` are plain text."""
    colour = "red" if level == "error" else "yellow"
    line = f"[{colour}]{level}:[/{colour}] {markup_safe(what)}"
    if hint:
        line += f" [dim]({markup_safe(hint)})[/dim]"
    _stderr.print(line, soft_wrap=True)


def http_failure(response: httpx.Response, options: Mapping[str, str] | None = None) -> typer.Exit:
    """Say why the server refused a request; exit code 1. A refused query parameter is named
    as the option the user gave (``options`` maps parameter to option, e.g. ``{"q":
    "--search"}``; by default ``page_size`` is ``--page-size``)."""
    detail = _detail(response, options or {})
    status = response.status_code
    server = _base(response.request.url)
    if status == 401:
        secret = response.request.headers.get("Authorization", "").partition(" ")[2]
        if secret:
            say(f"the server at {server} refused {_key_named(secret)}: {detail}", _key_hint())
        else:
            say(f"the server at {server} needs an API key, and none was given", _key_hint())
    elif status == 429:
        wait = response.headers.get("Retry-After")
        say(f"{detail} (HTTP 429)", f"try again in {wait} s" if wait else None)
    else:
        say(f"{detail} (HTTP {status})")
    return typer.Exit(1)


def unreachable(url: httpx.URL | str, error: Exception) -> typer.Exit:
    """Say that the server cannot be reached, and where its URL came from; exit code 1."""
    base = _base(httpx.URL(str(url)))
    reason = _reason(error)
    where = f"set in {_URL_ENV}" if os.environ.get(_URL_ENV) else "given with --api-url"
    say(
        f"cannot reach the server at {base}: {reason}",
        f"is it running? `morag-progress serve` starts one; the URL is {where}",
    )
    return typer.Exit(1)


def _detail(response: httpx.Response, options: Mapping[str, str]) -> str:
    """The server's own words: each validation error by the name the user knows it by, else
    the server's message or detail."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason_phrase
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, list) and detail:  # a validation error: where, and which rule
            return "; ".join(
                f"{_named(item.get('loc', ()), options)}: {_rule(item.get('msg'))}"
                for item in detail
                if isinstance(item, dict)
            )
        message = body.get("message")
        if isinstance(message, str) and message:
            return message
        if isinstance(detail, str):
            return detail
    return str(body)[:200]


def _rule(msg: object) -> str:
    """A validation error's rule without pydantic's "Value error, " before it."""
    return str(msg).removeprefix("Value error, ")


def _named(loc: object, options: Mapping[str, str]) -> str:
    """Where a validation error is, as the user named it: a query parameter as its option
    (``--search``), a path parameter as its argument (``JOB``), a body field by its path."""
    parts = [str(part) for part in loc] if isinstance(loc, list | tuple) else [str(loc)]
    where, rest = (parts[0], parts[1:]) if len(parts) > 1 else ("", parts)
    name = ".".join(rest)
    if where == "query":
        return options.get(name, f"--{name.replace('_', '-')}")
    if where == "path":
        return name.removesuffix("_id").upper()
    return name


def _key_named(secret: str) -> str:
    """The key, by its first characters, and where it came from."""
    shown = f"the API key {secret[:8]}..." if len(secret) > 12 else "the (short) API key"
    env = os.environ.get(_KEY_ENV)
    where = f"from {_KEY_ENV}" if env and env.strip() == secret else "given with --api-key"
    return f"{shown} {where}"


def _key_hint() -> str:
    return (
        f"set {_KEY_ENV} or pass --api-key; on the server, `morag-progress keys create --user"
        " NAME` makes one and `keys list` shows them"
    )


def _base(url: httpx.URL) -> str:
    parts = urlsplit(str(url))
    return f"{parts.scheme}://{parts.netloc}"


def _reason(error: Exception) -> str:
    """A transport error as a person reads it ("connection refused", "timed out")."""
    if isinstance(error, httpx.TimeoutException):
        return "it did not answer in time"
    text = str(error) or type(error).__name__
    if "Connection refused" in text:
        return "connection refused"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "no such host"
    return text.removeprefix("[Errno 111] ")
