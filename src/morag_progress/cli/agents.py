"""``morag-progress mcp``: the jobs as tools for agents (``mcp_server.py``), over stdio for a
local client or streamable HTTP for many."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from morag_progress.cli.failures import within
from morag_progress.cli.worker import ApiKey, ApiUrl, _connection

__all__ = ["mcp"]


def mcp(
    transport: Annotated[
        Literal["stdio", "http"],
        typer.Option(
            help="stdio: one client that starts this command (its key: --api-key); http: "
            "streamable HTTP at /mcp, each client sending its own key as a bearer token."
        ),
    ] = "stdio",
    host: Annotated[str, typer.Option(help="Address to bind, for http.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(**within("Port, for http", 1, 65535), metavar="PORT")] = 8001,
    keepalive: Annotated[
        float,
        typer.Option(
            **within(
                "Seconds between a watch's notifications while its job does not move", 0.1, 300
            ),
            metavar="SECONDS",
        ),
    ] = 15.0,
    api_url: ApiUrl = None,
    api_key: ApiKey = None,
) -> None:
    """Serve the jobs as MCP tools for agents: list, show, watch (with progress
    notifications), cancel, requeue, history. Each tool calls the API with the caller's key,
    so it sees and changes exactly what that key may."""
    try:
        from morag_progress.mcp_server import build_server
    except ImportError as e:  # pragma: no cover - run in an install without the extra
        typer.echo(
            f"error: this command needs the MCP SDK ({e.name} is not installed): "
            "pip install 'morag-progress[mcp]'",
            err=True,
        )
        raise typer.Exit(2) from e
    if transport == "http" and api_key is not None:
        raise typer.BadParameter(
            "over http each client sends its own key as a bearer token; this server holds none",
            param_hint="--api-key",
        )
    base, headers = _connection(api_url, api_key if transport == "stdio" else "")
    key = headers.get("Authorization", "").removeprefix("Bearer ") or None
    if transport == "stdio" and key is None:
        raise typer.BadParameter(
            "the tools need an API key: pass --api-key or set MORAG_PROGRESS_API_KEY",
            param_hint="--api-key",
        )
    server = build_server(base, key if transport == "stdio" else None, keepalive=keepalive)
    if transport == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host=host, port=port)
