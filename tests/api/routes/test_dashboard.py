"""The dashboard, driven in real headless Chromium (Debian's ``chromium``, through Playwright).

Each test backs a row of the feature table in docs/dashboard.md and saves what it looked at
as ``test-artifacts/dashboard-*.png``.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from morag_progress.api import create_app
from morag_progress.deadlines import Risk, Verdict
from morag_progress.keys import Role
from morag_progress.models import JobStatus, ProgressUpdate, utcnow
from morag_progress.settings import Settings
from morag_progress.store import SQLStore
from morag_progress.store.schema import jobs as jobs_table
from morag_progress.tracker import JobTracker
from tests.helpers import stall
from tests.live import LiveServer
from tests.services import unavailable

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WIDE = {"width": 1280, "height": 860}


async def test_page_and_files_are_served_with_a_strict_policy(client: httpx.AsyncClient) -> None:
    """/ is the page, with a same-origin content policy; its script and style are served."""
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<label for="key">API key</label>' in page.text
    script = await client.get("/dashboard/dashboard.js")
    assert script.status_code == 200
    assert "EventSource" in script.text
    assert (await client.get("/dashboard/nope.js")).status_code == 404
    assert "/" not in (await client.get("/openapi.json")).json()["paths"]


async def test_the_page_says_whether_the_server_exports_job_spans(store: SQLStore) -> None:
    """The page tells its script whether job spans are exported (the job page then shows a
    trace id); off by default."""
    for traces, said in ((False, "off"), (True, "on")):
        app = create_app(Settings(otel_traces=traces), store=store)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            page = (await client.get("/")).text
        assert f'<meta name="morag-tracing" content="{said}">' in page


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        unavailable("chromium not found (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=FLAGS)
        yield browser
        browser.close()


@dataclass
class Site:
    url: str
    tracker: JobTracker
    store: SQLStore
    key: str
    actor: str
    """Who the browser's key is in the audit trail."""

    def put(self, job_id: str, **body: Any) -> httpx.Response:
        return httpx.put(
            f"{self.url}/api/v1/remote-jobs/{job_id}/progress",
            json=body,
            headers={"Authorization": f"Bearer {self.key}"},
        )

    def job(self, job_id: str) -> Any:
        job = self.tracker.get_job(job_id, "alice")
        assert job is not None
        return job


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    store = SQLStore(f"sqlite:///{tmp_path / 'site.db'}")
    settings = Settings(rate_limit_per_second=0, key_cache_seconds=0, feed_poll_seconds=0.05)
    server = LiveServer(create_app(settings, store=store)).start()
    made, key = store.create_key(user_id="alice", role=Role.USER, name="browser", now=utcnow())
    try:
        yield Site(server.url, JobTracker(store=store), store, key, f"user:{made.id}")
    finally:
        server.stop()
        store.close()


@pytest.fixture
def page(browser: Any, site: Site) -> Iterator[Any]:
    """A page in a fresh context, closed before the server stops (an open event stream would
    hold the server's shutdown)."""
    context = browser.new_context(viewport=WIDE)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def sign_in(page: Any, site: Site, where: str = "") -> None:
    page.goto(f"{site.url}/{where}")
    page.get_by_label("API key").fill(site.key)
    page.get_by_role("button", name="Sign in").click()
    page.locator("#connection", has_text="Live").wait_for(timeout=5000)


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


def wait_rows(page: Any, expected: list[str], table: str = "#jobs") -> None:
    """Wait until the table's rows are the jobs ``expected``, in order."""
    page.wait_for_function(
        "([table, ids]) => JSON.stringify([...document.querySelectorAll(table + ' tbody tr')]"
        ".map(r => r.dataset.jobId)) === JSON.stringify(ids)",
        arg=[table, expected],
        timeout=5000,
    )


def test_bar_moves_within_a_second_of_a_report(page: Any, site: Site) -> None:
    """Live: a job reported over HTTP moves its bar on the page within a second."""
    job_id = site.tracker.start_job("lecture.mp3", "audio", user_id="alice")
    sign_in(page, site)
    page.get_by_role("progressbar", name="lecture.mp3 progress").wait_for(timeout=5000)
    assert site.key not in page.url
    started = time.monotonic()
    assert site.put(job_id, percentage=60, message="Transcribing audio content").status_code == 200
    page.wait_for_function("() => document.querySelector('progress')?.value === 60", timeout=1000)
    assert time.monotonic() - started < 1.0
    row = page.locator(f"tr[data-job-id='{job_id}']")
    assert "Transcribing audio content" in row.inner_text()
    assert "PROCESSING" in row.inner_text()
    shot(page, "live")


def test_the_servers_eta_with_its_range(page: Any, site: Site) -> None:
    """The list and the job page show the server's ETA; its p10-p90 range and basis are on
    hover and on the page."""
    job_id = site.tracker.start_job("render.mov", "video", user_id="alice")
    now = utcnow()
    for seconds_ago, pct in ((20, 10), (10, 20), (0, 30)):
        at = (now - timedelta(seconds=seconds_ago)).isoformat()
        assert site.put(job_id, percentage=pct, timestamp=at).status_code == 200
    expected = httpx.get(
        f"{site.url}/api/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {site.key}"}
    ).json()
    assert expected["eta_basis"] == "live"
    sign_in(page, site)
    cell = page.locator(f"tr[data-job-id='{job_id}'] td").last
    cell.locator("span").wait_for(timeout=5000)
    assert ":" in cell.inner_text()  # m:ss
    assert "p10–p90" in (cell.locator("span").get_attribute("title") or "")
    assert "this job's pace" in (cell.locator("span").get_attribute("title") or "")
    page.get_by_role("link", name="render.mov").click()
    facts = page.locator("#facts")
    facts.get_by_text("left (likely").wait_for(timeout=5000)
    shot(page, "eta")


def test_wrong_key_is_refused_on_the_page(page: Any, site: Site) -> None:
    """Signed out, the page says how to get a key and shows no view that needs one; a wrong
    key shows an alert and the page stays signed out."""
    page.goto(site.url)
    hint = page.locator("#signin-hint")
    assert "morag-progress keys create --user <you>" in hint.inner_text()
    assert page.locator("#nav").is_hidden()
    shot(page, "signin")
    page.get_by_label("API key").fill("mpk_wrong")
    page.keyboard.press("Enter")
    page.locator("#signin-error", has_text="failed").wait_for(timeout=5000)
    assert page.locator("#jobs-view").is_hidden()


def test_filters_counts_and_search_are_the_servers_and_live_in_the_url(
    page: Any, site: Site
) -> None:
    """Counts per status come from the server; choosing FAILED lists every failed job (not
    only the newest hundred); type and search filter on the server; each filter is in the
    address, so reload and back keep it."""
    tracker = site.tracker
    failed = []
    for i in range(8):
        job_id = tracker.start_job(f"broken-{i}.pdf", "pdf", user_id="alice")
        tracker.mark_failed(job_id, f"parse error {i}", "alice")
        failed.append(job_id)
    for i in range(120):  # newer than the failed ones: a browser-side filter would miss them
        tracker.start_job(f"scan-{i}.png", "image", user_id="alice")
    lecture = tracker.start_job("Lecture 7.mp3", "audio", user_id="alice")
    tracker.update_progress(lecture, 40, None, "Transcribing GERMAN audio", "alice")
    sign_in(page, site)
    counts = page.locator("#counts")
    counts.get_by_role("link", name="All 129").wait_for(timeout=5000)
    shown = " ".join(counts.inner_text().split())
    assert "FAILED 8" in shown
    assert "PENDING 120" in shown

    counts.get_by_role("link", name="FAILED 8").click()
    wait_rows(page, failed[::-1])
    assert "status=FAILED" in page.url
    assert page.locator("#counts a[aria-current]").inner_text().split() == ["FAILED", "8"]
    assert "parse error 7" in page.locator("#jobs tbody tr").first.inner_text()
    shot(page, "filter-failed")
    page.reload()
    page.locator("#connection", has_text="Live").wait_for(timeout=5000)  # the key survives
    wait_rows(page, failed[::-1])

    page.go_back()  # to the unfiltered list
    page.wait_for_function("() => !location.hash.includes('FAILED')", timeout=5000)
    page.wait_for_function(
        "() => document.querySelectorAll('#jobs tbody tr').length === 50", timeout=5000
    )

    page.get_by_label("Type").select_option("audio")
    wait_rows(page, [lecture])
    assert "type=audio" in page.url
    page.get_by_label("Type").select_option("")
    page.wait_for_function("() => !location.hash.includes('type=')", timeout=5000)
    page.get_by_label("Search").fill("german")
    # The search goes to the address (and the server) once typing pauses.
    page.wait_for_function("() => location.hash.includes('q=german')", timeout=5000)
    wait_rows(page, [lecture])
    page.get_by_label("Search").fill("no such thing")
    page.get_by_text("No jobs match these filters.").wait_for(timeout=5000)
    shot(page, "search-empty")


def test_keyset_pages_reach_every_job(page: Any, site: Site) -> None:
    """Pages of 50 from the server: Older walks back to the first job ever made, Newest
    returns; each page has its own address."""
    made = [site.tracker.start_job(f"doc-{i}.pdf", "pdf", user_id="alice") for i in range(120)]
    sign_in(page, site)
    wait_rows(page, made[::-1][:50])
    page.get_by_role("link", name="Older →").click()
    wait_rows(page, made[::-1][50:100])
    assert "cursor=" in page.url
    page.get_by_role("link", name="Older →").click()
    wait_rows(page, made[::-1][100:])
    assert page.get_by_role("link", name="Older →").is_hidden()
    shot(page, "last-page")
    page.get_by_role("link", name="← Newest").click()
    wait_rows(page, made[::-1][:50])


def test_job_page_has_its_own_address_and_every_field(page: Any, site: Site) -> None:
    """A job's page at #/jobs/<id> opens directly (shared link, reload): id, type, status,
    attempt, worker, times (relative, absolute on hover), duration, error, a chart with
    percent and time axes, the history as a paged table, children as links with bars, and
    the link back to the parent."""
    tracker = site.tracker
    parent = tracker.start_job("course", "bundle", user_id="alice")
    child = tracker.start_job(
        "part-1.mp3",
        "audio",
        user_id="alice",
        parent_id=parent,
        status=JobStatus.WAITING_FOR_REMOTE_WORKER,
    )
    tracker.start_job("part-2.mp3", "audio", user_id="alice", parent_id=parent)
    assert tracker.claim("gpu-07", claimant="k1", user_id="alice") is not None
    for pct in range(1, 61):  # 60 changes (+ creation and claim): more than a history page
        tracker.update_progress(child, pct, None, f"chunk {pct}", "alice")
    tracker.mark_failed(child, "CUDA out of memory", "alice")
    sign_in(page, site, f"#/jobs/{child}")
    page.get_by_role("heading", name="part-1.mp3").wait_for(timeout=5000)
    page.locator("#facts").get_by_role("link", name="course").wait_for(timeout=5000)  # parent
    facts = page.locator("#facts").inner_text()
    for expected in (child, "audio", "Attempt", "gpu-07", "Created", "Started", "Ended",
                     "Duration", "Created by", site.tracker.actor):  # fmt: skip
        assert expected in facts, expected
    # this server exports no spans: a trace id would lead nowhere
    assert "Trace" not in facts
    assert site.job(child).traceparent[3:35] not in facts
    assert page.locator("#job-status").inner_text() == "FAILED"
    assert "CUDA out of memory" in page.locator("#job-error-text").inner_text()
    assert "CUDA out of memory" not in facts  # the error once, not again as the message
    red = "rgb(179, 38, 30)"  # a failed job's bar and line, as its badge
    assert page.locator("#facts progress").evaluate("e => getComputedStyle(e).accentColor") == red
    assert page.locator("#chart polyline").evaluate("e => getComputedStyle(e).stroke") == red
    created = page.locator("#facts time").first
    assert created.inner_text() in ("just now", "now") or "ago" in created.inner_text()
    assert created.get_attribute("datetime") in (created.get_attribute("title") or "")
    assert (created.get_attribute("datetime") or "").endswith("Z")  # the UTC time on hover
    # one date format everywhere, not the browser locale's ("12/2/2026, 6:21:36 PM")
    local = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    assert re.match(local + r" \(", created.get_attribute("title") or ""), created.get_attribute(
        "title"
    )
    caption = page.locator("#chart-caption").inner_text()
    assert re.search(r"changes since " + local + ", now", caption), caption
    ticks = page.locator("#chart text").evaluate_all("ts => ts.map(t => t.textContent)")
    assert {"0%", "50%", "100%"} <= set(ticks)
    times = page.locator("#chart text.tick").evaluate_all("ts => ts.map(t => t.textContent)")[5:]
    assert times[0] in ("0 ms", "0 s")  # a job of under a second (or ten): the time axis
    # round steps (0, 200, 400 ms...), not the span's quarters (0, 193, 386 ms...)
    values = [int(label.split()[0]) for label in times]
    step = values[1] - values[0]
    assert values == [i * step for i in range(len(values))], times
    assert int(str(step).rstrip("0") or "0") in (1, 2, 3, 5, 15), times
    assert page.locator("#chart polyline").count() == 1
    history = page.locator("#history tbody tr")
    page_size = 25  # 63 changes: pages of 25, 25 and 13
    assert history.count() == page_size
    assert "CUDA out of memory" in history.first.inner_text()  # newest first
    assert site.tracker.actor in history.first.locator("td.actor").inner_text()  # who did it
    assert history.first.locator("time").get_attribute("datetime")
    shot(page, "job")
    earlier = page.get_by_role("button", name="Earlier changes →")
    for _ in range(2):  # each click once the page before it has come
        top = history.first.inner_text()
        earlier.click()
        page.wait_for_function(
            "top => document.querySelector('#history tbody tr').innerText !== top",
            arg=top,
            timeout=5000,
        )
    page.wait_for_function(
        f"() => document.querySelectorAll('#history tbody tr').length < {page_size}",
        timeout=5000,
    )
    assert earlier.is_hidden()  # the last page
    assert "Processing audio document" in history.last.inner_text()  # the first change
    page.get_by_role("button", name="← Latest changes").click()
    page.wait_for_function(
        f"() => document.querySelectorAll('#history tbody tr').length === {page_size}",
        timeout=5000,
    )

    page.locator("#facts").get_by_role("link", name="course").click()
    page.get_by_role("heading", name="course").wait_for(timeout=5000)
    assert page.url.endswith(f"#/jobs/{parent}")
    children = page.locator("#children")
    children.get_by_role("link", name="part-2.mp3").wait_for(timeout=5000)
    assert children.get_by_role("progressbar").count() == 2
    shot(page, "parent")
    page.reload()
    page.get_by_role("heading", name="course").wait_for(timeout=5000)
    page.go_back()
    page.get_by_role("heading", name="part-1.mp3").wait_for(timeout=5000)


def test_cancel_asks_first_and_shows_the_request_until_the_worker_stops(
    page: Any, site: Site
) -> None:
    """Cancel opens a confirmation; keeping the job changes nothing; confirming shows
    "cancel requested" until the worker acknowledges, then CANCELLED."""
    job_id = site.tracker.start_job("long.mp4", "video", user_id="alice")
    site.tracker.update_progress(job_id, 30, None, "Decoding", "alice")
    sign_in(page, site, f"#/jobs/{job_id}")
    page.get_by_role("heading", name="long.mp4").wait_for(timeout=5000)
    page.get_by_role("button", name="Cancel job…").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Cancel this job?").wait_for(timeout=5000)
    shot(page, "cancel-confirm")
    dialog.get_by_role("button", name="Keep it").click()
    assert not site.job(job_id).cancel_requested
    page.get_by_role("button", name="Cancel job…").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel job").click()
    note = page.locator("#cancel-note")
    note.get_by_text("Cancel requested").wait_for(timeout=5000)
    assert site.job(job_id).cancel_requested
    assert page.get_by_role("button", name="Cancel job…").is_hidden()
    newest = page.locator("#history tbody tr").first  # the audit trail: who asked, and what
    newest.get_by_text("cancel requested").wait_for(timeout=5000)
    # by the key's name ("browser"), its actor on hover
    assert newest.locator("td.actor").inner_text() == "browser"
    assert newest.locator("td.actor [title]").get_attribute("title") == site.actor
    shot(page, "cancel-requested")
    site.tracker.mark_cancelled(job_id, "alice")  # the worker saw it and stopped
    page.locator("#job-status", has_text="CANCELLED").wait_for(timeout=5000)
    assert note.is_hidden()


def test_requeue_a_failed_remote_job_from_its_page(page: Any, site: Site) -> None:
    """A failed remote job offers Requeue; confirmed, it waits for a worker again at 0%."""
    job_id = site.tracker.start_job(
        "clip.mov", "video", user_id="alice", status=JobStatus.WAITING_FOR_REMOTE_WORKER
    )
    assert site.tracker.claim("gpu-01", claimant="k1", user_id="alice") is not None
    site.tracker.update_progress(job_id, 70, None, "Encoding", "alice")
    site.tracker.mark_failed(job_id, "worker lost its GPU", "alice")
    local = site.tracker.start_job("local.txt", "text", user_id="alice")
    site.tracker.mark_failed(local, "boom", "alice")
    sign_in(page, site, f"#/jobs/{local}")
    page.get_by_role("heading", name="local.txt").wait_for(timeout=5000)
    assert page.get_by_role("button", name="Requeue…").is_hidden()  # not a remote job
    page.goto(f"{site.url}/#/jobs/{job_id}")
    page.get_by_role("heading", name="clip.mov").wait_for(timeout=5000)
    page.get_by_role("button", name="Requeue…").click()
    page.get_by_role("dialog").get_by_role("button", name="Requeue").click()
    page.locator("#job-status", has_text="WAITING").wait_for(timeout=5000)
    job = site.job(job_id)
    assert (job.status, job.percentage, job.error) == (JobStatus.WAITING_FOR_REMOTE_WORKER, 0, None)
    shot(page, "requeued")


def test_a_job_with_a_checkpoint_says_a_requeue_resumes_from_it(page: Any, site: Site) -> None:
    """A failed remote job whose worker saved a checkpoint at 60%: its page says so, the
    requeue dialog says the job goes back at 60% to resume from it, and it does."""
    job_id = site.tracker.start_job(
        "train.ckpt", "training", user_id="alice", status=JobStatus.WAITING_FOR_REMOTE_WORKER
    )
    assert site.tracker.claim("gpu-01", claimant="k1", user_id="alice") is not None
    saved = ProgressUpdate(job_id, 60, "epoch 6", user_id="alice", checkpoint={"epoch": 6})
    assert site.tracker.apply(saved).applied
    site.tracker.update_progress(job_id, 64, None, "epoch 7", "alice")
    site.tracker.mark_failed(job_id, "node lost", "alice")
    sign_in(page, site, f"#/jobs/{job_id}")
    page.get_by_role("heading", name="train.ckpt").wait_for(timeout=5000)
    facts = page.locator("#facts")
    facts.get_by_text("saved at 60%: a requeue resumes there").wait_for(timeout=5000)
    page.get_by_role("button", name="Requeue…").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("goes back to the queue at 60%", exact=False).wait_for(timeout=5000)
    shot(page, "requeue-from-checkpoint")
    dialog.get_by_role("button", name="Requeue").click()
    page.locator("#job-status", has_text="WAITING").wait_for(timeout=5000)
    job = site.job(job_id)
    assert (job.status, job.percentage, job.checkpoint) == (
        JobStatus.WAITING_FOR_REMOTE_WORKER,
        60,
        {"epoch": 6},
    )


def test_a_run_shows_its_slowest_rank_and_its_stragglers(page: Any, site: Site) -> None:
    """A distributed run of four ranks, three started: the list says 0/4 child jobs done and
    how many straggle; the run's page names its slowest rank, marked as a straggler once the
    server flags it, and links to it; the rank's own page is marked too."""
    tracker = site.tracker
    run = tracker.start_job(
        "finetune", "training", user_id="alice", job_id="run-9", expected_children=4
    )
    for rank, pct in ((0, 62), (1, 60), (2, 31)):
        tracker.start_job(
            f"finetune · rank {rank} of 4",
            "training",
            user_id="alice",
            job_id=f"run-9:rank-{rank}",
            parent_id=run,
        )
        tracker.update_progress(f"run-9:rank-{rank}", pct, None, f"step {pct}", "alice")
    now = utcnow()
    site.store.sweep_stragglers(now=now, share=0.1, hold=60)
    site.store.sweep_stragglers(now=now + timedelta(seconds=60), share=0.1, hold=60)
    sign_in(page, site, "#/")
    row = page.locator("#jobs tbody tr", has_text="finetune")
    row.get_by_text("1 straggling").wait_for(timeout=5000)
    assert "0/4 child jobs done" in row.inner_text()
    page.goto(f"{site.url}/#/jobs/{run}")
    page.get_by_role("heading", name="finetune").wait_for(timeout=5000)
    facts = page.locator("#facts")
    facts.get_by_text("0 of 4 done (3 started)").wait_for(timeout=5000)
    assert facts.locator("#slowest-link").inner_text() == "run-9:rank-2"
    assert "at 31% · straggler" in facts.inner_text()
    assert page.locator("#job-status").inner_text().split() == ["PROCESSING", "1", "straggling"]
    slow = page.locator("#children tbody tr", has_text="rank 2 of 4")
    slow.get_by_text("straggler", exact=True).wait_for(timeout=5000)
    fine = page.locator("#children tbody tr", has_text="rank 1 of 4")
    assert fine.get_by_text("straggler", exact=True).count() == 0
    shot(page, "run-with-straggler")
    facts.locator("#slowest-link").click()
    page.get_by_role("heading", name="finetune · rank 2 of 4").wait_for(timeout=5000)
    page.locator("#job-status", has_text="straggler").wait_for(timeout=5000)


def test_a_job_at_risk_is_marked_with_its_deadline(page: Any, site: Site) -> None:
    """A job the server marked at risk: a red "at risk" badge in the list and on its page,
    whose Deadline fact says when and that it is at risk; a job running longer than usual
    says so instead."""
    tracker = site.tracker
    late = tracker.start_job(
        "nightly.mp4", "video", user_id="alice", deadline=utcnow() + timedelta(minutes=20)
    )
    tracker.update_progress(late, 35, None, "Encoding", "alice")
    long = tracker.start_job("archive.zip", "zip", user_id="alice")
    tracker.update_progress(long, 60, None, "Packing", "alice")
    site.store.mark_risk(
        site.job(late), Verdict(Risk.DEADLINE, "Likely to miss its deadline"), now=utcnow()
    )
    site.store.mark_risk(
        site.job(long), Verdict(Risk.LONG, "Running longer than usual"), now=utcnow()
    )
    sign_in(page, site, "#/")
    page.locator("#jobs tbody tr", has_text="nightly.mp4").locator(
        ".badge", has_text="at risk"
    ).wait_for(timeout=5000)
    row = page.locator("#jobs tbody tr", has_text="archive.zip")
    row.locator(".badge", has_text="longer than usual").wait_for(timeout=5000)
    shot(page, "jobs-at-risk")
    page.goto(f"{site.url}/#/jobs/{late}")
    page.get_by_role("heading", name="nightly.mp4").wait_for(timeout=5000)
    facts = page.locator("#facts")
    facts.get_by_text("· at risk").wait_for(timeout=5000)
    assert "in 20 minutes" in facts.inner_text()
    assert page.locator("#job-status").inner_text().split() == ["PROCESSING", "at", "risk"]


def test_a_job_of_uneven_stages_says_how_far_along_in_time_it_is(page: Any, site: Site) -> None:
    """Runs of a kind that spend most of their time between 10% and 70% (reported with their
    own timestamps, an hour ago): a job of it at 40% shows "49% of its time" beside its bar."""
    tracker = site.tracker
    start = utcnow() - timedelta(hours=2)

    def staged(job_id: str, at: datetime, upto: int = 100) -> datetime:
        for pct in range(1, upto + 1):
            at += timedelta(seconds=1 if pct <= 10 or pct > 70 else 800 / 60)
            tracker.apply(ProgressUpdate(job_id, pct, f"{pct}%", user_id="alice", timestamp=at))
        return at

    for _ in range(4):
        start = staged(tracker.start_job("past.wav", "staged", user_id="alice"), start)
    now = tracker.start_job("now.wav", "staged", user_id="alice")
    staged(now, utcnow() - timedelta(seconds=430), upto=40)
    sign_in(page, site, f"#/jobs/{now}")
    page.get_by_role("heading", name="now.wav").wait_for(timeout=5000)
    facts = page.locator("#facts")
    facts.locator(".in-time").wait_for(timeout=5000)
    assert re.fullmatch(r"· (4[6-9]|5[0-2])% of its time", facts.locator(".in-time").inner_text())
    shot(page, "time-progress")


def test_a_share_link_shows_one_job_without_a_key(page: Any, site: Site) -> None:
    """A share link opens a page with no key and no sign-in: the job's name, bar, message
    and ETA, then its final state once it ends; nothing links anywhere else. A revoked link's
    page says it does not work."""
    job_id = site.tracker.start_job("keynote.mp4", "video", user_id="alice")
    site.put(job_id, percentage=35, message="Encoding")
    headers = {"Authorization": f"Bearer {site.key}"}
    sign_in(page, site, f"#/jobs/{job_id}")
    page.get_by_role("button", name="Share link").click()
    address = page.locator("#share-url")
    address.wait_for(timeout=5000)
    url = address.input_value()
    assert re.fullmatch(re.escape(site.url) + r"/share/msl_[\w-]+", url)
    shot(page, "share-link-made")
    link = {"url": url.removeprefix(site.url), "token": url.rsplit("/", 1)[1]}
    page.goto(site.url + link["url"])
    page.get_by_role("heading", name="keynote.mp4").wait_for(timeout=5000)
    page.get_by_text("Encoding").wait_for(timeout=5000)
    assert page.locator("#pct").inner_text() == "35%"
    assert page.locator("a").count() == 0  # no way to any other page
    assert page.get_by_text("Sign out").count() == 0
    shot(page, "share-link")
    site.put(job_id, percentage=100, message="Published")
    page.locator("#status", has_text="FINISHED").wait_for(timeout=10_000)
    page.get_by_text("This job has ended.").wait_for(timeout=5000)
    revoke = httpx.post(
        f"{site.url}/api/v1/share-links/revoke", json={"token": link["token"]}, headers=headers
    )
    assert revoke.status_code == 204
    page.goto(site.url + link["url"] + "/job")
    assert "does not work" in page.inner_text("body")


def test_workers_view(page: Any, site: Site) -> None:
    """Workers: each worker's state (running, idle, stalled with the job it fell silent on),
    its last sign of life, its current job with a bar, and what it finished and failed in the
    last hour."""
    tracker = site.tracker
    ids = [
        tracker.start_job(
            f"video-{i}.mp4", "video", user_id="alice", status=JobStatus.WAITING_FOR_REMOTE_WORKER
        )
        for i in range(4)
    ]
    for worker in ("gpu-01", "gpu-02", "gpu-02", "gpu-01"):
        assert tracker.claim(worker, claimant="k1", user_id="alice") is not None
    tracker.mark_completed(ids[0], "done", "alice")
    tracker.mark_failed(ids[1], "bad codec", "alice")
    tracker.mark_completed(ids[2], "done", "alice")
    tracker.update_progress(ids[3], 35, None, "Encoding", "alice")
    silent = tracker.start_job(
        "audio.wav", "audio", user_id="alice", status=JobStatus.WAITING_FOR_REMOTE_WORKER
    )
    assert tracker.claim("gpu-03", claimant="k1", user_id="alice") is not None
    tracker.update_progress(silent, 10, None, None, "alice")
    assert stall(tracker, silent, "alice").applied
    sign_in(page, site)
    page.get_by_role("link", name="Workers").click()
    assert page.url.endswith("#/workers")
    table = page.locator("#workers")
    table.locator("tr[data-worker='gpu-01']").wait_for(timeout=5000)
    gpu1 = table.locator("tr[data-worker='gpu-01']").inner_text()
    gpu2 = table.locator("tr[data-worker='gpu-02']").inner_text()
    assert "video-3.mp4" in gpu1
    assert "35%" in gpu1
    assert "running" in gpu1
    assert "idle" in gpu2
    gpu3 = table.locator("tr[data-worker='gpu-03']").inner_text()
    assert "stalled" in gpu3
    assert "silent on audio.wav" in gpu3
    cells = table.locator("tr[data-worker='gpu-02'] td.num").all_inner_texts()
    assert cells == ["1", "1"]
    shot(page, "workers")
    page.get_by_role("link", name="video-3.mp4").click()
    page.get_by_role("heading", name="video-3.mp4").wait_for(timeout=5000)


@pytest.mark.parametrize("width", [360, 390])
def test_usable_on_a_narrow_phone(browser: Any, site: Site, width: int) -> None:
    """At 360 and 390 px nothing runs off the screen: rows become cards, the job page
    stacks its fields."""
    job_id = site.tracker.start_job(
        "a-very-long-document-name-without-spaces-2026-11-30.pdf", "pdf", user_id="alice"
    )
    site.tracker.update_progress(job_id, 45, None, "Extracting text from page 45 of 100", "alice")
    site.tracker.start_job("manual.pdf", "pdf", user_id="alice")
    context = browser.new_context(viewport={"width": width, "height": 780}, is_mobile=True)
    page = context.new_page()
    try:
        sign_in(page, site)
        page.get_by_role("progressbar").first.wait_for(timeout=5000)
        overflow = "() => document.documentElement.scrollWidth - window.innerWidth"
        assert page.evaluate(overflow) <= 0
        shot(page, f"list-{width}px")
        page.get_by_role("link", name="manual.pdf").click()
        page.get_by_role("heading", name="manual.pdf").wait_for(timeout=5000)
        page.locator("#history tbody tr").first.wait_for(timeout=5000)
        assert page.evaluate(overflow) <= 0
        shot(page, f"job-{width}px")
    finally:
        context.close()


def test_first_paint_with_a_hundred_thousand_jobs(page: Any, site: Site) -> None:
    """With 100,000 jobs in the store the first page and the counts paint from the server
    (how fast is bench/dashboard.py's to measure; here: that they are right)."""
    now = utcnow()
    rows_: list[dict[str, Any]] = [
        {
            "id": f"bulk-{i:06d}",
            "user_id": "alice",
            "document_name": f"file-{i}.pdf",
            "document_type": "pdf",
            "status": "FINISHED" if i % 3 else "FAILED",
            "percentage": 100 if i % 3 else 40,
            "attempt": 1,
            "weight": 1.0,
            "metadata": {},
            "cancel_requested": False,
            "created_at": now - timedelta(seconds=100_000 - i),
            "updated_at": now,
            "last_seq": 0,
        }
        for i in range(100_000)
    ]
    with site.store.transaction("seed jobs") as conn:
        conn.execute(jobs_table.insert(), rows_)
    started = time.monotonic()
    sign_in(page, site)
    wait_rows(page, [f"bulk-{i:06d}" for i in range(99_999, 99_949, -1)])
    page.locator("#counts").get_by_role("link", name="All 100000").wait_for(timeout=5000)
    painted = time.monotonic() - started
    assert "FAILED 33334" in " ".join(page.locator("#counts").inner_text().split())
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "dashboard-100k.json").write_text(json.dumps({"sign_in_to_paint_s": painted}))
    shot(page, "100k")


def test_keyboard_opens_a_job_and_comes_back(page: Any, site: Site) -> None:
    """Tab to a job's link, Enter opens its page (focus moves there), Back returns."""
    site.tracker.start_job("course", "bundle", user_id="alice")
    sign_in(page, site)
    link = page.get_by_role("link", name="course")
    link.focus()
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="course").wait_for(timeout=5000)
    assert page.evaluate("document.activeElement.id") == "job-view"
    page.get_by_role("link", name="← All jobs").click()
    page.get_by_role("link", name="course").wait_for(timeout=5000)


def test_new_jobs_appear_without_a_reload(page: Any, site: Site) -> None:
    """A job created after sign-in shows up from the stream."""
    sign_in(page, site)
    job_id = site.tracker.start_job("late.pdf", "document", user_id="alice")
    site.tracker.update_progress(job_id, 5, None, "started", "alice")
    page.get_by_role("link", name="late.pdf").wait_for(timeout=5000)


def test_read_only_link_signs_in_and_leaves_the_address_bar(page: Any, site: Site) -> None:
    """A link with a stream token in its fragment signs in read-only; the token leaves the
    address bar; the page offers no action (they need a key)."""
    job_id = site.tracker.start_job("linked.mp3", "audio", user_id="alice")
    site.tracker.update_progress(job_id, 30, None, "working", "alice")
    token = httpx.post(
        f"{site.url}/api/v1/stream-tokens", headers={"Authorization": f"Bearer {site.key}"}
    ).json()["token"]
    page.goto(f"{site.url}/#token={token}")
    page.get_by_role("link", name="linked.mp3").wait_for(timeout=5000)
    assert token not in page.url
    page.get_by_role("link", name="linked.mp3").click()
    page.get_by_role("heading", name="linked.mp3").wait_for(timeout=5000)
    assert page.get_by_role("button", name="Cancel job…").is_hidden()  # reading only
    assert not site.job(job_id).cancel_requested


def test_an_expired_link_stops_and_says_so(browser: Any, tmp_path: Path) -> None:
    """When a read-only link's token runs out the page stops asking with it (no stream of
    refused requests) and asks for a key."""
    store = SQLStore(f"sqlite:///{tmp_path / 'expiry.db'}")
    settings = Settings(
        rate_limit_per_second=0, key_cache_seconds=0, feed_poll_seconds=0.05,
        stream_token_seconds=2,
    )  # fmt: skip
    server = LiveServer(create_app(settings, store=store)).start()
    _, key = store.create_key(user_id="alice", role=Role.USER, name="browser", now=utcnow())
    tracker = JobTracker(store=store)
    job_id = tracker.start_job("brief.pdf", "pdf", user_id="alice")
    context = browser.new_context(viewport=WIDE)
    try:
        token = httpx.post(
            f"{server.url}/api/v1/stream-tokens", headers={"Authorization": f"Bearer {key}"}
        ).json()["token"]
        page = context.new_page()
        page.goto(f"{server.url}/#token={token}")
        page.get_by_role("link", name="brief.pdf").wait_for(timeout=5000)
        time.sleep(2.5)
        tracker.update_progress(job_id, 10, None, "later", "alice")  # the page asks again
        page.get_by_text("This sign-in link has expired").wait_for(timeout=10_000)
        assert page.locator("#jobs-view").is_hidden()
    finally:
        context.close()
        server.stop()
        store.close()


def test_the_api_docs_render_without_the_internet(page: Any, site: Site) -> None:
    """Swagger UI at /docs and ReDoc at /redoc are served by the server itself: with every
    other host out of reach, both show the API's routes (they loaded their scripts from a
    CDN, and were blank). Only ReDoc's "powered by" logo is an image from its maker's site."""
    outside: list[str] = []

    def only_the_server(route: Any) -> None:
        if route.request.url.startswith(site.url):
            route.continue_()
        else:
            if route.request.resource_type != "image":
                outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_server)
    page.goto(f"{site.url}/docs")
    route = "/api/v1/remote-jobs/{job_id}/progress"
    page.locator(".opblock-summary-path", has_text=route).first.wait_for(timeout=10000)
    shot(page, "api-docs")
    page.goto(f"{site.url}/redoc")
    page.locator("h2", has_text="Report Progress").first.wait_for(timeout=10000)
    shot(page, "api-redoc")
    assert outside == []


def test_a_silent_job_and_a_lost_stream_do_not_look_live(browser: Any, tmp_path: Path) -> None:
    """A running job whose worker has sent nothing for a while shows "no report for m:ss",
    counting, where its ETA was; its worker's next report brings the estimate back. While the
    server is down the page says since when its stream is lost and greys what it shows; once
    the server is back the page is live again."""
    import os

    from tests.live import ServerProcess

    url = f"sqlite:///{tmp_path / 'lost.db'}"
    store = SQLStore(url)
    _, key = store.create_key(user_id="alice", role=Role.USER, name="browser", now=utcnow())
    earlier = JobTracker(store=store, clock=lambda: utcnow() - timedelta(seconds=95))
    quiet = earlier.start_job("quiet.mp3", "audio", user_id="alice")
    earlier.update_progress(quiet, 40, None, "Transcribing", "alice")
    env = {
        **os.environ,
        "MORAG_PROGRESS_DATABASE_URL": url,
        "MORAG_PROGRESS_KEY_CACHE_SECONDS": "0",
    }
    server = ServerProcess(env).start()
    context = browser.new_context(viewport=WIDE)
    page = context.new_page()
    try:
        page.goto(server.url)
        page.get_by_label("API key").fill(key)
        page.get_by_role("button", name="Sign in").click()
        page.locator("#connection", has_text="Live").wait_for(timeout=5000)
        row = page.locator(f"tr[data-job-id='{quiet}']")
        row.get_by_text(re.compile(r"no report for 1:3\d")).wait_for(timeout=5000)
        first = row.locator(".silent").inner_text()
        page.wait_for_timeout(2100)
        assert row.locator(".silent").inner_text() != first  # it keeps counting
        shot(page, "silent")
        back = httpx.put(
            f"{server.url}/api/v1/remote-jobs/{quiet}/progress",
            json={"percentage": 45, "message": "back"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert back.status_code == 200
        row.locator(".silent").wait_for(state="detached", timeout=5000)
        server.kill()
        page.locator("#connection", has_text="Disconnected since").wait_for(timeout=10000)
        assert "disconnected" in (page.locator("body").get_attribute("class") or "")
        shot(page, "disconnected")
        server.start()
        page.locator("#connection", has_text="Live").wait_for(timeout=40000)
        assert "disconnected" not in (page.locator("body").get_attribute("class") or "")
    finally:
        context.close()
        server.stop()
        store.close()
