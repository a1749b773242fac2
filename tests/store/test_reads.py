"""The store's reads: a job, pages of jobs and their counts, workers, the remote queue, idle
jobs, histories and the feed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from morag_progress.models import Job, JobStatus, ProgressUpdate, utcnow
from morag_progress.store import NewJob, SQLStore
from morag_progress.store.reads import WorkerActivity


@pytest.mark.parametrize(
    ("running", "stalled", "silent_for", "state"),
    [
        (True, False, 3600, "running"),  # running wins, however long since its last report
        (True, True, 0, "running"),  # running one job while another is stalled
        (False, True, 0, "stalled"),
        (False, False, 299, "idle"),
        (False, False, 301, "offline"),
    ],
)
def test_a_workers_state(running: bool, stalled: bool, silent_for: int, state: str) -> None:
    """running a job; stalled on one; idle while seen within the offline time; else offline."""
    now = utcnow()
    job = Job(
        id="j", user_id="alice", document_name="d", document_type="t", document_id=None,
        status=JobStatus.PROCESSING, percentage=1, summary=None, current=None, total=None,
        stage=None, worker_id="gpu-01", claimed_by=None, attempt=1, parent_id=None, weight=1.0,
        metadata={}, error=None, cancel_requested=False, created_at=now, start_date=now,
        updated_at=now, end_date=None, last_seen_at=now, stall_timeout_s=None, rate=None,
    )  # fmt: skip
    activity = WorkerActivity(
        worker_id="gpu-01",
        user_id="alice",
        last_seen=now - timedelta(seconds=silent_for),
        current_job=job if running else None,
        finished=0,
        failed=0,
        stalled_job=job if stalled else None,
    )
    assert activity.state(now, timedelta(seconds=300)) == state


# -- reads on a real database ----------------------------------------------------------------

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _make(
    store: SQLStore,
    job_id: str,
    *,
    user: str = "alice",
    at: float = 0,
    kind: str = "pdf",
    parent: str | None = None,
    status: JobStatus = JobStatus.PENDING,
    stall: float | None = None,
) -> None:
    new = NewJob(
        id=job_id,
        document_name=f"{job_id}.{kind}",
        document_type=kind,
        user_id=user,
        parent_id=parent,
        status=status,
        stall_timeout_s=stall,
    )
    store.create_job(new, now=T0 + timedelta(seconds=at))


def _report(store: SQLStore, job_id: str, pct: int, at: float, **fields: object) -> None:
    when = T0 + timedelta(seconds=at)
    update = ProgressUpdate(job_id, pct, user_id=fields.pop("user", "alice"), **fields)  # type: ignore[arg-type]
    assert store.apply(update, now=when).applied


def test_a_list_is_newest_first_and_pages_by_a_cursor(store: SQLStore) -> None:
    """Newest first, ties by id (descending); a page after a job starts strictly after it,
    also among jobs made at the same instant; the cursor is the user's own job."""
    for job_id, at in (("a", 0), ("b", 1), ("c", 1), ("d", 2)):
        _make(store, job_id, at=at)
    _make(store, "c", user="bob", at=5)  # another user's job of the cursor's id
    ids = [job.id for job in store.list_jobs(user_id="alice")]
    assert ids == ["d", "c", "b", "a"]
    assert [j.id for j in store.list_jobs(user_id="alice", limit=2)] == ["d", "c"]
    assert [j.id for j in store.list_jobs(user_id="alice", after="c")] == ["b", "a"]
    assert [j.id for j in store.list_jobs(user_id="alice", after="b", limit=1)] == ["a"]
    assert store.list_jobs(user_id="alice", after="a") == []
    assert [j.id for j in store.list_jobs(user_id="bob")] == ["c"]
    assert len(store.list_jobs()) == 5  # an admin's list: every user's


def test_a_list_is_filtered_by_status_kind_parent_and_text(store: SQLStore) -> None:
    _make(store, "top", kind="course")
    _make(store, "ch1", parent="top", at=1)
    _make(store, "ch2", parent="top", at=2, kind="audio")
    _make(store, "solo", at=3)
    _report(store, "ch2", 40, 4, message="Transcribing the lecture")

    def ids(**filters: object) -> list[str]:
        return [j.id for j in store.list_jobs(user_id="alice", **filters)]  # type: ignore[arg-type]

    assert ids(status=JobStatus.PROCESSING) == ["ch2", "top"]  # the parent follows its child
    assert ids(document_type="pdf") == ["solo", "ch1"]
    assert ids(parent_id="top") == ["ch2", "ch1"]
    assert ids(top_level=True) == ["solo", "top"]
    assert ids(parent_id="top", top_level=True) == ["ch2", "ch1"]  # a parent wins
    assert ids(search="lecture") == ["ch2"]
    assert ids(search="SOLO") == ["solo"]
    assert ids(search="nothing") == []
    counts = store.count_jobs(user_id="alice")
    assert counts == {
        ("PROCESSING", "course"): 1,
        ("PENDING", "pdf"): 2,
        ("PROCESSING", "audio"): 1,
    }
    assert store.count_jobs(user_id="alice", parent_id="top") == {
        ("PENDING", "pdf"): 1,
        ("PROCESSING", "audio"): 1,
    }
    assert store.count_jobs(user_id="alice", top_level=True, search="solo") == {
        ("PENDING", "pdf"): 1
    }
    assert store.count_jobs(user_id="bob") == {}


def test_workers_are_what_they_run_and_what_they_ended(store: SQLStore) -> None:
    """A worker's current job is the latest it reported on; its finished and failed counts
    are of jobs it ended since the given time; the most recently seen first; a user sees
    their own workers only."""
    for job_id, at in (("old", 0), ("done", 1), ("bad", 2), ("now", 3), ("b1", 4)):
        _make(store, job_id, at=at, user="bob" if job_id == "b1" else "alice")
    _report(store, "old", 100, 5, worker_id="w1")  # ended before the window
    _report(store, "done", 100, 20, worker_id="w1")
    _report(store, "bad", 30, 21, worker_id="w1")
    assert store.apply(
        ProgressUpdate.final("bad", success=False, user_id="alice"), now=T0 + timedelta(seconds=22)
    ).applied
    _report(store, "now", 10, 30, worker_id="w2")
    _report(store, "b1", 10, 31, worker_id="w3", user="bob")
    since = T0 + timedelta(seconds=10)
    mine = store.workers(user_id="alice", since=since)
    assert [(w.worker_id, w.finished, w.failed) for w in mine] == [("w2", 0, 0), ("w1", 1, 1)]
    assert mine[0].current_job is not None
    assert mine[0].current_job.id == "now"
    assert mine[1].current_job is None
    assert mine[1].last_seen == T0 + timedelta(seconds=22)
    assert [w.worker_id for w in store.workers(since=since)] == ["w3", "w2", "w1"]


def test_the_remote_queue_oldest_first_with_its_workers(store: SQLStore) -> None:
    for job_id, at in (("r2", 2), ("r1", 1), ("r3", 3)):
        _make(store, job_id, at=at, status=JobStatus.WAITING_FOR_REMOTE_WORKER)
    _make(store, "other", user="bob", status=JobStatus.WAITING_FOR_REMOTE_WORKER)
    assert store.oldest_waiting() == T0
    claimed = store.claim(
        user_id="alice", worker_id="gpu", claimant="k", document_types=None, now=T0
    )
    assert claimed is not None
    assert claimed.id == "r1"  # the oldest waiting
    queue = store.remote_queue("alice", since=T0)
    assert [j.id for j in queue.waiting] == ["r2", "r3"]
    assert [j.id for j in queue.running] == ["r1"]
    assert queue.workers == 1
    assert store.remote_queue("bob", since=T0).workers == 0


def test_idle_and_stall_reads(store: SQLStore) -> None:
    """Jobs in the given statuses not heard from since a time, longest silent first; the
    shortest stall timeout among running jobs."""
    _make(store, "quiet", stall=30)
    _make(store, "chatty", stall=600)
    _make(store, "waiting")
    _report(store, "quiet", 10, 5)
    _report(store, "chatty", 10, 50)
    idle = store.idle_jobs(statuses=[JobStatus.PROCESSING], seen_before=T0 + timedelta(60))
    assert [j.id for j in idle] == ["quiet", "chatty"]
    idle = store.idle_jobs(statuses=[JobStatus.PROCESSING], seen_before=T0 + timedelta(seconds=50))
    assert [j.id for j in idle] == ["quiet"]
    assert store.shortest_stall_timeout() == 30


def test_a_history_reads_between_event_ids_either_way(store: SQLStore) -> None:
    _make(store, "j")
    _make(store, "j", user="bob")
    for n in range(1, 6):
        _report(store, "j", 10 * n, n)
    events = store.history("j", user_id="alice")
    assert [e.percentage for e in events] == [0, 10, 20, 30, 40, 50]
    first, *_, last = events
    assert store.history("j", user_id="alice", after=first.id)[0].percentage == 10
    assert store.history("j", user_id="alice", before=last.id)[-1].percentage == 40
    newest = store.history("j", user_id="alice", newest_first=True, limit=2)
    assert [e.percentage for e in newest] == [50, 40]
    assert store.history("j", user_id="carol") == []
    assert len(store.history("j", user_id="bob")) == 1
    assert store.last_event_id("j", "alice") == last.id
    assert store.last_event_id("j", "bob") < last.id
    assert store.last_event_id() == last.id
    assert store.last_event_id("missing") == 0
    mine = store.events_after(first.id, user_id="alice", limit=3)
    assert [e.percentage for e in mine] == [10, 20, 30]
    assert all(e.user_id == "bob" for e in store.events_after(user_id="bob"))


def test_running_children_are_read_by_parent(store: SQLStore) -> None:
    _make(store, "p")
    _make(store, "a", parent="p", at=1)
    _make(store, "b", parent="p", at=2)
    _make(store, "q")
    _report(store, "a", 10, 3)
    found = store.running_children([("alice", "p"), ("alice", "q")])
    assert {key: [j.id for j in jobs] for key, jobs in found.items()} == {
        ("alice", "p"): ["a"],
        ("alice", "q"): [],
    }
    assert store.running_children([]) == {}
