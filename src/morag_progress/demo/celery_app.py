"""The demo's Celery app: one ingest task on kombu's filesystem transport (no broker server),
reporting through the store as MoRAG's ingest task does (its callback maps 0..1 into 10..70%).
The broker folder is ``MORAG_DEMO_BROKER_DIR``."""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery

from morag_progress.integrations.celery import ProgressTask, filesystem_broker

app = Celery("morag_progress_demo")
app.conf.update(filesystem_broker(os.environ.get("MORAG_DEMO_BROKER_DIR", ".demo-broker")))
app.conf.update(worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)


@app.task(
    bind=True, base=ProgressTask, progress_document_type="document", progress_min_interval=0.2
)
def ingest_document(self: Any, name: str, pages: int = 40, seconds: float = 8.0) -> str:
    """Download, process (10..70% through the seed's callback), embed and index a document."""
    self.progress(5, f"Downloading {name}")
    time.sleep(seconds * 0.1)
    progress_callback = self.stage("processing", 60, start=10)  # 10 + int(progress * 60)
    for page in range(1, pages + 1):
        progress_callback(page / pages, f"Processing: page {page} of {pages}")
        time.sleep(seconds * 0.6 / pages)
    embed = self.stage("embedding", 25)
    for chunk in range(1, 11):
        embed(chunk / 10, f"Embedding chunk {chunk} of 10")
        time.sleep(seconds * 0.2 / 10)
    self.progress(97, "Indexing")
    time.sleep(seconds * 0.1)
    return f"{name}: {pages} pages ingested"
