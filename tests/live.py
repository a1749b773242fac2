"""A real uvicorn server in a thread, for tests that need HTTP on loopback (streams, the
reporter). It can be stopped and started again on the same port: a server that is down, then up."""

from __future__ import annotations

import threading
import time
from typing import Any

import uvicorn

from tests.services import free_port


class LiveServer:
    """Serves ``app`` on 127.0.0.1 at ``url`` while started."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.app = app
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> LiveServer:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive(), "server thread died on start"
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
        self._server = self._thread = None
