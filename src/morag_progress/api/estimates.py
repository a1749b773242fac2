"""What the API writes beside each job: its ETA from its pace and its kind's history, a parent's
from its children, when a job waiting for a remote worker is expected to start, and the names of
the keys that made it and its changes. All numbers come from ``eta.py``; this module only
gathers what it needs, with brief caches (a history changes when a job of its kind finishes; a
queue moves every few seconds; a key's name never changes)."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from morag_progress.api.auth import Principal
from morag_progress.api.schemas import ChildOut, JobOut
from morag_progress.eta import (
    Eta,
    History,
    QueuedJob,
    RunningJob,
    forecast_starts,
    parent_eta,
)
from morag_progress.keys import ApiKey, Role
from morag_progress.models import Job, JobStatus, utcnow
from morag_progress.store import SQLStore
from morag_progress.store.reads import RemoteQueue
from morag_progress.store.rollup import expected

__all__ = ["Estimates"]

_KEY_TTL = 60.0
"""How long a key read for its name is trusted (a deleted key's name shows this long)."""
_ROLES = frozenset(role.value for role in Role)

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class _Cache:
    """At most ``size`` values, each kept for ``ttl`` seconds."""

    def __init__(self, ttl: float, size: int) -> None:
        self.ttl, self.size = ttl, size
        self._items: OrderedDict[Any, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get_many(
        self, keys: set[_K], load: Callable[[set[_K]], dict[_K, _V]], now: float
    ) -> dict[_K, _V | None]:
        found: dict[_K, _V | None] = {}
        with self._lock:
            for key in keys:
                item = self._items.get(key)
                if item is not None and item[0] > now:
                    found[key] = item[1]
        missing = keys - found.keys()
        if missing:
            loaded = load(missing)
            with self._lock:
                for key in missing:
                    value = loaded.get(key)
                    found[key] = value
                    self._items[key] = (now + self.ttl, value)
                    self._items.move_to_end(key)
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
        return found


class Estimates:
    """Writes jobs out with their estimates (``jobs_out``)."""

    def __init__(
        self,
        store: SQLStore,
        *,
        history_ttl: float = 10.0,
        queue_ttl: float = 2.0,
        window: timedelta = timedelta(hours=1),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.store = store
        self.window = window
        self._clock = clock
        self._histories = _Cache(history_ttl, 4096)
        self._queues = _Cache(queue_ttl, 1024)
        self._keys = _Cache(_KEY_TTL, 4096)

    def job_out(self, job: Job, viewer: Principal) -> JobOut:
        """One job with its estimates, its creator's name as ``viewer`` sees it, and its
        checkpoint (which lists leave out)."""
        out = self.jobs_out([job], viewer)[0]
        out.checkpoint = job.checkpoint
        return out

    def names(self, actors: Iterable[str | None], viewer: Principal) -> dict[str, str]:
        """The names of the keys behind ``actors`` (``audit``: ``<role>:<key id>``) that have
        one and that ``viewer`` may know: its user's own keys, every key for an admin. A key
        is read at most once a minute however many lists name it."""
        ids: dict[str, str] = {}
        for actor in actors:
            role, _, key_id = (actor or "").partition(":")
            if key_id and role in _ROLES:
                ids[actor] = key_id  # type: ignore[index]
        keys = self._keys.get_many(set(ids.values()), self.store.keys_by_id, self._now())
        names = {}
        for actor, key_id in ids.items():
            key: ApiKey | None = keys.get(key_id)
            if key is None or not key.name:
                continue
            if viewer.role is Role.ADMIN or key.user_id == viewer.user_id:
                names[actor] = key.name
        return names

    def jobs_out(self, jobs: list[Job], viewer: Principal) -> list[JobOut]:
        """Jobs with their estimates (a few reads for the whole list, none for jobs that
        neither run nor wait) and their creators' names as ``viewer`` sees them (``names``)."""
        now = self._clock()
        at = now.timestamp()
        kinds = {
            (job.user_id or "", job.document_type)
            for job in jobs
            if job.status in (JobStatus.PROCESSING, JobStatus.WAITING_FOR_REMOTE_WORKER)
        }
        histories = self._histories.get_many(kinds, self.store.histories, at)
        parents = [
            (job.user_id or "", job.id)
            for job in jobs
            if job.children and job.status is JobStatus.PROCESSING
        ]
        children = self.store.running_children(parents) if parents else {}
        users = {
            job.user_id or "" for job in jobs if job.status is JobStatus.WAITING_FOR_REMOTE_WORKER
        }
        starts: dict[tuple[str, str], datetime] = {}
        for user in users:
            starts.update(self._starts(user, now))
        out = []
        for job in jobs:
            owner = job.user_id or ""
            eta: Eta | None
            running: list[Job] = []
            if job.children and job.status is JobStatus.PROCESSING:
                running = children.get((owner, job.id), [])
                eta = self._parent(job, running, now)
            else:
                eta = job.estimate(now, histories.get((owner, job.document_type)))
            written = JobOut.of(job, eta=eta, expected_start_at=starts.get((owner, job.id)))
            history = histories.get((owner, job.document_type))
            if history is not None and job.status is JobStatus.PROCESSING:
                share = history.time_share(job.percentage)
                written.time_progress = None if share is None else round(100 * share)
            if running:
                slowest = min(running, key=lambda child: (child.percentage, child.id))
                written.slowest_child = ChildOut(
                    id=slowest.id, percentage=slowest.percentage, straggler=slowest.straggler
                )
            out.append(written)
        names = self.names((job.created_by for job in jobs), viewer)
        for written in out:
            if written.created_by is not None:
                written.created_by_name = names.get(written.created_by)
        return out

    def _now(self) -> float:
        return self._clock().timestamp()

    def _parent(self, job: Job, running: list[Job], now: datetime) -> Eta | None:
        """A parent's ETA from its children's remaining work over their running rates."""
        kinds = {(child.user_id or "", child.document_type) for child in running}
        histories = self._histories.get_many(kinds, self.store.histories, now.timestamp())
        rates = []
        for child in running:
            eta = child.estimate(now, histories.get((child.user_id or "", child.document_type)))
            if eta is not None and eta.rate is not None:
                rates.append((child.weight, eta.rate))
            elif eta is not None and eta.seconds > 0:  # history alone: its pace implied
                rates.append((child.weight, (100 - child.percentage) / eta.seconds))
        # Children it expects but has not got yet (ranks still starting) are work left too.
        missing = expected(job)[1]
        return parent_eta(job.children_weight + missing, job.children_progress, rates)

    def _starts(self, user: str, now: datetime) -> dict[tuple[str, str], datetime]:
        """When each of ``user``'s jobs waiting for a remote worker is expected to start."""
        at = now.timestamp()
        queue: RemoteQueue | None = self._queues.get_many(
            {user}, lambda keys: {user: self.store.remote_queue(user, since=now - self.window)}, at
        )[user]
        if queue is None or not queue.workers:
            return {}
        kinds = {(user, job.document_type) for job in queue.waiting + queue.running}
        histories = self._histories.get_many(kinds, self.store.histories, at)
        running, workers = [], queue.workers
        for job in queue.running:
            history = histories.get((user, job.document_type))
            eta = job.estimate(now, history)
            if eta is not None:
                running.append(RunningJob(job.worker_id or job.id, eta.seconds))
                continue
            expected = _expected_seconds(history, job.total)
            if expected is not None:  # just claimed: the kind's duration, less its share done
                running.append(
                    RunningJob(job.worker_id or job.id, expected * (1 - job.percentage / 100))
                )
            else:
                workers -= 1  # busy for an unknown time: no queued job is forecast onto it
        if workers <= 0:
            return {}
        waiting = []
        for job in queue.waiting:
            expected = _expected_seconds(histories.get((user, job.document_type)), job.total)
            if expected is None:
                break  # the jobs behind one of unknown length cannot be forecast
            waiting.append(QueuedJob(job.id, expected))
        forecast = forecast_starts(waiting, running, workers, at)
        return {
            (user, job_id): datetime.fromtimestamp(start, UTC) for job_id, start in forecast.items()
        }


def _expected_seconds(history: History | None, total: int | None) -> float | None:
    """A job's expected duration: the median of its kind's (log-normal) durations."""
    predicted = None if history is None else history.predict(total)
    return None if predicted is None else math.exp(predicted[0])
