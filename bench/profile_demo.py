"""Where the trio thread's time goes in the running demo: per-task step time and a cProfile.

Not a bench (``just bench`` runs ``bench_*.py``): a diagnosis tool. Runs the sandbox demo
in-process (as ``just run``: the voice session, the demo watches with notes, our Go Live publish
with bob watching it, the HTTP API on a free port) and, after the demo settles, for ``seconds``:

* a trio ``Instrument`` times every task step: per task name, CPU share, steps, the longest
  step and how many steps took > 0.5 ms (those delay the audio pacer);
* ``cProfile`` on the trio thread only (``sys.setprofile`` is per thread), top functions by
  own time and by cumulative time;
* the voice role's send lateness on the wire (``TimedSender.recent``) at the same time
  (a copy of the loop, ``paced_tone``, only when no voice role sends: a copy would double the
  audio work on the thread being measured).

Run: .venv/bin/python bench/profile_demo.py [seconds] [dashboards] [--no-profile] [--separate]
(``--separate``: the sandbox in a subprocess, this process is clank alone.)
"""

from __future__ import annotations

import collections
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import time
from contextlib import ExitStack
from typing import Any

import numpy as np
import trio
from benchkit import open_demo, paced_tone

from clank.logging import configure_logging
from clank.runner import GIL_SWITCH_INTERVAL

ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
SECONDS = float(ARGS[0]) if ARGS else 10.0
DASHBOARDS = int(ARGS[1]) if len(ARGS) > 1 else 0
PROFILE = "--no-profile" not in sys.argv
SEPARATE = "--separate" in sys.argv
SETTLE = 10.0
LONG_STEP_S = 0.0005


class StepTimer(trio.abc.Instrument):
    """Per task name: total step time, steps, longest step, steps longer than LONG_STEP_S."""

    def __init__(self) -> None:
        self.started = 0.0
        self.started_cpu = 0.0
        self.cpu: collections.defaultdict[str, float] = collections.defaultdict(float)
        self.long_cpu: collections.Counter[str] = collections.Counter()
        self.step_cpu: collections.defaultdict[str, list[float]] = collections.defaultdict(list)
        self.longest_cpu: dict[str, float] = {}
        self.total: collections.defaultdict[str, float] = collections.defaultdict(float)
        self.steps: collections.Counter[str] = collections.Counter()
        self.long: collections.Counter[str] = collections.Counter()
        self.longest: dict[str, float] = {}
        self.long_steps: list[float] = []

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.started = time.perf_counter()
        self.started_cpu = time.thread_time()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        if not self.started:  # the step that added this instrument
            return
        took = time.perf_counter() - self.started
        self.started = 0.0
        name = _short(task.name)
        cpu = time.thread_time() - self.started_cpu
        self.cpu[name] += cpu
        self.step_cpu[name].append(cpu)
        if cpu > LONG_STEP_S:
            self.long_cpu[name] += 1
        self.longest_cpu[name] = max(cpu, self.longest_cpu.get(name, 0.0))
        self.total[name] += took
        self.steps[name] += 1
        if took > LONG_STEP_S:
            self.long[name] += 1
            self.long_steps.append(took)
        if took > self.longest.get(name, 0.0):
            self.longest[name] = took


def _short(name: str) -> str:
    for prefix in ("clank.", "trio_websocket._impl.", "trio."):
        name = name.replace(prefix, "")
    return name if len(name) <= 62 else name[:59] + "..."


def _dashboard(url: str, token: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["curl", "-sN", "-H", f"Authorization: Bearer {token}", f"{url}/api/events"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def main() -> None:
    async with open_demo(separate=SEPARATE, seconds_to_settle=SETTLE) as info:
        _status_cost(info)
        with ExitStack() as stack:
            for _ in range(DASHBOARDS):
                proc = _dashboard(info.api.url, info.api.token)
                stack.callback(proc.wait, 2)
                stack.callback(proc.terminate)
            await trio.sleep(1.0)
            timer = StepTimer()
            profiler = cProfile.Profile() if PROFILE else None
            result: dict[str, Any] = {}

            async def pace() -> None:
                if role is None:
                    result["lateness"] = await paced_tone(SECONDS)
                else:
                    await trio.sleep(SECONDS)

            role = _voice_role(info)
            if role is not None and role.sender is not None:
                role.sender.recent.clear()  # the send lateness on the wire
            trio.lowlevel.add_instrument(timer)
            if profiler is not None:
                profiler.enable()
            cpu, wall = time.thread_time(), time.perf_counter()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pace)
            busy_cpu, elapsed = time.thread_time() - cpu, time.perf_counter() - wall
            if profiler is not None:
                profiler.disable()
            trio.lowlevel.remove_instrument(timer)
        voice = [] if role is None or role.sender is None else list(role.sender.recent)
        _report(timer, profiler, busy_cpu, elapsed, result.get("lateness", voice), voice)


def _status_cost(info: Any) -> None:
    """What one dashboard tick costs the trio thread: status() and its JSON, CPU per call."""
    service = info.service
    cpu = time.thread_time()
    for _ in range(20):
        status = service.status()
    status_ms = (time.thread_time() - cpu) / 20 * 1e3
    cpu = time.thread_time()
    for _ in range(20):
        text = json.dumps(status, default=str)
    json_ms = (time.thread_time() - cpu) / 20 * 1e3
    if "--status-profile" in sys.argv:
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(50):
            service.status()
        profiler.disable()
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
        print(out.getvalue())
    print(
        f"status(): {status_ms:.2f} ms CPU, its JSON ({len(text)} bytes): {json_ms:.2f} ms"
        f" (each dashboard asks every 0.5 s)"
    )


def _voice_role(info: Any) -> Any:
    try:
        return info.service.voice.role()
    except Exception:  # no voice role: the figure is left out
        return None


def _report(
    timer: StepTimer,
    profiler: cProfile.Profile | None,
    cpu: float,
    elapsed: float,
    lateness: list[float],
    voice: list[float],
) -> None:
    ms = np.array(lateness[25:] if lateness is not voice else lateness) * 1000
    if voice:
        vms = np.array(voice) * 1000
        print(
            f"voice role's own send loop: {len(vms)} frames, lateness p50 {np.percentile(vms, 50):.2f}"
            f" p99 {np.percentile(vms, 99):.2f} max {vms.max():.2f} ms"
        )
    stepped = sum(timer.cpu.values())
    print(
        f"{elapsed:.1f} s, sandbox {'in a subprocess' if SEPARATE else 'in-process'},"
        f" {DASHBOARDS} dashboards,"
        f" profiler {'on' if profiler else 'off'}:"
        f" trio thread CPU {cpu / elapsed:.1%}, CPU in task steps {stepped / elapsed:.1%};"
        f" pacing p50 {np.percentile(ms, 50):.2f} p99 {np.percentile(ms, 99):.2f}"
        f" max {ms.max():.2f} ms; steps > 0.5 ms: {len(timer.long_steps)}"
        f" ({len(timer.long_steps) / elapsed:.1f}/s)"
    )
    long_cpu = sum(timer.long_cpu.values())
    print(
        f"task steps with > 0.5 ms of CPU: {long_cpu / elapsed:.1f}/s"
        " (wall beyond CPU is GIL waits and preemption)"
    )
    print(
        "per second: CPU ms, steps, steps > 0.5 ms CPU; longest step CPU ms;"
        " wall: ms, steps > 0.5 ms, longest ms"
    )
    print(
        f"{'task':<62} {'cpu':>6} {'steps':>6} {'>.5cpu':>6} {'maxcpu':>6}"
        f" | {'wall':>6} {'>.5':>6} {'max':>6}"
    )
    for name, cpu_s in sorted(timer.cpu.items(), key=lambda item: -item[1])[:25]:
        print(
            f"{name:<62} {cpu_s / elapsed * 1e3:6.2f} {timer.steps[name] / elapsed:6.1f}"
            f" {timer.long_cpu[name] / elapsed:6.2f} {timer.longest_cpu[name] * 1e3:6.2f}"
            f" | {timer.total[name] / elapsed * 1e3:6.2f}"
            f" {timer.long[name] / elapsed:6.2f} {timer.longest[name] * 1e3:6.2f}"
        )
    print("step CPU percentiles (ms) of the busiest tasks: p50 / p90 / p99 / max")
    for name, _ in sorted(timer.cpu.items(), key=lambda item: -item[1])[:6]:
        steps = np.array(timer.step_cpu[name]) * 1e3
        print(
            f"  {name:<60} {np.percentile(steps, 50):5.2f} / {np.percentile(steps, 90):5.2f}"
            f" / {np.percentile(steps, 99):5.2f} / {steps.max():5.2f}"
        )
    if profiler is None:
        return
    for key in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(key).print_stats(45)
        print(f"--- cProfile, trio thread, by {key} ({elapsed:.1f} s) ---")
        print("\n".join(out.getvalue().splitlines()[6:]))


if __name__ == "__main__":
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    with open(os.devnull, "w") as quiet:
        configure_logging("json", "warning", stream=quiet)
        trio.run(main)
