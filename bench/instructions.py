"""Instructions per progress report: our app against the no-op FastAPI route, counted, not timed.

    python bench/instructions.py [--rounds 40] [--concurrency 32]

``bench/ingest.py`` judges the CPU target, but on a shared machine its CPU times drift by 20%
from one minute to the next, more than most single changes move them. This counts machine
instructions instead (valgrind's cachegrind, Debian's ``valgrind`` package), which do not
drift with the machine: the same code gives the same count to within about 2% (how many
reports the writer finds queued per transaction still varies a little from run to run, even
with valgrind's fair scheduling), so a change of 3% or more shows in one run, and a smaller
one over a few.

Each side runs in a process of its own under cachegrind: the app is called as an ASGI
callable (no sockets, no HTTP parsing: the server under both is the same uvicorn), with
``--concurrency`` PUTs of the hot route in flight at a time, as wrk's connections would
keep them; ours commits each report through its writer thread to a SQLite file, as
``morag-progress serve`` does. Each side is run twice, with and without the measured rounds,
and the difference is divided by the requests of those rounds: start-up and warm-up cancel.
The reference is ``bench/ingest.py``'s no-op route (an ``async def`` FastAPI route with the
same path and body model).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

WARM_ROUNDS = 30
JOBS = 100

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def request(app: App, counter: int, authorization: bytes) -> Awaitable[int]:
    """One PUT of the progress route, as wrk's script sends it; its status."""
    body = b'{"percentage": %d, "message": "t1-%d"}' % (counter % 99 + 1, counter)
    path = f"/api/v1/remote-jobs/bench-{counter % JOBS}/progress"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "PUT",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"authorization", authorization),
            (b"content-length", b"%d" % len(body)),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def run() -> int:
        await app(scope, receive, send)
        return int(sent[0]["status"])

    return run()


async def drive(app: App, rounds: int, concurrency: int, authorization: bytes) -> None:
    """Warm up, then ``rounds`` rounds of ``concurrency`` requests at once; all must be 200."""
    counter = 0
    for _ in range(WARM_ROUNDS + rounds):
        batch = [request(app, counter + i, authorization) for i in range(concurrency)]
        counter += concurrency
        statuses = await asyncio.gather(*batch)
        if set(statuses) != {200}:
            raise SystemExit(f"unexpected statuses: {sorted(set(statuses))}")


def child(side: str, rounds: int, concurrency: int) -> None:
    """The measured process: one side's app, driven for ``rounds`` rounds."""
    if side == "noop":
        sys.path.insert(0, str(Path(__file__).parent))
        from ingest import noop_app

        asyncio.run(drive(noop_app(), rounds, concurrency, b"Bearer none"))  # type: ignore[arg-type]
        return
    tmp = tempfile.mkdtemp(prefix="morag-instructions-")
    os.environ["MORAG_PROGRESS_DATABASE_URL"] = f"sqlite:///{tmp}/bench.db"
    os.environ["MORAG_PROGRESS_RATE_LIMIT_PER_SECOND"] = "0"
    from morag_progress.api.app import create_app
    from morag_progress.settings import load_settings
    from morag_progress.store import SQLStore
    from morag_progress.store.lifecycle import NewJob

    settings = load_settings()
    store = SQLStore(settings.resolved_database_url)
    store.upgrade()
    now = datetime.now(UTC)
    _, secret = store.create_key(user_id="bench", role="user", name=None, now=now)
    for i in range(JOBS):
        new = NewJob(id=f"bench-{i}", user_id="bench", document_name="d", document_type="pdf")
        store.create_job(new, now=now)
    app = create_app(settings, store=store)

    async def main() -> None:
        async with app.router.lifespan_context(app):
            await drive(app, rounds, concurrency, f"Bearer {secret}".encode())  # type: ignore[arg-type]

    asyncio.run(main())
    store.close()
    shutil.rmtree(tmp, ignore_errors=True)


def count(side: str, rounds: int, concurrency: int) -> int:
    """Instructions the child process runs (cachegrind's I refs)."""
    done = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--fair-sched=yes",
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            __file__,
            "--child",
            side,
            "--rounds",
            str(rounds),
            "--concurrency",
            str(concurrency),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if found is None:
        raise SystemExit(f"cachegrind printed no count:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def per_request(side: str, rounds: int, concurrency: int) -> float:
    """Instructions per request of ``side``: the measured rounds' share of its run."""
    return (count(side, rounds, concurrency) - count(side, 0, concurrency)) / (rounds * concurrency)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--child", choices=["ours", "noop"], help=argparse.SUPPRESS)
    opts = parser.parse_args(argv)
    if opts.child:
        child(opts.child, opts.rounds, opts.concurrency)
        return 0
    if opts.rounds < 1 or opts.concurrency < 1:
        parser.error("--rounds and --concurrency must be at least 1")
    if shutil.which("valgrind") is None:
        print("needs valgrind: apt-get install valgrind", file=sys.stderr)
        return 2
    print(
        f"instructions per PUT of the progress route, {opts.rounds} rounds of "
        f"{opts.concurrency} at once, app only (no server, no sockets), SQLite"
    )
    ours = per_request("ours", opts.rounds, opts.concurrency)
    noop = per_request("noop", opts.rounds, opts.concurrency)
    print(f"  ours (route, writer thread, commit): {ours / 1000:8,.1f} k")
    print(f"  no-op async def FastAPI route:       {noop / 1000:8,.1f} k")
    print(f"  ratio: {ours / noop:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
