"""The search index: a search through it finds exactly what the substring scan finds (ids,
names, a running job's current message, an ended job's last one, in any case, with LIKE's
wildcards as text), kept by the jobs table's own changes, and another user's jobs never."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from morag_progress.models import JobStatus
from morag_progress.store import SQLStore, search
from morag_progress.tracker import JobTracker

MakeJob = Callable[..., str]


@pytest.fixture
def jobs_to_find(tracker: JobTracker, make_job: MakeJob) -> dict[str, str]:
    """Alice's jobs in each state the index treats apart, and one of Bob's."""
    made = {
        "lecture": make_job(document_name="Lecture_01 über.mp3", job_id="job-lec"),
        "running": make_job(document_name="talk.mp3", job_id="run-1"),
        "ended": make_job(document_name="scan 50%.pdf", job_id="end-1"),
        "failed": make_job(document_name='Quote "x".txt', job_id="fail-1"),
        "bob": make_job(user_id="bob", document_name="lecture of bob", job_id="bob-1"),
    }
    tracker.update_progress("run-1", 10, summary="Downloading parts", user_id="alice")
    tracker.update_progress("run-1", 20, summary="Transcribing GERMAN audio", user_id="alice")
    tracker.update_progress("end-1", 100, summary="Indexed 40 pages", user_id="alice")
    tracker.mark_failed("fail-1", "decoder crashed: bad frame", user_id="alice")
    return made


QUERIES = {
    "LECTURE": {"job-lec"},
    "ÜBER": {"job-lec"},  # the index folds every letter
    "german": {"run-1"},  # a running job's current message
    "downloading": set(),  # its earlier one is not the job's message any more
    "40 pages": {"end-1"},  # an ended job's last message
    "DECODER crashed": {"fail-1"},
    '"x"': {"fail-1"},
    "50%": {"end-1"},  # % and _ are text, not wildcards
    "e_0": {"job-lec"},
    "RUN-1": {"run-1"},
    "of bob": set(),  # another user's job
    "nothing like it": set(),
}


@pytest.mark.usefixtures("jobs_to_find")
@pytest.mark.parametrize(("query", "found"), sorted(QUERIES.items()))
def test_a_search_finds_the_users_jobs_by_id_name_or_message(
    tracker: JobTracker, query: str, found: set[str]
) -> None:
    """Through the index (three characters or more) and the scan alike."""
    assert {j.id for j in tracker.list_jobs("alice", search=query)} == found


@pytest.mark.usefixtures("jobs_to_find")
def test_counts_search_the_same_way(tracker: JobTracker) -> None:
    counts = tracker.store.count_jobs(user_id="alice", search="pages")
    assert counts == {(JobStatus.FINISHED.value, "audio"): 1}


@pytest.mark.usefixtures("jobs_to_find")
def test_past_the_candidate_limit_the_scan_answers_the_same(
    tracker: JobTracker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A text with more matches than the index hands over is found by the scan, and the
    page is the same."""
    through_index = [j.id for j in tracker.list_jobs("alice", search="mp3")]
    monkeypatch.setattr(search, "MAX_CANDIDATES", 1)
    assert [j.id for j in tracker.list_jobs("alice", search="mp3")] == through_index
    assert through_index == ["run-1", "job-lec"]


def test_the_index_follows_status_changes_and_deletes(
    tracker: JobTracker, make_job: MakeJob, store: SQLStore
) -> None:
    """A requeued job's old final message is no longer its message; a deleted job leaves the
    index."""
    job = make_job(
        document_name="clip.mp4", job_id="clip", status=JobStatus.WAITING_FOR_REMOTE_WORKER
    )
    assert tracker.claim("gpu", claimant="k1", user_id="alice") is not None
    tracker.mark_failed(job, "out of memory", user_id="alice")
    assert [j.id for j in tracker.list_jobs("alice", search="of memory")] == [job]
    tracker.requeue(job, "alice")
    assert tracker.list_jobs("alice", search="of memory") == []
    assert [j.id for j in tracker.list_jobs("alice", search="clip.mp4")] == [job]
    with store._engine.begin() as conn:
        conn.execute(text("DELETE FROM jobs WHERE id = 'clip'"))
        assert conn.execute(text(f"SELECT count(*) FROM {search.TABLE}")).scalar() == 0


def test_each_database_keeps_its_own_index(store: SQLStore) -> None:
    """SQLite: an FTS5 table with the trigram tokenizer; PostgreSQL: pg_trgm's GIN index,
    made with the table where the extension is at hand (here)."""
    if store.dialect == "sqlite":
        query = "SELECT sql FROM sqlite_master WHERE name = :n"
        name, expected = search.TABLE, "tokenize = 'trigram'"
    else:
        query = "SELECT indexdef FROM pg_indexes WHERE indexname = :n"
        name, expected = f"ix_{search.TABLE}_trigrams", "gin_trgm_ops"
    with store._engine.connect() as conn:
        found = conn.execute(text(query), {"n": name}).scalar()
    assert found is not None
    assert expected in found


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(query=st.text(alphabet="abcLECTURxyz_%.-1 ", min_size=3, max_size=6))
def test_the_index_agrees_with_the_scan(
    tracker: JobTracker, jobs_to_find: dict[str, str], query: str
) -> None:
    """Any text finds through the index what the scan finds (ASCII, where both fold case)."""
    through_index = [j.id for j in tracker.list_jobs("alice", search=query)]
    original = search.MAX_CANDIDATES
    search.MAX_CANDIDATES = -1
    try:
        scanned = [j.id for j in tracker.list_jobs("alice", search=query)]
    finally:
        search.MAX_CANDIDATES = original
    assert through_index == scanned
