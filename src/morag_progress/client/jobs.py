"""Making jobs on a server: the one blocking call of the worker side, made before work
starts (a task's own job, a parent and its children), never while reporting."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from morag_progress.client._core import connection, job_body
from morag_progress.errors import ProgressError
from morag_progress.trace_context import current_traceparent

__all__ = ["create_job", "job_body"]


def create_job(
    document_name: str,
    document_type: str,
    *,
    job_id: str | None = None,
    parent_id: str | None = None,
    weight: float = 1.0,
    remote: bool = False,
    metadata: Mapping[str, Any] | None = None,
    api_url: str | None = None,
    api_key: str | None = None,
    timeout: float = 10.0,
    parent_trace: str | None = None,
) -> dict[str, Any]:
    """Create a job (``POST /api/v1/jobs``) and return it as the server answered. A given
    ``job_id`` is idempotent: the same call twice makes one job. ``remote`` queues it for a
    remote worker's claim; ``metadata`` is the job's free-form JSON object. The job's span is
    a child of ``parent_trace`` (a W3C ``traceparent``; default: the span current in this
    process, if any). Raises
    :class:`~morag_progress.ProgressError` when the server cannot be reached or refuses, with
    its reason."""
    import httpx  # here, not with the package: a worker's import stays light

    base, headers = connection(api_url, api_key)
    body = job_body(
        document_name,
        document_type,
        job_id=job_id,
        parent_id=parent_id,
        weight=weight,
        remote=remote,
        metadata=metadata,
    )
    parent_trace = parent_trace if parent_trace is not None else current_traceparent()
    if parent_trace:
        headers = {**headers, "traceparent": parent_trace}
    try:
        response = httpx.post(f"{base}/api/v1/jobs", json=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as e:
        raise ProgressError(f"cannot reach {base} to create a job: {e}") from e
    if response.status_code not in (200, 201):
        try:
            detail = response.json().get("message") or response.json().get("detail")
        except ValueError:
            detail = response.text
        raise ProgressError(f"the server refused the job ({response.status_code}): {detail}")
    job: dict[str, Any] = response.json()
    return job
