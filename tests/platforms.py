"""Slack's Web API, Telegram's Bot API and ntfy's publish API on loopback, as their documents
describe them (the real ones are not reachable from tests): each request's shape is checked and
a wrong one gets the platform's own error, Slack's answers are gzipped when the client accepts
it (as Slack's are), the messages are kept with every edit and its time, and the next requests
can be answered with a 429 and the platform's way of saying how long to wait."""

from __future__ import annotations

import email.header
import gzip
import http.server
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

SLACK_TOKEN = "xoxb-test-1"
TELEGRAM_TOKEN = "123456:ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef"
NTFY_TOKEN = "tk_test"


@dataclass
class Message:
    """One message on a platform, and each text it showed, with when (monotonic)."""

    texts: list[tuple[float, str]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.texts[-1][1]


class Platforms:
    """The three platforms on one loopback port: ``/slack/api/...``, ``/telegram/bot<token>/...``
    and ``/ntfy/<topic>``; and ``/lines``, a Slack incoming webhook (a message a body)."""

    def __init__(self) -> None:
        self.messages: dict[str, Message] = {}
        """By platform and reference (Slack's ts, Telegram's message id, ntfy's sequence id)."""
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.limited: dict[str, tuple[int, int]] = {}
        """By platform: answer its next ``n`` requests with a 429 saying to wait ``s``."""
        self.lock = threading.Lock()
        self._ids = itertools.count(1)
        platforms = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with platforms.lock:
                    platforms.requests.append((self.path, dict(self.headers), body))
                    status, headers, answer = platforms.answer(self.path, self.headers, body)
                data = json.dumps(answer).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                if self.path.startswith("/slack/") and "gzip" in (
                    self.headers.get("Accept-Encoding") or ""
                ):  # as Slack's Web API answers
                    data = gzip.compress(data)
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_PUT = do_POST

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True  # closing waits for no client's idle connection
        self.server.block_on_close = False
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def of(self, platform: str) -> list[Message]:
        with self.lock:
            return [m for key, m in self.messages.items() if key.startswith(platform + ":")]

    def answer(self, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], Any]:
        platform = path.split("/")[1]
        count, wait = self.limited.get(platform, (0, 0))
        if count > 0:
            self.limited[platform] = (count - 1, wait)
            return self._limited(platform, wait)
        if platform == "slack":
            return self._slack(path.removeprefix("/slack/api/"), headers, body)
        if platform == "telegram":
            return self._telegram(path.removeprefix("/telegram/"), headers, body)
        if platform == "lines":  # a Slack incoming webhook: every body a message of its own
            self._keep(f"lines:{next(self._ids)}", json.loads(body)["text"])
            return 200, {}, "ok"
        return self._ntfy(path.removeprefix("/ntfy/"), headers, body)

    def limit(self, platform: str, count: int = 1, retry_after: int = 1) -> None:
        """Answer ``platform``'s next ``count`` requests with a 429 (wait ``retry_after`` s)."""
        with self.lock:
            self.limited[platform] = (count, retry_after)

    def _limited(self, platform: str, seconds: int) -> tuple[int, dict[str, str], Any]:
        wait = {"Retry-After": str(seconds)}
        if platform == "telegram":  # says it in the body (and not always in a header)
            return (
                429,
                {},
                {
                    "ok": False,
                    "error_code": 429,
                    "description": f"Too Many Requests: retry after {seconds}",
                    "parameters": {"retry_after": seconds},
                },
            )
        if platform == "slack":
            return 429, wait, {"ok": False, "error": "ratelimited"}
        return 429, wait, {"code": 42901, "http": 429, "error": "limit reached: too many requests"}

    def _keep(self, key: str, text: str) -> None:
        self.messages.setdefault(key, Message()).texts.append((time.monotonic(), text))

    def _slack(self, method: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], Any]:
        if headers.get("Authorization") != f"Bearer {SLACK_TOKEN}":
            return 200, {}, {"ok": False, "error": "invalid_auth"}
        if not headers.get("Content-Type", "").startswith("application/json"):
            return 200, {}, {"ok": False, "error": "invalid_form_data"}
        data = json.loads(body)
        if data.get("channel") not in ("#builds", "C0BUILDS"):
            return 200, {}, {"ok": False, "error": "channel_not_found"}
        if not isinstance(data.get("text"), str) or not data["text"]:
            return 200, {}, {"ok": False, "error": "no_text"}
        if method == "chat.postMessage":
            ts = f"{int(time.time())}.{next(self._ids):06d}"
            self._keep(f"slack:{ts}", data["text"])
            return 200, {}, {"ok": True, "channel": "C0BUILDS", "ts": ts, "message": {}}
        if method == "chat.update":
            if data["channel"] != "C0BUILDS" or f"slack:{data.get('ts')}" not in self.messages:
                return 200, {}, {"ok": False, "error": "message_not_found"}
            self._keep(f"slack:{data['ts']}", data["text"])
            return 200, {}, {"ok": True, "channel": "C0BUILDS", "ts": data["ts"], "text": ""}
        return 200, {}, {"ok": False, "error": "unknown_method"}

    def _telegram(self, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], Any]:
        token, _, method = path.partition("/")
        if token != f"bot{TELEGRAM_TOKEN}":
            return 401, {}, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        data = json.loads(body)
        if str(data.get("chat_id")) != "-1001":
            return (
                400,
                {},
                {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"},
            )
        text = data.get("text")
        if not isinstance(text, str) or not 1 <= len(text) <= 4096:
            return (
                400,
                {},
                {"ok": False, "error_code": 400, "description": "Bad Request: text is too long"},
            )
        if method == "sendMessage":
            message_id = next(self._ids)
            self._keep(f"telegram:{message_id}", text)
            return 200, {}, {"ok": True, "result": {"message_id": message_id, "text": text}}
        if method == "editMessageText":
            key = f"telegram:{data.get('message_id')}"
            if key not in self.messages:
                return (
                    400,
                    {},
                    {
                        "ok": False,
                        "error_code": 400,
                        "description": "Bad Request: message to edit not found",
                    },
                )
            if self.messages[key].text == text:
                return (
                    400,
                    {},
                    {
                        "ok": False,
                        "error_code": 400,
                        "description": "Bad Request: message is not modified: specified new message "
                        "content and reply markup are exactly the same",
                    },
                )
            self._keep(key, text)
            return 200, {}, {"ok": True, "result": {"message_id": data["message_id"], "text": text}}
        return 404, {}, {"ok": False, "error_code": 404, "description": "Not Found"}

    def _ntfy(self, topic: str, headers: Any, body: bytes) -> tuple[int, dict[str, str], Any]:
        if headers.get("Authorization") != f"Bearer {NTFY_TOKEN}":
            return 403, {}, {"code": 40301, "http": 403, "error": "forbidden"}
        if len(body) > 4096:
            return 413, {}, {"code": 41301, "http": 413, "error": "too large"}
        message_id = f"m{next(self._ids)}"
        sequence = headers.get("X-Sequence-ID") or message_id
        title = str(email.header.make_header(email.header.decode_header(headers["X-Title"])))
        text = f"{title}\n{body.decode()}"
        self._keep(f"ntfy:{topic}/{sequence}", text)
        return (
            200,
            {},
            {
                "id": message_id,
                "sequence_id": sequence,
                "time": int(time.time()),
                "event": "message",
                "topic": topic,
                "message": body.decode(),
            },
        )
