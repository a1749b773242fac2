"""Mutation testing of the pure cores: how often a small wrong change goes unnoticed.

Runs mutmut on each module against its own unit tests, in a scratch copy of the project (the
checkout is never touched), and prints each module's score and its survivors. Survivors listed
in ``scripts/mutation-equivalents.toml`` (each with the reason it cannot change behaviour) do not
count. With ``--floor`` it exits 1 when a module scores below its floor.

    scripts/mutation                 # every module
    scripts/mutation bounds parser   # some of them
    scripts/mutation --floor         # as .ci/run runs it

The score is killed / (mutants - equivalent); a mutant that times out counts as killed (the
change made the tests hang, so they noticed), one that no test reaches as survived.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENTS = ROOT / "scripts" / "mutation-equivalents.toml"
MUTMUT = Path(sys.executable).parent / "mutmut"


@dataclasses.dataclass(frozen=True)
class Module:
    source: str
    tests: tuple[str, ...]
    floor: float
    """The least score ``--floor`` accepts (the score last measured, less a little for
    renumbering; raised as holes are closed; the target is 0.95, 0.90 for the store's)."""
    postgres: bool = False
    """Its tests run on PostgreSQL as well as SQLite: one server, started for the whole run,
    serves every mutant's tests (each test makes a database of its own)."""


MODULES = {
    "bounds": Module("src/morag_progress/bounds.py", ("tests/test_bounds.py",), 0.95),
    "parser": Module("src/morag_progress/parser.py", ("tests/test_parser.py",), 0.95),
    "eta": Module("src/morag_progress/eta.py", ("tests/test_eta.py",), 0.95),
    "client-core": Module(
        "src/morag_progress/client/_core.py", ("tests/client/test_core.py",), 0.94
    ),
    "statements": Module(
        "src/morag_progress/store/statements.py",
        ("tests/store/test_statements.py", "tests/store/test_writer.py"),
        0.95,
        postgres=True,
    ),
}

_DEADLINE_S = 900
"""The most one module's run may take."""


@dataclasses.dataclass(frozen=True)
class Mutant:
    name: str
    status: str
    function: str = ""
    was: str = ""
    now: str = ""

    def shown(self) -> str:
        return f"{self.function}: {self.was!r} -> {self.now!r}"


@dataclasses.dataclass(frozen=True)
class Equivalent:
    function: str
    was: str
    now: str
    why: str

    def covers(self, mutant: Mutant) -> bool:
        return (mutant.function, mutant.was, mutant.now) == (self.function, self.was, self.now)


def equivalents(module: str) -> list[Equivalent]:
    """The survivors of ``module`` judged equivalent, each with its reason."""
    listed = tomllib.loads(EQUIVALENTS.read_text()).get(module, [])
    return [Equivalent(e["function"], e["was"], e["now"], e["why"]) for e in listed]


def run(name: str, module: Module) -> tuple[list[Mutant], float]:
    """mutmut over ``module`` in a scratch copy: every mutant with its status (survivors with
    their change), and the seconds it took."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"morag-mutation-{name}-") as scratch:
        work = Path(scratch)
        shutil.copytree(ROOT / "src", work / "src", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(
            ROOT / "tests", work / "tests", ignore=shutil.ignore_patterns("__pycache__")
        )
        config = (ROOT / "pyproject.toml").read_text()
        config += (
            "\n[tool.mutmut]\n"
            'source_paths = ["src/"]\n'
            f'only_mutate = ["{module.source}"]\n'
            f"pytest_add_cli_args_test_selection = {list(module.tests)!r}\n"
            'pytest_add_cli_args = ["-p", "no:cacheprovider", "-o", "addopts=", "-q", "-x"]\n'
        ).replace("'", '"')
        (work / "pyproject.toml").write_text(config)
        with _services(module) as env:
            done = _mutmut(work, "run", timeout=_DEADLINE_S, check=False, env=env)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr)[-2000:]
            raise SystemExit(f"mutation: mutmut failed on {name} (exit {done.returncode}):\n{tail}")
        listed = _mutmut(work, "results", "--all", "true").stdout
        mutants = []
        for line in listed.splitlines():
            mutant, _, status = line.strip().rpartition(": ")
            if not mutant:
                continue
            if status == "survived" or status == "no tests":
                mutants.append(_with_change(work, mutant, status))
            else:
                mutants.append(Mutant(mutant, status))
    return mutants, time.monotonic() - started


_FUNCTION = re.compile(r"\.x(?:ǁ\w+ǁ)?_?(\w+?)__mutmut_\d+$")


@contextlib.contextmanager
def _services(module: Module) -> Iterator[dict[str, str]]:
    """The environment of ``module``'s run, with the servers its tests need started for it
    (``tests/services.py``) and stopped after."""
    if not module.postgres:
        yield {}
        return
    sys.path.insert(0, str(ROOT))
    from tests.services import start_postgres

    server = start_postgres()
    try:
        yield {"MORAG_PROGRESS_TEST_POSTGRES_PORT": str(server.port)}
    finally:
        server.stop()


def _mutmut(
    work: Path,
    *args: str,
    timeout: float = 120,
    check: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``mutmut ARGS`` in the scratch copy ``work``, its output captured."""
    return subprocess.run(
        [str(MUTMUT), *args],
        cwd=work,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


def _with_change(work: Path, mutant: str, status: str) -> Mutant:
    """A survivor with its function and the line it changed (``was`` -> ``now``)."""
    diff = _mutmut(work, "show", mutant).stdout.splitlines()
    was, now = (
        " ".join(line[1:].strip() for line in diff if line[:1] == sign and line[:3] != sign * 3)
        for sign in "-+"
    )
    found = _FUNCTION.search(mutant)
    function = found.group(1) if found else mutant.rsplit(".", 1)[-1]
    return Mutant(mutant, status, function.replace("ǁ", "."), was, now)


def report(name: str, module: Module, mutants: list[Mutant], seconds: float) -> float:
    """Print the module's score and its real survivors; return the score."""
    known = equivalents(name)
    survivors = [m for m in mutants if m.status in ("survived", "no tests")]
    equivalent = [m for m in survivors if any(e.covers(m) for e in known)]
    real = [m for m in survivors if m not in equivalent]
    counted = len(mutants) - len(equivalent)
    score = (counted - len(real)) / counted if counted else 1.0
    print(
        f"{name}: {score:.1%} ({counted - len(real)} of {counted} mutants killed; "
        f"{len(equivalent)} equivalent left out; {len(real)} survived) in {seconds:.0f} s "
        f"[floor {module.floor:.0%}, target 95%]"
    )
    for mutant in real:
        print(f"  survived: {mutant.shown()}")
    unused = [e for e in known if not any(e.covers(m) for m in survivors)]
    for e in unused:  # the code changed: the entry no longer names a mutant
        print(f"  stale equivalent entry: {e.function}: {e.was!r} -> {e.now!r}")
    return score


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", choices=[[], *MODULES], metavar="MODULE")
    parser.add_argument("--floor", action="store_true", help="exit 1 below a module's floor")
    args = parser.parse_args(argv)
    low = []
    for name in args.modules or list(MODULES):
        module = MODULES[name]
        mutants, seconds = run(name, module)
        if report(name, module, mutants, seconds) < module.floor:
            low.append(name)
    if low and args.floor:
        print(f"mutation: below the floor: {', '.join(low)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
