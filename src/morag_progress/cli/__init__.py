"""The ``morag-progress`` command: serve the API, manage keys, and the worker-side commands
(``run``, ``tail``, ``report``, ``watch``) and ``demo``."""

from __future__ import annotations

import errno
import logging
import socket
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer
import typer.main
from rich import box
from rich.console import Console
from rich.table import Table

from morag_progress.cli.failures import say, within
from morag_progress.cli.text import cell
from morag_progress.errors import ProgressError
from morag_progress.keys import Role
from morag_progress.models import utcnow
from morag_progress.settings import Settings, load_settings

if TYPE_CHECKING:
    from morag_progress.store import SQLStore

__all__ = ["app", "command", "main"]

app = typer.Typer(
    help="Job progress: serve the API, manage keys and the database, report and watch.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
db_app = typer.Typer(
    help="The database: its schema's revision and upgrades, and pruning.", no_args_is_help=True
)
app.add_typer(db_app, name="db")


def _version(value: bool) -> None:
    if value:
        from morag_progress import __version__

        console.print(f"morag-progress {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Job progress: serve the API, manage keys and the database, report and watch."""


DatabaseUrl = Annotated[
    str | None,
    typer.Option("--database-url", help="Store URL (default: MORAG_PROGRESS_DATABASE_URL)."),
]
console = Console()
notes = Console(stderr=True)


def _settings(**overrides: object) -> Settings:
    try:
        settings = load_settings()
    except ProgressError as e:
        raise typer.BadParameter(str(e)) from e
    changes = {name: value for name, value in overrides.items() if value is not None}
    return settings.model_copy(update=changes)


def _needs_server() -> None:
    """Exit 2 with a line on what to install when the server's libraries are missing (a
    worker's light install: ``pip install morag-progress``)."""
    try:
        import fastapi  # noqa: F401
        import sqlalchemy  # noqa: F401
    except ImportError as e:  # pragma: no cover - run in a light install's own interpreter
        typer.echo(
            f"error: this command needs the server ({e.name} is not installed): "
            "pip install 'morag-progress[server]'",
            err=True,
        )
        raise typer.Exit(2) from e


def _store(database_url: str | None) -> SQLStore:
    _needs_server()
    from morag_progress.store import open_store

    try:
        return open_store(database_url)
    except ProgressError as e:
        raise _cannot_open(e) from e


def _cannot_open(e: ProgressError) -> typer.Exit:
    """One line on stderr saying why the database cannot be used; exit code 2."""
    say(str(e).splitlines()[0])
    return typer.Exit(2)


def log_config(level: str = "INFO", *, readable: bool = False) -> dict[str, Any]:
    """Logging for ``serve``: one JSON object per line on stderr (structlog's renderer over
    the standard library, so uvicorn's and our own loggers come out alike), or, ``readable``
    (a terminal), structlog's console lines for a person."""
    import structlog

    stamp = [structlog.stdlib.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True)]
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=True)
        if readable
        else structlog.processors.JSONRenderer()
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    *([] if readable else [structlog.processors.format_exc_info]),
                    renderer,
                ],
                "foreign_pre_chain": [*stamp, structlog.stdlib.add_logger_name],
            }
        },
        # Secrets never reach a log: stream tokens in URLs, passwords in URLs.
        "filters": {"redact": {"()": "morag_progress.api.server.RedactSecrets"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
                "filters": ["redact"],
            }
        },
        "loggers": {
            "": {"handlers": ["stderr"], "level": level},
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.access": {"handlers": ["stderr"], "level": level, "propagate": False},
            # One line per webhook delivery is noise (the deliveries list has them).
            "httpx": {"level": "WARNING"},
        },
    }


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[
        int | None,
        typer.Option(**within("Port (default 8000)", 0, 65535), metavar="PORT"),
    ] = None,
    database_url: DatabaseUrl = None,
    log_format: Annotated[
        Literal["auto", "text", "json"] | None,
        typer.Option(
            "--log-format",
            metavar="FORMAT",
            help="The log on stderr: text, json, or auto (text in a terminal, else JSON; "
            "default: MORAG_PROGRESS_LOG_FORMAT or auto).",
        ),
    ] = None,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs)."""
    _needs_server()
    import uvicorn

    from morag_progress.api import create_app
    from morag_progress.api.server import settle_allocator, settle_collector, uvicorn_config

    settle_allocator()  # before any thread of the server starts
    settings = _settings(host=host, port=port, database_url=database_url, log_format=log_format)
    # The address first: one in use is a one-line error with a hint, before anything starts.
    listening = _listen(settings.host, settings.port)
    try:
        api = create_app(settings)
    except ProgressError as e:
        listening.close()
        raise _cannot_open(e) from e
    # A person at a terminal reads lines; a log collector (a pipe, a file) gets JSON.
    readable = settings.log_format == "text" or (
        settings.log_format == "auto" and sys.stderr.isatty()
    )
    config = uvicorn_config(api, settings, log_config=log_config(readable=readable))
    base = f"http://{_url_host(config.host)}:{listening.getsockname()[1]}"
    # A log line (JSON, like the rest of serve's output), once logging is configured.
    logging.getLogger("morag_progress.serve").info(
        "dashboard at %s/ , API docs at %s/docs", base, base
    )
    settle_collector()
    uvicorn.Server(config).run(sockets=[listening])


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port`` for the server (as uvicorn binds one), or a
    one-line error naming the address and what to do; exit code 2."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            say(f"{host}:{port} is in use", "pass --port with another port, or stop what uses it")
        else:
            say(f"cannot listen on {host}:{port}: {e.strerror or e}", "check --host and --port")
        raise typer.Exit(2) from e
    sock.set_inheritable(True)
    return sock


def _url_host(host: str) -> str:
    """A bound address as a URL's host: a wildcard as loopback, IPv6 in brackets."""
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _unmigrated_store(database_url: str | None) -> SQLStore:
    _needs_server()
    from morag_progress.store import SQLStore

    url = database_url or _settings().resolved_database_url
    try:
        return SQLStore(url, create_tables=False)
    except ProgressError as e:
        say(str(e))
        raise typer.Exit(2) from e


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(metavar="REVISION", help="Target revision.")] = "head",
    database_url: DatabaseUrl = None,
) -> None:
    """Upgrade the schema (back the database up first). Safe to run again."""
    store = _unmigrated_store(database_url)
    try:
        before, after = store.upgrade(revision)
    except ProgressError as e:
        say(str(e))
        raise typer.Exit(1) from e
    finally:
        store.close()
    if before == after:
        console.print(f"already at revision {after}")
    else:
        console.print(f"upgraded from {before or 'an empty database'} to revision {after}")


@db_app.command("current")
def db_current(database_url: DatabaseUrl = None) -> None:
    """Print the schema's revision and the newest this version knows."""
    from morag_progress.store.migrate import head_revision

    store = _unmigrated_store(database_url)
    try:
        revision = store.revision()
    except ProgressError as e:
        say(str(e))
        raise typer.Exit(1) from e
    finally:
        store.close()
    typer.echo(f"{revision or 'empty'} (newest: {head_revision()})")


@db_app.command("prune")
def db_prune(
    older_than_days: Annotated[
        float | None,
        typer.Option(
            **within(
                "Delete what ended more than this many days ago "
                "(default: MORAG_PROGRESS_RETENTION_DAYS, 90)",
                0,
            ),
            metavar="DAYS",
        ),
    ] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Delete jobs that ended long ago with their change feed, and old webhook deliveries,
    in small batches (safe beside running servers, which prune too)."""
    from datetime import timedelta

    days = _settings().retention_days if older_than_days is None else older_than_days
    if not days:
        typer.echo("retention is off (0 days): nothing pruned")
        return
    store = _store(database_url)
    before = utcnow() - timedelta(days=days)
    started = time.perf_counter()
    try:
        pruned = store.prune(before=before)
    except ProgressError as e:
        raise _cannot_open(e) from e
    finally:
        store.close()
    seconds = time.perf_counter() - started
    typer.echo(
        f"pruned {pruned.jobs} jobs, {pruned.events} feed rows and {pruned.deliveries} "
        f"webhook deliveries older than {days:g} days in {seconds:.1f} s"
    )


@keys_app.command("create")
def keys_create(
    user: Annotated[str, typer.Option(help="The user the key acts for.")],
    role: Annotated[Role, typer.Option(help="admin, user or worker.")] = Role.USER,
    name: Annotated[str | None, typer.Option(help="A label to recognise the key by.")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Create a key and print it. It is shown this once: only its hash is stored."""
    store = _store(database_url)
    try:
        key, secret = store.create_key(user_id=user, role=role, name=name, now=utcnow())
    except ProgressError as e:
        say(str(e))
        raise typer.Exit(2) from e
    finally:
        store.close()
    typer.echo(secret)
    notes.print(f"key {key.id} for user {key.user_id!r}, role {key.role.value}", style="dim")


@keys_app.command("list")
def keys_list(
    user: Annotated[str | None, typer.Option(help="Only this user's keys.")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """List keys (never their secrets)."""
    store = _store(database_url)
    try:
        keys = store.list_keys(user_id=user)
    finally:
        store.close()
    # Columns as `jobs list` lays them out (no box: a pipe gets plain columns); names as
    # plain, visible text (a name holding brackets or escapes prints as it is).
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for name in ("id", "user", "role", "name", "created", "revoked"):
        table.add_column(name, no_wrap=name != "name", overflow="fold")
    for key in keys:
        revoked = key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else ""
        created = key.created_at.isoformat(timespec="seconds")
        table.add_row(
            *(cell(v) for v in (key.id, key.user_id, key.role.value, key.name, created, revoked))
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(metavar="KEY", help="The key's id (from `keys list`).")],
    database_url: DatabaseUrl = None,
) -> None:
    """Revoke a key; servers stop accepting it within a few seconds."""
    store = _store(database_url)
    try:
        revoked = store.revoke_key(key_id, now=utcnow())
    finally:
        store.close()
    if not revoked:
        say(f"no active key {key_id!r}")
        raise typer.Exit(1)
    console.print(f"key {key_id} revoked")


from morag_progress.cli.worker import flush, report, run, tail, watch  # noqa: E402 - needs `app`

app.command()(report)
app.command(
    context_settings={"allow_interspersed_args": False},
    short_help="Run a command and report the progress in its output; its exit code ends the job.",
)(run)
app.command(short_help="Report the progress in a log file, once or as it grows (--follow).")(tail)
app.command(short_help="Show jobs live: bars, status, message, rate, ETA.")(watch)
app.command(short_help="Send the reports kept while the server could not be reached.")(flush)

from morag_progress.cli.jobs import jobs_app  # noqa: E402 - after the worker commands

app.add_typer(jobs_app, name="jobs")

from morag_progress.cli.agents import mcp  # noqa: E402 - after the worker commands

app.command(short_help="Serve the jobs as MCP tools for agents (stdio or streamable HTTP).")(mcp)


@app.command(
    short_help="The whole system on this machine, live in the terminal: no servers needed."
)
def demo(
    keep_serving: Annotated[
        bool, typer.Option("--keep-serving", help="Leave the API up after the demo.")
    ] = False,
    seconds: Annotated[
        float,
        typer.Option(**within("How long each simulated job runs", 1, 600), metavar="SECONDS"),
    ] = 8.0,
) -> None:
    """The whole system on this machine, no servers to install: the API over a temporary
    SQLite database, remote workers over HTTP, a Celery worker on a filesystem broker and a
    wrapped command, shown live in the terminal."""
    _needs_server()
    from morag_progress.demo import run_demo

    raise typer.Exit(run_demo(keep_serving=keep_serving, seconds=seconds, console=console))


def command() -> Any:
    """The whole command as Click runs it, its help without Typer's type labels (``<str>``,
    ``<bool>``): an option's name and help say what it takes; a usage error one line."""
    root = typer.main.get_command(app)
    _without_type_labels(root)
    root.main = _one_line_errors(root.main)  # type: ignore[method-assign]  # this one's only
    return root


def _one_line_errors(main: Callable[..., Any]) -> Callable[..., Any]:
    """Click's ``main``, saying a usage error in one line on stderr (``error: what (see
    `morag-progress CMD --help`)``, exit 2) where Typer draws the usage and a five-line box."""

    def run(*args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return main(*args, standalone_mode=False, **kwargs)
        try:
            code = main(*args, standalone_mode=False, **kwargs)
        except typer.TyperException as e:  # Click's errors: a bad or missing argument...
            # pydantic's "Value error, " before a choice's message is an internal word
            what = e.format_message().replace("Value error, ", "").rstrip(".")
            ctx = getattr(e, "ctx", None)  # a usage error's: its command's help is the hint
            if not what:  # no arguments: the help was shown, as it says
                sys.exit(getattr(e, "exit_code", 2))
            _said(what, getattr(e, "exit_code", 1), ctx and f"see `{ctx.command_path} --help`")
        except typer.Abort:  # end of input at a prompt
            _said("aborted", 1)
        sys.exit(code if isinstance(code, int) else 0)

    return run


def _said(what: str, code: int, hint: str | None = None) -> NoReturn:
    say(what, hint)
    sys.exit(code)


def _no_label(ctx: object) -> None:
    return None


def _plain_usage(param: Any) -> Callable[[object], list[str]]:
    """An argument in the usage line as Click writes it (``JOB``, ``[MESSAGE]``,
    ``COMMAND...``), where Typer 0.29 writes a required one in braces (``{JOB}``)."""
    name = (param.metavar or param.name).upper().removesuffix("...")
    name += "..." if param.nargs != 1 else ""
    name = name if param.required else f"[{name}]"
    return lambda ctx: [name]


def _without_type_labels(cmd: Any) -> None:
    for param in cmd.params:
        param.display_type_rich = _no_label
        if param.param_type_name == "argument":
            param.get_usage_pieces = _plain_usage(param)
    help_option = cmd.get_help_option  # made anew for each help page

    def plain_help_option(ctx: object) -> Any:
        option = help_option(ctx)
        if option is not None:
            option.display_type_rich = _no_label
        return option

    cmd.get_help_option = plain_help_option
    for sub in getattr(cmd, "commands", {}).values():
        _without_type_labels(sub)


def main() -> None:
    """Entry point of the ``morag-progress`` script."""
    command()()
