"""Log uploads: coalesced in one pass to a bounded set of updates, parsed in a worker process."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime

import pytest

from morag_progress.api.uploads import LOG_UPDATES, UploadParser, coalesce, parse_upload
from morag_progress.models import ProgressEvent


def test_coalesce_keeps_runs_ends_and_the_newest_stamp() -> None:
    """Runs of equal percentage keep their last line; the thinned set keeps the last line and
    the line with the newest timestamp of its own, in line order."""
    flat = [ProgressEvent(p, f"m{i}") for i, p in enumerate([1, 1, 2, 2, 2, 3])]
    assert [seq for seq, _ in coalesce(flat)[0]] == [1, 4, 5]
    newest = datetime(2030, 1, 1, tzinfo=UTC)
    many = [ProgressEvent(i % 100, f"m{i}") for i in range(1000)]
    many[10] = ProgressEvent(10, "stamped", timestamp=newest)
    kept, count = coalesce(iter(many), limit=20)
    assert count == 1000
    assert len(kept) <= 20
    seqs = [seq for seq, _ in kept]
    assert seqs == sorted(seqs)
    assert 999 in seqs
    assert 10 in seqs


def test_a_large_upload_holds_at_most_twice_the_limit_while_coalescing() -> None:
    """200,000 distinct run ends come out as at most the limit, spread over the whole upload,
    first and last included."""
    n = 200_000
    kept, count = coalesce(ProgressEvent(i % 100, f"m{i}") for i in range(n))
    assert count == n
    seqs = [seq for seq, _ in kept]
    assert len(seqs) <= LOG_UPDATES
    assert seqs[0] == 0
    assert seqs[-1] == n - 1
    assert max(b - a for a, b in itertools.pairwise(seqs)) < 3 * n / LOG_UPDATES


def test_parse_upload_decodes_invalid_utf8_and_counts() -> None:
    """Invalid UTF-8 is replaced, lines and progress lines are counted."""
    parsed = parse_upload(b"[10%] a\xff\nnothing\n[20%] b")
    assert (parsed.lines, parsed.events) == (3, 2)
    assert [event.percentage for _, event in parsed.chosen] == [10, 20]
    assert "\ufffd" in parsed.chosen[0][1].message


async def test_the_parser_pool_parses_in_another_process_and_closes() -> None:
    """With one worker process the result is the same as in-process parsing; closing stops it,
    and a pool of 0 parses in a thread."""
    body = "\n".join(f"[{i % 99 + 1}%] line {i}" for i in range(1000)).encode()
    pool = UploadParser(1)
    try:
        remote = await pool.parse(body)
    finally:
        pool.close()
    local = await UploadParser(0).parse(body)

    def seen(parsed: object) -> object:
        assert isinstance(parsed, type(local))
        return [(seq, e.percentage, e.message) for seq, e in parsed.chosen], parsed.events

    assert seen(remote) == seen(local)
    assert remote.events == 1000


async def test_one_user_cannot_queue_everyone_behind_its_uploads() -> None:
    """A user with its allowance of uploads being parsed (whatever keys they came with: the
    route counts by user) gets 429 for one more; another user does not; the place is free
    again afterwards."""
    from morag_progress.errors import LimitExceededError

    pool = UploadParser(0, per_user=1)
    body = "\n".join(f"[{i % 99 + 1}%] line {i}" for i in range(50_000)).encode()
    first = asyncio.ensure_future(pool.parse(body, "alice"))
    await asyncio.sleep(0)  # the first upload is being parsed
    with pytest.raises(LimitExceededError, match="this user has 1 log uploads being parsed"):
        await pool.parse(b"[5%] x", "alice")
    assert (await pool.parse(b"[5%] x", "bob")).events == 1
    assert (await first).events == 50_000
    assert (await pool.parse(b"[5%] x", "alice")).events == 1


def test_the_last_line_without_a_time_of_its_own_is_kept() -> None:
    """Lines without a timestamp are ordered at receipt, after any stamped line: the last of
    them decides the job's state, so it survives thinning even before a stamped last line."""
    past = datetime(2020, 1, 1, tzinfo=UTC)
    events = [ProgressEvent(i % 99 + 1, f"line {i}") for i in range(199)]
    events.append(ProgressEvent(5, "stamped, old", timestamp=past))
    kept, _ = coalesce(events, limit=10)
    assert 198 in [seq for seq, _ in kept]
    assert len(kept) <= 10


async def test_a_parse_process_that_dies_is_replaced() -> None:
    """A worker process killed under the pool (out of memory, a signal) breaks it for good:
    the next upload starts new processes and is parsed, and so are later ones."""
    import os

    pool = UploadParser(1)
    try:
        assert (await pool.parse(b"[5%] x", "alice")).events == 1
        broken = pool._workers()
        with pytest.raises(Exception, match="terminated abruptly"):
            broken.submit(os._exit, 1).result(timeout=30)  # a worker dies
        assert (await pool.parse(b"[6%] y", "alice")).events == 1
        assert pool._workers() is not broken
        assert (await pool.parse(b"[7%] z", "alice")).events == 1
    finally:
        pool.close()
