"""The demo's remote GPU worker: claims jobs waiting for a remote worker over HTTP and reports
as MoRAG's remote converter does (a log line and a progress callback per step), stopping when
the job's owner asks it to. Run with ``python -m morag_progress.demo.remote_worker``."""

from __future__ import annotations

import argparse
import logging
import time

import httpx

from morag_progress.client import ProgressReporter
from morag_progress.client._core import connection

logger = logging.getLogger("remote_converter")

_STEPS = (
    (0.05, "Loading audio"),
    (0.15, "Detecting language"),
    (0.65, "Transcribing audio content"),
    (0.85, "Diarizing speakers"),
    (1.00, "Writing transcript"),
)


def convert(reporter: ProgressReporter, seconds: float) -> None:
    """Pretend to transcribe for ``seconds``, reporting about 30 times."""
    ticks = 30
    previous = 0.0
    for end, message in _STEPS:
        for i in range(1, ticks // len(_STEPS) + 1):
            if reporter.cancel_requested:
                percentage = int(reporter.job["percentage"] or 0)
                logger.info("Cancel requested at %s%%: stopping", percentage)
                reporter.complete(False, f"Cancelled at {percentage}%", cancelled=True)
                return
            progress = previous + (end - previous) * i / (ticks // len(_STEPS))
            percentage = int(progress * 100)
            # The seed's remote converter: a log line, then the report.
            logger.info(f"Processing progress: {message} ({percentage}%)")
            reporter.progress_callback(min(progress, 0.99), message)
            time.sleep(seconds / ticks)
        previous = end
    reporter.complete(True, "Transcript ready")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker-id", default="gpu-01")
    parser.add_argument("--seconds", type=float, default=8.0, help="Time one job takes.")
    parser.add_argument("--idle-exit", type=float, default=2.0, help="Exit after idling this long.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    base, headers = connection(None, None)  # MORAG_PROGRESS_API_URL / _API_KEY
    idle_since = time.monotonic()
    with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
        while time.monotonic() - idle_since < args.idle_exit:
            response = client.post("/api/v1/remote-jobs/claim", json={"worker_id": args.worker_id})
            if response.status_code == 204:
                time.sleep(0.2)
                continue
            response.raise_for_status()
            job = response.json()
            logger.info("claimed %s (%s)", job["id"], job["document_name"])
            with ProgressReporter(job["id"], api_url=base, min_interval=0.2) as reporter:
                convert(reporter, args.seconds)
            idle_since = time.monotonic()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
