"""AsyncProgressReporter against a real server: the same promises on an event loop."""

from __future__ import annotations

import asyncio

import pytest

from morag_progress.client import AsyncProgressReporter
from morag_progress.models import JobStatus
from morag_progress.ranks import Rank
from tests.live import Remote


def reporter(remote: Remote, job_id: str, **kwargs: object) -> AsyncProgressReporter:
    kwargs.setdefault("min_interval", 0.05)
    return AsyncProgressReporter(job_id, api_url=remote.url, api_key=remote.key, **kwargs)  # type: ignore[arg-type]


async def test_async_context_manager_finishes(remote: Remote) -> None:
    """Updates reach the job and leaving the block finishes it."""
    job_id = remote.new_job()
    async with reporter(remote, job_id) as r:
        for i in range(1, 51):
            r.update(i, f"chunk {i}")
            await asyncio.sleep(0)
    assert r.finished
    assert remote.job(job_id).status is JobStatus.FINISHED


async def test_callback_from_a_worker_thread(remote: Remote) -> None:
    """The seed's callback may be called from an executor thread (MoRAG's converters do)."""
    job_id = remote.new_job()
    async with reporter(remote, job_id) as r:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, r.progress_callback, 0.6, "Transcribing audio content")
        for _ in range(200):
            if remote.job(job_id).percentage == 60:
                break
            await asyncio.sleep(0.02)
        assert remote.job(job_id).summary == "Transcribing audio content"


async def test_exception_fails_the_job(remote: Remote) -> None:
    """An exception inside the block fails the job and propagates."""
    job_id = remote.new_job()

    async def work() -> None:
        async with reporter(remote, job_id) as r:
            r.update(33)
            raise ValueError("bad frame")

    with pytest.raises(ValueError, match="bad frame"):
        await work()
    job = remote.job(job_id)
    assert (job.status, job.percentage) == (JobStatus.FAILED, 33)


async def test_server_down_then_up(remote: Remote) -> None:
    """The loop is never blocked while the server is down; the final status arrives later."""
    job_id = remote.new_job()
    remote.server.stop()
    r = reporter(remote, job_id)
    for i in range(100):
        r.update(i / 2)
    r.complete(True)
    await asyncio.sleep(0.3)
    await asyncio.to_thread(remote.server.start)
    assert await r.aclose(timeout=30)
    assert remote.job(job_id).status is JobStatus.FINISHED


async def test_aclose_gives_up_at_deadline(remote: Remote) -> None:
    """A server that stays down: aclose returns False at its deadline."""
    job_id = remote.new_job()
    remote.server.stop()
    r = reporter(remote, job_id)
    r.complete(False, "x")
    assert await r.aclose(timeout=0.3) is False


def test_created_outside_a_loop_starts_in_async_with(remote: Remote) -> None:
    """A reporter built before the loop runs starts its sender on entering the block."""
    job_id = remote.new_job()
    r = reporter(remote, job_id)

    async def main() -> None:
        async with r:
            r.update(10)

    asyncio.run(main())
    assert remote.job(job_id).status is JobStatus.FINISHED


async def test_ranks_of_a_run_report_from_asyncio_too(remote: Remote) -> None:
    """``AsyncProgressReporter.for_rank``: two ranks given by hand make one run between them,
    which finishes when both have."""
    for rank in (1, 0):
        async with AsyncProgressReporter.for_rank(
            "embed",
            "batch",
            rank=Rank(rank, 2, "emb"),
            api_url=remote.url,
            api_key=remote.user_key,
            min_interval=0.01,
        ) as r:
            r.update(50)
        assert remote.job(f"emb:rank-{rank}").status is JobStatus.FINISHED
    run = remote.job("emb")
    assert (run.status, run.children, run.expected_children) == (JobStatus.FINISHED, 2, 2)
    assert remote.job("emb:rank-0").metadata["world_size"] == 2
