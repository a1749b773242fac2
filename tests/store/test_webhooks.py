"""The webhook tables: endpoints by owner, the outbox filled from the change feed (types,
throttle, supersession, hourly cap), leases shared fairly, and each attempt's outcome."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from morag_progress.chat import chat_text, silent_seconds
from morag_progress.deadlines import Risk, Verdict
from morag_progress.eta import Eta
from morag_progress.models import JobStatus, ProgressUpdate
from morag_progress.store import SQLStore
from morag_progress.store.webhooks import (
    ALL_USERS,
    EVENT_TYPES,
    Delivery,
    WebhookStore,
)
from morag_progress.tracker import JobTracker
from tests.conftest import Clock

URL = "https://hooks.example/x"


def _hook(
    hooks: WebhookStore,
    user: str = "alice",
    *,
    events: tuple[str, ...] = EVENT_TYPES,
    interval: float = 0,
    **options: object,
) -> str:
    hook, secret = hooks.create(
        user_id=user,
        url=URL,
        event_types=list(events),
        progress_interval_s=interval,
        **options,  # type: ignore[arg-type]
    )
    assert secret.startswith("whsec_")
    return hook.id


def _pending(hooks: WebhookStore, hook_id: str) -> list[tuple[str, str]]:
    """(event type, job id) of the hook's pending deliveries, oldest first."""
    found = [d for d in hooks.deliveries(hook_id) if d.state == "pending"]
    return [(d.event_type, d.job_id) for d in reversed(found)]


@pytest.fixture
def hooks(store: SQLStore) -> WebhookStore:
    return WebhookStore(store)


def test_webhooks_are_owned(hooks: WebhookStore) -> None:
    """A user reads and deletes only their own webhooks; an admin (None) any. A chat format
    gets the chat cap unless one is given; an unknown format is refused."""
    mine = _hook(hooks, "alice")
    chat = _hook(hooks, "alice", format="slack")
    capped = _hook(hooks, "bob", format="discord", max_per_hour=5)
    assert [h.id for h in hooks.list_for("alice")] == [mine, chat]
    assert [h.id for h in hooks.list_for(None)] == [mine, chat, capped]
    assert hooks.get(mine, "bob") is None
    found = hooks.get(chat, "alice")
    assert found is not None
    assert (found.format, found.max_per_hour, found.url) == ("slack", 30, URL)
    assert hooks.get(capped, None).max_per_hour == 5  # type: ignore[union-attr]
    assert hooks.get(mine, None).max_per_hour is None  # type: ignore[union-attr]
    assert hooks.delete(mine, "bob") is False
    assert hooks.delete(mine, "alice") is True
    assert hooks.delete(mine, None) is False
    assert hooks.target(mine) is None
    target = hooks.target(chat)
    assert target is not None
    assert (target.secret.startswith("whsec_"), target.url, target.live) == (True, URL, False)
    with pytest.raises(ValueError, match="format must be one of json, slack, discord, telegram"):
        _hook(hooks, format="teams")


def test_the_outbox_tells_each_webhook_what_it_asked_for(
    hooks: WebhookStore, tracker: JobTracker, clock: Clock
) -> None:
    """A webhook hears of its owner's jobs after it was made, of the event types it names;
    an admin's (``*``) of every user's. Filling again makes nothing twice."""
    hooks.fill(now=clock())  # the outbox's cursor, made before anything happened
    before = tracker.start_job("old.pdf", "pdf", user_id="alice")
    tracker.apply(ProgressUpdate(before, 10, user_id="alice"))
    ends = _hook(hooks, "alice", events=("job.finished", "job.failed"))
    every = _hook(hooks, ALL_USERS)
    a = tracker.start_job("a.pdf", "pdf", user_id="alice")
    b = tracker.start_job("b.pdf", "pdf", user_id="bob")
    tracker.apply(ProgressUpdate(a, 40, user_id="alice"))
    tracker.apply(ProgressUpdate.final(a, success=True, user_id="alice"))
    tracker.apply(ProgressUpdate.final(b, success=False, user_id="bob"))
    made = hooks.fill(now=clock())
    assert _pending(hooks, ends) == [("job.finished", a)]
    # A job's creation is a change too (progress, at 0%): Bob's is still pending, Alice's
    # was superseded by her job's next progress.
    assert _pending(hooks, every) == [
        ("job.progress", b),
        ("job.progress", a),
        ("job.finished", a),
        ("job.failed", b),
    ]
    assert made == 6
    assert hooks.fill(now=clock()) == 0


def test_a_runs_straggler_is_its_own_event(
    hooks: WebhookStore, store: SQLStore, tracker: JobTracker, clock: Clock
) -> None:
    """The run's feed row that flags a straggler is ``job.straggler``, not progress: a
    webhook that asked for it alone hears of it and of nothing else the ranks did."""
    tracker.start_job("train", "run", user_id="alice", job_id="run", expected_children=2)
    for r in range(2):
        tracker.start_job("train", "run", user_id="alice", job_id=f"r{r}", parent_id="run")
    hook = _hook(hooks, events=("job.straggler",))
    clock.advance(1)
    tracker.apply(ProgressUpdate("r0", 80, user_id="alice"))
    tracker.apply(ProgressUpdate("r1", 20, user_id="alice"))
    store.sweep_stragglers(now=clock(), share=0.1, hold=60)
    clock.advance(60)
    store.sweep_stragglers(now=clock(), share=0.1, hold=60)
    hooks.fill(now=clock())
    assert _pending(hooks, hook) == [("job.straggler", "run")]
    [delivery] = hooks.deliveries(hook)
    job = orjson.loads(delivery.payload)["job"]
    assert (job["status"], job["message"]) == (
        "PROCESSING",
        "Straggler: r1 at 20% against its siblings' median 50%, behind for 60 s",
    )


def test_a_job_marked_at_risk_is_its_own_event(
    hooks: WebhookStore, store: SQLStore, tracker: JobTracker, clock: Clock
) -> None:
    job_id = tracker.start_job("clip.mov", "video", user_id="alice")
    hook = _hook(hooks, events=("job.at_risk",))
    tracker.apply(ProgressUpdate(job_id, 40, user_id="alice"))
    seen = tracker.get_job(job_id)
    assert seen is not None
    store.mark_risk(seen, Verdict(Risk.DEADLINE, "Likely to miss its deadline"), now=clock())
    hooks.fill(now=clock())
    assert _pending(hooks, hook) == [("job.at_risk", job_id)]
    event = {"job_id": job_id, "status": "PROCESSING", "percentage": 40, "action": "at_risk"}
    line = chat_text({**event, "message": "Likely to miss its deadline"}, "clip.mov", None)
    assert line == f"⏰ clip.mov ({job_id}): PROCESSING 40%: Likely to miss its deadline"


def test_a_delivery_carries_the_change_and_who_made_it(
    hooks: WebhookStore, tracker: JobTracker, clock: Clock
) -> None:
    job_id = tracker.start_job("a.pdf", "pdf", user_id="alice")
    hook = _hook(hooks)  # hears of what happens after it is made (not the job's creation)
    tracker.apply(
        ProgressUpdate(job_id, 40, "pages", user_id="alice", stage="ocr", current=4, total=10)
    )
    hooks.fill(now=clock())
    [delivery] = hooks.deliveries(hook)
    payload = orjson.loads(delivery.payload)
    assert payload["type"] == "job.progress"
    assert payload["id"] == f"evt_{delivery.event_id}"
    job = payload["job"]
    assert (job["id"], job["status"], job["percentage"], job["message"]) == (
        job_id,
        "PROCESSING",
        40,
        "pages",
    )
    assert (job["stage"], job["current"], job["total"], job["attempt"]) == ("ocr", 4, 10, 1)
    assert (delivery.state, delivery.attempts, delivery.next_attempt_at) == (
        "pending",
        0,
        clock(),
    )


def test_progress_is_throttled_per_job_and_superseded_while_pending(
    hooks: WebhookStore, tracker: JobTracker, clock: Clock
) -> None:
    """Progress of one job is made at most once per ``progress_interval_s`` (counted from
    the last one made, across fills); a newer one supersedes the one still pending; ends are
    never throttled."""
    job_id = tracker.start_job("a.pdf", "pdf", user_id="alice")
    other = tracker.start_job("b.pdf", "pdf", user_id="alice")
    hook = _hook(hooks, interval=10)
    tracker.apply(ProgressUpdate(job_id, 10, user_id="alice"))
    tracker.apply(ProgressUpdate(job_id, 20, user_id="alice"))  # within the interval
    tracker.apply(ProgressUpdate(other, 5, user_id="alice"))  # another job: its own interval
    assert hooks.fill(now=clock()) == 2
    tracker.apply(ProgressUpdate(job_id, 30, user_id="alice"))
    assert hooks.fill(now=clock() + timedelta(seconds=9.9)) == 0
    tracker.apply(ProgressUpdate(job_id, 40, user_id="alice"))
    assert hooks.fill(now=clock() + timedelta(seconds=10)) == 1
    tracker.apply(ProgressUpdate.final(job_id, success=True, user_id="alice"))
    assert hooks.fill(now=clock() + timedelta(seconds=11)) == 1
    states = {
        (d.event_type, orjson.loads(d.payload)["job"]["percentage"]): d.state
        for d in hooks.deliveries(hook)
        if d.job_id == job_id
    }
    assert states == {
        ("job.progress", 10): "superseded",
        ("job.progress", 40): "pending",
        ("job.finished", 100): "pending",
    }
    assert hooks.superseded == 1


def test_the_hourly_cap_drops_progress_but_never_an_end(
    hooks: WebhookStore, tracker: JobTracker, clock: Clock
) -> None:
    """A webhook capped at two an hour: two jobs' progress is made, the third's dropped
    (counted); every end is made, even past the cap; an hour later the cap is fresh."""
    jobs = [tracker.start_job(f"{i}.pdf", "pdf", user_id="alice") for i in range(3)]
    hook = _hook(hooks, max_per_hour=2)
    for job_id in jobs:
        tracker.apply(ProgressUpdate(job_id, 10, user_id="alice"))
    tracker.apply(ProgressUpdate.final(jobs[0], success=True, user_id="alice"))
    assert hooks.fill(now=clock()) == 3
    assert hooks.dropped == 1
    assert _pending(hooks, hook) == [
        ("job.progress", jobs[0]),
        ("job.progress", jobs[1]),
        ("job.finished", jobs[0]),
    ]
    tracker.apply(ProgressUpdate(jobs[2], 20, user_id="alice"))
    assert hooks.fill(now=clock() + timedelta(minutes=59)) == 0
    tracker.apply(ProgressUpdate(jobs[2], 30, user_id="alice"))
    assert hooks.fill(now=clock() + timedelta(minutes=61)) == 1


def _due(hooks: WebhookStore, tracker: JobTracker, clock: Clock, user: str, n: int) -> str:
    hook = _hook(hooks, user, events=("job.finished",))
    for i in range(n):
        job_id = tracker.start_job(f"{i}.pdf", "pdf", user_id=user)
        tracker.apply(ProgressUpdate.final(job_id, success=True, user_id=user))
    return hook


def test_leases_take_each_users_oldest_first_within_their_shares(
    hooks: WebhookStore, tracker: JobTracker, clock: Clock
) -> None:
    """Alice has five deliveries due, Bob one: a lease of three takes one of each user's
    before a second of anyone's; the shares per webhook and per user hold; excluded
    webhooks and users are skipped; a leased delivery is not leased again until its lease
    ends, or it is released."""
    alice = _due(hooks, tracker, clock, "alice", 5)
    bob = _due(hooks, tracker, clock, "bob", 1)
    now = clock()
    hooks.fill(now=now)
    a = [d.id for d in reversed(hooks.deliveries(alice))]  # oldest first
    [b] = [d.id for d in hooks.deliveries(bob)]
    first = hooks.lease_due(now=now, limit=3, lease_s=30)
    assert [(x.user_id, x.delivery.id) for x in first] == [
        ("alice", a[0]),
        ("bob", b),
        ("alice", a[1]),
    ]
    hooks.release([first[0].delivery], now=now)  # due again at once
    again = hooks.lease_due(now=now, limit=10, per_user=2, lease_s=30)
    assert [x.delivery.id for x in again] == [a[0], a[2]]
    assert hooks.lease_due(now=now, limit=10, exclude=[alice]) == []  # Bob's is leased
    later = now + timedelta(seconds=31)  # every lease has ended
    assert [x.delivery.id for x in hooks.lease_due(now=later, exclude_users=["alice"])] == [b]
    # Due longest first: the two never leased, then the earliest lease's by id.
    assert [x.delivery.id for x in hooks.lease_due(now=later, per_webhook=2)] == a[3:]
    assert [x.delivery.id for x in hooks.lease_due(now=later, limit=1)] == a[:1]


def _one(hooks: WebhookStore, tracker: JobTracker, clock: Clock) -> Delivery:
    hook = _due(hooks, tracker, clock, "alice", 1)
    hooks.fill(now=clock())
    [delivery] = hooks.deliveries(hook)
    return delivery


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "delivered"),
        (204, "delivered"),
        (299, "delivered"),
        (300, "retry"),
        (199, "retry"),
        (500, "retry"),
        (None, "retry"),
    ],
)
def test_an_attempt_is_delivered_only_on_a_2xx(
    hooks: WebhookStore, tracker: JobTracker, clock: Clock, status: int | None, outcome: str
) -> None:
    delivery = _one(hooks, tracker, clock)
    now = clock()
    assert hooks.record(delivery, status=status, error=None, now=now, max_attempts=5) == outcome
    [after] = hooks.deliveries(delivery.webhook_id)
    assert (after.attempts, after.last_status) == (1, status)
    if outcome == "delivered":
        assert (after.state, after.delivered_at) == ("delivered", now)
    else:
        assert after.state == "pending"
        assert now + timedelta(seconds=0.5) <= after.next_attempt_at <= now + timedelta(seconds=1)


def test_retries_back_off_exponentially_then_fail_for_good(
    hooks: WebhookStore, tracker: JobTracker, clock: Clock
) -> None:
    """The n-th failed attempt waits between half and all of 2^(n-1) s (at most an hour);
    the last allowed attempt fails the delivery for good, with its error kept."""
    delivery = _one(hooks, tracker, clock)
    now = clock()
    for attempt in range(1, 5):
        assert hooks.record(delivery, status=503, error="busy", now=now, max_attempts=5) == "retry"
        [delivery] = hooks.deliveries(delivery.webhook_id)
        wait = (delivery.next_attempt_at - now).total_seconds()
        assert 2 ** (attempt - 1) * 0.5 <= wait <= 2 ** (attempt - 1)
        assert delivery.attempts == attempt
    assert hooks.record(delivery, status=None, error="timeout", now=now, max_attempts=5) == "failed"
    [delivery] = hooks.deliveries(delivery.webhook_id)
    assert (delivery.state, delivery.attempts, delivery.last_error) == ("failed", 5, "timeout")
    late = dataclasses.replace(delivery, attempts=40, state="pending")
    hooks.record(late, status=500, error=None, now=now, max_attempts=100)
    [after] = hooks.deliveries(delivery.webhook_id)
    assert after.state == "failed"  # a delivery no longer pending is not revived


def test_the_backoff_is_capped_at_an_hour(
    hooks: WebhookStore, tracker: JobTracker, clock: Clock
) -> None:
    delivery = _one(hooks, tracker, clock)
    now = clock()
    deep = dataclasses.replace(delivery, attempts=30)
    assert hooks.record(deep, status=500, error=None, now=now, max_attempts=100) == "retry"
    [after] = hooks.deliveries(delivery.webhook_id)
    assert 1800 <= (after.next_attempt_at - now).total_seconds() <= 3600


def test_deleting_a_webhook_drops_what_it_still_owed(
    hooks: WebhookStore, tracker: JobTracker, clock: Clock
) -> None:
    delivery = _one(hooks, tracker, clock)
    assert hooks.delete(delivery.webhook_id, "alice") is True
    assert hooks.deliveries(delivery.webhook_id) == []


def test_a_chat_line_says_what_happened_to_which_job() -> None:
    """Mark, name and id, status, percentage, message, the time left while it runs, and a
    stalled job's silence; at most 2,000 characters."""
    event = {"job_id": "j1", "status": "PROCESSING", "percentage": 40, "message": "ocr"}
    eta = Eta(seconds=125.9, low=100, high=200, basis="live", rate=0.5)
    line = "⏳ a.pdf (j1): PROCESSING 40%: ocr (about 2:05 left)"
    assert chat_text(event, "a.pdf", eta) == line
    done = {**event, "status": "FINISHED", "percentage": 100, "message": None}
    assert chat_text(done, None, eta) == "✅ j1: FINISHED 100%"
    stalled = {**event, "status": "STALLED", "message": ""}
    line = "⚠️ a.pdf (j1): STALLED 40% (no report for 90 s)"
    assert chat_text(stalled, "a.pdf", None, 90) == line
    straggler = {**event, "action": "straggler", "message": "Straggler: r1 at 20%"}
    assert (
        chat_text(straggler, "train", None) == "🐢 train (j1): PROCESSING 40%: Straggler: r1 at 20%"
    )
    odd = {**event, "status": "WAITING", "message": "x" * 3000}
    line = chat_text(odd, None, None)
    assert line.startswith("• j1: WAITING 40%: x")
    assert len(line) == 2000


def test_a_stalled_jobs_silence_is_counted_from_its_worker_last_heard() -> None:
    at = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    stalled = {"status": JobStatus.STALLED.value, "recorded_at": at}
    assert silent_seconds(stalled, at - timedelta(seconds=75.9)) == 75
    assert silent_seconds(stalled, at) == 0
    assert silent_seconds(stalled, at + timedelta(seconds=1)) is None  # heard from since
    assert silent_seconds(stalled, None) is None
    assert silent_seconds({**stalled, "status": "PROCESSING"}, at - timedelta(1)) is None


def _live(hooks: WebhookStore, interval: float = 1) -> str:
    hook, _ = hooks.create(
        user_id="alice",
        url=URL,
        event_types=list(EVENT_TYPES),
        progress_interval_s=interval,
        format="telegram",
        token="1:" + "a" * 30,
        channel="-1",
    )
    assert (hook.live, hook.max_per_hour, hook.channel) == (True, 1200, "-1")
    return hook.id


def _states(hooks: WebhookStore, hook: str) -> list[tuple[str, str, datetime]]:
    """(body, state, due) of the hook's deliveries, oldest first."""
    return [
        (orjson.loads(d.payload)["body"].split("\n")[0], d.state, d.next_attempt_at)
        for d in reversed(hooks.deliveries(hook))
    ]


def test_a_live_messages_progress_waits_rather_than_being_dropped(
    hooks: WebhookStore, tracker: JobTracker, clock: Clock
) -> None:
    """For a live message, progress inside the interval is kept, due when the interval ends,
    one a job however many changes a fill reads, a newer one replacing it at the same time
    (a job that never stops reporting is never put off); a job's end replaces whatever of it
    waits, at once. The message's state always ends on the job's latest."""
    hook = _live(hooks, interval=1)
    job_id = tracker.start_job("a.pdf", "pdf", user_id="alice")
    now = clock()
    for percentage in (10, 20, 30):
        tracker.apply(ProgressUpdate(job_id, percentage, user_id="alice"))
    assert hooks.fill(now=now) == 1  # the creation and three reports: the latest
    [first] = _states(hooks, hook)
    assert first == ("▓▓▓░░░░░░░ 30% · PROCESSING", "pending", now)
    [sent] = hooks.deliveries(hook)
    hooks.record(sent, status=200, error=None, now=now, max_attempts=5)
    tracker.apply(ProgressUpdate(job_id, 40, user_id="alice"))
    hooks.fill(now=now + timedelta(seconds=0.3))
    tracker.apply(ProgressUpdate(job_id, 50, user_id="alice"))
    hooks.fill(now=now + timedelta(seconds=0.6))
    due = now + timedelta(seconds=1)
    assert _states(hooks, hook)[1:] == [
        ("▓▓▓▓░░░░░░ 40% · PROCESSING", "superseded", due),
        ("▓▓▓▓▓░░░░░ 50% · PROCESSING", "pending", due),
    ]
    tracker.apply(ProgressUpdate(job_id, 60, user_id="alice"))
    hooks.fill(now=now + timedelta(seconds=1.5))  # the waiting one was due: not put off
    assert _states(hooks, hook)[-1] == (
        "▓▓▓▓▓▓░░░░ 60% · PROCESSING",
        "pending",
        now + timedelta(seconds=1.5),
    )
    tracker.apply(ProgressUpdate.final(job_id, success=True, user_id="alice"))
    hooks.fill(now=now + timedelta(seconds=1.6))
    assert [state for _, state, _ in _states(hooks, hook)] == [
        "delivered",
        "superseded",
        "superseded",
        "superseded",
        "pending",
    ]
    assert _states(hooks, hook)[-1][0] == "▓▓▓▓▓▓▓▓▓▓ 100% · FINISHED"


def test_a_live_message_has_one_sender_at_a_time(
    hooks: WebhookStore, tracker: JobTracker, clock: Clock
) -> None:
    """The job's message is claimed while it is sent (another sender waits), given back with
    the platform's reference, and taken again once the claim has run out (a sender died);
    retention and deleting the webhook forget its messages."""
    hook = _live(hooks)
    tracker.start_job("a.pdf", "pdf", user_id="alice")
    hooks.fill(now=clock())
    [delivery] = hooks.deliveries(hook)
    assert delivery.job_user_id == "alice"
    now = clock()
    assert hooks.claim_live(delivery, now=now, hold_s=60) == ("taken", None)
    assert hooks.claim_live(delivery, now=now, hold_s=60) == ("busy", None)
    hooks.release_live(delivery, ref="77", now=now, shown=False)
    assert hooks.claim_live(delivery, now=now, hold_s=60) == ("taken", "77")
    assert hooks.claim_live(delivery, now=now + timedelta(seconds=59), hold_s=60)[0] == "busy"
    assert hooks.claim_live(delivery, now=now + timedelta(seconds=60), hold_s=60) == ("taken", "77")
    other = dataclasses.replace(delivery, job_id="another")
    assert hooks.claim_live(other, now=now, hold_s=60) == ("taken", None)  # its own message
    # Once it shows a change, an older delivery (late, another replica's) is not sent over it.
    hooks.release_live(other, ref="9", now=now, shown=True)
    older = dataclasses.replace(other, event_id=other.event_id - 1)
    assert hooks.claim_live(older, now=now, hold_s=60) == ("stale", None)
    newer = dataclasses.replace(other, event_id=other.event_id + 1)
    assert hooks.claim_live(newer, now=now, hold_s=60) == ("taken", "9")
    assert hooks.target(hook).live  # type: ignore[union-attr]
    hooks.release_live(delivery, ref="77", now=now, shown=False)
    hooks.store.prune(before=now + timedelta(seconds=1))  # last sent before: forgotten
    assert hooks.claim_live(delivery, now=now, hold_s=60) == ("taken", None)
    hooks.release_live(delivery, ref="78", now=now + timedelta(seconds=2), shown=False)
    assert hooks.delete(hook, "alice")
    assert hooks.claim_live(delivery, now=now, hold_s=60) == ("taken", None)  # forgotten


def test_a_retry_waits_at_least_what_the_receiver_asked(
    hooks: WebhookStore, tracker: JobTracker, clock: Clock
) -> None:
    delivery = _one(hooks, tracker, clock)
    now = clock()
    hooks.record(delivery, status=429, error="busy", now=now, max_attempts=5, retry_after=30)
    [after] = hooks.deliveries(delivery.webhook_id)
    assert (after.next_attempt_at - now).total_seconds() == 30


def test_a_live_messages_change_while_one_is_being_sent_keeps_the_interval(
    hooks: WebhookStore, tracker: JobTracker, clock: Clock
) -> None:
    """A change made while the job's last delivery is being sent (leased) waits the interval
    after it, rather than going out right behind it."""
    hook = _live(hooks, interval=10)
    job_id = tracker.start_job("a.pdf", "pdf", user_id="alice")
    now = clock()
    hooks.fill(now=now)
    [lease] = hooks.lease_due(now=now)
    assert lease.spacing == 3  # a telegram webhook's 1,200 an hour
    tracker.apply(ProgressUpdate(job_id, 10, user_id="alice"))
    hooks.fill(now=now + timedelta(seconds=1))
    assert _states(hooks, hook)[-1][1:] == ("pending", now + timedelta(seconds=10))
