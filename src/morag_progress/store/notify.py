"""Cross-process wake-ups on PostgreSQL: LISTEN for the feed's NOTIFY on a connection of its
own, in a daemon thread, and call back. Polling stays the fallback, so a lost connection only
costs latency until it is back."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.engine import URL

from morag_progress.store.schema import FEED_CHANNEL

__all__ = ["FeedListener"]

logger = logging.getLogger(__name__)


class FeedListener:
    """Calls ``callback`` whenever a feed row is committed by any process on the database."""

    def __init__(self, url: URL, callback: Callable[[], None], *, retry: float = 2.0) -> None:
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._callback = callback
        self._retry = retry
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="morag-progress LISTEN", daemon=True)
        self.listening = threading.Event()
        """Set while the LISTEN connection is up (tests wait on it)."""

    def start(self) -> FeedListener:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {FEED_CHANNEL}")
                    self.listening.set()
                    while not self._stop.is_set():
                        # Wakes at least every second to notice stop().
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self._callback()
            except psycopg.Error:
                logger.warning("LISTEN connection lost; polling until it is back", exc_info=True)
            self.listening.clear()
            self._stop.wait(self._retry)
