"""Screen-notes trigger policy: the pure decision table and the note-taking task under autojump."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from notes_fakes import ScriptedProvider, make_frame

from clank.errors import UsageError, WatchError
from clank.watch.frames import LatestFrameStore, ScreenFrame
from clank.watch.notes import (
    TRIGGER_RULES,
    NotePolicy,
    ScreenNotes,
    Trigger,
    TriggerState,
    decide_trigger,
    open_screen_notes,
)

POLICY = NotePolicy(min_interval_s=5.0, periodic_s=10.0, change_floor=0.05)

# (name, state, scene_cut, change_ema, now, expected)
DECISIONS = [
    ("first frame", TriggerState(0, False, None), False, 0.0, 0.0, "first_frame"),
    ("first frame retried after a failure", TriggerState(0, False, 3.0), False, 0.0, 4.0, "first_frame"),
    ("first frame outstanding, still", TriggerState(0, True, 0.0), False, 0.0, 1.0, None),
    ("first frame outstanding, cut", TriggerState(0, True, 0.0), True, 0.5, 1.0, "scene_cut"),
    ("scene cut", TriggerState(1, False, 0.0), True, 0.3, 1.0, "scene_cut"),
    ("scene cut while outstanding", TriggerState(1, True, 0.0), True, 0.3, 1.0, "scene_cut"),
    ("still screen", TriggerState(1, False, 0.0), False, 0.0, 100.0, None),
    ("changing, not yet due", TriggerState(1, False, 0.0), False, 0.2, 9.9, None),
    ("changing and due", TriggerState(1, False, 0.0), False, 0.2, 10.0, "periodic"),
    ("changing, due, below floor", TriggerState(1, False, 0.0), False, 0.04, 50.0, None),
    ("changing, due, but outstanding", TriggerState(1, True, 0.0), False, 0.2, 50.0, None),
]


@pytest.mark.parametrize(
    ("state", "scene_cut", "change_ema", "now", "expected"),
    [row[1:] for row in DECISIONS],
    ids=[row[0] for row in DECISIONS],
)
def test_decide_trigger_table(
    state: TriggerState, scene_cut: bool, change_ema: float, now: float, expected: str | None
) -> None:
    assert decide_trigger(POLICY, state, scene_cut=scene_cut, change_ema=change_ema, now=now) == expected


def test_trigger_rules_table_is_complete_and_ordered() -> None:
    assert set(TRIGGER_RULES) == {"first_frame", "scene_cut", "periodic", "on_demand"}
    priorities = [rule.priority for rule in TRIGGER_RULES.values()]
    assert len(set(priorities)) == len(priorities)
    assert not TRIGGER_RULES["on_demand"].rate_limited
    limited: tuple[Trigger, ...] = ("first_frame", "scene_cut", "periodic")
    assert all(TRIGGER_RULES[t].rate_limited for t in limited)


@pytest.mark.parametrize(
    "kwargs", [{"min_interval_s": -1.0}, {"periodic_s": 0.0}, {"history": 0}, {"call_timeout_s": 0.0}]
)
def test_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(UsageError):
        NotePolicy(**kwargs)  # type: ignore[arg-type]


@asynccontextmanager
async def running(
    provider: ScriptedProvider, policy: NotePolicy = POLICY
) -> AsyncIterator[tuple[ScreenNotes, trio.MemorySendChannel[ScreenFrame]]]:
    send, receive = trio.open_memory_channel[ScreenFrame](0)
    async with open_screen_notes(provider, receive, policy=policy, user_id="1001") as notes:
        yield notes, send


async def test_first_frame_takes_a_note(autojump_clock: trio.testing.MockClock) -> None:
    provider = ScriptedProvider(delay=1.0)
    with trio.fail_after(60):
        async with running(provider) as (notes, send):
            await send.send(make_frame(1))
            note = await notes.wait_note()
    assert note.number == 1
    assert note.trigger == "first_frame"
    assert note.frame_sequence == 1
    assert note.rtp_timestamp == 90_000
    assert note.text == "note 1: first_frame of jpeg-1"
    assert note.latency_s == pytest.approx(1.0)
    assert provider.calls[0].context.user_id == "1001"
    assert provider.calls[0].context.previous_notes == ()
    stats = notes.statistics()
    assert (stats.taken, stats.failed, stats.frames_seen) == (1, 0, 1)
    assert stats.last_latency_s == pytest.approx(1.0)


async def test_scene_cut_takes_a_note_on_the_newest_frame(autojump_clock: trio.testing.MockClock) -> None:
    provider = ScriptedProvider()
    with trio.fail_after(60):
        async with running(provider) as (notes, send):
            t0 = trio.current_time()
            await send.send(make_frame(1))
            first = await notes.wait_note()
            await trio.sleep(1.0)
            await send.send(make_frame(2, scene_cut=True, change_ema=0.3))
            await trio.sleep(1.0)
            await send.send(make_frame(3, change_ema=0.2))
            second = await notes.wait_note(after_number=first.number)
    assert second.trigger == "scene_cut"
    assert second.frame_sequence == 3  # the newest picture when the window opened
    # Held back by the 5 s minimum interval after the first call.
    assert provider.calls[1].started - t0 == pytest.approx(5.0)
    assert notes.statistics().rate_limited == 1
    assert provider.calls[1].context.previous_notes == (first.text,)
    assert provider.calls[1].context.scene_cut is False  # frame 3's own flags travel with it


@pytest.mark.parametrize(
    ("change_ema", "expected_triggers"),
    [(0.2, ["first_frame", "periodic", "periodic"]), (0.0, ["first_frame"])],
)
async def test_periodic_only_while_changing(
    autojump_clock: trio.testing.MockClock, change_ema: float, expected_triggers: list[str]
) -> None:
    provider = ScriptedProvider()
    with trio.fail_after(120):
        async with running(provider) as (notes, send):
            for sequence in range(1, 26):  # one frame per second for 25 s
                await send.send(make_frame(sequence, change_ema=change_ema))
                await trio.sleep(1.0)
    assert [note.trigger for note in notes.notes()] == expected_triggers
    starts = [round(call.started - provider.calls[0].started) for call in provider.calls]
    assert starts == [0, 10, 20][: len(expected_triggers)]


async def test_rate_limit_spaces_scene_cut_notes(autojump_clock: trio.testing.MockClock) -> None:
    provider = ScriptedProvider()
    with trio.fail_after(120):
        async with running(provider) as (notes, send):
            for sequence in range(1, 13):  # a cut every second for 12 s
                await send.send(make_frame(sequence, scene_cut=sequence > 1, change_ema=0.5))
                await trio.sleep(1.0)
    starts = [round(call.started - provider.calls[0].started) for call in provider.calls]
    assert starts == [0, 5, 10]
    stats = notes.statistics()
    assert stats.triggered["scene_cut"] == 11
    assert stats.rate_limited == 11  # every cut arrived inside a closed window
    # Two cuts were taken (at 5 s and 10 s), one is still waiting; the rest merged into them.
    assert stats.pending == "scene_cut"
    assert stats.coalesced == 11 - 3
    assert stats.taken == 3


async def test_slow_provider_coalesces_and_never_blocks_frames(
    autojump_clock: trio.testing.MockClock,
) -> None:
    provider = ScriptedProvider(delay=20.0)
    with trio.fail_after(120):
        async with running(provider) as (notes, send):
            await send.send(make_frame(1))
            await trio.sleep(1.0)
            started = trio.current_time()
            for sequence in range(2, 32):  # 30 frames, three of them cuts, during the slow call
                with trio.fail_after(0.01):  # the unbuffered channel: each send needs a quick consumer
                    await send.send(make_frame(sequence, scene_cut=sequence in (5, 10, 15)))
            assert trio.current_time() - started < 0.01
            await trio.testing.wait_all_tasks_blocked()  # let the last frame be observed
            stats = notes.statistics()
            assert stats.in_flight and stats.pending == "scene_cut" and stats.frames_seen == 31
            first = await notes.wait_note()
            second = await notes.wait_note(after_number=first.number)
            await trio.sleep(30.0)
    assert len(provider.calls) == 2
    assert (first.trigger, second.trigger) == ("first_frame", "scene_cut")
    assert second.frame_sequence == 31
    stats = notes.statistics()
    assert stats.coalesced == 2
    assert not stats.in_flight and stats.pending is None


async def test_provider_failure_is_counted_and_the_notes_go_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    provider = ScriptedProvider(fail_calls=frozenset({1}))
    with trio.fail_after(60):
        async with running(provider) as (notes, send):
            await send.send(make_frame(1))
            await trio.sleep(1.0)
            stats = notes.statistics()
            assert (stats.failed, stats.taken, stats.last_error) == (1, 0, "http_status")
            for sequence in range(2, 10):
                await send.send(make_frame(sequence))
                await trio.sleep(1.0)
            note = await notes.wait_note()
    assert note.trigger == "first_frame"  # retried, spaced by the minimum interval
    assert provider.calls[1].started - provider.calls[0].started == pytest.approx(5.0)
    assert notes.statistics().failed == 1


async def test_provider_deadline_counts_as_failure(autojump_clock: trio.testing.MockClock) -> None:
    provider = ScriptedProvider(delay=100.0)
    policy = NotePolicy(min_interval_s=5.0, call_timeout_s=3.0)
    with trio.fail_after(60):
        async with running(provider, policy) as (notes, send):
            await send.send(make_frame(1))
            await trio.sleep(4.0)
    stats = notes.statistics()
    assert (stats.failed, stats.taken, stats.last_error) == (1, 0, "timeout")


async def test_on_demand_skips_the_rate_limit_and_waits_for_a_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    provider = ScriptedProvider()
    with trio.fail_after(60):
        async with running(provider) as (notes, send):
            notes.request_note()
            await trio.sleep(3.0)
            assert provider.calls == []  # nothing to look at yet
            await send.send(make_frame(1))
            first = await notes.wait_note()
            await trio.sleep(1.0)
            notes.request_note()
            second = await notes.wait_note(after_number=first.number)
    assert (first.trigger, second.trigger) == ("on_demand", "on_demand")
    assert provider.calls[1].started - provider.calls[0].started == pytest.approx(1.0)
    stats = notes.statistics()
    # The first frame found a request outstanding, so it fired nothing of its own.
    assert stats.triggered["first_frame"] == 0
    assert stats.coalesced == 0


async def test_history_is_bounded(autojump_clock: trio.testing.MockClock) -> None:
    provider = ScriptedProvider()
    policy = NotePolicy(min_interval_s=0.0, history=3, context_notes=2)
    with trio.fail_after(60):
        async with running(provider, policy) as (notes, send):
            await send.send(make_frame(1))
            last = await notes.wait_note()
            for _ in range(4):
                notes.request_note()
                last = await notes.wait_note(after_number=last.number)
    assert [note.number for note in notes.notes()] == [3, 4, 5]
    assert len(provider.calls[-1].context.previous_notes) == 2


async def test_frame_store_source_ends_with_the_watch_reason(autojump_clock: trio.testing.MockClock) -> None:
    provider = ScriptedProvider()
    store = LatestFrameStore()
    notes = ScreenNotes(provider, policy=POLICY)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(notes.run, store)
            store.publish(make_frame(1))
            note = await notes.wait_note()
            store.publish(make_frame(2))
            await trio.sleep(1.0)
            store.close("stream_deleted")
        # run() returned on its own: the nursery closed without a cancel.
        assert await notes.wait_note() == note
        with pytest.raises(WatchError) as caught:
            await notes.wait_note(after_number=note.number)
    assert caught.value.reason == "stream_deleted"
    assert notes.statistics().closed and notes.statistics().frames_seen == 2
    with pytest.raises(WatchError):
        notes.request_note()
