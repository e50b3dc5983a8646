"""Congestion feedback (issue 15, item 6): a watch sends REMB; status shows the received layer.

Discord's answer SDP lists ``goog-remb`` for video; without receiver feedback its SFU may keep a
viewer on the lowest layer. Our gateway client + voice session + a Go Live watch against the
strict sandbox on the fake network (virtual time), whose SFU parses and counts the REMBs it gets.
Before: the client sent no REMB at all (``remb_received == 0``) and the status named no SSRC, rid or bitrate.
"""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing
from fidelity_kit import SMALL, WATCH, joined, wait_until

from clank.control.session_port import LiveSessionPort, MemberDirectory
from clank.protocol.streams import StreamRegistry
from clank.session.stream_watch import start_stream_watch

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


async def test_a_watch_sends_remb_and_the_status_shows_the_received_layer_and_bitrate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(40):
        async with joined() as (sb, _gateway, session):
            assert sb.media is not None
            alice = sb.world.user_by_name("alice").id
            await sb.world.join_voice(alice, sb.voice_channel_id)
            stream = await sb.world.go_live(alice)
            handle = await start_stream_watch(session, alice, settings=WATCH)
            await handle.frames.wait_frame()
            server = sb.media.stream_server(stream.key)
            await wait_until(lambda: server.statistics().sfu.remb_received >= 2)
            ours = server.participant(int(sb.our_user_id))
            assert ours is not None
            sfu = server.statistics().sfu
            (estimate,) = sfu.last_remb_bps.values()  # one sender: our stream leg
            assert 150_000 <= estimate <= WATCH.remb_max_kbps * 1000
            assert sfu.dropped.get("feedback_malformed", 0) == 0

            port = LiveSessionPort(session, StreamRegistry(session.user_id), MemberDirectory())
            await port.start_watch(alice, "go_live")  # reuses the running handle
            (role,) = [r for r in port.status().roles if r.kind == "stream_watch"]
            qos = dict(role.qos)
            screen = sb.media.streamer(alice).stream
            assert qos["ssrc"] == screen.ssrc
            assert qos["rid"] == "100"  # the streamer's op12 layer
            assert qos["resolution"] == f"{SMALL.width}x{SMALL.height}"
            # The streamer sends ~400 kb/s: the measured rate is in its neighbourhood.
            assert 50 <= qos["bitrateKbps"] <= 4 * SMALL.bitrate // 1000, qos
            assert qos["rembSent"] >= 2 and qos["rembKbps"] == round(
                handle.statistics().remb.estimate_bps / 1000
            )  # type: ignore[union-attr]


async def test_remb_can_be_switched_off(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(40):
        async with joined() as (sb, _gateway, session):
            assert sb.media is not None
            alice = sb.world.user_by_name("alice").id
            await sb.world.join_voice(alice, sb.voice_channel_id)
            stream = await sb.world.go_live(alice)
            quiet = attrs.evolve(WATCH, remb_max_kbps=0)
            handle = await start_stream_watch(session, alice, settings=quiet)
            await handle.frames.wait_frame()
            await trio.sleep(2.5)
            assert sb.media.stream_server(stream.key).statistics().sfu.remb_received == 0
            assert handle.statistics().remb is None
