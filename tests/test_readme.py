"""The README's Python example runs as written and prints what its comment says."""

from __future__ import annotations

import contextlib
import io
import re
import time
from pathlib import Path

import pytest

from tests.live import Remote
from tests.services import free_port

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
