"""Stream-leg rows of the strict sandbox: identify channel id, op15 form, op21, fresh credentials.

The fake network under ``autojump_clock``, our gateway client + voice session + watches against the
sandbox (STRICT rules).
Each test fails against the client as it was before issue 15 (noted per test).
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from fidelity_kit import WATCH, joined, wait_until

from clank.session import stream_watch
from clank.session.roles import RoleState
from clank.session.stream_watch import start_stream_watch
from clank.session.webcam_watch import start_webcam_watch
from clank.wire.gateway_events import dave_group_id_for_stream

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


async def test_stream_identify_uses_rtc_server_id_minus_1_and_op15_is_flat_with_any(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Before: identify used STREAM_CREATE's rtc_channel_id (4004 on a strict server) and op15 was
    nested only (a server reading the flat form saw no wants)."""
    with trio.fail_after(30):
        async with joined() as (sb, _gateway, session):
            assert sb.media is not None
            alice = sb.world.user_by_name("alice").id
            await sb.world.join_voice(alice, sb.voice_channel_id)
            stream = await sb.world.go_live(alice)
            handle = await start_stream_watch(session, alice, settings=WATCH)
            await handle.frames.wait_frame()
            server = sb.media.stream_server(stream.key)
            assert server.group_id == dave_group_id_for_stream(stream.rtc_server_id)
            ours = server.participant(int(sb.our_user_id))
            assert ours is not None and ours.wants is not None
            screen_ssrc = sb.media.streamer(alice).stream.ssrc
            assert ours.wants.any == WATCH.preferred_quality  # read from the flat form only
            assert ours.wants.streams.get(screen_ssrc) == WATCH.preferred_quality
            assert handle.statistics().connection is not None


async def test_webcam_op15_carries_any(autojump_clock: trio.testing.MockClock) -> None:
    """Before: the webcam request on the voice leg had no ``any``."""
    with trio.fail_after(30):
        async with joined() as (sb, _gateway, session):
            assert sb.media is not None
            bob = sb.world.user_by_name("bob").id
            await sb.world.join_voice(bob, sb.voice_channel_id)
            await sb.world.set_webcam(bob, True)
            handle = await start_webcam_watch(session, bob, WATCH)
            await handle.frames.wait_frame()
            ours = sb.media.voice_server(sb.voice_channel_id).participant(int(sb.our_user_id))
            assert ours is not None and ours.wants is not None
            assert ours.wants.any == WATCH.preferred_quality


async def test_op21_only_when_the_stream_leg_fails_and_the_reallocation_is_followed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Before: op21 went out every 60 s whatever the leg's health, and the STREAM_SERVER_UPDATE a
    strict server answers it with was ignored (the watch stayed on a dead leg)."""
    with trio.fail_after(600):  # virtual: the real HEALTH_CHECK_POLL_S and STREAM_STALL_S
        async with joined() as (sb, _gateway, session):
            assert sb.media is not None
            alice = sb.world.user_by_name("alice").id
            await sb.world.join_voice(alice, sb.voice_channel_id)
            stream = await sb.world.go_live(alice)
            handle = await start_stream_watch(session, alice, settings=WATCH)
            await handle.frames.wait_frame()
            await trio.sleep(stream_watch.STREAM_STALL_S + stream_watch.HEALTH_CHECK_POLL_S)
            assert handle.statistics().keepalives_sent == 0  # healthy: no op21
            sb.media.faults.drop_udp(sb.our_user_id, stream_key=stream.key)  # the leg goes dark
            await wait_until(lambda: handle.statistics().keepalives_sent == 1)
            await wait_until(lambda: handle.statistics().server_moves == 1)  # op21 -> new server
            latest = handle.frames.latest
            assert latest is not None
            frame = await handle.frames.wait_frame(after_sequence=latest.sequence)
            assert frame.sequence > latest.sequence and handle.state is RoleState.READY


async def test_a_re_watch_waits_for_fresh_credentials(autojump_clock: trio.testing.MockClock) -> None:
    """Before: a second watch reused the first one's cached (now revoked) token."""
    with trio.fail_after(40):
        async with joined() as (sb, _gateway, session):
            alice = sb.world.user_by_name("alice").id
            await sb.world.join_voice(alice, sb.voice_channel_id)
            await sb.world.go_live(alice)
            first = await start_stream_watch(session, alice, settings=WATCH)
            await first.frames.wait_frame()
            await first.stop()
            await trio.sleep(0.5)  # the STREAM_DELETE answering our op19 arrives before the next op20
            second = await start_stream_watch(session, alice, settings=WATCH)
            await second.frames.wait_frame()
            stats = second.statistics()
            assert stats.connection is not None and stats.connection.reconnects == 0
