"""Prometheus metrics of one app: updates by source and outcome, request latency, open
streams, batch sizes, webhook deliveries by outcome, and (counted when scraped) jobs by status
and how long the oldest job waiting for a remote worker has waited. ``deploy/grafana`` and
``deploy/prometheus`` chart them and alert on them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from morag_progress.models import UpdateOutcome, utcnow
from morag_progress.store import SQLStore

__all__ = ["Metrics", "RequestTimer"]


class _JobsByStatus(Collector):
    def __init__(self, store: SQLStore) -> None:
        self._store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("morag_progress_jobs", "Jobs by status.", labels=["status"])
        by_status: dict[str, int] = {}
        for (status, _kind), count in self._store.count_jobs().items():
            by_status[status] = by_status.get(status, 0) + count
        for status, count in sorted(by_status.items()):
            family.add_metric([status], count)
        yield family
        waiting = GaugeMetricFamily(
            "morag_progress_queue_oldest_seconds",
            "How long the oldest job waiting for a remote worker has waited (0: none waits).",
        )
        oldest = self._store.oldest_waiting()
        waiting.add_metric([], 0.0 if oldest is None else (utcnow() - oldest).total_seconds())
        yield waiting
        stragglers = GaugeMetricFamily(
            "morag_progress_stragglers",
            "Ranks of running distributed runs flagged as behind their siblings now.",
        )
        stragglers.add_metric([], self._store.count_stragglers())
        yield stragglers
        at_risk = GaugeMetricFamily(
            "morag_progress_jobs_at_risk",
            "Running jobs marked at risk: likely to miss their deadline, or running longer "
            "than usual.",
            labels=["risk"],
        )
        counted = self._store.count_at_risk()
        for risk in ("deadline", "long"):
            at_risk.add_metric([risk], counted.get(risk, 0))
        yield at_risk


class Metrics:
    """The instruments, in a registry of their own (two apps in one process do not mix)."""

    def __init__(self, store: SQLStore) -> None:
        self.registry = CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.updates = Counter(
            "morag_progress_updates",
            "Progress updates received, by source and what became of them.",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "morag_progress_request_duration_seconds",
            "HTTP request latency.",
            ["method", "route", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=self.registry,
        )
        self.open_streams = Gauge(
            "morag_progress_open_streams", "Event streams open now.", registry=self.registry
        )
        self.batch_size = Histogram(
            "morag_progress_commit_batch_size",
            "Updates the writer committed together in one transaction (reports, batches and"
            " log uploads of one process share them).",
            buckets=(1, 2, 5, 10, 50, 100, 250, 500, 1000),
            registry=self.registry,
        )
        self.webhooks = Counter(
            "morag_progress_webhook_deliveries",
            "Webhook delivery attempts, by outcome: delivered, retry (later) or failed (for "
            "good); deliveries dropped over a webhook's hourly cap, and pending progress "
            "deliveries superseded by the job's next; and webhooks paused after repeated "
            "failures.",
            ["outcome"],
            registry=self.registry,
        )
        outcomes = ("delivered", "retry", "failed", "dropped", "superseded", "paused")
        for outcome in outcomes:  # exported at 0 from start
            self.webhooks.labels(outcome)
        self.registry.register(_JobsByStatus(store))

    def count(self, source: str, outcome: UpdateOutcome | str, n: int = 1) -> None:
        """Record ``n`` updates from ``source`` that ended as ``outcome``."""
        self._child(self.updates, source, str(outcome)).inc(n)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one HTTP request's latency under its route template."""
        self._child(self.latency, method, route, str(status)).observe(seconds)

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once: every request records two, and the
        client's lookup (validation, a lock) cost more than the count. The label values
        are bounded (sources, outcomes, methods, route templates, statuses)."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = metric.labels(*labels)
            if len(self._children) < 10_000:
                self._children[key] = child
        return child


class RequestTimer:
    """ASGI middleware: observe each HTTP request's latency under its route template."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            self.metrics.observe_request(
                scope["method"], template, status, time.perf_counter() - start
            )
