"""The publish drives the Go Live registry like the watch does (clank.session.stream_leg).

Two behaviours the publish gained from the shared flow: it takes only credentials that answer its
op18 (the registry's fresh-credentials rule), and a STREAM_SERVER_UPDATE while live (Discord
moving the stream) reconnects the stream leg on the new credentials instead of being ignored.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from publish_kit import add_viewer, in_voice, make_image, wait_until

from clank.logging import register_secret
from clank.media.publish_source import PushedFrames
from clank.session.roles import RoleState
from clank.session.stream_publish import start_stream_publish
from clank.wire.gateway_events import StreamKey

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


async def test_stale_registry_credentials_are_not_used_to_go_live(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # On the virtual clock the stale update and our op18 share one instant: freshness is by order.
    with trio.fail_after(40):
        async with in_voice() as (sb, _gateway, session):
            key = StreamKey.for_voice_channel(sb.guild_id, sb.voice_channel_id, sb.our_user_id)
            # What a previous Go Live left in the registry: complete-looking, but dead.
            now = trio.current_time()
            session.registry.handle_dispatch(
                "STREAM_CREATE",
                {"stream_key": str(key), "rtc_server_id": "4242", "viewer_ids": [], "paused": False},
                now,
            )
            session.registry.handle_dispatch(
                "STREAM_SERVER_UPDATE",
                {"stream_key": str(key), "guild_id": None, "endpoint": "127.0.0.1:9", "token": "stale"},
                now,
            )
            stale = session.registry.stream(key)
            assert stale is not None and stale.has_credentials
            handle = await start_stream_publish(session, source=PushedFrames())
            assert handle.state is RoleState.READY and handle.stream_key == key
            live = session.registry.stream(key)
            assert live is not None and live.token != "stale" and live.endpoint != "127.0.0.1:9"
            await handle.stop()
            # op19 went out (the registry's go-live is cleared) and nothing is left to stop.
            assert session.registry.stop_go_live(key) is None


async def test_a_stream_server_update_while_live_reconnects_the_publish() -> None:
    with trio.fail_after(60):
        async with in_voice() as (sb, _gateway, session):
            assert sb.media is not None
            handle = await start_stream_publish(session, source=PushedFrames())
            key = handle.stream_key
            assert key is not None
            await handle.push_image(make_image(1), "image/png")
            viewer = await add_viewer(sb, handle)
            await wait_until(lambda: viewer.statistics().frames_decoded >= 3)
            stream = sb.world.stream(str(key))
            state = sb.world.voice_state(sb.our_user_id)
            assert stream is not None and state is not None
            # Discord moves our stream: fresh credentials for the owner, mid-publish.
            endpoint, token = await sb.world.media.allocate_stream(
                stream.key, sb.our_user_id, state.session_id, stream.rtc_server_id
            )
            register_secret(token)
            sb.world.hub.dispatch(
                "STREAM_SERVER_UPDATE",
                {"stream_key": stream.key, "guild_id": None, "endpoint": endpoint, "token": token},
                users=[sb.our_user_id],
            )
            await wait_until(lambda: handle.statistics().server_moves == 1)
            await wait_until(lambda: handle.state is RoleState.READY and handle.live_again())
            assert handle.active and handle.stream_key == key
            connection = session.roles()["stream_publish"].api.connection
            assert connection is not None and connection.params.token == token
            # Video flows on the new leg: the new connection sends frames (and a new viewer sees them).
            await wait_until(lambda: connection.statistics().packets_out >= 20)
            late = await add_viewer(sb, handle, "carol")
            await wait_until(lambda: late.statistics().frames_decoded >= 3)
            decoded = viewer.statistics().frames_decoded  # and the viewer from before the move too
            await wait_until(lambda: viewer.statistics().frames_decoded >= decoded + 3)
            assert session.voice.state is RoleState.READY
