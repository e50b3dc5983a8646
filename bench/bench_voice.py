"""20 ms audio send pacing jitter (p50/p99 wake-up lateness), alone and beside a busy CPU thread.

The loop is the voice role's: mix one frame, Opus-encode it (real libopus), then
``FramePacer.wait_next()`` (a timerfd at absolute deadlines, clank.io.timer). The busy thread runs
pure Python (holds the GIL) like a JPEG/analysis worker gone wild. Goal: p99 <= 2 ms.
Bounded: about 5 x 6 s.

Run: .venv/bin/python bench/bench_voice.py
"""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
import trio
from benchkit import paced_tone

from clank.media.audio import FRAME_SAMPLES
from clank.runner import GIL_SWITCH_INTERVAL

SECONDS = 6.0
WARMUP_FRAMES = 25  # the first wake-ups include imports, allocator and codec warm-up
GOAL_P99_MS = 2.0
CANDIDATE_INTERVALS = (0.0002, 0.0001)


async def measure(seconds: float) -> list[float]:
    return (await paced_tone(seconds))[WARMUP_FRAMES:]


def busy(stop: threading.Event) -> None:
    x = 0
    while not stop.is_set():
        for i in range(10_000):
            x += i * i


def report(name: str, lateness: list[float]) -> None:
    ms = np.array(lateness) * 1000
    p50, p99 = np.percentile(ms, 50), np.percentile(ms, 99)
    verdict = "ok" if p99 <= GOAL_P99_MS else "MISS"
    print(
        f"{name:<36} frames={len(ms):4d}  p50={p50:6.3f} ms  p99={p99:6.3f} ms  max={ms.max():6.3f} ms"
        f"  goal p99<={GOAL_P99_MS} ms  {verdict}"
    )


def with_busy_thread(name: str) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=busy, args=(stop,), daemon=True)
    thread.start()
    try:
        report(name, trio.run(measure, SECONDS))
    finally:
        stop.set()
        thread.join(timeout=2.0)


def main() -> None:
    load = os.getloadavg()[0]
    print(
        f"opus frame = {FRAME_SAMPLES} samples; pacing lateness over {SECONDS:.0f} s; "
        f"load average {load:.2f} on {os.cpu_count()} cores (figures are meaningless when load > cores)"
    )
    # The GIL hand-off interval bounds how fast trio gets the GIL back from a pure-Python
    # thread. `clank run` sets GIL_SWITCH_INTERVAL (0.5 ms); Python's default is 5 ms.
    default = sys.getswitchinterval()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    try:
        report("idle (as clank runs)", trio.run(measure, SECONDS))
        with_busy_thread(f"busy thread ({GIL_SWITCH_INTERVAL * 1e3:.1f} ms, as clank runs)")
        # Candidates for GIL_SWITCH_INTERVAL: a shorter interval bounds how long the trio thread
        # waits for the GIL after each syscall (every socket call releases it) when a worker
        # thread runs Python meanwhile; compare on an idle machine before changing it.
        for candidate in CANDIDATE_INTERVALS:
            sys.setswitchinterval(candidate)
            with_busy_thread(f"busy thread, {candidate * 1e3:.1f} ms (candidate)")
    finally:
        sys.setswitchinterval(default)
    with_busy_thread("busy thread, Python default 5 ms")


if __name__ == "__main__":
    main()
