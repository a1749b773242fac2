"""What the benchmarks share: a server's environment on a new SQLite file, a free port, a key made
with the CLI, a server to wait for or start, a percentile, and a process's CPU time."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def sqlite_env(directory: Path, **settings: str) -> dict[str, str]:
    """The environment of a server on a new SQLite file in ``directory``, without rate limits,
    with ``settings`` (names without the ``MORAG_PROGRESS_`` prefix)."""
    return {
        **os.environ,
        "MORAG_PROGRESS_DATABASE_URL": f"sqlite:///{directory / 'bench.db'}",
        "MORAG_PROGRESS_RATE_LIMIT_PER_SECOND": "0",
        **{f"MORAG_PROGRESS_{name}": value for name, value in settings.items()},
    }


def free_port() -> int:
    """A TCP port on loopback that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def create_key(env: dict[str, str], user: str) -> str:
    """A new API key for ``user`` in the database ``env`` names, made as a user would."""
    done = subprocess.run(
        [sys.executable, "-m", "morag_progress.cli", "keys", "create", "--user", user],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()[0]


def wait_until_up(url: str, timeout: float = 30) -> None:
    """Return once ``url`` answers at all; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def launch(command: list[str], env: dict[str, str], ready_url: str) -> subprocess.Popen[bytes]:
    """``command`` in a process of its own, once ``ready_url`` answers (killed if it never
    does)."""
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until_up(ready_url)
    except httpx.TransportError:
        process.kill()
        raise
    return process


def serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    """``morag-progress serve`` on ``port`` with ``env``, once it answers."""
    command = [sys.executable, "-m", "morag_progress.cli", "serve", "--port", str(port)]
    return launch(command, env, f"http://127.0.0.1:{port}/healthz")


def percentile(samples: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``samples``, nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
