"""``morag-progress jobs``: list, show, create and cancel jobs over the API (a table for a
person, ``--json`` for a program)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from morag_progress.cli.worker import ApiKey, ApiUrl, _connection, _fail, _request

__all__ = ["jobs_app"]

jobs_app = typer.Typer(help="List, show, create and cancel jobs.", no_args_is_help=True)
AsJson = Annotated[bool, typer.Option("--json", help="Print the API's JSON instead.")]
console = Console()


def _call(method: str, path: str, api_url: str | None, api_key: str | None, **kwargs: Any) -> Any:
    base, headers = _connection(api_url, api_key)
    response = _request(method, f"{base}{path}", headers, **kwargs)
    if response.status_code not in (200, 201):
        raise _fail(response)
    return response.json()


def _print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


def _show(job: dict[str, Any]) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for name in (
        "id", "document_name", "document_type", "status", "percentage", "summary", "stage",
        "attempt", "worker_id", "parent_id", "error", "cancel_requested", "created_at",
        "start_date", "updated_at", "end_date", "eta_seconds",
    ):  # fmt: skip
        value = job.get(name)
        if value is not None and value != "":
            table.add_row(name, str(value))
    console.print(table)


@jobs_app.command("list")
def list_jobs(
    status: Annotated[str | None, typer.Option(help="Only jobs in this status.")] = None,
    document_type: Annotated[str | None, typer.Option("--type", help="Only this type.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Jobs per page.")] = 50,
    cursor: Annotated[str | None, typer.Option(help="The next page's cursor.")] = None,
    as_json: AsJson = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Your jobs, newest first, a page at a time."""
    params = {"status": status, "document_type": document_type, "limit": limit, "cursor": cursor}
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
    table = Table(expand=True)
    for column in ("id", "name", "type", "status", "%", "created", "message"):
        table.add_column(
            column, no_wrap=column != "message", justify="right" if column == "%" else "left"
        )
    for job in page["jobs"]:
        table.add_row(
            job["id"],
            job["document_name"],
            job["document_type"],
            job["status"],
            str(job["percentage"]),
            job["created_at"],
            job.get("summary") or "",
        )
    console.print(table)
    if page.get("next_cursor"):
        console.print(f"more: --cursor {page['next_cursor']}", style="dim", highlight=False)


@jobs_app.command("show")
def show(
    job: Annotated[str, typer.Argument(help="The job's id.")],
    as_json: AsJson = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """One job, as it is now."""
    data = _call("GET", f"/api/v1/jobs/{job}", api_url, api_key)
    if as_json:
        _print_json(data)
    else:
        _show(data)


@jobs_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="The document's name.")],
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
    if as_json:
        _print_json(data)
    else:
        _show(data)


@jobs_app.command("cancel")
def cancel(
    job: Annotated[str, typer.Argument(help="The job's id.")],
    as_json: AsJson = False,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Cancel a job: one not yet running ends CANCELLED now; a running one is asked to stop
    (its worker sees the request in its next progress reply)."""
    data = _call("POST", f"/api/v1/jobs/{job}/cancel", api_url, api_key)
    if as_json:
        _print_json(data)
    elif data["status"] == "CANCELLED":
        typer.echo(f"{data['id']}: CANCELLED")
    else:
        typer.echo(f"{data['id']}: cancel requested ({data['status']} {data['percentage']}%)")
