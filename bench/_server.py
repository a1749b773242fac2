"""What the benchmarks share: a free port, a key made with the CLI, waiting for a server."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx


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
