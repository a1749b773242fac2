"""The server's upkeep: watching for silence (stall detection, abandoned jobs) and retention.

A PROCESSING job with no report and no heartbeat for its ``stall_timeout_s`` (or the server's
``stall_timeout_seconds``) becomes STALLED; its next report or heartbeat makes it PROCESSING
again (the store's update rules). Separately, a job silent for ``abandon_timeout_seconds`` has
lost its worker: by policy it FAILS, or, if a remote worker had claimed it, goes back to the
queue for another (whose claim starts a new attempt, so the lost worker cannot report on it).

Every change is a conditional UPDATE that only succeeds if the job is still as the sweep read it
(same status, no sign of life since), so any number of server replicas may sweep at once and
each transition happens exactly once, with one feed row (an SSE event, and later a webhook).

It also watches distributed runs (``store/runs.py``): a rank behind its siblings' median by
more than ``straggler_share`` for ``straggler_seconds`` is flagged on its run; and running jobs
at risk (``deadlines.py``): likely to miss their deadline, or running longer than usual.

``Pruner`` deletes what ended more than ``retention_days`` ago, in small batches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

from morag_progress._threads import run_to_completion
from morag_progress.audit import Action
from morag_progress.deadlines import LIKELY, assess, deadline_of
from morag_progress.models import Job, JobStatus, UpdateOutcome, utcnow
from morag_progress.store import NO_USER, SQLStore
from morag_progress.store.lifecycle import resumed_pace
from morag_progress.store.retention import Pruned
from morag_progress.tracker import JobTracker

__all__ = ["Monitor", "Pruner"]

logger = logging.getLogger(__name__)

_RUNNING = [JobStatus.PROCESSING, JobStatus.STALLED]


class Monitor:
    """Sweeps the store for silent jobs; :meth:`sweep` once, or :meth:`run` every interval."""

    def __init__(
        self,
        tracker: JobTracker,
        *,
        stall_timeout: float | None = 300.0,
        abandon_timeout: float | None = None,
        abandon_policy: Literal["fail", "requeue"] = "fail",
        straggler_share: float | None = 0.1,
        straggler_seconds: float = 60.0,
        deadlines: Mapping[str, float] | None = None,
        warn_long: bool = True,
        deadline_chance: float = LIKELY,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.tracker = tracker
        self.stall_timeout = stall_timeout
        self.abandon_timeout = abandon_timeout
        self.abandon_policy = abandon_policy
        self.straggler_share = straggler_share
        self.straggler_seconds = straggler_seconds
        self.deadlines = dict(deadlines or {})
        """Each job type's limit in seconds from a job's start, for jobs made without one."""
        self.warn_long = warn_long
        self.deadline_chance = deadline_chance
        """The chance of missing its deadline at which a job is marked at risk."""
        self._clock = clock

    def sweep(self) -> list[Job]:
        """One pass: the jobs this sweep changed (another replica's changes are not counted).
        Stragglers flagged are logged (their runs' feed rows say so), not returned."""
        now = self._clock()
        changed = self._abandon(now) if self.abandon_timeout else []
        changed += self._stall(now)
        if self.straggler_share is not None:
            for straggler in self.tracker.store.sweep_stragglers(
                now=now, share=self.straggler_share, hold=self.straggler_seconds
            ):
                logger.info("run %s: %s", straggler.run_id, straggler)
        self._risks(now)
        return changed

    def _risks(self, now: datetime) -> None:
        """Mark running jobs whose verdict (``deadlines.assess``) changed since the last
        sweep; a job without a deadline is assessed only with ``warn_long``."""
        store = self.tracker.store
        running = store.running_jobs()
        kinds = {(job.user_id or "", job.document_type) for job in running}
        histories = store.histories(kinds) if kinds else {}
        for job in running:
            history = histories.get((job.user_id or "", job.document_type))
            if not self.warn_long and deadline_of(job, self.deadlines) is None:
                history = None
            verdict = assess(job, now, history, self.deadlines, self.deadline_chance)
            if (verdict.risk.value if verdict else None) == job.at_risk:
                continue  # each warning once, until the state changes
            if store.mark_risk(job, verdict, now=now) and verdict is not None:
                logger.info("job %s: %s", job.id, verdict.message)

    def _stall(self, now: datetime) -> list[Job]:
        # Per-job timeouts may be shorter than the server's: look as far back as the shortest.
        shortest = min(
            [
                t
                for t in (self.stall_timeout, self.tracker.store.shortest_stall_timeout())
                if t is not None
            ],
            default=None,
        )
        if shortest is None:
            return []
        changed: list[Job] = []
        candidates = self.tracker.store.idle_jobs(
            statuses=[JobStatus.PROCESSING], seen_before=now - timedelta(seconds=shortest)
        )
        for job in candidates:
            timeout = job.stall_timeout_s or self.stall_timeout
            seen = job.last_seen_at or job.updated_at
            if timeout is None or (now - seen).total_seconds() < timeout:
                continue
            # The worker's last message stays: views show the silence beside it, counting.
            changed += self._change(
                job, [JobStatus.PROCESSING], {"status": JobStatus.STALLED.value}
            )
        return changed

    def _abandon(self, now: datetime) -> list[Job]:
        assert self.abandon_timeout is not None
        changed: list[Job] = []
        cutoff = now - timedelta(seconds=self.abandon_timeout)
        for job in self.tracker.store.idle_jobs(statuses=_RUNNING, seen_before=cutoff):
            silent = int((now - (job.last_seen_at or job.updated_at)).total_seconds())
            changes: dict[str, object]
            if self.abandon_policy == "requeue" and job.claimed_by is not None:
                summary = f"Worker {job.worker_id} gone ({silent} s): back in the queue"
                changes = {"status": JobStatus.WAITING_FOR_REMOTE_WORKER.value, "worker_id": None}
                at = job.checkpoint_percentage
                if job.checkpoint is not None and at is not None:
                    # It resumes from its checkpoint, as a requeue by hand does (docs/resume.md).
                    summary += f", to resume from its checkpoint at {at}%"
                    changes["percentage"] = at
                    changes["pace"] = resumed_pace(job.pace, at)
                changes["summary"] = summary
            else:
                message = f"Worker gone: no report or heartbeat for {silent} s"
                changes = {
                    "status": JobStatus.FAILED.value,
                    "summary": message,
                    "error": message,
                    "end_date": now,
                }
            changed += self._change(job, _RUNNING, changes, Action.ABANDON)
        return changed

    def _change(
        self,
        job: Job,
        expect: list[JobStatus],
        changes: dict[str, Any],
        action: Action = Action.STALL,
    ) -> list[Job]:
        result = self.tracker.transition(
            job.id,
            expect=expect,
            seen=job.last_seen_at,
            changes=dict(changes),
            user_id=job.user_id or NO_USER,  # this job, though another user's has its id
            action=action,
        )
        if result.outcome is UpdateOutcome.APPLIED and result.job is not None:
            logger.info("job %s: %s (%s)", job.id, result.job.status.value, result.job.summary)
            return [result.job]
        return []  # it spoke up, or another replica got there first

    async def run(self, interval: float) -> None:
        """Sweep every ``interval`` seconds until cancelled; a failing sweep is logged."""
        while True:
            await asyncio.sleep(interval)
            try:
                await run_to_completion(self.sweep)
            except Exception:  # the monitor outlives any one failure, not just our own
                logger.warning("stall sweep failed; trying again", exc_info=True)


class Pruner:
    """Retention in the server: every ``interval`` seconds, what ended more than ``days``
    ago is deleted in small batches (``store/retention.py``), one short transaction each, with
    the event loop free between them. Replicas may all prune: a row goes once."""

    def __init__(
        self,
        store: SQLStore,
        *,
        days: float,
        max_batches: int = 50,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.days = days
        self.max_batches = max_batches
        self._clock = clock

    def prune(self) -> Pruned:
        """One pass (at most ``max_batches`` batches); nothing when retention is off."""
        if not self.days:
            return Pruned()
        before = self._clock() - timedelta(days=self.days)
        pruned = self.store.prune(before=before, max_batches=self.max_batches)
        if pruned.rows:
            logger.info(
                "pruned %d jobs, %d feed rows and %d webhook deliveries that ended before %s",
                pruned.jobs,
                pruned.events,
                pruned.deliveries,
                before.isoformat(),
            )
        return pruned

    async def run(self, interval: float) -> None:
        """Prune every ``interval`` seconds until cancelled; a failing pass is logged."""
        while True:
            await asyncio.sleep(interval)
            try:
                await run_to_completion(self.prune)
            except Exception:  # retention outlives any one failure
                logger.warning("pruning failed; trying again", exc_info=True)
