"""Publishing next to watching and voice: a failure of our stream leg ends only the publish role."""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing
from publish_kit import SETTINGS, add_viewer, in_voice, make_image, user_id, wait_until

from clank.config import WatchSettings
from clank.errors import PublishError
from clank.media.publish_source import PushedFrames
from clank.sandbox.rtc.streamer import VideoSettings
from clank.session.roles import RoleState
from clank.session.stream_publish import PUBLISH_ROLE, start_stream_publish
from clank.session.stream_watch import start_stream_watch

WATCH = WatchSettings(max_fps=10.0, preferred_pixel_count=320 * 240, credentials_timeout_s=5.0)
pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


async def test_watch_and_publish_together_and_a_stream_server_crash_ends_only_the_publish(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with in_voice() as (sb, _gateway, session):
            assert sb.media is not None
            sb.media.settings = attrs.evolve(
                sb.media.settings, screen=VideoSettings(width=320, height=240, bitrate=400_000)
            )
            alice = user_id(sb, "alice")
            await sb.world.join_voice(alice, sb.voice_channel_id)
            await sb.world.go_live(alice)
            watch = await start_stream_watch(session, alice, settings=WATCH)
            publish = await start_stream_publish(session, source=PushedFrames())
            await publish.push_image(make_image(3), "image/png")
            viewer = await add_viewer(sb, publish)
            await wait_until(lambda: viewer.statistics().frames_decoded >= 10)
            first = await watch.frames.wait_frame()
            await watch.frames.wait_frame(after_sequence=first.sequence)  # both directions at once
            with session.voice.api.subscribe_audio(alice, buffer=500) as audio:
                await sb.world.set_speaking(alice, True)
                await audio.receive()
                assert publish.stream_key is not None
                sb.media.faults.crash_stream(str(publish.stream_key), 4022)
                await publish.wait_stopped()
                assert publish.reason == "transport" and publish.state is RoleState.FAILED
                # The watch goes on (new frames) and audio never gapped.
                seen = watch.frames.latest
                assert seen is not None
                await watch.frames.wait_frame(after_sequence=seen.sequence)
                items = [await audio.receive() for _ in range(40)]
                assert not any(i.concealed for i in items)
            assert watch.active and session.voice.state is RoleState.READY
            assert session.voice.api.statistics().audio_receive.users[0].lost == 0
            # A new publish goes live again on a fresh stream server.
            again = await start_stream_publish(session, source=PushedFrames())
            assert again is not publish and again.state is RoleState.READY
            await again.stop()
            assert watch.active


async def test_switching_sources_keeps_the_stream(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(40):
        async with in_voice() as (_sb, _gateway, session):
            first = PushedFrames()
            handle = await start_stream_publish(session, source=first)
            key = handle.stream_key
            second = PushedFrames()
            assert await start_stream_publish(session, source=second) is handle  # reused, live
            assert handle.source is second and handle.stream_key == key
            with pytest.raises(PublishError) as wrong:
                handle.set_source(None)
                await handle.push_image(make_image(0), "image/png")
            assert wrong.value.reason == "wrong_source"
            await handle.stop()
        assert SETTINGS.publish.width == 320


async def test_no_voice_means_not_in_voice(autojump_clock: trio.testing.MockClock) -> None:
    class Nowhere:
        settings = SETTINGS
        session_id = None
        publishing = None

        @property
        def voice(self) -> object:
            from clank.errors import UsageError

            raise UsageError("the voice role is not running")

    with pytest.raises(PublishError) as info:
        await start_stream_publish(Nowhere(), source=PushedFrames())  # type: ignore[arg-type]
    assert info.value.reason == "not_in_voice"


async def test_a_stream_delete_from_the_server_ends_the_publish_with_its_reason(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(40):
        async with in_voice() as (sb, _gateway, session):
            handle = await start_stream_publish(session, source=PushedFrames())
            await handle.push_image(make_image(0), "image/png")
            await sb.world.stop_stream(sb.our_user_id)  # the server ends our Go Live
            await handle.wait_stopped()
            assert handle.reason == "stream_deleted" and handle.state is RoleState.FAILED
            assert session.voice.state is RoleState.READY


async def test_a_voice_session_change_rebuilds_the_publish(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with in_voice() as (sb, _gateway, session):
            handle = await start_stream_publish(session, source=PushedFrames())
            await handle.push_image(make_image(4), "image/png")
            first_key = handle.stream_key
            old_role = session.roles()[PUBLISH_ROLE]
            # Discord hands us a new voice session id in place: every role is rebuilt.
            await sb.world.join_voice(sb.our_user_id, sb.voice_channel_id, new_session=True)
            await old_role.wait_stopped()

            def rebuilt() -> bool:
                role = session.roles().get(PUBLISH_ROLE)
                return role is not None and role is not old_role and role.state is RoleState.READY

            await wait_until(rebuilt)
            assert handle.active and handle.live_again() and handle.stream_key == first_key
            assert session.voice.state is RoleState.READY
            viewer = await add_viewer(sb, handle)
            await wait_until(lambda: viewer.statistics().frames_decoded >= 3)


async def test_op14_asking_for_another_codec_ends_only_the_publish(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from clank.wire import voice_gateway as vg

    with trio.fail_after(40):
        async with in_voice() as (sb, _gateway, session):
            assert sb.media is not None
            handle = await start_stream_publish(session, source=PushedFrames())
            assert handle.stream_key is not None
            server = sb.media.stream_server(str(handle.stream_key))
            ours = server.participant(int(sb.our_user_id))
            assert ours is not None
            ours.sink.notify(vg.SessionUpdate(video_codec="H264"))  # same codec: nothing happens
            await trio.sleep(0.3)
            assert handle.active
            ours.sink.notify(vg.SessionUpdate(video_codec="VP8"))
            await handle.wait_stopped()
            assert handle.reason == "codec" and session.voice.state is RoleState.READY
