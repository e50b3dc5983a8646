"""The timerfd sleep: never early, tighter than trio's millisecond-rounded timers, safe fallbacks."""

from __future__ import annotations

import statistics
import sys

import pytest
import trio
import trio.testing

from clank.io.timer import open_precise_timer


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux-only")
async def test_absolute_deadlines_are_met_never_early_and_tighter_than_trio_timers() -> None:
    precise: list[float] = []
    plain: list[float] = []
    with trio.fail_after(10):
        async with open_precise_timer() as timer:
            assert timer.precise
            deadline = trio.current_time()
            for turn in range(80):  # interleaved, so both see the same machine load
                deadline += 0.005
                if turn % 2:
                    await timer.sleep_until(deadline)
                    precise.append(trio.current_time() - deadline)
                else:
                    await trio.sleep_until(deadline)
                    plain.append(trio.current_time() - deadline)
            # A deadline in the past returns at once (a checkpoint).
            await timer.sleep_until(trio.current_time() - 1.0)
    assert min(precise) >= 0.0, precise
    # trio rounds its epoll timeout up to whole milliseconds; the timerfd wakes at the deadline.
    assert statistics.median(precise) < statistics.median(plain), (precise, plain)


async def test_falls_back_to_trio_sleep_under_a_mock_clock(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):  # virtual seconds
        async with open_precise_timer() as timer:
            assert not timer.precise
            start = trio.current_time()
            await timer.sleep_until(start + 30.0)  # autojump: no real waiting
            assert trio.current_time() == pytest.approx(start + 30.0)


async def test_a_sleep_is_cancellable() -> None:
    with trio.fail_after(5):
        async with open_precise_timer() as timer:
            with trio.move_on_after(0.05) as scope:
                await timer.sleep_until(trio.current_time() + 60.0)
            assert scope.cancelled_caught
            # The timer still works after a cancelled sleep.
            target = trio.current_time() + 0.01
            await timer.sleep_until(target)
            assert trio.current_time() >= target
