"""Progress from log records: a ``logging.Handler`` and a structlog processor.

A worker that already logs its progress ("Processing progress: Transcribing (52%)", as the seed's
remote converter does, a tqdm bar, ``log.info("chunk", progress=0.52)``) reports it with one line
of set-up and no other change::

    logging.getLogger("converter").addHandler(ProgressLogHandler(reporter))
    structlog.configure(processors=[report_progress(reporter), ...])

Records pass through :class:`~morag_progress.ProgressEventParser`; those that carry no progress
cost a few substring tests. Nothing here raises into the code that logs.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

from morag_progress.integrations import ProgressTarget, report_to
from morag_progress.parser import ProgressEventParser

__all__ = ["ProgressLogHandler", "report_progress"]

logger = logging.getLogger("morag_progress.integrations")
_PARSER = ProgressEventParser()


class ProgressLogHandler(logging.Handler):
    """Reports the progress found in log records to ``target`` (a reporter or a callable
    ``(percentage, message)``). Records of morag-progress's own loggers are skipped."""

    def __init__(self, target: ProgressTarget, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self._report = report_to(target)

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("morag_progress"):
            return  # our own warnings must not feed back into reporting
        try:
            extra: dict[str, Any] = {
                k: record.__dict__[k]
                for k in ("percentage", "percent", "progress")
                if k in record.__dict__
            }
            if extra:
                event = _PARSER.parse_mapping({"event": record.getMessage(), **extra})
            else:
                event = _PARSER.parse_plain_text_log(record.getMessage())
            if event is not None:
                self._report(event)
        except Exception:  # noqa: BLE001 - handleError is logging's policy: report, never raise
            self.handleError(record)


class report_progress:
    """A structlog processor that reports the progress in each event dict (``event`` text in
    the seed's formats, or ``percentage``/``progress`` fields) and passes the event on."""

    def __init__(self, target: ProgressTarget) -> None:
        self._report = report_to(target)

    def __call__(
        self, wrapped_logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        try:
            event = _PARSER.parse_mapping(event_dict)
            if event is not None:
                self._report(event)
        except Exception:
            # Reporting never raises into the code that logs.
            logger.warning("progress from a structlog event not reported", exc_info=True)
        return event_dict
