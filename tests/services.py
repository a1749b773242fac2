"""Real servers for tests: PostgreSQL started as an unprivileged user in a temporary directory.

A missing binary skips the tests that need it, with the reason, unless
``MORAG_PROGRESS_REQUIRE_SERVICES=1`` (set by ``.ci/run``) turns the skip into a failure.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REQUIRE_SERVICES = os.environ.get("MORAG_PROGRESS_REQUIRE_SERVICES", "") not in ("", "0")


def unavailable(reason: str) -> None:
    """Skip with ``reason``, or fail when services are required (CI)."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (MORAG_PROGRESS_REQUIRE_SERVICES is set)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_bindir() -> Path | None:
    """Where initdb and pg_ctl live: Debian's versioned directory, else PATH."""
    for pg_ctl in sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True):
        return Path(pg_ctl).parent
    found = shutil.which("pg_ctl")
    return Path(found).resolve().parent if found else None


@dataclass
class PostgresServer:
    """A running PostgreSQL server on loopback, trust auth, superuser ``postgres``."""

    port: int
    directory: Path
    bindir: Path
    run_as: list[str]

    @classmethod
    def running(cls, port: int) -> PostgresServer:
        """A server someone else started (and stops) on ``port``: only its URLs are used."""
        return cls(port=port, directory=Path(), bindir=Path(), run_as=[])

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        subprocess.run(
            [
                *self.run_as,
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.directory / "data"),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.directory, ignore_errors=True)


def start_postgres() -> PostgresServer:
    """Start a throw-away server. PostgreSQL refuses to run as root: as root, it runs as nobody."""
    bindir = postgres_bindir()
    if bindir is None or not (bindir / "initdb").exists():
        unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found")
    assert bindir is not None
    directory = Path(tempfile.mkdtemp(prefix="morag-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(directory, nobody.pw_uid, nobody.pw_gid)
        run_as = ["runuser", "-u", "nobody", "--"]
    data = directory / "data"
    subprocess.run(
        [
            *run_as,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        capture_output=True,
        check=True,
    )
    port = free_port()
    options = (
        f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    started = subprocess.run(
        [
            *run_as,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(directory / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if started.returncode != 0:
        log = (directory / "server.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"PostgreSQL did not start: {started.stderr}\n{log}")
    return PostgresServer(port=port, directory=directory, bindir=bindir, run_as=run_as)


def reap(process: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """Stop ``process`` (SIGTERM, then SIGKILL after ``grace`` seconds) and collect its exit
    status, so no test leaves a child behind for the garbage collector to warn about."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


@dataclass
class RedisServer:
    """A throw-away redis-server on loopback, no persistence."""

    port: int
    process: subprocess.Popen[bytes]
    directory: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        reap(self.process)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_redis() -> RedisServer:
    """Start redis-server (skips, or fails under MORAG_PROGRESS_REQUIRE_SERVICES, without it)."""
    binary = shutil.which("redis-server")
    if binary is None:
        unavailable("redis-server not found (apt-get install redis-server)")
    assert binary is not None
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="morag-redis-"))
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return RedisServer(port, process, directory)
        except OSError:
            if time.monotonic() > deadline:
                reap(process, grace=0)
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)
