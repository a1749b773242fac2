"""The writer's retry of a transaction PostgreSQL rolled back as a deadlock's victim."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from morag_progress.errors import StoreError
from morag_progress.store.writer import _retry_conflicts


class _DriverError(Exception):
    def __init__(self, sqlstate: str) -> None:
        self.sqlstate = sqlstate


class _Wrapped(Exception):
    def __init__(self, sqlstate: str) -> None:
        self.orig = _DriverError(sqlstate)


def _failing(sqlstate: str, times: int) -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def run() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise StoreError("apply updates failed") from _Wrapped(sqlstate)
        return "committed"

    return calls, run


@pytest.mark.parametrize("sqlstate", ["40P01", "40001"])
def test_a_deadlock_victim_is_run_again(sqlstate: str) -> None:
    """A deadlock or serialization failure (rolled back whole) is retried, up to three runs."""
    calls, run = _failing(sqlstate, 2)
    assert _retry_conflicts(run) == "committed"
    assert len(calls) == 3
    calls, run = _failing(sqlstate, 3)
    with pytest.raises(StoreError):
        _retry_conflicts(run)


def test_other_database_errors_are_not_retried() -> None:
    """Anything else (a constraint, the server gone) is raised at once."""
    calls, run = _failing("23505", 1)
    with pytest.raises(StoreError):
        _retry_conflicts(run)
    assert len(calls) == 1
