"""The dashboard: served with a strict policy, and driven in real headless Chromium (Debian's
``chromium``, through Playwright): sign in with a key, watch a bar move when a worker reports,
open a job's page, cancel from it."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from morag_progress.api import create_app
from morag_progress.keys import Role, create_key
from morag_progress.models import JobStatus, utcnow
from morag_progress.settings import Settings
from morag_progress.store import SQLStore
from morag_progress.tracker import JobTracker
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


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, JobTracker, str]]:
    store = SQLStore(f"sqlite:///{tmp_path / 'site.db'}")
    settings = Settings(rate_limit_per_second=0, key_cache_seconds=0, feed_poll_seconds=0.05)
    server = LiveServer(create_app(settings, store=store)).start()
    _, key = create_key(store, user_id="alice", role=Role.USER, name="browser", now=utcnow())
    try:
        yield server.url, JobTracker(store=store), key
    finally:
        server.stop()
        store.close()


def sign_in(page: Any, url: str, key: str) -> None:
    page.goto(url)
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("status").get_by_text("Live", exact=True).wait_for(timeout=5000)


def test_bar_moves_within_a_second_of_a_report(
    browser: Any, site: tuple[str, JobTracker, str]
) -> None:
    """A job reported over HTTP moves its bar on the page within a second; screenshot saved."""
    url, tracker, key = site
    job_id = tracker.start_job("lecture.mp3", "audio", user_id="alice")
    page = browser.new_page()
    try:
        sign_in(page, url, key)
        bar = page.get_by_role("progressbar", name="lecture.mp3 progress")
        bar.wait_for(timeout=5000)
        assert key not in page.url
        started = time.monotonic()
        response = httpx.put(
            f"{url}/api/v1/remote-jobs/{job_id}/progress",
            json={"percentage": 60, "message": "Transcribing audio content"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.status_code == 200
        page.wait_for_function(
            "() => document.querySelector('progress')?.value === 60", timeout=1000
        )
        elapsed = time.monotonic() - started
        assert elapsed < 1.0
        row = page.locator(f"tr[data-job-id='{job_id}']")
        assert "Transcribing audio content" in row.inner_text()
        assert "PROCESSING" in row.inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    finally:
        page.close()


def test_wrong_key_is_refused_on_the_page(browser: Any, site: tuple[str, JobTracker, str]) -> None:
    """A wrong key shows an alert and the page stays signed out."""
    url, _, _ = site
    page = browser.new_page()
    try:
        page.goto(url)
        page.get_by_label("API key").fill("mpk_wrong")
        page.keyboard.press("Enter")
        alert = page.get_by_role("alert").first
        alert.wait_for(timeout=5000)
        page.wait_for_function(
            "() => document.querySelector('#signin-error').textContent.includes('failed')",
            timeout=5000,
        )
        assert page.locator("#jobs-section").is_hidden()
    finally:
        page.close()


def test_job_page_history_children_and_cancel_by_keyboard(
    browser: Any, site: tuple[str, JobTracker, str]
) -> None:
    """Keyboard opens a job's page with its history chart and children; Cancel requests it;
    filters hide jobs of other statuses."""
    url, tracker, key = site
    parent = tracker.start_job("course", "bundle", user_id="alice")
    tracker.start_job("part-1.mp3", "audio", user_id="alice", parent_id=parent)
    for percentage in (10, 30, 45):
        tracker.update_progress(parent, percentage, None, f"at {percentage}", "alice")
    page = browser.new_page()
    try:
        sign_in(page, url, key)
        name = page.get_by_role("button", name="course")
        name.focus()
        page.keyboard.press("Enter")
        page.get_by_role("heading", name="course").wait_for(timeout=5000)
        page.get_by_text("part-1.mp3: PENDING 0%").wait_for(timeout=5000)
        assert page.locator("#chart polyline").count() == 1
        page.get_by_role("button", name="Cancel this job").click()
        deadline = time.monotonic() + 5
        while not (job := tracker.get_job(parent)) or not job.cancel_requested:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        page.get_by_role("button", name="Back to all jobs").click()
        page.get_by_label("Status").select_option("PENDING")
        page.get_by_role("button", name="part-1.mp3").wait_for(timeout=5000)
        assert page.get_by_role("button", name="course").count() == 0
        assert tracker.get_job(parent).status is JobStatus.PROCESSING  # type: ignore[union-attr]
    finally:
        page.close()


def test_new_jobs_appear_without_a_reload(browser: Any, site: tuple[str, JobTracker, str]) -> None:
    """A job created after sign-in shows up from the stream."""
    url, tracker, key = site
    page = browser.new_page()
    try:
        sign_in(page, url, key)
        tracker.start_job("late.pdf", "document", user_id="alice")
        tracker.update_progress(tracker.list_jobs("alice")[0].id, 5, None, "started", "alice")
        page.get_by_role("button", name="late.pdf").wait_for(timeout=5000)
    finally:
        page.close()


def test_read_only_link_signs_in_and_leaves_the_address_bar(
    browser: Any, site: tuple[str, JobTracker, str]
) -> None:
    """A link with a stream token in its fragment signs in read-only; the token leaves the
    address bar; cancelling needs a key."""
    url, tracker, key = site
    job_id = tracker.start_job("linked.mp3", "audio", user_id="alice")
    tracker.update_progress(job_id, 30, None, "working", "alice")
    token = httpx.post(
        f"{url}/api/v1/stream-tokens", headers={"Authorization": f"Bearer {key}"}
    ).json()["token"]
    page = browser.new_page()
    try:
        page.goto(f"{url}/#token={token}")
        page.get_by_role("button", name="linked.mp3").wait_for(timeout=5000)
        assert token not in page.url
        page.get_by_role("button", name="linked.mp3").click()
        page.get_by_role("button", name="Cancel this job").click()
        page.get_by_text("a stream token only reads").wait_for(timeout=5000)
        job = tracker.get_job(job_id)
        assert job is not None
        assert not job.cancel_requested
    finally:
        page.close()
