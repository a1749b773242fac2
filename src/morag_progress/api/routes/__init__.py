"""The API's routers, one module per resource."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from morag_progress.api.auth import Principal, principal, stream_principal
from morag_progress.tracker import JobTracker

__all__ = ["Caller", "JobIdPath", "StreamCaller", "tracker_of"]

Caller = Annotated[Principal, Depends(principal)]
StreamCaller = Annotated[Principal, Depends(stream_principal)]
JobIdPath = Annotated[str, Path(min_length=1, max_length=128, description="The job's id.")]


def tracker_of(request: Request) -> JobTracker:
    """The app's tracker."""
    tracker: JobTracker = request.app.state.tracker
    return tracker
