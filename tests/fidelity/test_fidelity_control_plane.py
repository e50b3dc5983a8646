"""Control-plane rows of the strict sandbox: shapes and events Discord sends that the client must take.

The fake network under ``autojump_clock``, our gateway client + voice session (+ watch) against the
sandbox, whose servers run the STRICT fidelity rules (clank.sandbox.fidelity). Each test fails
against the client as it was before the fixes (noted per test) and passes now.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from fidelity_kit import SETTINGS, WATCH, joined, wait_until

from clank.io.fakenet import open_fake_net
from clank.io.media_connection import open_media_connection
from clank.io.media_leg_params import MediaConnectionParams
from clank.sandbox.app import Sandbox
from clank.sandbox.rtc.server import MediaServerConfig, open_media_server
from clank.sandbox.stream_moves import move_stream_server, move_voice_server, stream_unavailable
from clank.session.roles import RoleState
from clank.session.stream_watch import start_stream_watch
from clank.session.voice_session import VoiceSession
from clank.session.watch_handle import WatchHandle
from clank.wire.gateway_events import dave_group_id_for_voice

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


def user_id(sb: Sandbox, name: str) -> str:
    return sb.world.user_by_name(name).id


async def test_op18_video_state_integral_floats_and_ssrc_less_streams_do_not_reconnect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Before: each of these ended the voice leg with 4002 and a fresh identify."""
    with trio.fail_after(30):
        async with joined() as (sb, _gateway, session):
            assert sb.media is not None
            bob = user_id(sb, "bob")
            await sb.world.join_voice(bob, sb.voice_channel_id)
            ours = sb.our_user_id
            faults = sb.media.faults
            faults.send_message(ours, 18, {"streams": []})
            faults.send_message(ours, 16, {"voice": "0.9.1", "rtc_worker": "0.4.11"})
            faults.send_message(
                ours,
                12,
                {
                    "user_id": bob,
                    "audio_ssrc": 7.0,
                    "video_ssrc": 4242,
                    "streams": [
                        {"ssrc": 4242.0, "rtx_ssrc": 4243, "max_framerate": 30.0, "active": True},
                        {"rid": "50", "active": False},  # no ssrc at all
                    ],
                },
            )
            faults.send_message(ours, 5, {"speaking": 1})  # no ssrc: malformed, dropped
            conn = session.voice.api.connection
            await wait_until(lambda: conn.video_state_of(bob) is not None)
            state = conn.video_state_of(bob)
            assert state is not None and [s.ssrc for s in state.streams] == [4242]
            assert state.streams[0].max_framerate == 30
            await trio.sleep(0.5)
            stats = conn.statistics()
            assert stats.reconnects == 0 and stats.resumes == 0 and stats.state == "ready"
            assert stats.gateway.malformed == {18: 1, 5: 1}
            assert session.voice.state is RoleState.READY


async def test_heartbeat_acks_with_another_t_keep_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Before: an op6 whose ``t`` was not our nonce was ignored, so the leg went zombie and resumed."""
    guild, channel, user, session_id = "111", "222000000000000001", "333000000000000001", "f" * 32
    with trio.fail_after(20):
        async with (
            open_fake_net() as net,
            open_media_server("voice", guild, int(channel), MediaServerConfig(net=net)) as server,
        ):
            token = server.grant(user, session_id)
            params = MediaConnectionParams(
                role="voice",
                endpoint=server.endpoint,
                server_id=guild,
                channel_id=channel,
                user_id=user,
                session_id=session_id,
                token=token,
                dave_group_id=dave_group_id_for_voice(channel),
                settings=SETTINGS,
                heartbeat_cap=0.2,
                transports=net.media_transports(),
            )
            async with open_media_connection(params) as conn:
                await trio.sleep(2.0)
                stats = conn.statistics()
    assert stats.gateway.heartbeat_acks >= 5
    assert stats.resumes == 0 and stats.reconnects == 0


async def test_a_webcam_appears_only_after_our_op12_on_the_voice_leg(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Before: the voice leg never sent op12, so a strict server never forwarded webcam states."""
    with trio.fail_after(30):
        async with joined() as (sb, _gateway, session):
            assert sb.media is not None
            bob = user_id(sb, "bob")
            await sb.world.join_voice(bob, sb.voice_channel_id)
            await sb.world.set_webcam(bob, True)
            conn = session.voice.api.connection
            await wait_until(lambda: conn.video_state_of(bob) is not None)
            server = sb.media.voice_server(sb.voice_channel_id)
            ours = server.participant(int(sb.our_user_id))
            assert ours is not None and ours.video is not None  # our op12 reached the server
            state = conn.video_state_of(bob)
            assert state is not None and state.streams


async def _watch_alice(sb: Sandbox, session: VoiceSession) -> tuple[str, WatchHandle]:
    alice = user_id(sb, "alice")
    await sb.world.join_voice(alice, sb.voice_channel_id)
    await sb.world.go_live(alice)
    handle = await start_stream_watch(session, alice, settings=WATCH)
    await handle.frames.wait_frame()
    assert handle.stream_key is not None
    return str(handle.stream_key), handle


async def test_a_mid_watch_stream_server_update_keeps_the_watch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Before: the new credentials were ignored and the old connection's 4022 ended the watch."""
    with trio.fail_after(40):
        async with joined() as (sb, _gateway, session):
            key, handle = await _watch_alice(sb, session)
            closed = await move_stream_server(sb.world, key)
            assert closed == 0  # we had left the old connection within the grace period
            await wait_until(lambda: handle.statistics().server_moves == 1)
            before = handle.frames.latest
            assert before is not None
            frame = await handle.frames.wait_frame(after_sequence=before.sequence)
            assert handle.state is RoleState.READY and frame.sequence > before.sequence
            assert handle.statistics().connection is not None


async def test_stream_unavailable_then_created_again_keeps_the_watch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Before: STREAM_DELETE ended the watch whatever ``unavailable`` said."""
    with trio.fail_after(40):
        async with joined() as (sb, _gateway, session):
            key, handle = await _watch_alice(sb, session)
            await stream_unavailable(sb.world, key, 1.0)
            await wait_until(lambda: handle.statistics().server_moves == 1)
            latest = handle.frames.latest
            assert latest is not None
            await handle.frames.wait_frame(after_sequence=latest.sequence)
            assert handle.state is RoleState.READY


@pytest.mark.parametrize("code", [4014, 4022])
async def test_a_4014_or_4022_racing_a_voice_server_update_keeps_the_session(
    code: int, autojump_clock: trio.testing.MockClock
) -> None:
    """Before: 4014/4022 ended the voice session even when new voice credentials followed."""
    with trio.fail_after(40):
        async with joined() as (sb, _gateway, session):
            alice = user_id(sb, "alice")
            await sb.world.join_voice(alice, sb.voice_channel_id)
            await sb.world.set_speaking(alice, True)
            with session.voice.api.subscribe_audio(alice, buffer=500) as audio:
                await audio.receive()
            await move_voice_server(sb.world, sb.our_user_id, close_code=code)
            await wait_until(lambda: session.statistics().server_moves == 1)
            await session.voice.wait_ready()
            with session.voice.api.subscribe_audio(alice, buffer=500) as audio:  # the new voice role
                item = await audio.receive()
            assert item.user_id == alice
            assert session.statistics().rejoins == 0
