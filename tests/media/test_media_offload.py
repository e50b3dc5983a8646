"""``run_cpu`` off the trio thread: niced threads of our own cache (reused, started when none is
idle, ended when idle), trio.to_thread's result, limiter and cancellation rules; inline under a
virtual clock."""

from __future__ import annotations

import contextvars
import os
import threading
import time

import pytest
import trio

from clank.io import offload
from clank.io.offload import BACKGROUND_NICE, _NicedThreads, run_cpu

BOUND = 5.0  # seconds any wait here may take before the test fails
_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("_VAR", default="unset")


def _where() -> tuple[int, int]:
    tid = threading.get_native_id()
    return tid, os.getpriority(os.PRIO_PROCESS, tid)


async def test_runs_on_a_niced_thread_and_returns_its_value() -> None:
    ours = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    with trio.fail_after(BOUND):
        tid, nice = await run_cpu(_where)
    assert tid != threading.get_native_id()
    assert nice == min(ours + BACKGROUND_NICE, 19)


async def test_an_idle_thread_is_reused_and_busy_ones_are_not_shared() -> None:
    with trio.fail_after(BOUND):
        first = (await run_cpu(_where))[0]
        again = (await run_cpu(_where))[0]
        assert again == first  # sequential jobs: the idle thread takes the next one
        release = threading.Event()
        seen: list[int] = []

        def hold() -> None:
            seen.append(threading.get_native_id())
            release.wait(BOUND)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_cpu, hold)
            nursery.start_soon(run_cpu, hold)
            while len(seen) < 2:  # noqa: ASYNC110 - the threads report by appending
                await trio.sleep(0.002)
            release.set()
    assert seen[0] != seen[1]  # two at once: a second thread started


async def test_exceptions_and_context_cross_back() -> None:
    def fail() -> None:
        raise KeyError("from the thread")

    with trio.fail_after(BOUND):
        with pytest.raises(KeyError, match="from the thread"):
            await run_cpu(fail)
        _VAR.set("set in trio")
        assert await run_cpu(_VAR.get) == "set in trio"


async def test_the_limiter_bounds_concurrent_jobs() -> None:
    limiter = trio.CapacityLimiter(1)
    running = 0
    most = 0
    lock = threading.Lock()

    def job() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.01)
        with lock:
            running -= 1

    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(lambda: run_cpu(job, limiter=limiter))
    assert most == 1
    assert limiter.borrowed_tokens == 0


async def test_a_cancel_waits_for_the_job_unless_abandoned() -> None:
    release = threading.Event()
    limiter = trio.CapacityLimiter(1)

    def slow() -> str:
        release.wait(BOUND)
        return "done"

    with trio.fail_after(BOUND):
        # Not abandoned: the cancel waits until the job returns, and its result is kept.
        threading.Timer(0.2, release.set).start()
        started = trio.current_time()
        with trio.move_on_after(0.05):
            result = await run_cpu(slow, limiter=limiter)
        assert result == "done"
        assert trio.current_time() - started >= 0.15
        assert limiter.borrowed_tokens == 0
        # Abandoned: the cancel returns at once; the token is held until the thread is done.
        release.clear()
        with trio.move_on_after(0.05):
            await run_cpu(slow, limiter=limiter, abandon_on_cancel=True)
        assert limiter.borrowed_tokens == 1
        release.set()
        while limiter.borrowed_tokens:  # noqa: ASYNC110 - released by the thread's callback
            await trio.sleep(0.002)


async def test_an_idle_thread_ends_after_the_idle_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offload, "IDLE_TIMEOUT_S", 0.05)
    cache = _NicedThreads(0, "clank test cpu")
    done = threading.Event()
    cache.start(done.set)
    assert done.wait(BOUND)
    with trio.fail_after(BOUND):
        while any(t.name == "clank test cpu 1" and t.is_alive() for t in threading.enumerate()):  # noqa: ASYNC110
            await trio.sleep(0.01)
    assert cache.threads_started == 1
    again = threading.Event()
    cache.start(again.set)  # no idle thread is left: a new one starts
    assert again.wait(BOUND)
    assert cache.threads_started == 2


async def test_under_a_virtual_clock_the_job_runs_inline(autojump_clock: trio.testing.MockClock) -> None:
    assert (await run_cpu(_where))[0] == threading.get_native_id()
