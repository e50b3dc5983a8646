"""``CpuSlots``: at most N holders, a released slot handed to the oldest waiter (no barging), and
the decode workers' threads taking one per job."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import trio

from clank.errors import UsageError
from clank.io.decode_worker import DECODE_SLOTS, open_decode_worker
from clank.io.worker_thread import CpuSlots, CpuSlotsStatistics
from clank.media.encoder import VideoEncoder
from clank.media.synth import ScreenSynth

BOUND = 5.0  # seconds any wait here may take before the test fails


def _poll(predicate: Callable[[], bool]) -> None:
    """Wait for state other threads change (no event exists for it), bounded."""
    done = threading.Event()
    for _ in range(int(BOUND / 0.002)):
        if predicate():
            return
        done.wait(0.002)
    raise AssertionError("condition not reached")


def test_a_released_slot_goes_to_the_oldest_waiter() -> None:
    slots = CpuSlots(2)
    order: list[str] = []
    entered = {name: threading.Event() for name in "ABC"}
    leave = {name: threading.Event() for name in "ABC"}

    def hold(name: str) -> None:
        with slots:
            order.append(name)
            entered[name].set()
            leave[name].wait(BOUND)

    slots.__enter__()
    slots.__enter__()  # the test holds both slots
    threads = [threading.Thread(target=hold, args=(name,), daemon=True) for name in "ABC"]
    for index in range(2):
        threads[index].start()
        _poll(lambda waiting=index + 1: slots.statistics().waiting == waiting)
    assert not entered["A"].is_set() and not entered["B"].is_set()

    slots.__exit__(None, None, None)  # one slot frees: it is A's (the oldest waiter)
    assert entered["A"].wait(BOUND)
    assert slots.statistics() == CpuSlotsStatistics(total=2, held=2, waiting=1)
    threads[2].start()  # C asks after B
    _poll(lambda: slots.statistics().waiting == 2)
    leave["A"].set()  # A's slot is handed to B, not to C, nor kept by A
    assert entered["B"].wait(BOUND)
    assert not entered["C"].is_set() and slots.statistics().waiting == 1

    slots.__exit__(None, None, None)  # the test's second slot: C's
    assert entered["C"].wait(BOUND)
    for name in "BC":
        leave[name].set()
    for thread in threads:
        thread.join(BOUND)
    assert order == ["A", "B", "C"]
    assert slots.statistics() == CpuSlotsStatistics(total=2, held=0, waiting=0)


def test_slots_count_must_be_positive() -> None:
    with pytest.raises(UsageError):
        CpuSlots(0)


async def test_decode_threads_take_a_slot_per_job_and_give_it_back() -> None:
    """Two streams' threads decode through the process-wide slots; none is held afterwards."""
    synth = ScreenSynth(320, 180, fps=30, scene_seconds=1.0)
    encoder = VideoEncoder("h264", 320, 180, 30, 500_000)
    frames = [au for index in range(10) for au in encoder.encode(synth.frame(index))]
    with trio.fail_after(BOUND * 2):
        async with (
            open_decode_worker("h264", on_output=lambda image: None, queue_size=32) as first,
            open_decode_worker("h264", on_output=lambda image: None, queue_size=32) as second,
        ):
            for index, au in enumerate(frames):
                for worker in (first, second):
                    assert worker.submit(au.data, index * 3000, keyframe=au.keyframe)
            while first.decoded_frames < len(frames) or second.decoded_frames < len(frames):  # noqa: ASYNC110
                await trio.sleep(0.002)  # the threads own the counters: poll, bounded above
    assert DECODE_SLOTS.statistics().held == 0 and DECODE_SLOTS.statistics().waiting == 0
