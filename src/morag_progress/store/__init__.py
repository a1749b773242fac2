"""Persistence: the store on SQLite (the embedded default) and PostgreSQL."""

from __future__ import annotations

from morag_progress.settings import load_settings
from morag_progress.store.lifecycle import NewJob
from morag_progress.store.sql import NO_USER, SQLStore

__all__ = ["NO_USER", "NewJob", "SQLStore", "open_store"]


def open_store(database_url: str | None = None) -> SQLStore:
    """Open the store at ``database_url``, else at MORAG_PROGRESS_DATABASE_URL, else the default."""
    settings = load_settings()
    return SQLStore(
        database_url or settings.resolved_database_url,
        sqlite_synchronous=settings.sqlite_synchronous,
        busy_timeout_ms=settings.busy_timeout_ms,
    )
