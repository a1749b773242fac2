"""The README's examples run as written: the Python ones print what their comments say, the
HTTP ones are answered as the README says."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.live import Remote
from tests.services import free_port, unavailable

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_example_runs(remote: Remote, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every python block of the README runs (the worker's against a real server); what each
    prints matches the comment beside it."""
    monkeypatch.setenv("MORAG_PROGRESS_API_URL", remote.url)
    monkeypatch.setenv("MORAG_PROGRESS_API_KEY", remote.key)
    job_id = remote.new_job()
    monkeypatch.setenv("JOB_ID", job_id)
    blocks = _blocks()
    assert blocks
    for block in blocks:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, str(README), "exec"), {})
        for expected in re.findall(r"print\(.*\)\s+# (.+)", block):
            assert expected.strip() in out.getvalue()
    # What the README says is sent at once reached the job: the first update and the stage's
    # start, though the example moves on without pausing.
    history = [(e.percentage, e.message, e.stage) for e in remote.tracker.history(job_id)]
    assert (5, "Downloading", None) in history
    assert (10, "Stage: processing", "processing") in history
    assert history[-1][0] == 100


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


@pytest.mark.parametrize("case", ["server down", "wrong key", "unknown job"])
def test_readme_python_example_never_holds_up_the_worker(
    case: str, remote: Remote, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the server down, a wrong key or a job the server does not know, the worker's
    example still runs to its end without an error, waiting at most the stated close timeout
    (2 s) as it leaves the block."""
    url = f"http://127.0.0.1:{free_port()}" if case == "server down" else remote.url
    monkeypatch.setenv("MORAG_PROGRESS_API_URL", url)
    monkeypatch.setenv("MORAG_PROGRESS_API_KEY", "mp_wrong" if case == "wrong key" else remote.key)
    monkeypatch.setenv("JOB_ID", "no-such-job" if case == "unknown job" else remote.new_job())
    [block] = [b for b in _blocks() if "ProgressReporter" in b]
    out = io.StringIO()
    started = time.monotonic()
    with contextlib.redirect_stdout(out):
        exec(compile(block, str(README), "exec"), {})
    assert time.monotonic() - started < 4
    assert out.getvalue().strip() == "False None"  # not finished, and no status confirmed


def test_readme_http_examples_run_as_written(remote: Remote) -> None:
    """The README's ``curl`` commands, run as written by a shell against a live server (its
    address for the README's, alice's key as ``$KEY``): the job made by the first is the one
    the next reports on, and each is answered 2xx with JSON."""
    curl = shutil.which("curl")
    if curl is None:
        unavailable("curl not found (apt-get install curl)")
    commands = [
        block.replace("http://127.0.0.1:8000", remote.url)
        for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL)
        if block.lstrip().startswith("curl ")
    ]
    assert len(commands) >= 2
    env = {**os.environ, "KEY": remote.user_key, "JOB_ID": "talk-42"}
    for command in commands:
        done = subprocess.run(
            ["bash", "-c", command.rstrip() + " -sS -w '\\n%{http_code}'"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        body, _, status = done.stdout.rpartition("\n")
        assert done.returncode == 0, done.stderr
        assert status.startswith("2"), (command, status, body)
        json.loads(body)
    job = remote.job("talk-42")
    assert (job.document_name, job.percentage, job.summary) == (
        "talk.mp3",
        75,
        "Transcribing audio content",
    )
