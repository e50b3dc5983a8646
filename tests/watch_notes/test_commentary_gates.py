"""Commentary cue gates: the pure policy as a table, then one watch's gates on a mock clock."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from notes_fakes import make_frame

from clank.errors import UsageError
from clank.watch.commentary import (
    CommentaryCue,
    CommentaryCues,
    CommentaryHub,
    CommentaryPolicy,
    GateState,
    decide_commentary,
)
from clank.watch.notes import ScreenNotes

POLICY = CommentaryPolicy(enabled=True, interval_s=15.0, change_threshold=0.01, quiet_window_s=2.2)


def state(**changes: object) -> GateState:
    base: dict[str, object] = {
        "now": 100.0,
        "since": 80.0,
        "max_change": 0.2,
        "scene_cut": False,
        "speaking": False,
        "last_speech_at": None,
    }
    base.update(changes)
    return GateState(**base)  # type: ignore[arg-type]


GATE_TABLE = [
    ("changed, quiet, interval passed", POLICY, state(), True, "changed"),
    ("scene cut", POLICY, state(max_change=0.9, scene_cut=True), True, "scene_cut"),
    ("exactly the threshold", POLICY, state(max_change=0.01), True, "changed"),
    ("static screen", POLICY, state(max_change=0.0), False, "static"),
    ("below the threshold", POLICY, state(max_change=0.009), False, "static"),
    ("someone speaks", POLICY, state(speaking=True), False, "speaking"),
    ("spoke 1 s ago", POLICY, state(last_speech_at=99.0), False, "not_quiet"),
    ("spoke 2.2 s ago", POLICY, state(last_speech_at=97.8), True, "changed"),
    ("interval not passed", POLICY, state(since=90.0), False, "too_soon"),
    ("interval exactly", POLICY, state(since=85.0), True, "changed"),
    ("speaking beats too soon", POLICY, state(since=99.0, speaking=True), False, "speaking"),
    ("disabled", CommentaryPolicy(enabled=False), state(scene_cut=True), False, "disabled"),
    (
        "zero threshold, static",
        CommentaryPolicy(change_threshold=0.0),
        state(max_change=0.0),
        False,
        "static",
    ),
]


@pytest.mark.parametrize(
    ("name", "policy", "gate", "opens", "reason"), GATE_TABLE, ids=[r[0] for r in GATE_TABLE]
)
def test_gate_table(name: str, policy: CommentaryPolicy, gate: GateState, opens: bool, reason: str) -> None:
    decision = decide_commentary(policy, gate)
    assert (decision.open, decision.reason) == (opens, reason)


def test_policy_checks_its_numbers() -> None:
    with pytest.raises(UsageError, match="interval_s"):
        CommentaryPolicy(interval_s=float("nan"))
    with pytest.raises(UsageError, match="quiet_window_s"):
        CommentaryPolicy(quiet_window_s=-1.0)


async def test_one_watch_speaking_holds_silence_releases_static_never(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = CommentaryHub()
    speakers: set[str] = set()
    policy = CommentaryPolicy(interval_s=5.0, change_threshold=0.01, quiet_window_s=2.2)
    cues = CommentaryCues(
        hub, policy, target_user_id="1001", kind="go_live", speaking=lambda: frozenset(speakers)
    )
    called: list[CommentaryCue] = []
    sequence = 0

    async def frames(change: float, seconds: float, *, until_cues: int | None = None) -> None:
        nonlocal sequence
        for _ in range(int(seconds * 10)):  # 10 fps
            if until_cues is not None and len(called) >= until_cues:
                return
            sequence += 1
            cues.observe(make_frame(sequence, change_score=change))
            await trio.sleep(0.1)

    with trio.fail_after(300), hub.on_cue(called.append), hub.subscribe() as receive:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cues.run)
            speakers.add("2002")
            await frames(0.3, 12.0)  # changing screen, but someone talks the whole time
            assert called == [] and cues.held["speaking"] > 0
            speakers.clear()
            started = trio.current_time()
            await frames(0.3, 4.0, until_cues=1)
            assert [c.reason for c in called] == ["changed"]
            assert called[0].at - started == pytest.approx(2.2, abs=0.15)  # the quiet window
            assert called[0].note is None and called[0].frame_sequence <= sequence
            await frames(0.0, 60.0)  # a static screen: never, however long
            assert len(called) == 1 and cues.held["static"] > 0
            changed_at = trio.current_time()
            await frames(0.05, 10.0, until_cues=2)
            assert len(called) == 2 and called[1].at - changed_at <= 0.25  # the interval had passed
            nursery.cancel_scope.cancel()
        received = [receive.receive_nowait(), receive.receive_nowait()]
    assert received == called and [c.number for c in called] == [1, 2]
    assert [c.number for c in hub.since(1)] == [2]
    body = called[1].to_json()
    assert body["type"] == "commentary_due" and "image" not in body
    assert body["imageUrl"] == "/api/screen/latest.jpg?target=1001"
    assert called[1].to_json(include_image=True)["image"]["mimeType"] == "image/jpeg"
    assert called[1].seconds_since_previous >= 5.0


async def test_the_cue_carries_the_latest_note(autojump_clock: trio.testing.MockClock) -> None:
    from notes_fakes import ScriptedProvider

    hub = CommentaryHub()
    cues = CommentaryCues(
        hub, CommentaryPolicy(interval_s=1.0), target_user_id="1001", kind="go_live", speaking=frozenset
    )
    notes = ScreenNotes(ScriptedProvider(), user_id="1001", on_frame=cues.observe)
    cues.notes = notes
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(notes.run)
            notes.observe(make_frame(1, change_score=0.5))
            note = await notes.wait_note()
            await trio.sleep(1.0)
            cue = cues.check()
            nursery.cancel_scope.cancel()
    assert cue is not None and cue.note is not None
    assert cue.note["text"] == note.text and cue.note["number"] == note.number
