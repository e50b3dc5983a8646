"""Music with a visualizer and the media relay: one PyAV decode feeds the voice mixer and our stream."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing
from publish_kit import PUBLISH, add_viewer, in_voice, user_id, wait_until, write_music, write_video

from clank.errors import InvalidArgument
from clank.media.publish_source import PushedFrames
from clank.media.visualizer import AvPipeline
from clank.session.publish_media import AvSource
from clank.session.roles import RoleState
from clank.session.stream_publish import start_stream_publish

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


async def test_visualizer_stream_reaches_the_viewer_in_sync_with_the_music(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    music = write_music(str(tmp_path / "music.wav"), seconds=3.0)
    with trio.fail_after(60):
        async with in_voice() as (sb, _gateway, session):
            assert sb.media is not None
            alice = user_id(sb, "alice")
            await sb.world.join_voice(alice, sb.voice_channel_id)  # a listener on the voice server
            handle = await start_stream_publish(session, source=PushedFrames())
            viewer = await add_viewer(sb, handle)
            await wait_until(lambda: handle.statistics().viewers == 1)
            await trio.sleep(1.0)  # the viewer's DAVE membership settles before the music starts
            pipeline = AvPipeline(
                music, video="showcqt", width=PUBLISH.width, height=PUBLISH.height, fps=PUBLISH.fps
            )
            source = AvSource(pipeline, session.voice.api, name="visualizer")
            sent_before = len(handle.sent_timestamps())
            handle.set_source(source)
            await trio.sleep(1.5)
            assert sb.media.listener(alice).heard_frequency(int(sb.our_user_id), 0.4) > 0  # music on voice
            await handle.wait_stopped()  # the end of the track stops the stream
            assert handle.reason == "source_ended" and handle.state is RoleState.DISCONNECTED
            stats = source.statistics()
            expected = 3.0 * PUBLISH.fps
            rendered = stats.frames_shown + stats.frames_skipped + stats.frames_queued
            # >= 95% of the pictures the visualizer drew went out (a skip = the audio clock jumped
            # a whole frame interval ahead), and they cover >= 93% of duration x fps.
            assert stats.frames_shown >= 0.95 * rendered and stats.frames_shown >= 0.93 * expected, stats
            assert stats.skew_max_ms is not None and stats.skew_max_ms <= 80, stats
            window = handle.sent_timestamps()[sent_before:]
            received = set(viewer.received_timestamps)
            got = sum(1 for ts in window if ts in received)
            assert len(window) >= 0.95 * expected and got >= 0.95 * len(window), (got, len(window))
            assert viewer.statistics().decode_errors == 0
            assert session.voice.state is RoleState.READY


async def test_media_relay_loops_a_video_file_and_the_viewer_sees_its_pictures(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    video = write_video(str(tmp_path / "clip.mp4"), seconds=1.0)
    with trio.fail_after(60):
        async with in_voice() as (sb, _gateway, session):
            pipeline = AvPipeline(video, video="file", width=320, height=240, fps=30, loop=True)
            source = AvSource(pipeline, session.voice.api, name="media")
            handle = await start_stream_publish(session, source=source)
            viewer = await add_viewer(sb, handle)
            await wait_until(lambda: pipeline.passes >= 2 and viewer.statistics().psnr_compared >= 30)
            stats = viewer.statistics()
            assert stats.psnr_min_db is not None and stats.psnr_min_db >= 30.0, stats
            assert handle.active and source.statistics().passes >= 2
            await handle.stop()
            assert handle.reason == "stopped"


def test_bad_media_is_refused_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument) as missing:
        AvPipeline(str(tmp_path / "nope.mp3"), video="showcqt", width=320, height=240, fps=30)
    assert missing.value.field == "url"
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"not audio at all" * 100)
    with pytest.raises(InvalidArgument) as undecodable:
        AvPipeline(str(junk), video="showcqt", width=320, height=240, fps=30)
    assert undecodable.value.field == "url"
    music = write_music(str(tmp_path / "m.wav"), seconds=0.5)
    with pytest.raises(InvalidArgument) as no_video:
        AvPipeline(music, video="file", width=320, height=240, fps=30)
    assert no_video.value.field == "url"
    with pytest.raises(InvalidArgument) as kind:
        AvPipeline(music, video="sparkles", width=320, height=240, fps=30)  # type: ignore[arg-type]
    assert kind.value.field == "visualizer"
