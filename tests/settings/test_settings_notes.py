"""Settings audit, ``[notes]`` timing keys: ``note_policy(settings.notes)`` (what ``clank run`` gives
every watch) drives real :class:`ScreenNotes` under ``autojump_clock``, and each key moves when notes
are taken: ``min_interval_s``, ``periodic_s``, ``change_floor``, ``idle_interval_s``, ``history``,
``context_notes``.
"""

from __future__ import annotations

import itertools

import attrs
import pytest
import trio
import trio.testing

from clank.config import NotesSettings
from clank.errors import VisionError
from clank.watch.commentary import note_policy
from clank.watch.frames import ScreenFrame
from clank.watch.notes import open_screen_notes
from clank.watch.vision import NoteContext

BASE = NotesSettings()


class Recorder:
    """A real vision provider that answers at once and records when and with what it was asked."""

    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[tuple[float, str, int]] = []  # (time, trigger, previous notes given)

    async def describe(self, frame_jpeg: bytes, *, context: NoteContext) -> str:
        if not frame_jpeg:
            raise VisionError("empty", "no frame")
        self.calls.append((trio.current_time(), context.trigger, len(context.previous_notes)))
        return f"note {len(self.calls)}"


def frame(sequence: int, *, change_ema: float, scene_cut: bool = False) -> ScreenFrame:
    return ScreenFrame(
        jpeg=f"jpeg-{sequence}".encode(),
        width=1280,
        height=720,
        rtp_timestamp=90_000 * sequence,
        user_id="1001",
        ssrc=4242,
        codec="H264",
        stream_type="screen",
        change_score=0.9 if scene_cut else change_ema,
        change_ema=change_ema,
        scene_cut=scene_cut,
        wall_time=trio.current_time(),
        sequence=sequence,
    )


async def note_times(
    settings: NotesSettings, seconds: int, *, change_ema: float = 0.0, scene_cut: bool = False
) -> tuple[list[tuple[float, str, int]], int]:
    """One frame a second for ``seconds``; returns the provider calls (relative) and notes kept.

    A rate-limited trigger still pending when the frames stop fires as the notes close (at ``seconds``).
    """
    provider = Recorder()
    send, receive = trio.open_memory_channel[ScreenFrame](0)
    async with open_screen_notes(provider, receive, policy=note_policy(settings), user_id="1001") as notes:
        start = trio.current_time()
        for sequence in range(1, seconds + 1):
            await send.send(frame(sequence, change_ema=change_ema, scene_cut=scene_cut and sequence > 1))
            await trio.sleep(1.0)
        kept = len(notes.notes())
    return [(round(t - start), trigger, given) for t, trigger, given in provider.calls], kept


def starts(calls: list[tuple[float, str, int]]) -> list[float]:
    return [t for t, _trigger, _given in calls]


@pytest.mark.parametrize(("idle", "expected"), [(5.0, [0, 5, 10, 15]), (30.0, [0])])
async def test_idle_interval_s_spaces_notes_on_a_still_screen(
    idle: float, expected: list[int], autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(600):
        calls, _kept = await note_times(attrs.evolve(BASE, idle_interval_s=idle), 18)
    assert starts(calls) == expected


@pytest.mark.parametrize(("periodic", "expected"), [(4.0, [0, 4, 8, 12, 16]), (10.0, [0, 10])])
async def test_periodic_s_spaces_notes_on_a_changing_screen(
    periodic: float, expected: list[int], autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(600):
        calls, _kept = await note_times(attrs.evolve(BASE, periodic_s=periodic), 18, change_ema=0.05)
    assert starts(calls) == expected


@pytest.mark.parametrize(("floor", "changing"), [(0.005, True), (0.1, False)])
async def test_change_floor_decides_whether_the_screen_counts_as_changing(
    floor: float, changing: bool, autojump_clock: trio.testing.MockClock
) -> None:
    settings = attrs.evolve(BASE, change_floor=floor, periodic_s=4.0, idle_interval_s=60.0)
    with trio.fail_after(600):
        calls, _kept = await note_times(settings, 10, change_ema=0.05)
    assert starts(calls) == ([0, 4, 8] if changing else [0])


@pytest.mark.parametrize(("gap", "expected"), [(2.0, [0, 2, 4, 6, 8]), (5.0, [0, 5])])
async def test_min_interval_s_spaces_scene_cut_notes(
    gap: float, expected: list[int], autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(600):
        calls, _kept = await note_times(
            attrs.evolve(BASE, min_interval_s=gap), 10, change_ema=0.3, scene_cut=True
        )
    times = starts(calls)
    assert times[: len(expected)] == expected  # a cut every second, one note per ``gap``
    assert all(b - a >= gap for a, b in itertools.pairwise(times)), times


@pytest.mark.parametrize(("history", "context"), [(2, 1), (20, 3)])
async def test_history_and_context_notes_bound_what_is_kept_and_sent(
    history: int, context: int, autojump_clock: trio.testing.MockClock
) -> None:
    settings = attrs.evolve(
        BASE, history=history, context_notes=context, idle_interval_s=1.0, min_interval_s=0.0
    )
    with trio.fail_after(600):
        calls, kept = await note_times(settings, 8)
    assert len(calls) >= 6
    assert kept == min(history, len(calls))
    assert max(given for _t, _trigger, given in calls) == context
