"""``deploy/``: the Grafana dashboard and the Prometheus alerts name only metrics the server
exports, and the rules pass ``promtool`` (Debian's prometheus package), unit tests included."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx

from morag_progress.api import create_app
from morag_progress.keys import Role
from morag_progress.models import utcnow
from morag_progress.settings import Settings
from morag_progress.store import SQLStore
from tests.services import unavailable

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
NAMES = re.compile(r"\bmorag_progress_[a-z_]+\b")


def referenced() -> set[str]:
    """Every metric name the dashboard's queries and the alert rules use."""
    dashboard = json.loads((DEPLOY / "grafana" / "morag-progress.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    names = {name for expr in exprs for name in NAMES.findall(expr)}
    names |= set(NAMES.findall((DEPLOY / "prometheus" / "alerts.yml").read_text()))
    return names


async def test_every_metric_they_name_is_exported(store: SQLStore) -> None:
    """After one report, /metrics carries every series the dashboard and alerts query."""
    app = create_app(Settings(rate_limit_per_second=0, key_cache_seconds=0), store=store)
    _, key = store.create_key(user_id="alice", role=Role.USER, name=None, now=utcnow())
    auth = {"Authorization": f"Bearer {key}"}
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        job = (
            await client.post(
                "/api/v1/jobs", json={"document_name": "a", "document_type": "b"}, headers=auth
            )
        ).json()
        await client.put(
            f"/api/v1/remote-jobs/{job['id']}/progress", json={"percentage": 5}, headers=auth
        )
        text = (await client.get("/metrics")).text
    exported = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1] != "#"}
    names = referenced()
    assert {
        "morag_progress_jobs",
        "morag_progress_queue_oldest_seconds",
        "morag_progress_stragglers",
        "morag_progress_jobs_at_risk",
    } <= names
    assert names <= exported, sorted(names - exported)


def test_the_dashboard_has_a_query_in_every_panel() -> None:
    """The dashboard is Grafana JSON with a Prometheus datasource variable and a query in
    every panel (updates, latency, errors, streams, jobs, stalled, webhooks, queue wait)."""
    dashboard = json.loads((DEPLOY / "grafana" / "morag-progress.json").read_text())
    assert dashboard["templating"]["list"][0]["query"] == "prometheus"
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("outcome", "latency", "5xx", "streams", "status", "stalled", "webhook", "queue"):
        assert topic in titles, topic
    assert all(p["targets"][0]["expr"] for p in dashboard["panels"])


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    """``promtool check rules`` accepts the alerts; ``promtool test rules`` shows each one
    firing on the series that should fire it."""
    promtool = shutil.which("promtool")
    if promtool is None:
        unavailable("promtool not found (apt-get install prometheus)")
    rules = DEPLOY / "prometheus"
    for command in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]):
        done = subprocess.run(
            [str(promtool), *command],
            cwd=rules,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
