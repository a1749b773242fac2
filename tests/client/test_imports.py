"""A worker's import is light: the client and the parser bring neither the server nor the
store, nor httpx or pydantic until a reporter is made (bench/imports.py measures the time)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.live import Remote
from tests.services import unavailable

ROOT = Path(__file__).resolve().parents[2]

SERVER = ("sqlalchemy", "fastapi", "uvicorn", "starlette", "alembic")


def imported(code: str) -> set[str]:
    """The top-level modules loaded after ``code`` in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return {name.split(".")[0] for name in done.stdout.split()}


def test_importing_the_client_brings_no_server_or_store() -> None:
    """``import morag_progress.client`` (and the parser, the logging integration) loads none of
    the server's libraries, and not httpx or pydantic either."""
    loaded = imported(
        "import morag_progress.client\n"
        "import morag_progress.parser\n"
        "import morag_progress.integrations.logging"
    )
    assert not loaded & {*SERVER, "httpx", "pydantic", "asyncio"}


def test_a_reporter_loads_httpx_when_made_and_the_tracker_when_asked_for() -> None:
    """Making a reporter brings httpx; asking the package for JobTracker brings the store."""
    loaded = imported(
        "from morag_progress.client import ProgressReporter\n"
        "r = ProgressReporter('job-1', api_url='http://127.0.0.1:9', api_key='k')\n"
        "r.close(timeout=0)"
    )
    assert "httpx" in loaded
    assert not loaded & set(SERVER)
    assert "sqlalchemy" in imported("from morag_progress import JobTracker")


def test_a_light_install_reports_and_says_what_the_server_needs(
    tmp_path: Path, remote: Remote
) -> None:
    """``pip install morag-progress`` (no extras) into a fresh environment: it reports a job's
    progress to a server, has none of the server's libraries, and ``serve`` says to install
    ``morag-progress[server]`` (exit 2) instead of a traceback."""
    venv = tmp_path / "worker-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if installed.returncode != 0:
        unavailable(f"pip could not install the package (no package index?): {installed.stderr}")
    missing = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.util as u; "
            f"print([m for m in {SERVER!r} if u.find_spec(m) is not None])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert missing.stdout.strip() == "[]"
    star = subprocess.run(
        [str(python), "-c", "from morag_progress import *; from morag_progress import JobTracker"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert "ImportError: morag_progress.JobTracker needs the server" in star.stderr
    assert "pip install 'morag-progress[server]'" in star.stderr
    job_id = remote.new_job()
    cli = venv / "bin" / "morag-progress"
    reported = subprocess.run(
        [str(cli), "report", job_id, "40", "from a light install"],
        env=remote.env(remote.user_key),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert reported.returncode == 0, reported.stderr
    assert remote.job(job_id).percentage == 40
    served = subprocess.run(
        [str(cli), "serve"], capture_output=True, text=True, timeout=60, check=False
    )
    assert served.returncode == 2
    assert "pip install 'morag-progress[server]'" in served.stderr


def test_the_lazy_names_are_there_and_others_are_not() -> None:
    """The package's lazy names resolve (the version too); unknown names raise AttributeError."""
    import pytest

    import morag_progress
    import morag_progress.client

    assert morag_progress.__version__
    assert morag_progress.ProgressHandler.__name__ == "ProgressHandler"
    assert morag_progress.client.AsyncProgressReporter.__name__ == "AsyncProgressReporter"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = morag_progress.nope
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = morag_progress.client.nope
