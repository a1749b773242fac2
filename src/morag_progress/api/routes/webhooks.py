"""Webhook routes: register a URL for job events, list, delete, and read its deliveries."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from morag_progress.api.auth import Principal, require
from morag_progress.api.routes import KeyCaller, errors
from morag_progress.api.schemas import DeliveryOut, WebhookCreated, WebhookIn, WebhookOut
from morag_progress.errors import LimitExceededError
from morag_progress.keys import Role
from morag_progress.store.webhooks import ALL_USERS
from morag_progress.webhooks import Webhook, WebhookStore, check_url, masked_url

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/webhooks", tags=["webhooks"])

WebhookId = Annotated[
    str,
    Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_]+$", description="The webhook's id."),
]


def _hooks(request: Request) -> WebhookStore:
    hooks: WebhookStore = request.app.state.webhooks
    return hooks


def _out(hook: Webhook) -> WebhookOut:
    return WebhookOut(
        id=hook.id,
        url=masked_url(hook.url),  # its path and query may be a secret (Slack, Discord)
        events=hook.events,
        progress_interval_s=hook.progress_interval_s,
        format=hook.format,
        max_per_hour=hook.max_per_hour,
        created_at=hook.created_at,
        channel=hook.channel,
        live=hook.live,
    )


def _owned(request: Request, webhook_id: str, caller: Principal) -> Webhook:
    require(caller, Role.USER, Role.ADMIN)
    hook = _hooks(request).get(webhook_id, caller.scope)
    if hook is None:  # another user's answers the same: ids do not leak
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"webhook {webhook_id!r} not found")
    return hook


@router.post(
    "",
    response_model=WebhookCreated,
    status_code=status.HTTP_201_CREATED,
    responses=errors(400, 401, 403, 422, 429),
)
async def create_webhook(body: WebhookIn, caller: KeyCaller, request: Request) -> WebhookCreated:
    """Register a URL for job events of the caller's jobs (an admin's: everyone's). The reply
    carries the signing secret, this once. URLs to private, loopback or link-local addresses
    are refused unless the operator allows them."""
    require(caller, Role.USER, Role.ADMIN)
    most = request.app.state.settings.max_webhooks_per_user
    mine = await run_in_threadpool(_hooks(request).list_for, caller.scope or ALL_USERS)
    if len(mine) >= most:
        raise LimitExceededError(
            f"this user has {most} webhooks, the most it may; delete one first", retry_after=60
        )
    allow_private = request.app.state.settings.webhook_allow_private
    assert body.url is not None  # the model fills a live format's default
    await run_in_threadpool(check_url, body.url, allow_private=allow_private)
    hook, secret = await run_in_threadpool(
        _hooks(request).create,
        user_id=caller.scope or ALL_USERS,
        url=body.url,
        event_types=list(body.events),
        progress_interval_s=body.progress_interval_s,
        format=body.format,
        max_per_hour=body.max_per_hour,
        token=body.token,
        channel=body.channel,
    )
    return WebhookCreated(**_out(hook).model_dump(), secret=secret)


@router.get("", response_model=list[WebhookOut], responses=errors(401, 403, 429))
def list_webhooks(caller: KeyCaller, request: Request) -> list[WebhookOut]:
    """The caller's webhooks."""
    require(caller, Role.USER, Role.ADMIN)
    return [_out(hook) for hook in _hooks(request).list_for(caller.scope)]


@router.delete(
    "/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=errors(401, 403, 404, 429),
)
def delete_webhook(webhook_id: WebhookId, caller: KeyCaller, request: Request) -> Response:
    """Stop calling the URL; pending deliveries are dropped."""
    _owned(request, webhook_id, caller)
    _hooks(request).delete(webhook_id, caller.scope)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{webhook_id}/deliveries",
    response_model=list[DeliveryOut],
    responses=errors(401, 403, 404, 429),
)
def list_deliveries(
    webhook_id: WebhookId,
    caller: KeyCaller,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeliveryOut]:
    """The webhook's deliveries, newest first, with their outcomes."""
    _owned(request, webhook_id, caller)
    return [
        DeliveryOut.model_validate(delivery, from_attributes=True)
        for delivery in _hooks(request).deliveries(webhook_id, limit=limit)
    ]
