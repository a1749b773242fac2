"""``morag-progress jobs``: list, show, create, cancel and requeue jobs over the API (a table for a
person, ``--json`` for a program)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from morag_progress.audit import said
from morag_progress.cli.failures import http_failure, within
from morag_progress.cli.text import cell, column_width, visible
from morag_progress.cli.view import as_clock, no_report, silent_for
from morag_progress.cli.worker import ApiKey, ApiUrl, _connection, _request
from morag_progress.models import JobStatus

__all__ = ["jobs_app"]

jobs_app = typer.Typer(
    help="List, show, create, cancel and requeue jobs, and read their history.",
    no_args_is_help=True,
)
AsJson = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead.")]
console = Console()


_OPTIONS = {"q": "--search", "document_type": "--type", "parent_id": "--parent"}
"""The query parameters whose option has another name."""


def _call(method: str, path: str, api_url: str | None, api_key: str | None, **kwargs: Any) -> Any:
    base, headers = _connection(api_url, api_key)
    response = _request(method, f"{base}{path}", headers, **kwargs)
    if response.status_code not in (200, 201):
        raise http_failure(response, _OPTIONS)
    return response.json()


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


def _print_job(job: dict[str, Any], as_json: bool) -> None:
    """A job as the API's JSON, or as the field list a person reads."""
    if as_json:
        _print_json(job)
    else:
        _show(job)


def _show(job: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for name in (
        "id", "document_name", "document_type", "status", "percentage", "current", "total",
        "summary", "stage",
        "attempt", "worker_id", "parent_id", "error", "cancel_requested", "created_at",
        "created_by", "traceparent", "start_date", "updated_at", "end_date", "expected_start_at",
        "deadline",
    ):  # fmt: skip
        value = job.get(name)
        if name == "created_by" and job.get("created_by_name"):
            value = f"{job['created_by_name']} ({value})"  # a key by its name, and its id
        if value is not None and value != "":
            table.add_row(name, cell(value))
    if job.get("rate"):
        table.add_row("rate", f"{job['rate']:.2f} %/s")
    if job.get("at_risk") in _AT_RISK and job.get("status") in ("PROCESSING", "STALLED"):
        table.add_row("at risk", cell(_AT_RISK[job["at_risk"]], style="red"))
    _show_children(table, job)
    if isinstance(job.get("checkpoint_percentage"), int):  # the state itself: --json
        table.add_row("checkpoint", f"saved at {job['checkpoint_percentage']}%")
    silent = silent_for(job)
    if silent is not None:
        table.add_row("eta", cell(no_report(silent), style="yellow"))
    elif job.get("eta_seconds") is not None:
        table.add_row("eta", _eta(job))
    console.print(table)


_AT_RISK = {
    "deadline": "likely to miss its deadline",
    "long": "running longer than jobs of its kind usually take",
}


def _show_children(table: Table, job: dict[str, Any]) -> None:
    """A parent's children: how many ended, of how many (a run's expected ranks), its slowest
    running one, and the stragglers the server flagged (docs/ranks.md)."""
    children, expected = job.get("children") or 0, job.get("expected_children")
    if not children and not expected:
        return
    line = f"{job.get('children_done') or 0} of {max(children, expected or 0)} ended"
    if expected and children < expected:
        line += f" ({children} started)"
    table.add_row("children", line)
    slowest = job.get("slowest_child")
    if isinstance(slowest, dict):
        flagged = " (straggler)" if slowest.get("straggler") else ""
        text = f"{slowest.get('id')} at {slowest.get('percentage')}%{flagged}"
        table.add_row("slowest", cell(text, style="yellow") if flagged else cell(text))
    if job.get("stragglers"):
        table.add_row("stragglers", cell(str(job["stragglers"]), style="yellow"))


def _eta(job: dict[str, Any]) -> str:
    """The server's estimate as a person reads it: ``1:12 left (likely 0:50-1:40, blend)``."""
    low, high = as_clock(job["eta_low_seconds"]), as_clock(job["eta_high_seconds"])
    return f"{as_clock(job['eta_seconds'])} left (likely {low}-{high}, {job['eta_basis']})"


def _act(
    verb: str, job: str, as_json: bool, api_url: str | None, api_key: str | None
) -> dict[str, Any] | None:
    """POST a job's action (``cancel``, ``requeue``): the job the server answered with, or None
    once it is printed as JSON."""
    data: dict[str, Any] = _call("POST", f"/api/v1/jobs/{job}/{verb}", api_url, api_key)
    if as_json:
        _print_json(data)
        return None
    return data


@jobs_app.command("list")
def list_jobs(
    status: Annotated[
        JobStatus | None,
        typer.Option(
            case_sensitive=False,
            metavar="STATUS",
            help=f"Only jobs in this status: {', '.join(JobStatus)} (any case).",
        ),
    ] = None,
    document_type: Annotated[str | None, typer.Option("--type", help="Only this type.")] = None,
    search: Annotated[
        str | None, typer.Option(help="Only jobs whose name, id or message holds this text.")
    ] = None,
    parent: Annotated[str | None, typer.Option(help="Only this job's children.")] = None,
    limit: Annotated[int, typer.Option(**within("Jobs per page", 1, 500), metavar="N")] = 50,
    cursor: Annotated[str | None, typer.Option(help="The next page's cursor.")] = None,
    as_json: AsJson = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Your jobs, newest first, a page at a time."""
    params = {
        "status": status and status.value,
        "document_type": document_type,
        "q": search,
        "parent_id": parent,
        "limit": limit,
        "cursor": cursor,
    }
    page = _call(
        "GET",
        "/api/v1/jobs",
        api_url,
        api_key,
        params={k: v for k, v in params.items() if v is not None},
    )
    if as_json:
        _print_json(page)
        return
    rows = [
        (
            job["id"],
            job["document_name"],
            job["document_type"],
            f"{job['status']} {job['percentage']}%",
            job["created_at"][5:16].replace("T", " "),  # MM-DD HH:MM
            job.get("summary") or "",
        )
        for job in page["jobs"]
    ]
    # The id whole (it tells apart jobs of the same name); names, types and messages give way.
    columns: list[tuple[str, dict[str, Any]]] = [
        ("id", {"min_width": max((len(r[0]) for r in rows), default=2)}),
        ("name", {"min_width": 8, "max_width": 24}),
        ("type", {"min_width": 6, "max_width": 12, "drop": 1}),  # short of room: left out first
        ("status", {"min_width": 15}),
        ("created UTC", {"min_width": 11, "drop": 2}),
        ("message", {"ratio": 1, "overflow": "ellipsis", "drop": 3}),  # what is left
    ]
    more = f"more: --cursor {page['next_cursor']}" if page.get("next_cursor") else None
    _print_rows(columns, rows, more)


def _print_rows(
    columns: Sequence[tuple[str, Mapping[str, Any]]],
    rows: Sequence[Sequence[str]],
    more: str | None,
) -> None:
    """Rows under ``columns`` (a header and rich column options each): a table on a terminal,
    tab-separated lines after a header line into a pipe or a file; ``more`` on stderr (or
    dimmed) after them."""
    if not console.is_terminal:
        for row in ((name for name, _ in columns), *rows):
            typer.echo("\t".join(visible(value) for value in row))
        if more:
            typer.echo(more, err=True)
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    kept = _fitted(columns, rows, console.width)
    for _, name, options in kept:
        table.add_column(name, no_wrap=True, **options)
    for row in rows:
        table.add_row(*(cell(row[at]) for at, _, _ in kept))
    console.print(table)
    if more:
        console.print(more, style="dim", highlight=False)


_LEAST_MESSAGE = 10
"""The narrowest the column that takes what is left (the message) is made."""


def _fitted(
    columns: Sequence[tuple[str, Mapping[str, Any]]], rows: Sequence[Sequence[str]], width: int
) -> list[tuple[int, str, dict[str, Any]]]:
    """``columns`` laid out in ``width``, each as ``(its index, name, rich options)``: each
    column as wide as its widest value within its bounds, and the one that takes what is left
    (``ratio``) given exactly that, at least 10, cut with an ellipsis. Short of room, columns
    with a ``max_width`` narrow toward their ``min_width``, then the columns marked ``drop``
    (1 first) are left out until the rest fit, and half the room that made goes back to
    the narrowed ones. Left to itself, rich short of room drops whichever column and cuts text
    without an ellipsis."""
    natural = [
        column_width(name, (row[at] for row in rows), options)
        for at, (name, options) in enumerate(columns)
    ]
    widths = list(natural)
    kept = list(range(len(columns)))

    def short() -> int:
        """How many columns more than ``width`` the kept columns need."""
        needed = sum(_LEAST_MESSAGE if "ratio" in columns[at][1] else widths[at] for at in kept)
        return needed + 2 * (len(kept) - 1) - width

    narrowing = [
        at
        for at, (_, options) in enumerate(columns)
        if "ratio" not in options and "max_width" in options
    ]
    for at in narrowing:
        widths[at] = max(int(columns[at][1].get("min_width", 1)), widths[at] - max(0, short()))
    for at in sorted((at for at in kept if "drop" in columns[at][1]), key=_drop_rank(columns)):
        if short() > 0:
            kept.remove(at)
    for at in narrowing:  # half the room left goes back to them, half to the message
        widths[at] += max(0, min(natural[at] - widths[at], -short() // 2))
    left = _LEAST_MESSAGE - short()
    fitted = []
    for at in kept:
        name, options = columns[at]
        options = {k: v for k, v in options.items() if k != "drop"}
        if "ratio" in options:
            options |= {"max_width": max(_LEAST_MESSAGE, left), "overflow": "ellipsis"}
        else:
            options |= {"min_width": widths[at], "max_width": widths[at], "overflow": "ellipsis"}
        fitted.append((at, name, options))
    return fitted


def _drop_rank(columns: Sequence[tuple[str, Mapping[str, Any]]]) -> Callable[[int], int]:
    return lambda at: int(columns[at][1]["drop"])


@jobs_app.command("show")
def show(
    job: Annotated[str, typer.Argument(metavar="JOB", help="The job's id.")],
    as_json: AsJson = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """One job, as it is now."""
    data = _call("GET", f"/api/v1/jobs/{job}", api_url, api_key)
    _print_job(data, as_json)


@jobs_app.command(
    "history",
    short_help="A job's changes, newest first: when, its state, the change and who made it.",
)
def history(
    job: Annotated[str, typer.Argument(metavar="JOB", help="The job's id.")],
    limit: Annotated[
        int,
        typer.Option(**within("How many changes", 1, 10_000), metavar="N"),
    ] = 50,
    oldest_first: Annotated[
        bool, typer.Option("--oldest-first", help="The latest changes, oldest of them first.")
    ] = False,
    as_json: AsJson = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """A job's latest changes, newest first as on the dashboard: when, its state after each,
    what kind of change it was and who made it (the audit trail)."""
    params = {"order": "desc", "limit": limit}
    events = _call("GET", f"/api/v1/jobs/{job}/history", api_url, api_key, params=params)
    if oldest_first:
        events.reverse()
    if as_json:
        _print_json(events)
        return
    rows = [
        (
            e["timestamp"][:23].replace("T", " "),  # YYYY-MM-DD HH:MM:SS.mmm
            f"{e['status']} {e['percentage']}%",
            said(e.get("action")),  # as the dashboard says it
            e.get("actor_name") or e.get("actor") or "unknown",  # a key by its name
            e.get("message") or "",
        )
        for e in events
    ]
    columns: list[tuple[str, dict[str, Any]]] = [
        ("when UTC", {"min_width": 23}),
        ("status", {"min_width": 15}),
        ("change", {"min_width": 6, "drop": 1}),
        ("by", {"min_width": max((len(r[3]) for r in rows), default=2), "drop": 2}),  # whole
        ("message", {"ratio": 1, "overflow": "ellipsis"}),
    ]
    _print_rows(columns, rows, None)


@jobs_app.command("create")
def create(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The document's name.")],
    document_type: Annotated[str, typer.Option("--type", help="The document's type.")],
    job_id: Annotated[str | None, typer.Option("--id", help="The job's id (default: new).")] = None,
    as_json: AsJson = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Create a job (PENDING) and print it."""
    body = {"document_name": name, "document_type": document_type}
    if job_id is not None:
        body["id"] = job_id
    data = _call("POST", "/api/v1/jobs", api_url, api_key, json=body)
    _print_job(data, as_json)


@jobs_app.command(
    "cancel",
    short_help="Cancel a job: at once if not yet running, else its worker is asked to stop.",
)
def cancel(
    job: Annotated[str, typer.Argument(metavar="JOB", help="The job's id.")],
    as_json: AsJson = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Cancel a job: one not yet running ends CANCELLED now; a running one is asked to stop
    (its worker sees the request in its next progress reply)."""
    data = _act("cancel", job, as_json, api_url, api_key)
    if data is None:
        return
    if data["status"] == "CANCELLED":
        typer.echo(f"{visible(data['id'])}: CANCELLED")
    else:
        state = f"{visible(data['status'])} {data['percentage']}%"
        typer.echo(f"{visible(data['id'])}: cancel requested ({state})")


@jobs_app.command(
    "requeue", short_help="Put a failed, cancelled or stalled remote job back in the queue at 0%."
)
def requeue(
    job: Annotated[str, typer.Argument(metavar="JOB", help="The job's id.")],
    as_json: AsJson = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Put a remote job that failed, was cancelled or stalled back in the queue: it waits for
    a remote worker again at 0%, and the next claim starts a new attempt."""
    data = _act("requeue", job, as_json, api_url, api_key)
    if data is not None:
        typer.echo(
            f"{visible(data['id'])}: requeued as attempt {data['attempt']}, waiting for a worker"
        )
