"""Parser benchmark: ours against a straightforward reference, in the same run.

    python bench/parser.py [--lines 200000] [--repeat 5]

Streams (fixed seed, reproducible): a mixed log stream (about 70% JSON and 30% text lines, 5%
carrying progress in every supported format, some ordinary lines with non-progress percents,
60-200 characters long) and a progress-only stream. The reference is what one writes first:
try ``json.loads`` on each line, then try the seed's six regexes in turn. Also: 100 KB lines
without progress, several shapes, worst case reported. Medians of ``--repeat`` rounds, ours and
the reference alternating.

Targets (the parser issue): mixed >= 1,000,000 lines/s and >= 100x the reference;
progress-only >= 5x the reference; a 100 KB line without progress in under 5 ms.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import string
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from morag_progress import ProgressEventParser

SEED = 20250611

# -- the reference --------------------------------------------------------------------------------

REFERENCE_PATTERNS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"Processing progress:\s*(.+?)\s*\((\d+)%\)",
        r"Processing\.\.\.\s*(\d+)%",
        r"Progress:\s*(\d+)%\s*-\s*(.+)",
        r"Stage:\s*(.+?)\s*\((\d+)%\)",
        r"(.+?):\s*(\d+)%\s*complete",
        r"\[(\d+)%\]\s*(.+)",
    )
]


def reference_parse(line: str) -> tuple[int, str] | None:
    """json.loads, then the six seed regexes in turn: the straightforward parser."""
    try:
        data = json.loads(line)
        message = data.get("event", "") if isinstance(data, dict) else ""
    except ValueError:
        message = line
    if not isinstance(message, str):
        return None
    for pattern in REFERENCE_PATTERNS:
        m = pattern.search(message)
        if m:
            groups = [g for g in m.groups()]
            digits = [g for g in groups if g.isdigit()]
            if digits and 0 <= int(digits[0]) <= 100:
                rest = [g for g in groups if not g.isdigit()]
                return int(digits[0]), (rest[0] if rest else message)
    return None


def reference_stream(lines: Sequence[str]) -> int:
    return sum(1 for line in lines if reference_parse(line) is not None)


# -- the streams ----------------------------------------------------------------------------------

WORDS = [
    "audio",
    "video",
    "document",
    "chunk",
    "embedding",
    "vector",
    "qdrant",
    "request",
    "response",
    "worker",
    "task",
    "batch",
    "model",
    "token",
    "page",
    "frame",
    "segment",
    "speaker",
    "cache",
    "retry",
    "upload",
    "download",
    "index",
    "query",
    "ingest",
]
LEVELS = ["info", "debug", "warning"]
LOGGERS = ["remote_converter", "ingest_tasks", "morag.api", "celery.worker", "qdrant_client"]


def words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def timestamp(rng: random.Random) -> str:
    return (
        f"2025-06-11T11:{rng.randint(10, 59)}:{rng.randint(10, 59)}.{rng.randint(0, 999999):06d}Z"
    )


def progress_message(rng: random.Random) -> str:
    p = rng.randint(0, 100)
    msg = words(rng, 2, 6).capitalize()
    return rng.choice(
        [
            f"Processing progress: {msg} ({p}%)",
            f"Processing... {p}%",
            f"Progress: {p}% - {msg}",
            f"Stage: {msg} ({p}%)",
            f"{msg}: {p}% complete",
            f"[{p}%] {msg}",
        ]
    )


def progress_line(rng: random.Random, as_json: bool) -> str:
    kind = rng.random()
    if kind < 0.1:  # a tqdm bar
        n = rng.randint(1, 500)
        total = rng.randint(n, 500)
        pct = n * 100 // total
        bar = "#" * (pct // 10) + " " * (10 - pct // 10)
        elapsed = f"00:0{rng.randint(1, 9)}"
        text = f"{words(rng, 1, 2)}: {pct:3d}%|{bar}| {n}/{total} [{elapsed}<00:07, 3.1it/s]"
        return json.dumps({"event": text, "timestamp": timestamp(rng)}) if as_json else text
    if as_json and kind < 0.25:  # structured fields
        field = rng.choice(
            [("percentage", rng.randint(0, 100)), ("progress", round(rng.random(), 3))]
        )
        return json.dumps(
            {
                "event": words(rng, 2, 5),
                field[0]: field[1],
                "logger": rng.choice(LOGGERS),
                "level": "info",
                "timestamp": timestamp(rng),
            }
        )
    message = progress_message(rng)
    if as_json:
        return json.dumps(
            {
                "event": message,
                "logger": rng.choice(LOGGERS),
                "level": "info",
                "timestamp": timestamp(rng),
            }
        )
    return f"{timestamp(rng)} INFO {message}" if rng.random() < 0.5 else message


def ordinary_line(rng: random.Random, as_json: bool) -> str:
    text = words(rng, 5, 22)
    if rng.random() < 0.08:  # a percent that is not progress
        text += rng.choice(
            [
                f" GPU utilisation {rng.randint(1, 99)}%",
                f" accuracy improved by {rng.randint(1, 9)}%",
                f" cache hit rate {rng.randint(1, 99)}.{rng.randint(0, 9)}%",
            ]
        )
    if as_json:
        return json.dumps(
            {
                "event": text,
                "logger": rng.choice(LOGGERS),
                "level": rng.choice(LEVELS),
                "timestamp": timestamp(rng),
                "request_id": "".join(rng.choices(string.hexdigits, k=12)),
            }
        )
    return f"{timestamp(rng)} {rng.choice(LEVELS).upper()} {rng.choice(LOGGERS)}: {text}"


def clip(line: str) -> str:
    return line if len(line) <= 200 else line[:200]


def mixed_stream(n: int, rng: random.Random) -> list[str]:
    lines = []
    for _ in range(n):
        as_json = rng.random() < 0.7
        line = progress_line(rng, as_json) if rng.random() < 0.05 else ordinary_line(rng, as_json)
        while len(line) < 60:
            line = line + " " + rng.choice(WORDS) if not as_json else line
            if as_json:
                break
        lines.append(line if as_json else clip(line))
    return lines


def progress_stream(n: int, rng: random.Random) -> list[str]:
    return [progress_line(rng, rng.random() < 0.7) for _ in range(n)]


def long_lines() -> dict[str, str]:
    size = 100_000
    filler = ("lorem ipsum dolor sit amet " * (size // 27 + 1))[:size]
    return {
        "plain text, no percent": filler,
        "plain text, a percent every 50 chars": ("GPU utilisation 87% " * (size // 20))[:size],
        "JSON, long event with percents": json.dumps(
            {"event": ("cache hit 93% " * (size // 14))[:size]}
        ),
        "JSON, no percent": json.dumps({"event": filler, "level": "info"}),
        "colons and percents (regex bait)": (": 5% " * (size // 5))[:size],
        "digits then percent-bar": "1" * (size - 2) + "%|",
        "percent-bars without bars": ("x%|" * (size // 3))[:size],
        "stage prefixes, no percent sign": ("Stage: (" * (size // 8))[:size] + "%",
    }


# -- measurement ----------------------------------------------------------------------------------


def rates(
    ours: Callable[[Sequence[str]], Any],
    reference: Callable[[Sequence[str]], Any],
    lines: Sequence[str],
    reference_lines: Sequence[str],
    repeat: int,
) -> tuple[float, float, float]:
    """Median lines/s of ours and of the reference, and the median of per-round ratios.

    The two run alternately, round by round, so that both see the same noise; the reference
    runs on a prefix of the same (i.i.d.) stream, since it is a hundred times slower.
    """
    ours_rates, ref_rates, ratios = [], [], []
    for _ in range(repeat):
        start = time.perf_counter()
        ours(lines)
        ours_rate = len(lines) / (time.perf_counter() - start)
        start = time.perf_counter()
        reference(reference_lines)
        ref_rate = len(reference_lines) / (time.perf_counter() - start)
        ours_rates.append(ours_rate)
        ref_rates.append(ref_rate)
        ratios.append(ours_rate / ref_rate)
    return statistics.median(ours_rates), statistics.median(ref_rates), statistics.median(ratios)


def per_call_ms(fn: Callable[[str], Any], line: str, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(line)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main(argv: Sequence[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--lines", type=int, default=200_000)
    args.add_argument("--repeat", type=int, default=7)
    opts = args.parse_args(argv)

    parser = ProgressEventParser()
    rng = random.Random(SEED)
    mixed = mixed_stream(opts.lines, rng)
    only = progress_stream(opts.lines // 4, rng)

    found_ours = len(parser.parse_log_stream(mixed))
    found_ref = reference_stream(mixed)
    json_share = sum(line.startswith("{") for line in mixed) / len(mixed)
    print(
        f"mixed stream: {len(mixed):,} lines, {json_share:.0%} JSON, "
        f"progress found: ours {found_ours:,}, reference {found_ref:,}"
    )

    ok = True
    for name, lines, target_rate, target_ratio in (
        ("mixed", mixed, 1_000_000, 100.0),
        ("progress-only", only, None, 5.0),
    ):
        ours, ref, ratio = rates(
            parser.parse_log_stream, reference_stream, lines, lines[:20_000], opts.repeat
        )
        verdict = ratio >= target_ratio and (target_rate is None or ours >= target_rate)
        ok &= verdict
        goal = f">= {target_rate:,} lines/s and " if target_rate else ""
        outcome = "OK" if verdict else "MISS"
        print(
            f"{name:>14}: ours {ours:>12,.0f} lines/s  reference {ref:>10,.0f} lines/s  "
            f"ratio {ratio:6.1f}x  (target {goal}>= {target_ratio:g}x) {outcome}"
        )

    # The reference's lazy "(.+?):" is quadratic: on some 100 KB lines it runs for over a minute
    # (seen: 73 s), so it is timed on the same shapes cut to 10 KB.
    worst = 0.0
    print("  long lines: ours at 100 KB; the reference at 10 KB (it is quadratic)")
    for name, line in long_lines().items():
        ms = per_call_ms(parser.parse_json_log, line, 21)
        ref_ms = per_call_ms(reference_parse, line[:10_000], 1)
        worst = max(worst, ms)
        print(f"  {name:<38} ours {ms:7.3f} ms   reference (10 KB) {ref_ms:9.3f} ms")
    long_ok = worst < 5.0
    ok &= long_ok
    print(f"  worst 100 KB line: {worst:.3f} ms (target < 5 ms) {'OK' if long_ok else 'MISS'}")
    print(f"python {sys.version.split()[0]}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
