"""Progress from tqdm bars: a drop-in ``tqdm`` that also reports to a job.

::

    from morag_progress.integrations.tqdm import tqdm

    for chunk in tqdm(chunks, desc="Embedding", reporter=reporter):
        embed(chunk)

It reports when tqdm redraws (every ``mininterval``, 0.1 s by default), not per iteration, so it
adds nothing to tqdm's per-iteration cost; closing the bar reports its last state. Like
``tqdm.contrib.telegram``, the class is also exported as ``tqdm`` and ``trange``.
"""

from __future__ import annotations

import logging
from typing import Any

from tqdm.auto import tqdm as _tqdm

from morag_progress.integrations import ProgressTarget, report_to
from morag_progress.models import ProgressEvent

__all__ = ["tqdm", "tqdm_reporter", "trange"]

logger = logging.getLogger("morag_progress.integrations")


class tqdm_reporter(_tqdm):  # type: ignore[type-arg]  # tqdm is generic in its items; any
    """A tqdm bar that reports ``n / total`` to ``reporter`` (a reporter or a callable
    ``(percentage, message)``) each time it redraws. A bar without a total reports nothing."""

    def __init__(self, *args: Any, reporter: ProgressTarget, **kwargs: Any) -> None:
        self._report = report_to(reporter)
        self._reported: tuple[int, float] | None = None
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> Any:
        shown = super().display(msg, pos)
        self._send()
        return shown

    def close(self) -> None:
        if not self.disable:
            self._send()
        super().close()

    def _send(self) -> None:
        try:
            total = self.total
            if not total or total <= 0:
                return
            n = int(self.n)
            if self._reported == (n, total):
                return
            self._reported = (n, total)
            percentage = max(0, min(100, int(100 * n / total)))
            message = (self.desc or "").rstrip(": ")
            self._report(ProgressEvent(percentage, message, current=n, total=int(total)))
        except Exception:
            # Reporting never raises into the loop it measures.
            logger.warning("tqdm progress not reported", exc_info=True)


tqdm = tqdm_reporter


def trange(*args: Any, reporter: ProgressTarget, **kwargs: Any) -> tqdm_reporter:
    """``tqdm(range(*args), reporter=..., **kwargs)``."""
    return tqdm_reporter(range(*args), reporter=reporter, **kwargs)
