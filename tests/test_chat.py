"""What a chat sees: a job's live message, each platform's request for a post and an edit, and
reading their answers (ok, a reference, a 429's wait, a message gone, an answer that is not
JSON), which never raises."""

from __future__ import annotations

import email.header
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from hypothesis import given
from hypothesis import strategies as st

from morag_progress.chat import (
    Message,
    Target,
    is_live,
    message_key,
    read_answer,
    render,
    request,
)
from morag_progress.eta import Eta

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
SLACK = Target("https://slack.test/api", "slack", "whsec_x", token="xoxb-1", channel="C1")
TELEGRAM = Target("https://tg.test", "telegram", "whsec_x", token="123:abc", channel="-100")
KEY = "mpkey"
NTFY = Target("https://ntfy.test/jobs", "ntfy", "whsec_x", token="tk_1")


def _event(**fields: Any) -> dict[str, Any]:
    return {
        "job_id": "j1",
        "status": "PROCESSING",
        "percentage": 42,
        "message": "page 3 of 7",
        "stage": "ocr",
        "action": "report",
        "recorded_at": NOW,
        **fields,
    }


def test_which_formats_are_live() -> None:
    assert is_live("telegram", None)
    assert is_live("ntfy", None)
    assert is_live("slack", "xoxb-1")
    assert not is_live("slack", None)
    assert not is_live("json", None)
    assert not is_live("discord", None)


def test_a_live_message_shows_the_bar_percentage_message_and_eta() -> None:
    eta = Eta(seconds=75, low=60, high=90, basis="live", rate=0.5)
    message = render(_event(), "scan.pdf", eta)
    assert message.title == "⏳ scan.pdf (j1)"
    assert message.body == "▓▓▓▓░░░░░░ 42% · PROCESSING\nStage: ocr\npage 3 of 7\nAbout 1:15 left"
    assert not message.final
    done = render(_event(status="FINISHED", percentage=100, message="", stage=None), None, eta)
    assert (done.title, done.body, done.final) == ("✅ j1", "▓▓▓▓▓▓▓▓▓▓ 100% · FINISHED", True)
    stalled = render(_event(status="STALLED"), "scan.pdf", None, silent=90)
    assert stalled.body.endswith("No report for 90 s")
    assert stalled.title.startswith("⚠️")
    assert Message.from_json(message.to_json()) == message


@given(st.integers(-(10**6), 10**6), st.text(max_size=5000))
def test_any_state_renders_within_the_platforms_limits(percentage: int, text: str) -> None:
    message = render(_event(percentage=percentage, message=text), text[:300], None)
    for target in (SLACK, TELEGRAM, NTFY):
        for ref in (None, "C1 1.2" if target is SLACK else "7"):
            call = request(target, message, ref, key=KEY)
            if target is NTFY:
                assert len(call.body) <= 4096
            else:
                body = orjson.loads(call.body)
                assert len(body["text"]) <= 4096


def test_slack_posts_then_updates_with_its_channel_and_ts() -> None:
    message = render(_event(message="<!channel> & co"), "a.pdf", None)
    post = request(SLACK, message, None, key=KEY)
    assert (post.method, post.url) == ("POST", "https://slack.test/api/chat.postMessage")
    assert post.headers["Authorization"] == "Bearer xoxb-1"
    assert post.headers["Content-Type"] == "application/json; charset=utf-8"
    body = orjson.loads(post.body)
    assert body["channel"] == "C1"
    assert "&lt;!channel&gt; &amp; co" in body["text"]
    answer = read_answer(
        SLACK, 200, b'{"ok":true,"channel":"C9","ts":"17.5"}', {}, editing=False, now=0
    )
    assert (answer.ok, answer.ref) == (True, "C9 17.5")
    edit = request(SLACK, message, answer.ref, key=KEY)
    assert edit.url.endswith("/chat.update")
    assert {k: orjson.loads(edit.body)[k] for k in ("channel", "ts")} == {
        "channel": "C9",
        "ts": "17.5",
    }


def test_slack_answers() -> None:
    def read(status: int, body: bytes, headers: Any = None, editing: bool = True) -> Any:
        return read_answer(
            SLACK, status, body, httpx.Headers(headers or {}), editing=editing, now=1.9e9
        )

    assert read(200, b'{"ok":true}').ok
    gone = read(200, b'{"ok":false,"error":"message_not_found"}')
    assert (gone.ok, gone.gone) == (False, True)
    refused = read(200, b'{"ok":false,"error":"invalid_auth"}')
    assert (refused.ok, refused.gone, refused.error) == (False, False, "Slack said invalid_auth")
    odd = read(200, b'{"ok":false,"error":"<script>"}')
    assert odd.error == "Slack answered HTTP 200"  # never the receiver's words
    limited = read(429, b"", {"Retry-After": "7"})
    assert (limited.ok, limited.retry_after) == (False, 7.0)
    assert read(429, b"", {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}).retry_after == 0.0
    assert read(429, b"", {"Retry-After": "soon"}).retry_after is None
    assert read(429, b"", {"Retry-After": "999999"}).retry_after == 3600.0
    assert not read(200, b'{"ok":true,"ts":"1"}', editing=False).ok  # no channel: no ref
    assert not read(502, b"<html>").ok


def test_telegram_sends_then_edits_by_message_id() -> None:
    message = render(_event(), "a.pdf", None)
    post = request(TELEGRAM, message, None, key=KEY)
    assert post.url == "https://tg.test/bot123:abc/sendMessage"
    assert orjson.loads(post.body)["chat_id"] == "-100"
    assert "parse_mode" not in orjson.loads(post.body)  # plain text: nothing to escape
    sent = read_answer(
        TELEGRAM, 200, b'{"ok":true,"result":{"message_id":55}}', {}, editing=False, now=0
    )
    assert sent.ref == "55"
    edit = request(TELEGRAM, message, "55", key=KEY)
    assert edit.url.endswith("/editMessageText")
    assert orjson.loads(edit.body)["message_id"] == 55

    def read(status: int, data: dict[str, Any]) -> Any:
        return read_answer(TELEGRAM, status, orjson.dumps(data), {}, editing=True, now=0)

    limited = read(429, {"ok": False, "error_code": 429, "parameters": {"retry_after": 9}})
    assert (limited.ok, limited.retry_after) == (False, 9.0)
    same = read(400, {"ok": False, "description": "Bad Request: message is not modified: x"})
    assert same.ok  # the same text again is no failure
    gone = read(400, {"ok": False, "description": "Bad Request: message to edit not found"})
    assert gone.gone
    assert not read_answer(
        TELEGRAM, 200, b'{"ok":true,"result":{"message_id":true}}', {}, editing=False, now=0
    ).ok


def test_ntfy_publishes_and_replaces_by_sequence_id() -> None:
    message = render(_event(), "a.pdf", None)
    post = request(NTFY, message, None, key=KEY)
    assert (post.method, post.url) == ("POST", "https://ntfy.test/jobs")
    assert post.headers["X-Sequence-ID"] == KEY  # each send replaces the last
    assert post.headers["Authorization"] == "Bearer tk_1"
    title = post.headers["X-Title"]  # RFC 2047: a header is ASCII
    assert str(email.header.make_header(email.header.decode_header(title))) == "⏳ a.pdf (j1)"
    assert (
        request(NTFY, Message("plain\ntitle", "b", False), None, key=KEY).headers["X-Title"]
        == "plain title"
    )
    assert post.body.decode() == message.body
    assert read_answer(NTFY, 200, b'{"id":"x"}', {}, editing=False, now=0).ok
    limited = read_answer(
        NTFY, 429, b"{}", httpx.Headers({"Retry-After": "3"}), editing=True, now=0
    )
    assert limited.retry_after == 3.0


def test_a_message_key_is_stable_and_apart() -> None:
    key = message_key("wh_1", "alice", "j1")
    assert key == message_key("wh_1", "alice", "j1")
    assert len({key, message_key("wh_1", "bob", "j1"), message_key("wh_2", "alice", "j1")}) == 3
    assert key.isalnum()
    assert len(key) <= 64
    assert "j1" not in key


@given(st.integers(100, 599), st.binary(max_size=300), st.booleans())
def test_reading_an_answer_never_raises(status: int, body: bytes, editing: bool) -> None:
    for target in (SLACK, TELEGRAM, NTFY):
        read_answer(target, status, body, httpx.Headers({}), editing=editing, now=0)
