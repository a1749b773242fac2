"""What a chat sees of a job: one line per event for incoming webhooks (Slack, Discord), and one
live message per job for the platforms that let a message be edited (Slack with a bot token,
Telegram, ntfy).

A live message is posted once and edited as the job moves: a bar, the percentage, the message,
the ETA, the final state. The outbox (``store/webhooks.py``) renders a job's whole state into
each of its deliveries (:func:`render`), so the newest replaces any still waiting; the
dispatcher (``webhooks.py``) sends one job's at a time, paced per webhook within the platform's
published limits, and uses this module to shape each platform's request (:func:`request`) and
read its answer (:func:`read_answer`). Pure: no I/O here.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import orjson

from morag_progress.audit import Action
from morag_progress.eta import Eta
from morag_progress.models import JobStatus

__all__ = [
    "LIVE_DEFAULT_URL",
    "LIVE_PER_HOUR",
    "Answer",
    "Call",
    "Message",
    "Target",
    "chat_body",
    "chat_text",
    "is_live",
    "message_key",
    "read_answer",
    "render",
    "request",
    "retry_after_seconds",
    "silent_seconds",
]

_ACTION_MARK = {Action.STRAGGLER.value: "🐢", Action.AT_RISK.value: "⏰"}
_MARK = {
    "PROCESSING": "⏳",
    "STALLED": "⚠️",
    "FINISHED": "✅",
    "FAILED": "❌",
    "CANCELLED": "🚫",
}

LIVE_DEFAULT_URL = {"slack": "https://slack.com/api", "telegram": "https://api.telegram.org"}
"""Where a live webhook calls when it names no URL (ntfy has none: a topic's URL is needed)."""

LIVE_PER_HOUR = {"slack": 3000, "telegram": 1200, "ntfy": 720}
"""Sends an hour to one live webhook by default, within each platform's published limits:
Slack's ``chat.update`` is Tier 3 (50 a minute), Telegram allows 20 messages a minute to a
group, ntfy.sh refills a visitor's requests at one per 5 s. A self-hosted ntfy or a private
Telegram chat allows more: ``max_per_hour`` (up to 3,600, one a second)."""

_TEXT_LIMIT = {"slack": 3000, "telegram": 4096, "ntfy": 4096}
"""Characters of a live message at most (Slack's advice for ``text``, Telegram's limit, ntfy's
4,096 bytes, kept by cutting to bytes below)."""

_BAR = 10


def is_live(format: str, token: str | None) -> bool:
    """Whether a webhook keeps one message per job (rather than one line per event)."""
    return format in ("telegram", "ntfy") or (format == "slack" and token is not None)


def silent_seconds(event: Any, last_seen_at: datetime | None) -> int | None:
    """How long a stalled job's worker had been silent when the change was recorded (None for
    another change, or when the worker has been heard from since)."""
    if event["status"] != JobStatus.STALLED.value or last_seen_at is None:
        return None
    if last_seen_at > event["recorded_at"]:
        return None
    return int((event["recorded_at"] - last_seen_at).total_seconds())


def _mark(event: Any) -> str:
    return _ACTION_MARK.get(event.get("action")) or _MARK.get(event["status"], "•")


def _job(event: Any, name: str | None) -> str:
    return f"{name} ({event['job_id']})" if name else event["job_id"]


def _left(eta: Eta | None, status: str) -> str | None:
    if eta is None or status != JobStatus.PROCESSING.value:
        return None
    minutes, seconds = divmod(int(eta.seconds), 60)
    return f"about {minutes}:{seconds:02d} left"


def chat_text(event: Any, name: str | None, eta: Eta | None, silent: int | None = None) -> str:
    """One line for a chat channel: what happened to which job (as given: the caller
    escapes it for its service)."""
    status = event["status"]
    line = f"{_mark(event)} {_job(event, name)}: {status} {event['percentage']}%"
    if event["message"]:
        line += f": {event['message']}"
    left = _left(eta, status)
    if left is not None:
        line += f" ({left})"
    if silent is not None:
        line += f" (no report for {silent} s)"
    return line[:2000]


def _slack_escaped(text: str) -> str:
    """Slack's control characters, escaped as its docs say: text from users' job names and
    messages may then mention no one (``<!channel>``) nor make links."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def chat_body(service: str, text: str) -> dict[str, Any]:
    """A chat service's incoming-webhook body for ``text``."""
    if service == "slack":
        return {"text": _slack_escaped(text)}
    return {"content": text, "allowed_mentions": {"parse": []}}  # Discord: no pings


@dataclass(frozen=True, slots=True)
class Message:
    """A live message: the job's whole state at one change."""

    title: str
    """The job: its name and id (ntfy's title; the first line elsewhere)."""
    body: str
    """The bar and percentage, status, message and ETA, one per line."""
    final: bool
    """The job has ended: this is the message's last state."""

    def text(self) -> str:
        return f"{self.title}\n{self.body}"

    def to_json(self) -> str:
        return orjson.dumps({"title": self.title, "body": self.body, "final": self.final}).decode()

    @classmethod
    def from_json(cls, payload: str) -> Message:
        data = orjson.loads(payload)
        return cls(str(data["title"]), str(data["body"]), bool(data["final"]))


def render(event: Any, name: str | None, eta: Eta | None, silent: int | None = None) -> Message:
    """A job's live message at the change ``event`` (a feed row)."""
    status = event["status"]
    percentage = max(0, min(100, int(event["percentage"])))
    filled = percentage * _BAR // 100
    lines = [f"{'▓' * filled}{'░' * (_BAR - filled)} {percentage}% · {status}"]
    if event.get("stage"):
        lines.append(f"Stage: {event['stage']}")
    if event["message"]:
        lines.append(str(event["message"]))
    left = _left(eta, status)
    if left is not None:
        lines.append(left.capitalize())
    if silent is not None:
        lines.append(f"No report for {silent} s")
    terminal = status in (
        JobStatus.FINISHED.value,
        JobStatus.FAILED.value,
        JobStatus.CANCELLED.value,
    )
    return Message(f"{_mark(event)} {_job(event, name)}"[:256], "\n".join(lines), terminal)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a webhook sends, with its credentials (read at each send, never shown)."""

    url: str
    format: str
    secret: str = field(repr=False)
    token: str | None = field(default=None, repr=False)
    channel: str | None = None

    @property
    def live(self) -> bool:
        return is_live(self.format, self.token)


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP request to a platform."""

    method: str
    url: str = field(repr=False)  # Telegram's holds the bot's token
    headers: dict[str, str] = field(repr=False)  # and so do the others' Authorization
    body: bytes = field(repr=False)


def _cut(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters and 4,096 UTF-8 bytes."""
    text = text[:limit]
    while len(text.encode()) > 4096:
        text = text[: len(text) - max(1, (len(text.encode()) - 4096) // 4)]
    return text


def _header(value: str) -> str:
    """``value`` as a header may carry it: as is when it is printable ASCII, else as an RFC 2047
    encoded word (UTF-8, base64), which ntfy decodes."""
    value = " ".join(value.split())
    if value.isascii() and value.isprintable():
        return value
    return f"=?UTF-8?B?{base64.b64encode(value.encode()).decode()}?="


def _json_call(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Call:
    headers = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
    return Call("POST", url, headers, orjson.dumps(body))


def message_key(webhook_id: str, job_user_id: str, job_id: str) -> str:
    """A job's message's stable name for one webhook (ntfy's sequence id): the same for every
    send, told apart from any other job's or webhook's, and no hint of the job's id."""
    digest = hashlib.sha256(f"{webhook_id}\0{job_user_id}\0{job_id}".encode()).hexdigest()
    return f"mp{digest[:30]}"


def request(target: Target, message: Message, ref: str | None, *, key: str) -> Call:
    """The request that posts ``message`` (``ref`` None) or edits the message ``ref`` names;
    ``key`` is the job's message's stable name (:func:`message_key`)."""
    base = target.url.rstrip("/")
    if target.format == "slack":
        auth = {"Authorization": f"Bearer {target.token}"}
        text = _cut(_slack_escaped(message.text()), _TEXT_LIMIT["slack"])
        if ref is None:
            body = {"channel": target.channel, "text": text, "unfurl_links": False}
            return _json_call(f"{base}/chat.postMessage", body, auth)
        channel, _, ts = ref.partition(" ")
        return _json_call(f"{base}/chat.update", {"channel": channel, "ts": ts, "text": text}, auth)
    if target.format == "telegram":
        text = _cut(message.text(), _TEXT_LIMIT["telegram"])  # no parse_mode: plain text
        if ref is None:
            body = {"chat_id": target.channel, "text": text, "disable_web_page_preview": True}
            return _json_call(f"{base}/bot{target.token}/sendMessage", body)
        edit = {"chat_id": target.channel, "message_id": int(ref), "text": text}
        return _json_call(f"{base}/bot{target.token}/editMessageText", edit)
    # ntfy (2.16 and later): a message of the same sequence id replaces the notification on
    # every device, so every send is the same publish.
    headers = {
        "Content-Type": "text/plain; charset=utf-8",
        "X-Sequence-ID": key,
        "X-Title": _header(_cut(message.title, 256)),
        "X-Markdown": "no",
    }
    if not message.final:
        headers["X-Priority"] = "2"  # low: an edit need not ring
    if target.token:
        headers["Authorization"] = f"Bearer {target.token}"
    return Call("POST", target.url, headers, _cut(message.body, 4096).encode())


@dataclass(frozen=True, slots=True)
class Answer:
    """What a platform's answer means for a live message."""

    ok: bool
    ref: str | None = None
    """The message's reference, once posted."""
    retry_after: float | None = None
    """Seconds the platform asked us to wait (429)."""
    gone: bool = False
    """The message cannot be edited any more (deleted, too old): post a new one."""
    error: str | None = None
    """Why it failed, in our words (a platform's error code at most)."""


_CODE = re.compile(r"[a-z0-9_]{1,64}")
_SLACK_GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})
_TELEGRAM_GONE = ("message to edit not found", "message can't be edited")


def retry_after_seconds(headers: Any, status: int, now: float) -> float | None:
    """Seconds a receiver asked to wait with ``Retry-After`` (seconds or an HTTP date; at most
    an hour), for a 429 or 503; None otherwise."""
    value = headers.get("retry-after") if status in (429, 503) else None
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(3600.0, float(value))
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return min(3600.0, max(0.0, when - now))


def read_answer(
    target: Target, status: int, body: bytes, headers: Any, *, editing: bool, now: float
) -> Answer:
    """Read a platform's answer to :func:`request`. Never raises: an answer it cannot read
    is a failure to try again."""
    retry_after = retry_after_seconds(headers, status, now)
    try:
        data = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        data = {}
    if target.format == "slack":
        error = data.get("error") if isinstance(data.get("error"), str) else None
        if status == 200 and data.get("ok") is True:
            if editing:
                return Answer(True)
            ts, channel = data.get("ts"), data.get("channel")
            if isinstance(ts, str) and isinstance(channel, str) and " " not in channel + ts:
                return Answer(True, ref=f"{channel} {ts}"[:256])
            return Answer(False, error="Slack answered without the message's ts")
        if editing and error in _SLACK_GONE:
            return Answer(False, gone=True, error=f"Slack said {error}")
        code = error if error is not None and _CODE.fullmatch(error) else None
        said = f"Slack said {code}" if code else f"Slack answered HTTP {status}"
        return Answer(False, retry_after=retry_after, error=said)
    if target.format == "telegram":
        parameters = data.get("parameters")
        if isinstance(parameters, dict) and isinstance(parameters.get("retry_after"), int):
            retry_after = float(min(3600, max(0, parameters["retry_after"])))
        if data.get("ok") is True and 200 <= status < 300:
            if editing:
                return Answer(True)
            result = data.get("result")
            message_id = result.get("message_id") if isinstance(result, dict) else None
            if isinstance(message_id, int) and not isinstance(message_id, bool):
                return Answer(True, ref=str(message_id))
            return Answer(False, error="Telegram answered without the message's id")
        description = str(data.get("description") or "").lower()
        if editing and "message is not modified" in description:
            return Answer(True)  # the same text again: nothing to change
        if editing and any(gone in description for gone in _TELEGRAM_GONE):
            return Answer(False, gone=True, error="Telegram: the message cannot be edited")
        return Answer(False, retry_after=retry_after, error=f"Telegram answered HTTP {status}")
    if 200 <= status < 300:
        return Answer(True, ref=None)  # ntfy: the sequence id is ours
    return Answer(False, retry_after=retry_after, error=f"ntfy answered HTTP {status}")
