"""The Celery app the integration tests run in a real worker process.

Broker: ``MORAG_TEST_BROKER_URL`` (Redis), else kombu's filesystem transport in
``MORAG_TEST_BROKER_DIR``. The store is ``MORAG_PROGRESS_DATABASE_URL``.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

from morag_progress.integrations.celery import ProgressTask, filesystem_broker

app = Celery("morag_progress_tests")
if os.environ.get("MORAG_TEST_BROKER_URL"):
    app.conf.broker_url = os.environ["MORAG_TEST_BROKER_URL"]
else:
    app.conf.update(filesystem_broker(os.environ["MORAG_TEST_BROKER_DIR"]))
app.conf.update(task_acks_late=False, worker_prefetch_multiplier=1, broker_pool_limit=None)


@app.task(bind=True, base=ProgressTask, progress_min_interval=0.01)
def ingest(self: Any, steps: int) -> str:
    """The seed's ingest task: its progress callback maps 0..1 into 10..70%."""
    self.progress(5, "Downloading")
    callback = self.stage("processing", 60, start=10)
    for i in range(1, steps + 1):
        callback(i / steps, f"Processing: chunk {i}")
        time.sleep(0.01)
    self.progress(90, "Indexing")
    return "ok"


@app.task(bind=True, base=ProgressTask, progress_min_interval=0.01)
def explode(self: Any) -> None:
    """Fails after reporting 40%."""
    self.progress(40, "Parsing")
    time.sleep(0.05)
    raise ValueError("corrupt PDF")


@app.task(bind=True, base=ProgressTask, progress_min_interval=0.01, max_retries=1)
def flaky(self: Any) -> str:
    """Fails once and is retried; the second run finishes."""
    self.progress(20 + 30 * self.request.retries, f"run {self.request.retries + 1}")
    time.sleep(0.05)
    if self.request.retries == 0:
        raise self.retry(countdown=0.1, exc=RuntimeError("GPU busy"))
    return "ok"


@app.task(bind=True, base=ProgressTask, progress_min_interval=0.01)
def crawl(self: Any) -> None:
    """Runs until revoked."""
    for i in range(6000):
        self.progress(min(99, 1 + i // 60), "Crawling")
        time.sleep(0.01)


@app.task(bind=True, base=ProgressTask, progress_min_interval=0.01)
def traced(self: Any) -> None:
    """Reports the span its body runs in (its job's), as a worker's own spans would see it."""
    from morag_progress.tracing import current_traceparent

    self.progress(50, f"in span {current_traceparent()}")
