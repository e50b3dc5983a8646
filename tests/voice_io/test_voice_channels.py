"""Channels over the HTTP API: list, join, move (also while watching) and leave, against the sandbox."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from voice_io_kit import Running, running, wait_until

from clank.media.audio import tone

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")
LIMIT = 90


def _channel_id(r: Running, name: str) -> str:
    world = r.sandbox.world
    return next(c.id for c in world.channels.values() if c.name == name)


async def _channels(r: Running) -> dict[str, Any]:
    response = await r.client.get("/api/voice/channels")
    assert response.status_code == 200
    return {c["name"]: c for c in response.json()["channels"]}


async def _speak_and_hear(r: Running, listener_name: str, frequency: float) -> None:
    listener = r.listener(r.user(listener_name))
    listener.forget_audio()
    await r.dave_ready()
    pcm = tone(frequency, 1.0, rate=24_000, channels=1).tobytes()
    assert (await r.client.post("/api/voice/speak", content=pcm)).status_code == 200
    await wait_until(lambda: len(listener.received_pcm(r.ours)) >= 24_000)
    assert abs(listener.heard_frequency(r.ours, 0.4) - frequency) < 10.0


async def test_list_join_move_and_leave(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(LIMIT):
        async with running() as r:
            general, lounge = _channel_id(r, "General"), _channel_id(r, "Lounge")
            bob = await r.join("bob", lounge)
            await wait_until(lambda: bool(r.voice.channels and r.voice.channels.directory.members_of(lounge)))
            listing = await _channels(r)
            assert listing["General"]["connected"] and not listing["Lounge"]["connected"]
            assert [m["userId"] for m in listing["General"]["members"]] == [str(r.ours)]
            assert [m["userId"] for m in listing["Lounge"]["members"]] == [bob]
            assert listing["Lounge"]["members"][0]["label"].lower() == "bob"

            moved = await r.client.post("/api/voice/move", json={"channelId": lounge, "selfDeaf": True})
            assert moved.status_code == 200 and moved.json()["reason"] == "moved", moved.text
            status = (await r.client.get("/api/status")).json()
            assert status["inVoice"] and status["channelId"] == lounge
            assert status["voiceIo"]["connection"]["channelId"] == lounge
            assert status["voiceIo"]["connection"]["selfDeaf"] is True
            ours = r.sandbox.world.voice_state(str(r.ours))
            assert ours.channel_id == lounge and ours.self_deaf
            await _speak_and_hear(r, "bob", 523.0)

            left = await r.client.post("/api/voice/leave", json={})
            assert left.json() == {"ok": True, "reason": "left"}
            assert r.sandbox.world.voice_state(str(r.ours)) is None
            status = (await r.client.get("/api/status")).json()
            assert not status["inVoice"] and status["voiceIo"]["connection"]["state"] == "disconnected"
            refused = await r.client.post("/api/voice/speak", content=b"\0\0")
            assert refused.status_code == 409 and refused.json()["error"] == "not_in_voice"
            assert (await r.client.post("/api/voice/leave")).json()["reason"] == "not_in_voice"

            joined = await r.client.post("/api/voice/join", json={"channelId": general})
            assert joined.json()["ok"], joined.text
            alice = await r.join("alice")
            assert alice
            await _speak_and_hear(r, "alice", 392.0)
            role = r.voice.role()
            muted = (
                await r.client.post("/api/voice/join", json={"channelId": general, "selfMute": True})
            ).json()
            assert muted["reason"] == "flags_updated"
            await wait_until(lambda: r.sandbox.world.voice_state(str(r.ours)).self_mute)
            assert r.voice.role() is role  # the same voice session and role

            unknown = await r.client.post("/api/voice/join", json={"channelId": "123"})
            assert unknown.status_code == 404 and unknown.json()["reason"] == "unknown_channel"
            missing = await r.client.post("/api/voice/join", json={"selfMute": True})
            assert missing.status_code == 400 and missing.json()["field"] == "channelId"
            wrong = await r.client.post("/api/voice/join", json={"channelId": general, "selfMute": "yes"})
            assert wrong.status_code == 400 and wrong.json()["field"] == "selfMute"


async def test_moving_while_watching_ends_the_watch_with_a_reason(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(LIMIT):
        async with running() as r:
            alice = await r.go_live("alice")
            lounge = _channel_id(r, "Lounge")
            watch = (await r.client.post("/api/tools/start_screen_watch", json={})).json()
            assert watch["ok"] and watch["targetUserId"] == alice
            await wait_until(lambda: r.info.service.look_at_screen().ok)  # type: ignore[union-attr]
            bob = await r.join("bob", lounge)
            await r.sandbox.world.go_live(bob)
            moved = (await r.client.post("/api/voice/join", json={"channelId": lounge})).json()
            assert moved["ok"] and moved["reason"] == "moved"
            status = (await r.client.get("/api/status")).json()
            ended = [w for w in status["watches"] if w["targetUserId"] == alice]
            assert ended and ended[0]["state"] == "ended" and ended[0]["endedReason"]
            # alice is not with us any more: no re-watch; bob in the new channel can be watched
            again = (await r.client.post("/api/tools/start_screen_watch", json={"target": "bob"})).json()
            assert again["ok"] and again["targetUserId"] == bob, again
            await wait_until(lambda: r.info.service.look_at_screen("bob").ok)  # type: ignore[union-attr]
