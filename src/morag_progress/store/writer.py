"""The write path: updates applied in batches by one writer thread, each batch set-based.

Callers queue updates (``submit``); the writer thread (``group.py``) takes whatever has queued
and applies it in one transaction. Within it, the updates of each statement shape (see
``statements.py``) are applied by one conditional ``UPDATE ... FROM <rows> RETURNING``, and the
feed rows of all that applied are appended together (``_append_feed``): the database decides,
row by row and
atomically, whether an update is newer than the last applied one and what the new status is,
so concurrent writers (threads, Celery processes, API replicas) cannot lose or reorder each
other's updates. A job's several updates in one batch are applied in turn, one per round.

A ``Batch`` carries what a transaction learns as it goes (new paces, finished jobs), written
once at its end.
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias, TypeVar, cast

import orjson
from sqlalchemy import Connection

from morag_progress.audit import Action
from morag_progress.errors import JobConflictError, StoreError
from morag_progress.eta import Pace
from morag_progress.models import (
    TERMINAL_STATUSES,
    JobStatus,
    ProgressUpdate,
    UpdateOutcome,
    UpdateResult,
)
from morag_progress.store.engine import NO_USER, Database, Row, job_fields, job_from_row
from morag_progress.store.group import GroupCommit
from morag_progress.store.history import learn
from morag_progress.store.rollup import Apply, roll_up
from morag_progress.store.schema import jobs
from morag_progress.store.statements import (
    KEYS,
    PACES,
    UPDATES,
    Shape,
    bound,
    feed_copy,
    job_rows,
    lock_rows,
    pace_update,
    prepare,
    unchanged,
    update_statement,
    update_with_feed,
    visible,
    why_not,
)
from morag_progress.trace_context import TraceContext

__all__ = ["Batch", "JobWriter"]

_Work: TypeAlias = tuple[ProgressUpdate | tuple[ProgressUpdate, ...], datetime, bool]
"""What the writer thread is given: an update (or a caller's updates, in order), the time it
was received, and whether to create a missing job."""
_Done: TypeAlias = UpdateResult | list[UpdateResult]
_Key: TypeAlias = tuple[str, str]
"""A job's key: (owner, id)."""


@dataclass(frozen=True, slots=True)
class _Lesson:
    """A job that finished in a transaction, to teach its kind at the transaction's end."""

    job: dict[str, Any]
    pace: Pace
    ended_s: float


@dataclass(slots=True)
class Batch:
    """One write transaction and what it learns on the way: the jobs' new paces (written
    together at its end) and the jobs that finished (their kinds taught at its end)."""

    conn: Connection
    paces: dict[_Key, tuple[Pace, dict[str, Any]]] = field(default_factory=dict)
    """Each changed pace, with its JSON."""
    lessons: dict[_Key, _Lesson] = field(default_factory=dict)
    """One a job, however often the transaction saw it finished."""
    ended: set[_Key] = field(default_factory=set)
    """The jobs the transaction left in a terminal status (their paces are not kept)."""


@dataclass(slots=True)
class _Pending:
    """An update of a batch, its place among the caller's results, its parameters, and its
    job's key."""

    at: int
    update: ProgressUpdate
    now: datetime
    shape: Shape
    params: dict[str, Any]
    key: _Key
    create_missing: bool


class JobWriter(Database):
    """Applies updates (in batches, through the writer thread) and appends the change feed."""

    _group: GroupCommit[_Work, _Done] | None = None
    _group_lock = threading.Lock()
    _on_commit: Callable[[int], None] | None = None
    _held: tuple[int, Connection] | None = None
    """The writer thread's connection and the process it was opened in (``_held_batch``)."""
    _paces: dict[_Key, tuple[dict[str, Any] | None, Pace | None]] | None = None
    """The pace last read for each job (``_read_pace``), at most ``_MAX_PACES``."""

    def observe_commits(self, callback: Callable[[int], None]) -> None:
        """Tell ``callback`` how many updates each of the writer's transactions committed
        (on the writer thread; for a metric)."""
        self._on_commit = callback
        if self._group is not None:
            self._group.on_commit = callback

    def apply(
        self, update: ProgressUpdate, *, now: datetime, create_missing: bool = False
    ) -> UpdateResult:
        """Apply one update through the group commit, waiting for its transaction."""
        return self.submit(update, now=now, create_missing=create_missing).result()

    def submit(
        self, update: ProgressUpdate, *, now: datetime, create_missing: bool = False
    ) -> Future[UpdateResult]:
        """Queue one update for the store's writer thread (``group.py``); the future holds
        its outcome once the transaction it shares with other queued updates has committed."""
        return cast(Future[UpdateResult], self._writer().submit((update, now, create_missing)))

    def submit_async(self, update: ProgressUpdate, *, now: datetime) -> Awaitable[UpdateResult]:
        """``submit`` for a caller on an event loop, which waits for the commit holding no
        thread (the writer wakes the loop once a batch, not once an update)."""
        return cast(Awaitable[UpdateResult], self._writer().submit_async((update, now, False)))

    def apply_many(self, updates: list[ProgressUpdate], *, now: datetime) -> list[UpdateResult]:
        """Apply updates in order through the writer thread, as one piece of its work: they
        share its transaction with concurrent reports, and the results come once it has
        committed."""
        if not updates:
            return []
        return cast(
            list[UpdateResult], self._writer().submit((tuple(updates), now, False)).result()
        )

    async def apply_many_async(
        self, updates: list[ProgressUpdate], *, now: datetime
    ) -> list[UpdateResult]:
        """``apply_many`` for a caller on an event loop."""
        if not updates:
            return []
        done = await self._writer().submit_async((tuple(updates), now, False))
        return cast(list[UpdateResult], done)

    def close(self) -> None:
        """Apply what is queued, stop the writer thread, release connections."""
        if self._group is not None:
            self._group.close()
        self._release_held()
        super().close()

    def _writer(self) -> GroupCommit[_Work, _Done]:
        group = self._group
        if group is None:
            with self._group_lock:
                if self._group is None:
                    self._group = GroupCommit(self._apply_batch, size=_work_size)
                    self._group.on_commit = self._on_commit
                    self._group.on_idle = self._release_held
                group = self._group
        return group

    @contextmanager
    def _batch(self, what: str) -> Iterator[Batch]:
        """A write transaction whose paces and lessons are written before it commits."""
        with self._write(what) as conn:
            batch = Batch(conn)
            yield batch
            self._close_batch(batch)

    @contextmanager
    def _held_batch(self, what: str) -> Iterator[Batch]:
        """``_batch`` on the writer thread's own connection, kept from one transaction to
        the next while work is queued and handed back to the pool once the writer finds the
        queue empty (``_release_held``). Taking a connection from the pool and giving it back
        cost about 40 us a transaction, as much as the rest of a small batch; a connection
        that waited in the pool is still checked there before it is used again
        (PostgreSQL's pre-ping). One that failed is never used again."""
        held = self._held
        if held is None or held[0] != os.getpid():  # a forked child leaves its parent's alone
            held = self._held = (os.getpid(), self._engine.connect())
        conn = held[1]
        try:
            with self._errors(what), conn.begin():
                batch = Batch(conn)
                yield batch
                self._close_batch(batch)
        except BaseException:
            self._release_held()
            raise

    def _release_held(self) -> None:
        """Give the writer thread's connection back to the pool (``_held_batch``)."""
        held, self._held = self._held, None
        if held is not None and held[0] == os.getpid():
            held[1].close()

    def _apply_batch(self, items: list[_Work]) -> list[_Done | BaseException]:
        """Apply queued work (an update, or a caller's list of them) in one transaction. An
        error the rules raise before writing (an id several users have) is that update's
        alone; a database error fails them all."""
        flat = [
            (one, now, create_missing)
            for what, now, create_missing in items
            for one in (what if isinstance(what, tuple) else (what,))
        ]

        def run() -> list[UpdateResult | BaseException]:
            results: list[UpdateResult | BaseException] = [None] * len(flat)  # type: ignore[list-item]
            with self._held_batch("apply updates") as batch:
                self._apply_set(batch, flat, results)
            return results

        results = _retry_conflicts(run)
        done: list[_Done | BaseException] = []
        at = 0
        for what, _, _ in items:
            if not isinstance(what, tuple):
                done.append(results[at])
                at += 1
                continue
            mine = results[at : at + len(what)]
            at += len(what)
            failed = next((r for r in mine if isinstance(r, BaseException)), None)
            done.append(failed if failed is not None else cast(list[UpdateResult], mine))
        return done

    def _apply_set(
        self,
        batch: Batch,
        flat: list[tuple[ProgressUpdate, datetime, bool]],
        results: list[UpdateResult | BaseException],
    ) -> None:
        """Apply ``flat`` set-based: round after round (a job's first update in the first,
        its second in the second...), one statement per shape a round."""
        rounds: defaultdict[int, list[_Pending]] = defaultdict(list)
        seen: defaultdict[_Key, int] = defaultdict(int)
        # Rows are locked in one order, (owner, id), whatever order the callers came in: two
        # batches (or replicas) then never wait on each other in a cycle. The sort is stable,
        # so one job's updates keep their queued order.
        for at in sorted(range(len(flat)), key=lambda i: _lock_key(flat[i][0])):
            update, now, create_missing = flat[at]
            try:
                owner = self._owner(batch.conn, update.job_id, update.user_id)
            except JobConflictError:
                results[at] = UpdateResult(UpdateOutcome.AMBIGUOUS)
                continue
            if owner is None and create_missing:
                owner = NO_USER  # an unscoped in-process caller's new job has no user
            if owner is None:
                results[at] = UpdateResult(UpdateOutcome.NOT_FOUND)
                continue
            shape, params = prepare(update, now, owner, Action.REPORT)
            key = (owner, update.job_id)
            pending = _Pending(at, update, now, shape, params, key, create_missing)
            rounds[seen[pending.key]].append(pending)
            seen[pending.key] += 1
        for number in sorted(rounds):
            self._apply_round(batch, rounds[number], results)

    def _apply_round(
        self, batch: Batch, round_: list[_Pending], results: list[UpdateResult | BaseException]
    ) -> None:
        """Apply updates of distinct jobs: one UPDATE per shape, then their feed rows."""
        conn, dialect = batch.conn, self._engine.dialect
        by_shape: defaultdict[Shape, list[_Pending]] = defaultdict(list)
        for pending in round_:
            owner, job_id = pending.key
            if pending.create_missing and self._fetch(conn, job_id, owner) is None:
                # A trusted in-process caller's job, made in its turn: an update queued before
                # this one, for a job nobody had made, was not found.
                self._create_for(conn, pending.update, owner, pending.now)
            by_shape[pending.shape].append(pending)
        if self.dialect == "postgresql" and len(by_shape) > 1:
            # Several statements would lock the round's rows shape by shape: lock them all
            # first, in (owner, id) order, so two replicas' batches never wait in a cycle.
            keys = KEYS.encode(dialect, ({"id": p.key[1], "user_id": p.key[0]} for p in round_))
            self.prepared(lock_rows(self.dialect)).all(conn, {"p_rows": keys})
        applied: dict[_Key, dict[str, Any]] = {}
        for shape, members in by_shape.items():
            same = unchanged(shape) if self.dialect == "sqlite" else None
            if same is not None:  # the jobs already in the status first (``unchanged``)
                self._update_rows(conn, same, members, applied)
                members = [m for m in members if m.key not in applied]
            if members:
                self._update_rows(conn, shape, members, applied)
        refused = [p for p in round_ if p.key not in applied]
        if refused:
            keys = KEYS.encode(dialect, ({"id": p.key[1], "user_id": p.key[0]} for p in refused))
            found = {
                (row["user_id"], row["id"]): row
                for row in self.prepared(job_rows(self.dialect)).all(conn, {"p_rows": keys})
            }
            for p in refused:
                existing = found.get(p.key)
                if existing is None or not visible(existing, p.update.claimant):
                    results[p.at] = UpdateResult(UpdateOutcome.NOT_FOUND)
                else:
                    outcome = why_not(existing, p.update)
                    job = job_from_row(_with_kept_pace(batch, dict(existing)))
                    results[p.at] = UpdateResult(outcome, job)
        done = [p for p in round_ if p.key in applied]
        if not done:
            return
        ids = self._append_feed(conn, [p.params for p in done])
        rolled_up = False
        for p in done:
            row = applied[p.key]
            if rolled_up and row["children"]:
                # A child's roll-up earlier in this round changed this parent (its sums, its
                # state, its own roll-up) after the UPDATE returned it: read it as it is now.
                row = dict(self._fetch(conn, p.key[1], p.key[0]) or row)
            if row["parent_id"] is not None:
                roll_up(conn, row, p.now, self._settled(batch))
                rolled_up = True
            self._track_pace(batch, row, p.now)
            fields = job_fields(row)
            results[p.at] = UpdateResult.of_fields(UpdateOutcome.APPLIED, fields, ids[p.key])

    def _update_rows(
        self,
        conn: Connection,
        shape: Shape,
        members: list[_Pending],
        applied: dict[_Key, dict[str, Any]],
    ) -> None:
        """Apply ``members`` (updates of distinct jobs, of ``shape``) by one UPDATE; the rows
        it changed go into ``applied``."""
        stmt = self.prepared(update_statement(shape, self.dialect))
        rows = UPDATES.encode(self._engine.dialect, (m.params for m in members))
        for row in stmt.all(conn, {"p_rows": rows}):
            applied[(row["user_id"], row["id"])] = row

    def _append_feed(self, conn: Connection, changes: list[dict[str, Any]]) -> dict[_Key, int]:
        """Append a round's feed rows (one per job, copied from its row: ``feed_copy``) and
        return each job's new feed id: on SQLite, one compiled statement run per change; on
        PostgreSQL, one statement over them all (one round trip). ``changes``: the
        updates' parameters (``prepare``)."""
        if self.dialect == "sqlite":
            ids = self.prepared(feed_copy()).insert_many(conn, changes)
            keys = ((c["user_id"], c["job_id"]) for c in changes)
            return dict(zip(keys, ids, strict=True))
        rows = UPDATES.encode(self._engine.dialect, changes)
        return {
            (row["user_id"], row["job_id"]): row["id"]
            for row in self.prepared(feed_copy(self.dialect)).all(conn, {"p_rows": rows})
        }

    def _apply_in(
        self,
        batch: Batch,
        update: ProgressUpdate,
        now: datetime,
        action: Action = Action.REPORT,
    ) -> UpdateResult:
        """Apply one update inside ``batch``'s transaction, with bound parameters (a parent's
        update from its children's sums, made while a child's change is applied)."""
        conn = batch.conn
        try:
            owner = self._owner(conn, update.job_id, update.user_id)
        except JobConflictError:
            return UpdateResult(UpdateOutcome.AMBIGUOUS)
        if owner is None:
            return UpdateResult(UpdateOutcome.NOT_FOUND)
        shape, params = prepare(update, now, owner, action)
        # On PostgreSQL the UPDATE and its feed row are one statement: one round trip.
        together = self.dialect == "postgresql"
        stmt = self.prepared(update_with_feed(shape) if together else update_statement(shape))
        row = stmt.first(conn, bound(params))
        if row is None:
            existing = self._fetch(conn, update.job_id, owner)
            if existing is None or not visible(existing, update.claimant):
                return UpdateResult(UpdateOutcome.NOT_FOUND)
            return UpdateResult(why_not(existing, update), job_from_row(existing))
        if together:
            event_id = int(row.pop("event_id"))
            if row["parent_id"] is not None:
                roll_up(conn, row, now, self._settled(batch))
        else:
            event_id = self._append_event(
                batch, row, now=now, timestamp=params["event_ts"], actor=update.actor, action=action
            )
        self._track_pace(batch, row, now)
        return UpdateResult(UpdateOutcome.APPLIED, job_from_row(row), event_id)

    def _settled(self, batch: Batch) -> Apply:
        """How a parent's update from its children's sums is applied in ``batch``."""
        return lambda _conn, update, now: self._apply_in(batch, update, now, Action.ROLLUP)

    def _append_event(
        self,
        batch: Batch,
        row: Row,
        *,
        now: datetime,
        timestamp: datetime,
        actor: str | None,
        action: Action,
    ) -> int:
        """Append the change just made to ``row``'s job to the feed (its row as it is now:
        ``feed_copy``), and roll it up into its parent."""
        change = {
            "job_id": row["id"],
            "user_id": row["user_id"],
            "event_ts": timestamp,
            "now": now,
            "actor": actor,
            "action": action.value,
        }
        event_id = self._append_feed(batch.conn, [change])[(row["user_id"], row["id"])]
        if row["parent_id"] is not None:
            roll_up(batch.conn, row, now, self._settled(batch))
        return event_id

    def _track_pace(self, batch: Batch, row: dict[str, Any], now: datetime) -> None:
        """Fold the applied change into the job's pace (``eta.Pace``), kept in the batch when
        it changed (a measuring window closed, a knot was reached, a run began); a job this
        change finished is a lesson for its kind's history."""
        if row["last_ts_us"] is None:
            return
        key = (row["user_id"], row["id"])
        kept = batch.paces.get(key)
        t = row["last_ts_us"] / 1_000_000  # the reporter's clock (never ahead of ours)
        received = now.timestamp()
        old = self._read_pace(key, row["pace"]) if kept is None else kept[0]
        pct, attempt = row["percentage"], row["attempt"]
        if old is None:
            pace = Pace.begin(t, pct, attempt, skew=received - t)
        else:
            pace = old.observe(t, pct, attempt, received=received)
        if pace != old:
            batch.paces[key] = (pace, pace.to_json())
        _with_kept_pace(batch, row)
        if row["status"] in _TERMINAL:
            batch.ended.add(key)
        else:
            batch.ended.discard(key)  # requeued later in the same transaction
        if row["status"] == JobStatus.FINISHED.value:
            batch.lessons[key] = _Lesson(dict(row), pace, t)

    def _read_pace(self, key: _Key, stored: dict[str, Any] | None) -> Pace | None:
        """The pace a job's row holds, read once per change of it: comparing what is stored
        with what this writer wrote (or read) last costs a tenth of reading it again."""
        paces = self._paces
        if paces is None:
            paces = self._paces = {}
        cached = paces.get(key)
        if cached is not None and cached[0] == stored:
            return cached[1]
        pace = Pace.from_json(stored)
        self._remember_pace(key, stored, pace)
        return pace

    def _remember_pace(self, key: _Key, stored: dict[str, Any] | None, pace: Pace | None) -> None:
        """``pace`` is what the job's row holds as ``stored``. The ``_MAX_PACES`` jobs changed
        last are kept (about 1 KB each); the one changed longest ago makes room."""
        paces = self._paces
        if paces is None:
            paces = self._paces = {}
        if paces.pop(key, None) is None and len(paces) >= _MAX_PACES:
            del paces[next(iter(paces))]
        paces[key] = (stored, pace)

    def _close_batch(self, batch: Batch) -> None:
        """Write the batch's paces in one statement, then teach the finished jobs' kinds in
        (user, kind) order, after every job row of the transaction is locked: history rows
        are locked last and in one order, so writers (and replicas) cannot deadlock on them."""
        if batch.paces:
            rows = PACES.encode(
                self._engine.dialect,
                (
                    {"id": job_id, "user_id": owner, "pace": _json(data), "rate": pace.rate}
                    for (owner, job_id), (pace, data) in sorted(batch.paces.items())
                ),
            )
            self.prepared(pace_update(self.dialect)).execute(batch.conn, {"p_rows": rows})
            # Read back, the row holds these: the next change of the job finds them known.
            for key, (pace, data) in batch.paces.items():
                self._remember_pace(key, data, pace)
        if batch.ended and self._paces:
            for key in batch.ended:  # an ended job changes again only if requeued
                self._paces.pop(key, None)
        lock = self.dialect == "postgresql"
        for lesson in sorted(
            batch.lessons.values(), key=lambda x: (x.job["user_id"], x.job["document_type"])
        ):
            learn(
                batch.conn,
                lesson.job,
                lesson.pace,
                ended_s=lesson.ended_s,
                dialect_insert=self.dialect_insert(),
                lock=lock,
            )

    def _create_for(
        self, conn: Connection, update: ProgressUpdate, owner: str, now: datetime
    ) -> None:
        """Create the job an in-process caller reports on before anyone created it."""
        stmt = self.dialect_insert()(jobs).values(
            id=update.job_id,
            user_id=owner,
            document_name=update.job_id,
            document_type="unknown",
            document_id=update.job_id,
            status=JobStatus.PENDING.value,
            percentage=0,
            attempt=1,
            weight=1.0,
            metadata={},
            cancel_requested=False,
            created_at=now,
            updated_at=now,
            last_seq=0,
            created_by=update.actor,
            traceparent=str(TraceContext.root()),
        )
        conn.execute(stmt.on_conflict_do_nothing())


def _with_kept_pace(batch: Batch, row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with its job's pace and rate as this batch has them (written at its end)."""
    kept = batch.paces.get((row["user_id"], row["id"]))
    if kept is not None:
        row["pace"], row["rate"] = kept[1], kept[0].rate
    return row


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


_MAX_PACES = 1_024
_TERMINAL = frozenset(status.value for status in TERMINAL_STATUSES)
_CONFLICTS = frozenset({"40P01", "40001"})  # PostgreSQL: deadlock, serialization failure
_T = TypeVar("_T")


def _retry_conflicts(run: Callable[[], _T], attempts: int = 3) -> _T:
    """``run()`` (one transaction), again when PostgreSQL chose it as a deadlock's or a
    serialization conflict's victim (rolled back whole, so running it again is safe)."""
    for attempt in range(attempts):
        try:
            return run()
        except StoreError as e:
            orig = getattr(e.__cause__, "orig", None)
            if getattr(orig, "sqlstate", None) not in _CONFLICTS or attempt + 1 == attempts:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _work_size(work: _Work) -> int:
    """How many updates a piece of the writer's work holds."""
    return len(work[0]) if isinstance(work[0], tuple) else 1


def _lock_key(update: ProgressUpdate) -> tuple[str, str]:
    return (update.user_id or "", update.job_id)
