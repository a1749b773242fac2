"""Import cost of the worker side: ``import morag_progress.client`` against a bare interpreter.

    python bench/imports.py [--runs 30]

Each run starts a fresh interpreter (``python -S -c ...`` would skip site-packages, so plain
``-c``): the bare one does nothing, ours imports the client. Runs alternate; the figure is the
median of per-round differences. tqdm's import is shown as a yardstick of a library workers
already load. It also prints which heavy modules the import brought (none expected).

Target (the operations issue): ``import morag_progress.client`` costs <= 60 ms over a bare
interpreter and imports no SQLAlchemy, FastAPI, uvicorn, starlette or alembic.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

HEAVY = ("sqlalchemy", "fastapi", "uvicorn", "starlette", "alembic", "pydantic", "httpx")


def run(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    ours, tqdm = [], []
    for _ in range(args.runs):
        bare = run("pass")
        ours.append(run("import morag_progress.client") - bare)
        tqdm.append(run("import tqdm") - bare)
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, morag_progress.client; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    print(f"{args.runs} rounds, each a fresh interpreter")
    client, yardstick = statistics.median(ours), statistics.median(tqdm)
    print(f"import morag_progress.client: {client:5.1f} ms over bare (target <= 60)")
    print(f"import tqdm (yardstick):      {yardstick:5.1f} ms over bare")
    print(f"heavy modules imported: {found}")


if __name__ == "__main__":
    main()
