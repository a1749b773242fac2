"""settings: MORAG_PROGRESS_* variables, validated with errors that name them."""

from __future__ import annotations

import pytest

from morag_progress.errors import ConfigurationError
from morag_progress.settings import default_database_url, load_settings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without variables, the store is a SQLite file in the user's data directory."""
    monkeypatch.delenv("MORAG_PROGRESS_DATABASE_URL")
    settings = load_settings()
    assert settings.database_url is None
    assert settings.resolved_database_url == default_database_url()
    assert default_database_url().startswith("sqlite:///")
    assert default_database_url().endswith("morag-progress/progress.db")
    assert settings.sqlite_synchronous == "NORMAL"


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Variables with the MORAG_PROGRESS_ prefix set the fields."""
    monkeypatch.setenv("MORAG_PROGRESS_DATABASE_URL", "postgresql+psycopg://db/x")
    monkeypatch.setenv("MORAG_PROGRESS_SQLITE_SYNCHRONOUS", "FULL")
    monkeypatch.setenv("MORAG_PROGRESS_BUSY_TIMEOUT_MS", "500")
    settings = load_settings()
    assert settings.resolved_database_url == "postgresql+psycopg://db/x"
    assert (settings.sqlite_synchronous, settings.busy_timeout_ms) == ("FULL", 500)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MORAG_PROGRESS_SQLITE_SYNCHRONOUS", "OFF"),
        ("MORAG_PROGRESS_BUSY_TIMEOUT_MS", "-1"),
        ("MORAG_PROGRESS_BUSY_TIMEOUT_MS", "soon"),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """A bad value raises ConfigurationError naming the variable and the value."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name) as info:
        load_settings()
    assert info.value.value == value


def test_runs_and_deadlines_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kind's limit must be a finite number of seconds above 0 (an infinite one would stop
    the monitor's every sweep); 0 turns the straggler sweep off; a share of 1 or more is
    refused."""
    for value in ('{"video": 1e400}', '{"video": 0}', '{"video": -5}', '{"video": "soon"}'):
        monkeypatch.setenv("MORAG_PROGRESS_DEADLINE_SECONDS_BY_TYPE", value)
        with pytest.raises(ConfigurationError, match="MORAG_PROGRESS_DEADLINE_SECONDS_BY_TYPE"):
            load_settings()
    monkeypatch.setenv("MORAG_PROGRESS_DEADLINE_SECONDS_BY_TYPE", '{"video": 3600}')
    monkeypatch.setenv("MORAG_PROGRESS_STRAGGLER_SHARE", "0")
    settings = load_settings()
    assert (settings.deadline_seconds_by_type, settings.straggler_share) == ({"video": 3600}, 0)
    monkeypatch.setenv("MORAG_PROGRESS_STRAGGLER_SHARE", "1")
    with pytest.raises(ConfigurationError, match="MORAG_PROGRESS_STRAGGLER_SHARE"):
        load_settings()
