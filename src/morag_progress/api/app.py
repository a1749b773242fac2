"""The app factory: routes, limits, and the one place where errors become HTTP statuses."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from morag_progress._threads import SharedReads, run_to_completion
from morag_progress.api import answers
from morag_progress.api.auth import Authenticator
from morag_progress.api.estimates import Estimates
from morag_progress.api.limits import BodyLimit, RateLimiter, ReadGate, SharedRateLimiter
from morag_progress.api.metrics import Metrics, RequestTimer
from morag_progress.api.routes import (
    dashboard,
    events,
    jobs,
    ops,
    remote_jobs,
    share,
    webhooks,
    workers,
)
from morag_progress.api.sse import Streams
from morag_progress.api.uploads import UploadParser
from morag_progress.audit import SERVER
from morag_progress.feed import FeedHub
from morag_progress.monitor import Monitor, Pruner
from morag_progress.settings import Settings, load_settings
from morag_progress.store import SQLStore
from morag_progress.store.notify import FeedListener
from morag_progress.tracing import JobSpans
from morag_progress.tracker import JobTracker
from morag_progress.webhooks import Dispatcher, WebhookStore

__all__ = ["create_app"]

logger = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None,
    *,
    store: SQLStore | None = None,
    job_spans: JobSpans | None = None,
) -> FastAPI:
    """Build the API over ``store`` (default: the store the settings name). ``job_spans``
    exports ended jobs as spans (default: one sending OTLP when ``otel_traces`` is set)."""
    settings = settings or load_settings()
    owns_store = store is None
    if store is None:
        store = SQLStore(
            settings.resolved_database_url,
            sqlite_synchronous=settings.sqlite_synchronous,
            busy_timeout_ms=settings.busy_timeout_ms,
        )

    # The hub's tick wakes every stream: to re-check its key, and to keep it alive.
    tick = min(settings.stream_recheck_seconds, settings.sse_ping_seconds / 2)
    hub = FeedHub(store, poll_interval=settings.feed_poll_seconds, tick=tick)

    if job_spans is None and settings.otel_traces:
        job_spans = JobSpans(store)  # here, so a missing package fails the start, not a task
    tracker = JobTracker(store=store, actor=SERVER)
    tracker.add_waker(hub.wake)
    monitor = Monitor(
        tracker,
        stall_timeout=settings.stall_timeout_seconds,
        abandon_timeout=settings.abandon_timeout_seconds,
        abandon_policy=settings.abandon_policy,
        straggler_share=settings.straggler_share or None,  # 0: off
        straggler_seconds=settings.straggler_seconds,
        deadlines=settings.deadline_seconds_by_type,
        warn_long=settings.warn_long_running,
        deadline_chance=settings.deadline_warn_chance,
    )

    hooks = WebhookStore(store)

    streams = Streams()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if job_spans is not None:
            # Following the feed from before the first request: no job ends unseen.
            await run_to_completion(job_spans.begin)
        # Always on: jobs may carry their own stall timeout even when the server has none.
        background = [
            asyncio.create_task(monitor.run(settings.monitor_interval_seconds)),
            asyncio.create_task(
                Pruner(store, days=settings.retention_days).run(settings.retention_interval_seconds)
            ),
            asyncio.create_task(
                Dispatcher(
                    hooks,
                    allow_private=settings.webhook_allow_private,
                    max_attempts=settings.webhook_max_attempts,
                    timeout=settings.webhook_timeout_seconds,
                    max_in_flight=settings.webhook_max_in_flight,
                    per_webhook=settings.webhook_max_in_flight_per_hook,
                    per_user=settings.webhook_max_in_flight_per_user,
                    breaker_failures=settings.webhook_pause_after_failures,
                    on_outcome=lambda outcome: metrics.webhooks.labels(outcome).inc(),
                ).run(settings.webhook_poll_seconds)
            ),
        ]
        if job_spans is not None:
            background.append(asyncio.create_task(job_spans.run(settings.otel_interval_seconds)))
        listener = None
        if store.dialect == "postgresql":  # other replicas' changes wake the tail at once
            listener = FeedListener(store.url, hub.wake).start()
        streams.open()
        # The server stopping ends the open streams (``server.GuardedProtocol.shutdown``):
        # it waits for open responses before this resumes.
        yield
        streams.close()
        if listener is not None:
            await asyncio.to_thread(listener.stop)
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await hub.close()
        if job_spans is not None:  # what ended by now, and what is buffered, goes out
            await asyncio.to_thread(_flush_spans, job_spans)
        await asyncio.to_thread(app.state.uploads.close)
        await app.state.rate_limiter.close()
        if owns_store:
            store.close()

    app = App(
        title="morag-progress",
        summary="Job progress reporting: workers report, people and programs watch.",
        version=_version(),
        lifespan=lifespan,
        docs_url=None,  # served by dashboard.mount, which no other site may frame
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.tracker = tracker
    app.state.estimates = Estimates(store)
    app.state.hub = hub
    app.state.streams = streams
    app.state.shared_reads = SharedReads()
    app.state.webhooks = hooks
    app.state.authenticator = Authenticator(
        store,
        cache_seconds=settings.key_cache_seconds,
        failures_per_minute=settings.auth_failures_per_minute,
    )
    app.state.rate_limiter = (
        SharedRateLimiter(settings.redis_url, settings.rate_limit_per_second)
        if settings.redis_url
        else RateLimiter(settings.rate_limit_per_second)
    )
    per_minute = settings.jobs_per_minute_per_user
    app.state.job_quota = RateLimiter(
        per_minute / 60,
        burst=per_minute,
        what=f"this user may create at most {per_minute:g} jobs a minute",
    )
    app.state.read_gate = ReadGate(
        per_user=settings.expensive_reads_per_user, total=settings.expensive_reads
    )
    app.state.uploads = UploadParser(settings.log_parse_processes)
    app.state.metrics = metrics = Metrics(store)
    store.observe_commits(metrics.batch_size.observe)
    app.add_middleware(
        BodyLimit,
        limit=settings.max_body_bytes,
        large_limit=settings.max_log_body_bytes,
        large_suffixes=("/logs", "/remote-jobs/progress"),  # log uploads and batches
    )
    app.add_middleware(RequestTimer, metrics=metrics)  # times every request the app serves
    routers = (remote_jobs, jobs, events, webhooks, workers, ops, share)
    for module in routers:
        app.include_router(module.router)
    app.serve_ahead(remote_jobs.hot_routes)
    dashboard.mount(app)
    answers.install(app)
    return app


class App(FastAPI):
    """FastAPI, with its hottest routes served ahead of it (``routes.hot_route``).

    A report passes through none of FastAPI's own middleware and routing, which cost more
    than the update itself: a request that matches a hot route (path and method) is served by
    that plain Starlette route inside the app's user middleware (ours, and any an embedder
    adds before the first request), with the app's own exception handlers, so it is answered
    exactly as any route. Everything else, a hot path with another method included, is
    FastAPI's. The routes stay declared on FastAPI's router for the OpenAPI schema.
    """

    _hot: tuple[Route, ...] = ()
    _hot_stack: ASGIApp | None = None

    def serve_ahead(self, routes: Sequence[Route]) -> None:
        """Serve ``routes`` ahead of FastAPI's middleware and router."""
        self._hot = tuple(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for route in self._hot:
                match, child = route.matches(scope)
                if match is Match.FULL:
                    scope.update(child)
                    scope["app"] = self
                    await self._hot_app()(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)

    def _hot_app(self) -> ASGIApp:
        """The hot routes' stack, built at the first request, as Starlette builds every
        route's (by then the middleware is complete). A hot route answers its own errors
        with the app's handlers (``routes.hot_route``)."""
        if self._hot_stack is None:

            async def handle(scope: Scope, receive: Receive, send: Send) -> None:
                await scope["route"].app(scope, receive, send)

            stack: ASGIApp = handle
            for middleware in reversed(self.user_middleware):  # listed outermost first
                stack = middleware.cls(stack, *middleware.args, **middleware.kwargs)
            self._hot_stack = ServerErrorMiddleware(stack)
        return self._hot_stack


def _version() -> str:
    from morag_progress import __version__

    return __version__


def _flush_spans(job_spans: JobSpans) -> None:
    try:
        job_spans.export_ended()
    except Exception:  # the server is stopping: say so, and stop anyway
        logger.warning("exporting the last job spans failed", exc_info=True)
    job_spans.shutdown()
