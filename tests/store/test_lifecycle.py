"""Lifecycle writes beside progress: here, what a requeue and the next claim do with a job's
checkpoint and pace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from morag_progress.models import JobStatus, ProgressUpdate
from morag_progress.store import NewJob, SQLStore

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _ran_to_70(store: SQLStore, *, checkpoint: bool) -> None:
    """A remote job claimed and reported to 70% over 70 s (1%/s), then failed."""
    new = NewJob(
        id="j",
        document_name="d",
        document_type="t",
        user_id="u",
        status=JobStatus.WAITING_FOR_REMOTE_WORKER,
    )
    store.create_job(new, now=T0)
    assert store.claim(user_id="u", worker_id="w1", claimant="k", document_types=None, now=T0)
    for second in range(1, 71):
        at = T0 + timedelta(seconds=second)
        saved = {"second": second} if checkpoint and second % 10 == 0 else None
        update = ProgressUpdate("j", second, user_id="u", timestamp=at, checkpoint=saved)
        assert store.apply(update, now=at).applied
    failed = ProgressUpdate.final("j", success=False, message="lost", user_id="u")
    assert store.apply(failed, now=T0 + timedelta(seconds=71)).applied


@pytest.mark.parametrize("checkpoint", [True, False])
def test_a_requeue_resumes_at_the_checkpoint_keeping_the_pace(
    store: SQLStore, checkpoint: bool
) -> None:
    """With a checkpoint, the requeued job waits at its percentage and keeps its pace (the
    rate of the work it did) through the next claim, which hands the checkpoint back; without
    one, it starts again at 0% with no pace."""
    _ran_to_70(store, checkpoint=checkpoint)
    before = store.get_job("j", user_id="u")
    assert before is not None
    assert before.rate is not None  # measured over the first attempt
    later = T0 + timedelta(seconds=300)
    store.requeue("j", user_id="u", now=later)
    claimed = store.claim(user_id="u", worker_id="w2", claimant="k", document_types=None, now=later)
    assert claimed is not None
    assert claimed.attempt == 2
    if checkpoint:
        assert (claimed.percentage, claimed.checkpoint, claimed.checkpoint_percentage) == (
            70,
            {"second": 70},
            70,
        )
        assert claimed.rate == before.rate
        assert claimed.pace == {**(before.pace or {}), "resumes_at": 70}
        # The next report continues the run: its time so far is the 69 s the work to 70%
        # took (from the first report, at 1%), without the pause of almost four minutes.
        at = later + timedelta(seconds=10)
        update = ProgressUpdate("j", 71, user_id="u", timestamp=at, attempt=2)
        assert store.apply(update, now=at).applied
        resumed = store.get_job("j", user_id="u")
        assert resumed is not None
        assert resumed.pace is not None
        assert resumed.pace["resumes_at"] is None
        assert at.timestamp() - resumed.pace["start_s"] == pytest.approx(69, abs=5)
        eta = resumed.estimate(at)
        assert eta is not None
        assert eta.seconds == pytest.approx(29, rel=0.35)  # 29% left at about 1%/s
    else:
        assert (claimed.percentage, claimed.checkpoint, claimed.rate, claimed.pace) == (
            0,
            None,
            None,
            None,
        )


def test_a_heartbeats_checkpoint_stands_for_the_percentage_it_names(store: SQLStore) -> None:
    new = NewJob(id="j", document_name="d", document_type="t", user_id="u")
    store.create_job(new, now=T0)
    assert store.apply(ProgressUpdate("j", 40, user_id="u"), now=T0).applied
    store.heartbeat("j", user_id="u", now=T0, checkpoint={"a": 1})
    job = store.get_job("j", user_id="u")
    assert job is not None
    assert (job.checkpoint, job.checkpoint_percentage) == ({"a": 1}, 40)
    store.heartbeat("j", user_id="u", now=T0, checkpoint={"a": 2}, checkpoint_percentage=35)
    job = store.get_job("j", user_id="u")
    assert job is not None
    assert (job.checkpoint, job.checkpoint_percentage, job.percentage) == ({"a": 2}, 35, 40)
