"""Integrations that report progress from what a worker already does: Celery tasks
(``celery``), log records and structlog events (``logging``), tqdm bars (``tqdm``).

Each module imports its library only when imported itself, so the core installs light:
``pip install morag-progress[celery]`` or ``[tqdm]`` brings what they need.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from morag_progress.errors import ConfigurationError
from morag_progress.models import ProgressEvent

__all__ = ["ProgressTarget", "report_to"]


class _Updatable(Protocol):
    def update(
        self,
        percentage: float,
        message: str | None = None,
        *,
        current: int | None = None,
        total: int | None = None,
    ) -> None: ...


ProgressTarget = _Updatable | Callable[[int, "str | None"], object]
"""Where an integration reports: a reporter (anything with ``update(percentage, message,
current=, total=)``, such as :class:`~morag_progress.client.ProgressReporter`) or a callable
``(percentage, message)``, such as ``partial(handler.update_job_progress, job_id)``."""


def report_to(target: ProgressTarget) -> Callable[[ProgressEvent], None]:
    """A function that hands one parsed event to ``target``."""
    update = getattr(target, "update", None)
    if callable(update):

        def to_reporter(event: ProgressEvent) -> None:
            update(
                event.percentage,
                event.message or None,
                current=event.current,
                total=event.total,
            )

        return to_reporter
    if not callable(target):
        raise ConfigurationError(
            "target", "must have an update() method or be a callable(percentage, message)", target
        )
    call = target

    def to_callable(event: ProgressEvent) -> None:
        call(event.percentage, event.message or None)

    return to_callable
