"""The morag-progress command: keys create, list and revoke."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from morag_progress.cli import app, command
from morag_progress.keys import hash_key
from morag_progress.store import SQLStore

runner = CliRunner()


def test_keys_lifecycle(tmp_path: Path) -> None:
    """create prints the secret once; list shows the key without it; revoke ends it."""
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    created = runner.invoke(
        app,
        [
            "keys",
            "create",
            "--user",
            "alice",
            "--role",
            "worker",
            "--name",
            "gpu-01",
            "--database-url",
            url,
        ],
    )
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip().splitlines()[0]
    assert secret.startswith("mpk_")
    store = SQLStore(url)
    key = store.find_key(hash_key(secret))
    assert key is not None
    assert (key.user_id, key.role.value, key.name) == ("alice", "worker", "gpu-01")
    listed = runner.invoke(app, ["keys", "list", "--database-url", url])
    assert key.id in listed.stdout
    assert listed.stdout.split()[:6] == ["id", "user", "role", "name", "created", "revoked"]
    assert not set("│┃┏┡╭") & set(listed.stdout)  # plain columns, as `jobs list`: no box
    assert secret not in listed.stdout
    assert runner.invoke(app, ["keys", "revoke", key.id, "--database-url", url]).exit_code == 0
    assert not store.list_keys()[0].active
    again = runner.invoke(app, ["keys", "revoke", key.id, "--database-url", url])
    assert again.exit_code == 1
    assert "no active key" in again.output
    store.close()


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["serve", "--port", "70000"], "'--port': must be 0 to 65535, got 70000"),
        (["jobs", "list", "--limit", "0"], "'--limit': must be 1 to 500, got 0"),
        (["report", "j", "nan"], "'PERCENTAGE': must be 0 to 100, got nan"),
        (["report", "j", "101"], "'PERCENTAGE': must be 0 to 100, got 101"),
        (["run", "--job", "j", "--min-interval", "-1", "--", "true"], "must be at least 0"),
    ],
)
def test_a_number_out_of_range_is_refused_in_words(args: list[str], said: str) -> None:
    """A number outside its range is refused before anything runs, naming the option and the
    range in words (NaN too)."""
    env = {"MORAG_PROGRESS_API_URL": "http://127.0.0.1:9"}
    refused = runner.invoke(app, args, env=env)
    assert refused.exit_code == 2
    assert said in " ".join(refused.output.split())


def test_bad_arguments_are_named(tmp_path: Path) -> None:
    """A bad role or URL is refused with a message that names it."""
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    bad_role = runner.invoke(
        app, ["keys", "create", "--user", "a", "--role", "root", "--database-url", url]
    )
    assert bad_role.exit_code == 2
    assert "role" in bad_role.output
    bad_url = runner.invoke(app, ["keys", "list", "--database-url", "mysql://x/y"])
    assert bad_url.exit_code == 2
    assert "database_url must name sqlite or postgresql" in bad_url.output


def test_serve_logs_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """serve's logging writes one JSON object per line, with time, level and logger."""
    import json
    import logging
    import logging.config

    from morag_progress.cli import log_config

    config = log_config()
    config["handlers"]["stderr"]["stream"] = "ext://sys.stdout"
    # Only a probe logger, so that no global logging state leaks into other tests.
    config["loggers"] = {"probe": {"handlers": ["stderr"], "level": "INFO", "propagate": False}}
    logging.config.dictConfig(config)
    probe = logging.getLogger("probe")
    try:
        probe.info("Started server process [%d]", 42)
        probe.warning("store error: %s", "down")
    finally:
        probe.handlers.clear()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["event"] == "Started server process [42]"
    assert (lines[0]["level"], lines[0]["logger"]) == ("info", "probe")
    assert lines[1]["level"] == "warning"
    assert lines[1]["timestamp"].endswith("Z")


def test_version() -> None:
    from morag_progress import __version__

    done = runner.invoke(app, ["--version"])
    assert done.exit_code == 0
    assert done.output.strip() == f"morag-progress {__version__}"


def test_serve_says_where_the_dashboard_is(server_env: dict[str, str], tmp_path: Path) -> None:
    """serve's first lines name the dashboard's and the API docs' URLs (as a JSON log line)."""
    import json

    from tests.live import ServerProcess

    log = tmp_path / "serve.log"
    server = ServerProcess(dict(server_env), log=log).start()
    server.stop()
    events = [json.loads(line)["event"] for line in log.read_text().splitlines()]
    assert f"dashboard at {server.url}/ , API docs at {server.url}/docs" in events


def test_serve_writes_text_lines_when_asked(server_env: dict[str, str], tmp_path: Path) -> None:
    """MORAG_PROGRESS_LOG_FORMAT=text: a person's lines, not JSON, even into a file (auto
    would choose JSON there); a format that does not exist is one line naming the setting."""
    import subprocess
    import sys

    from tests.live import ServerProcess

    log = tmp_path / "serve.log"
    server = ServerProcess({**server_env, "MORAG_PROGRESS_LOG_FORMAT": "text"}, log=log)
    server.start().stop()
    lines = log.read_text().splitlines()
    said = next(line for line in lines if "dashboard at" in line)
    assert f"dashboard at {server.url}/ , API docs at {server.url}/docs" in said
    assert not said.lstrip().startswith("{")  # a person's line, not a JSON object
    bad = subprocess.run(
        [sys.executable, "-m", "morag_progress.cli", "serve", "--port", "0"],
        env={**server_env, "MORAG_PROGRESS_LOG_FORMAT": "xml"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    [line] = bad.stderr.splitlines()
    assert "MORAG_PROGRESS_LOG_FORMAT" in line
    assert "'auto', 'text' or 'json'" in line


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["keys", "list"]])
def test_a_database_that_cannot_be_opened_is_one_line_and_exit_2(
    command: list[str], tmp_path: Path
) -> None:
    """A SQLite path in a directory that does not exist: one line on stderr, exit code 2,
    no traceback, and no directory made."""
    import os
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'no-such-dir' / 'progress.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "morag_progress.cli", *command],
        env={**os.environ, "MORAG_PROGRESS_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: database_url names a directory that does not exist: {tmp_path / 'no-such-dir'}, "
        f"got {url!r}"
    ]
    assert not (tmp_path / "no-such-dir").exists()


def _paths(cmd: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    subs = getattr(cmd, "commands", {})
    return [prefix] + [p for name, sub in subs.items() for p in _paths(sub, (*prefix, name))]


def test_help_has_no_type_labels_and_fits_the_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every command's help names options without Typer's ``<str>``/``<bool>`` labels or
    ``[0<=x<=65535]`` ranges (the range is in words), arguments as placeholders (``JOB``), and
    no line is wider than the terminal."""
    monkeypatch.setenv("COLUMNS", "80")
    root = command()
    paths = _paths(root)
    assert ("jobs", "requeue") in paths
    for path in paths:
        with pytest.raises(SystemExit) as ended:
            command().main([*path, "--help"], prog_name="morag-progress")
        assert ended.value.code == 0
        out = capsys.readouterr().out
        assert "Usage: morag-progress" in out
        for label in ("<str>", "<bool>", "<int", "<float", "<list", "<path", "<=x", "x<="):
            assert label not in out, (path, label)
        usage = next(line for line in out.splitlines() if "Usage:" in line)
        assert not any(c.islower() for c in usage.split("[OPTIONS]")[-1]), usage
        assert "{" not in usage, usage  # Typer's braces around a required argument
        assert "...." not in usage, usage
        assert max(len(line) for line in out.splitlines()) <= 80, path
