"""The voice send loop's 20 ms pacing: alone, beside a 1080p30 watch, and with one core busy too.

clank alone in this process (the voice session speaking a tone, and a Go Live watch of a
1080p30 ~6 Mbit/s screen share); the sandbox (its 1080p encoder, a simulated speaker) runs in a
child process, as Discord would be elsewhere. The figure is the voice role's send lateness on the
wire (``TimedSender.recent``: how long after its 20 ms slot the socket took each packet), for
each of the four send paths (``TimedSender.mode``) in turn within every phase, in a rotating
order, so all four see the same load:

* ``send process``: what clank runs (io/send_process_child.py) — the goal figure; whether it had
  realtime priority is printed (it needs root, CAP_SYS_NICE or an RLIMIT_RTPRIO);
* ``sender thread``: the fallback where the process cannot start (io/timed_sender.py);
* ``trio, prepared ahead``: the same prepared packets sent by a trio task on a timerfd (what
  other trio steps queued ahead of its wake-up still cost);
* ``trio inline (before)``: sent as soon as the send loop has prepared it, as before the sender
  (its wake-up lateness plus its own ~0.8 ms step).

Over ``SECONDS`` per path and phase, ``RUNS`` interleaved rounds of three phases:

1. alone (speaking, no watch);
2. beside the 1080p watch (its decode worker, JPEGs and notes-free pipeline);
3. beside the watch with one core busy: a child process spinning in pure Python (its own GIL),
   bounded in time — a second program on a 2-core machine.

Per phase and path: median p50 / median p99 / worst p99 over the runs. Goals (issue 16): p99 <= 1 ms on an
idle machine (phases 1-2), <= 2 ms with one core busy (phase 3). The figures are meaningless when
the load average exceeds the core count (printed): re-run on an idle machine.

Bounded: about RUNS x (12 x (SECONDS + 0.1) + 3) s plus start-up (~150 s). Always exits 0.
Run: .venv/bin/python bench/bench_voice_pacing.py [runs] [seconds per phase]
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import trio
from bench_voice_io import SANDBOX_PROCESS, SETTINGS, wait_until
from benchkit import read_json_line

from clank.io.gateway import open_gateway_client
from clank.io.timed_sender import SendMode
from clank.logging import configure_logging
from clank.media.audio import tone
from clank.runner import GIL_SWITCH_INTERVAL
from clank.session.stream_watch import start_stream_watch
from clank.session.voice_role import VoiceRole
from clank.session.voice_session import open_voice_session

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
SECONDS = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
WATCH_SETTLE = 1.5  # seconds for the watch's first keyframe before measuring
GOAL_IDLE_MS = 1.0
GOAL_BUSY_MS = 2.0
BUSY_CHILD = (
    "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end: pass\n"
)
PHASES = ("alone", "beside the 1080p watch", "watch + one core busy")
# (name, TimedSender.mode, switch interval): the first is what clank runs, the last the path before it.
VARIANTS: tuple[tuple[str, SendMode, float], ...] = (
    ("send process", "process", GIL_SWITCH_INTERVAL),
    ("sender thread", "thread", GIL_SWITCH_INTERVAL),
    ("trio, prepared ahead", "trio", GIL_SWITCH_INTERVAL),
    ("trio inline (before)", "inline", GIL_SWITCH_INTERVAL),
)


async def _measure(role: VoiceRole, rotation: int) -> dict[str, list[float]]:
    """Send lateness on the wire per variant over one phase (variants in a rotating order)."""
    sender = role.sender
    assert sender is not None
    lateness: dict[str, list[float]] = {}
    for n in range(len(VARIANTS)):
        name, mode, interval = VARIANTS[(n + rotation) % len(VARIANTS)]
        sender.mode = mode
        sys.setswitchinterval(interval)
        await trio.sleep(0.1)  # packets queued under the previous variant are out
        sender.recent.clear()
        await trio.sleep(SECONDS)
        lateness[name] = list(sender.recent)
    sender.mode = VARIANTS[0][1]
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    return lateness


Runs = dict[str, list[dict[str, list[float]]]]


async def _run_all() -> tuple[Runs, dict[str, Any]]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", SANDBOX_PROCESS], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    results: Runs = {phase: [] for phase in PHASES}
    seen: dict[str, Any] = {"decoded": 0, "sizes": set()}
    try:
        assert process.stdout is not None and process.stdin is not None
        with trio.fail_after(30):
            info = await read_json_line(process.stdout, "the sandbox process")
        async with (
            open_gateway_client(url=info["gateway_url"], token=info["token"]) as gateway,
            open_voice_session(
                gateway, guild_id=info["guild_id"], channel_id=info["channel_id"], settings=SETTINGS
            ) as session,
        ):
            await session.voice.wait_ready()
            role: VoiceRole = session.voice.api
            with trio.fail_after(20):
                await wait_until(lambda: role.ssrc is not None and role.connection.dave.ready, 0.01)
            await process.stdin.send_all(b"go\n")  # alice goes live (1080p30), bob speaks
            stream = role.speech.open_stream(48_000, 2)
            stream.push(tone(300.0, RUNS * (3 * len(VARIANTS) * (SECONDS + 0.1) + WATCH_SETTLE + 2.0) + 5.0))
            stream.end()
            await trio.sleep(1.0)
            assert role.sender is not None
            seen["send path"] = role.sender.path_description()
            for run in range(RUNS):
                results[PHASES[0]].append(await _measure(role, run))
                watch = await start_stream_watch(session, info["alice"], settings=SETTINGS.watch)
                await trio.sleep(WATCH_SETTLE)
                results[PHASES[1]].append(await _measure(role, run))
                busy = await trio.lowlevel.open_process(
                    [sys.executable, "-c", BUSY_CHILD, str(len(VARIANTS) * (SECONDS + 0.1) + 1.0)]
                )
                try:
                    await trio.sleep(0.2)
                    results[PHASES[2]].append(await _measure(role, run))
                finally:
                    busy.kill()
                    with trio.move_on_after(2.0):
                        await busy.wait()
                stats = watch.statistics()
                for s in stats.streams.values():
                    if s.decode is not None:
                        seen["decoded"] += s.decode.decoded_frames
                        seen["sizes"].add(f"{s.width}x{s.height}")
                await watch.stop()
    finally:
        process.kill()
        with trio.move_on_after(2.0):
            await process.wait()
    return results, seen


def _ms(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values) * 1000, q))


def main() -> None:
    configure_logging(level="warning")
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    load = os.getloadavg()[0]
    print(
        f"voice send loop pacing, {RUNS} runs x {SECONDS:.0f} s per phase; load average {load:.2f}"
        f" on {os.cpu_count()} cores (meaningless when load > cores)"
    )
    started = time.perf_counter()
    results, seen = trio.run(_run_all)
    for phase in PHASES:
        goal = GOAL_BUSY_MS if "busy" in phase else GOAL_IDLE_MS
        for index, (name, _, _) in enumerate(VARIANTS):
            runs = [r[name] for r in results[phase] if r.get(name)]
            if not runs:
                print(f"  {phase:<24} {name:<21} no frames measured")
                continue
            p50 = float(np.median([_ms(r, 50) for r in runs]))
            p99s = [_ms(r, 99) for r in runs]
            worst = max(p99s)
            verdict = (
                f"goal p99 <= {goal:.0f} ms{' (idle machine)' if goal == GOAL_IDLE_MS else ''}"
                f"  {'ok' if worst <= goal else 'MISS'}"
                if index == 0
                else "(informative)"
            )
            print(
                f"  {phase:<24} {name:<21} p50 {p50:6.3f} / p99 median {float(np.median(p99s)):6.3f}"
                f" / worst {worst:6.3f} ms (max {max(_ms(r, 100) for r in runs):6.2f})   {verdict}"
            )
    sizes = "/".join(sorted(seen["sizes"])) or "none"
    print(
        f"  (the watch decoded {seen['decoded']} frames, {sizes}; clank's send path:"
        f" {seen.get('send path')}; {time.perf_counter() - started:.0f} s)"
    )


if __name__ == "__main__":
    main()
