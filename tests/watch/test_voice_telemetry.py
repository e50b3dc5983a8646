"""The voice role's QoS in the status moves when media flows and stops when it stops.

The sandbox on the fake network under ``autojump_clock`` (deterministic), real ``LiveSessionPort``:
alice talks to a subscriber (decodedFrames, speaking), we play a clip (framesSent), 20% downlink
loss (concealedFrames), bob's webcam (videoPackets), and alice stops talking (decodedFrames stops
growing, speaking clears).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing
from fake_session import fake_session, user_id

from clank.control.session_port import LiveSessionPort, MemberDirectory
from clank.protocol.streams import StreamRegistry

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


def voice_qos(port: LiveSessionPort) -> dict[str, Any]:
    (role,) = [r for r in port.status().roles if r.kind == "voice"]
    return dict(role.qos)


async def until(
    port: LiveSessionPort, check: Callable[[dict[str, Any]], bool], limit: float = 5.0
) -> dict[str, Any]:
    qos = voice_qos(port)
    with trio.move_on_after(limit):
        while not check(qos := voice_qos(port)):  # noqa: ASYNC110 - status has no event to wait on
            await trio.sleep(0.05)
    assert check(qos), qos
    return qos


def tone(seconds: float) -> bytes:
    t = np.arange(int(48_000 * seconds)) / 48_000
    mono = (np.sin(2 * math.pi * 440 * t) * 8000).astype(np.int16)
    return np.repeat(mono[:, None], 2, axis=1).tobytes()


async def test_voice_figures_move_with_media_and_stop_without(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(600):  # virtual
        async with fake_session() as (_net, sb, session):
            assert sb.media is not None
            port = LiveSessionPort(session, StreamRegistry(session.user_id), MemberDirectory())
            # Received audio is decoded only while somebody listens; a subscriber that keeps
            # only the newest frames (the buffer drops the rest, counted) is enough.
            with session.voice.api.subscribe_audio(buffer=1):
                alice, bob = user_id(sb, "alice"), user_id(sb, "bob")
                await sb.world.join_voice(alice, sb.voice_channel_id)
                await sb.world.set_speaking(alice, True)
                a = await until(port, lambda q: q["decodedFrames"] > 0 and q["speaking"] is not None)
                assert alice in a["speaking"] or "alice" in a["speaking"], a
                await trio.sleep(1.0)
                b = voice_qos(port)
                assert b["decodedFrames"] >= a["decodedFrames"] + 45, (a, b)  # 50 frames/s of Opus

                session.voice.api.play_pcm(tone(1.0))
                c = await until(port, lambda q: q["framesSent"] >= b["framesSent"] + 40)
                assert c["framesSent"] <= b["framesSent"] + 60  # 1 s clip = 50 frames, not a runaway count
                assert c["sendPath"] == "inline" and c["lateFrames"] == 0  # a virtual clock: no process
                # A 30 ms stall of the loop (the clock jumps while no task runs): the next frame
                # leaves after its slot and is counted late.
                session.voice.api.play_pcm(tone(0.5))
                await until(port, lambda q: q["framesSent"] >= c["framesSent"] + 5)
                autojump_clock.jump(0.03)
                late = await until(port, lambda q: q["lateFrames"] > 0)
                assert late["lateFrames"] <= 2, late  # one stall, not every frame after it

                await sb.media.faults.link(sb.our_user_id, "downlink", loss=0.2, seed=2)
                d = await until(port, lambda q: q["concealedFrames"] > c["concealedFrames"])
                await sb.media.faults.link(sb.our_user_id, "downlink")

                await sb.world.join_voice(bob, sb.voice_channel_id)
                await sb.world.set_webcam(bob, True)
                e = await until(port, lambda q: q["videoPackets"] > d["videoPackets"], limit=10.0)
                await trio.sleep(0.5)
                assert voice_qos(port)["videoPackets"] > e["videoPackets"]

                await sb.world.set_speaking(alice, False)
                f = await until(port, lambda q: q["speaking"] is None or alice not in q["speaking"])
                await trio.sleep(1.0)
                g = voice_qos(port)
                await trio.sleep(1.0)
                h = voice_qos(port)
                assert h["decodedFrames"] - g["decodedFrames"] <= 5, (f, g, h)  # silent: nothing to decode
