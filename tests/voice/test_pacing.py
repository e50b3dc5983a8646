"""FramePacer: absolute 20 ms deadlines without drift, stall skipping (autojump clock)."""

from __future__ import annotations

import trio

from clank.session.voice_role import FramePacer


async def test_deadlines_are_absolute_and_do_not_drift(autojump_clock: trio.abc.Clock) -> None:
    pacer = FramePacer(0.02)
    with trio.fail_after(30):
        start = trio.current_time()
        pacer.restart()
        for _ in range(500):
            await pacer.wait_next()
            # Work that takes time between frames must not push later deadlines back.
            await trio.sleep(0.005)
        # The 500th slot ended exactly 10 s after the start despite 2.5 s of work in between.
        assert abs((trio.current_time() - 0.005) - (start + 500 * 0.02)) < 1e-6
    assert pacer.frames == 500 and pacer.late == 0 and pacer.skipped == 0


async def test_a_stall_skips_missed_slots_instead_of_bursting(autojump_clock: trio.abc.Clock) -> None:
    pacer = FramePacer(0.02, max_lag=0.1)
    with trio.fail_after(5):
        pacer.restart()
        await pacer.wait_next()
        await trio.sleep(1.0)  # the send task was stalled for a second
        lateness = await pacer.wait_next()
        assert pacer.skipped >= 40
        assert lateness == 0.0
        before = trio.current_time()
        await pacer.wait_next()
        assert abs(trio.current_time() - before - 0.02) < 1e-9
