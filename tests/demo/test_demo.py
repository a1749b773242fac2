"""`morag-progress demo`, the main job, run as a user runs it: a real process that starts the
API, remote workers, a Celery worker and a wrapped command, and exits 0 with a summary."""

from __future__ import annotations

import os
import re
import subprocess
import sys


def test_demo_completes_with_every_job_as_expected() -> None:
    """The demo ends within its time with exit code 0 and a summary of its four jobs, in a
    pipe of 80 columns: its links whole on their lines, its table within them."""
    env = {**os.environ, "COLUMNS": "80"}
    for name in ("MORAG_PROGRESS_API_URL", "MORAG_PROGRESS_API_KEY"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-m", "morag_progress.cli", "demo", "--seconds", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "API at http://127.0.0.1:" in out
    assert re.search(r"^  dashboard .*: http://127\.0\.0\.1:\d+/#token=mps_[\w-]+$", out, re.M)
    summary = out[out.index("Summary") :].splitlines()
    assert summary[1].split()[:4] == ["job", "name", "status", "progress"]
    assert max(len(line) for line in summary) <= 80
    assert "Signed webhooks received and verified: 4" in out
    assert "Summary" in out
    for name in ("lecture.mp3", "podcast.wav", "slides.pptx", "report.pdf"):
        assert name in out
    assert out.count("FINISHED") == 3
    assert "CANCELLED" in out
    assert "All 4 jobs ended as expected" in out
