"""The README's Python example runs as written and prints what its comment says."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

from tests.live import Remote

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_python_example_runs(remote: Remote, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every python block of the README runs (the worker's against a real server); what each
    prints matches the comment beside it."""
    monkeypatch.setenv("MORAG_PROGRESS_API_URL", remote.url)
    monkeypatch.setenv("MORAG_PROGRESS_API_KEY", remote.key)
    monkeypatch.setenv("JOB_ID", remote.new_job())
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks
    for block in blocks:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, str(README), "exec"), {})
        for expected in re.findall(r"print\(.*\)\s+# (.+)", block):
            assert expected.strip() in out.getvalue()
