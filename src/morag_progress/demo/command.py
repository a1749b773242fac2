"""The demo's wrapped command: a converter that only prints (plain log lines and a tqdm bar),
run under ``morag-progress run`` which finds the progress in its output."""

from __future__ import annotations

import sys
import time


def main() -> int:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 6.0
    print("Stage: Extracting slides (5%)", flush=True)
    time.sleep(seconds * 0.1)
    try:
        from tqdm import tqdm
    except ImportError:  # without tqdm the same progress, as plain lines
        for slide in range(1, 31):
            print(f"[{10 + slide * 2}%] Rendering slide {slide}", flush=True)
            time.sleep(seconds * 0.7 / 30)
    else:
        for _ in tqdm(range(30), total=40, desc="Rendering slides", file=sys.stderr):
            time.sleep(seconds * 0.7 / 30)
    print("Processing progress: Writing speaker notes (90%)", flush=True)
    time.sleep(seconds * 0.2)
    print("conversion complete", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
