"""The HTTP API (FastAPI): remote workers report, people and programs read jobs."""

from __future__ import annotations

from morag_progress.api.app import create_app

__all__ = ["create_app"]
