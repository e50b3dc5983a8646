"""Control-plane noise of the strict sandbox (``control_noise``): what Discord sends besides the protocol.

Fake network + autojump clock. Under STRICT the voice and stream servers send op16 (backend
version) after op4 and in answer to our op16, op18 (client flags) and op20 (client platform)
after each op11, and op12 video states with integral floats (``max_framerate: 30.0``) and an
inactive layer without ``ssrc`` (each repeated as an op18 carrying the video state); heartbeat ACKs
carry another ``t``. The client must keep every
leg: before issue 15 each of these ended the leg with 4002 and a fresh identify (or, for the
ACKs, a zombie resume).
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from fake_session import wait_until
from fakenet_kit import WATCH, fake_session, media

from clank.io.media_connection_statistics import MediaConnectionStatistics
from clank.sandbox.app import Sandbox
from clank.sandbox.rtc.server import MediaServer
from clank.session.roles import RoleState
from clank.session.stream_watch import start_stream_watch
from clank.wire.voice_gateway import VoiceOp

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


def noise_sent(server: MediaServer, sb: Sandbox) -> dict[int, int]:
    session = server.session_of(int(sb.our_user_id))
    assert session is not None
    ops = (VoiceOp.VOICE_BACKEND_VERSION, VoiceOp.CLIENT_FLAGS, VoiceOp.CLIENT_PLATFORM, VoiceOp.VIDEO)
    return {op: session.sent_ops[op] for op in ops}


def intact(stats: MediaConnectionStatistics | None) -> None:
    assert stats is not None
    assert stats.reconnects == 0 and stats.resumes == 0 and stats.state == "ready", stats
    assert stats.gateway.malformed == {}, stats.gateway.malformed  # all of it is well-formed Discord


async def test_the_voice_and_stream_legs_keep_through_discords_control_noise(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(900):
        async with fake_session() as (_net, sb, session):
            alice = sb.world.user_by_name("alice").id
            bob = sb.world.user_by_name("bob").id
            await sb.world.join_voice(bob, sb.voice_channel_id)
            await sb.world.set_webcam(bob, True)
            await sb.world.join_voice(alice, sb.voice_channel_id)
            await sb.world.go_live(alice)
            voice = session.voice.api.connection
            await wait_until(lambda: voice.video_state_of(bob) is not None)
            handle = await start_stream_watch(session, alice, settings=WATCH)
            await handle.frames.wait_frame()
            await trio.sleep(120)  # a few heartbeats, each ACKed with another ``t``

            voice_noise = noise_sent(media(sb).voice_server(sb.voice_channel_id), sb)
            assert handle.stream_key is not None
            stream_noise = noise_sent(media(sb).stream_server(str(handle.stream_key)), sb)
            for sent in (voice_noise, stream_noise):
                assert all(n >= 1 for n in sent.values()), sent
            # bob's webcam state: floats read as integers, the ssrc-less layer dropped.
            state = voice.video_state_of(bob)
            assert state is not None
            webcam = media(sb).webcam(bob)
            assert [s.ssrc for s in state.streams] == [webcam.stream.ssrc]
            assert state.streams[0].max_framerate == webcam.settings.fps
            voice_stats = voice.statistics()
            intact(voice_stats)
            assert voice_stats.gateway.heartbeat_acks >= 2
            intact(handle.statistics().connection)
            assert session.voice.state is RoleState.READY and handle.state is RoleState.READY
            frame = handle.frames.latest
            assert frame is not None
            await handle.frames.wait_frame(after_sequence=frame.sequence)
