"""A Celery app whose ingest task reports progress as MoRAG's ``ingest_tasks.py`` does.

The seed's callback maps the converter's 0..1 into the 10-70% processing stage; with
``ProgressTask`` the task's lifecycle drives the job too (PROCESSING when it starts, FINISHED
or FAILED when it ends, CANCELLED when revoked). Run a worker beside the database with::

    CELERY_BROKER_URL=redis://localhost:6379/0 celery -A examples.celery_app worker

and queue work with ``ingest_file.delay("talk.pdf", "document")``: the job's id is the task's.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from celery import Celery

from morag_progress.integrations.celery import ProgressTask

app = Celery("ingest", broker=os.environ.get("CELERY_BROKER_URL", "redis://localhost:6379/0"))

ProgressCallback = Callable[[float, "str | None"], None]


async def process_file(
    file_path: str, content_type: str, options: dict[str, Any]
) -> dict[str, Any]:
    """Stands in for MoRAG's ``api.process_file``: calls ``options['progress_callback']``."""
    callback: ProgressCallback = options["progress_callback"]
    for page in range(1, 11):
        await asyncio.sleep(0.05)
        callback(page / 10, f"Converted page {page} of 10")
    return {"file": file_path, "type": content_type, "pages": 10}


@app.task(bind=True, base=ProgressTask)
def ingest_file(self: Any, file_path: str, content_type: str) -> dict[str, Any]:
    self.progress(5, f"Received {file_path}")

    # The seed's callback, as MoRAG writes it: 0..1 mapped into the processing stage.
    def progress_callback(progress: float, message: str | None = None) -> None:
        mapped_percentage = 10 + int(progress * 60)  # Map to processing stage
        self.progress(mapped_percentage, message or f"Processing: {mapped_percentage}%")

    # The same mapping in one line: progress_callback = self.stage("processing", 60, start=10)
    options = {"progress_callback": progress_callback}
    result = asyncio.run(process_file(file_path, content_type, options))
    self.progress(90, "Storing the result")
    return result
