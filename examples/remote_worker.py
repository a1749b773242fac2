"""A remote GPU worker that reports progress over HTTP, as MoRAG's remote converter does.

It claims jobs waiting for a remote worker, converts each one while its converter's
``progress_callback(progress, message)`` logs the seed's line and reports it, saves a
checkpoint now and then (a requeued job resumes from it: docs/resume.md), and stops a job when
its owner cancels it. Set ``MORAG_PROGRESS_API_URL`` and ``MORAG_PROGRESS_API_KEY`` (a
``worker`` key: ``morag-progress keys create --user U --role worker``), then::

    python examples/remote_worker.py --worker-id remote-worker-gpu-01
"""

from __future__ import annotations

import argparse
import asyncio
import logging

import httpx

from morag_progress.client import AsyncProgressReporter
from morag_progress.settings import load_settings

logger = logging.getLogger("remote_converter")


class Cancelled(Exception):
    """The job's owner asked the worker to stop."""


async def transcribe(
    job: dict[str, object], progress_callback: object, reporter: AsyncProgressReporter
) -> str:
    """Stands in for the real converter: calls its callback as a converter does, saves a
    checkpoint every few segments, and, for a job requeued after its worker died, goes on from
    the checkpoint the claim handed back instead of starting again."""
    assert callable(progress_callback)
    start = int(reporter.resume["segment"]) if reporter.resume else 0
    for segment in range(start + 1, 21):
        await asyncio.sleep(0.1)  # the GPU at work
        progress_callback(segment / 20, f"Transcribing {job['document_name']}")
        if segment % 5 == 0:
            reporter.save_checkpoint({"segment": segment})
    return "transcript"


async def process(job: dict[str, object], api_url: str) -> None:
    checkpoint = job.get("checkpoint")  # set when the job was requeued after a checkpoint
    async with AsyncProgressReporter(
        str(job["id"]),
        api_url=api_url,
        attempt=int(str(job["attempt"])),
        resume=checkpoint if isinstance(checkpoint, dict) else None,
    ) as reporter:

        def progress_callback(progress: float, message: str | None = None) -> None:
            # The seed's remote converter: log the line, then report (here: without waiting).
            percentage = int(progress * 100)
            logger.info(f"Processing progress: {message} ({percentage}%)")
            if reporter.cancel_requested:
                raise Cancelled
            reporter.progress_callback(min(progress, 0.99), message)

        try:
            await transcribe(job, progress_callback, reporter)
        except Cancelled:
            reporter.complete(False, "Stopped on the owner's request", cancelled=True)
        # Leaving the block finishes the job (FINISHED), or fails it if the converter raised.


async def main(worker_id: str, once: bool) -> None:
    settings = load_settings()  # MORAG_PROGRESS_API_URL and MORAG_PROGRESS_API_KEY
    if not settings.api_url or settings.api_key is None:
        raise SystemExit("set MORAG_PROGRESS_API_URL and MORAG_PROGRESS_API_KEY")
    api_url = settings.api_url.rstrip("/")
    headers = {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"}
    async with httpx.AsyncClient(base_url=api_url, headers=headers, timeout=10) as client:
        while True:
            response = await client.post("/api/v1/remote-jobs/claim", json={"worker_id": worker_id})
            if response.status_code == 204:  # nothing waiting
                if once:
                    return
                await asyncio.sleep(1)
                continue
            response.raise_for_status()
            job = response.json()
            logger.info("claimed job %s: %s", job["id"], job["document_name"])
            await process(job, api_url)
            if once:
                return


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A remote worker reporting over HTTP.")
    parser.add_argument("--worker-id", default="remote-worker-gpu-01")
    parser.add_argument("--once", action="store_true", help="Process one job (or none) and exit.")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(main(args.worker_id, args.once))
