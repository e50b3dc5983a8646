"""End to end over loopback: gateway client + voice session + stream_watch roles against the sandbox.

Real sockets on 127.0.0.1, websockets, AEAD, DAVE (davey) on both sides, PyAV encoders in the
sandbox's simulated streamers and our decoders. Video is small (320x240) to keep the tests quick.
STREAM_DELETE, stream-server crashes and refusals run on the fake network
(``test_session_fakenet.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import numpy as np
import pytest
import simplejpeg
import trio

from clank.config import DiscordSettings, Settings, WatchSettings
from clank.io.gateway import GatewayClient, open_gateway_client
from clank.media.decoder import VideoCodec
from clank.media.jpeg import scale_frame
from clank.media.quality import plane_array, plane_psnr
from clank.sandbox.app import Sandbox, open_sandbox
from clank.sandbox.rtc.streamer import VideoSettings
from clank.session.roles import RoleState
from clank.session.stream_watch import start_stream_watch
from clank.session.voice_session import VoiceSession, open_voice_session
from clank.session.watch_handle import WatchHandle
from clank.session.webcam_watch import start_webcam_watch
from clank.watch.frames import ScreenFrame

SETTINGS = Settings(discord=DiscordSettings(voice_url_scheme="ws"))
WATCH = WatchSettings(max_fps=10.0, preferred_pixel_count=320 * 240, credentials_timeout_s=5.0)
PSNR_GOAL_DB = 30.0
pytestmark = [pytest.mark.e2e, pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")]


def user_id(sb: Sandbox, name: str) -> str:
    return next(u.id for u in sb.world.users.values() if u.name == name)


@asynccontextmanager
async def joined(
    codec: VideoCodec = "h264", seed: int = 0
) -> AsyncIterator[tuple[Sandbox, GatewayClient, VoiceSession]]:
    async with open_sandbox(seed=seed) as sb:
        assert sb.media is not None
        # VP8 realtime needs more bits than H264 for the same quality.
        bitrate = 500_000 if codec == "h264" else 1_500_000
        screen = VideoSettings(codec=codec, width=320, height=240, bitrate=bitrate, keyframe_interval=2.0)
        sb.media.settings = attrs.evolve(sb.media.settings, screen=screen)
        async with (
            open_gateway_client(url=sb.gateway_url, token=sb.token) as gateway,
            open_voice_session(
                gateway, guild_id=sb.guild_id, channel_id=sb.voice_channel_id, settings=SETTINGS
            ) as session,
        ):
            await session.voice.wait_ready()
            yield sb, gateway, session


async def go_live(sb: Sandbox, name: str) -> str:
    owner = user_id(sb, name)
    await sb.world.join_voice(owner, sb.voice_channel_id)
    await sb.world.go_live(owner)
    return owner


def frame_psnr(sb: Sandbox, owner: str, frame: ScreenFrame) -> float:
    assert sb.media is not None
    source = sb.media.streamer(owner).source_frame(frame.rtp_timestamp)
    assert source is not None, "the streamer no longer has that source frame"
    reference = plane_array(scale_frame(source, max_pixels=WATCH.preferred_pixel_count), 0)
    luma = simplejpeg.decode_jpeg(frame.jpeg, colorspace="GRAY")[:, :, 0]
    return plane_psnr(np.ascontiguousarray(luma), np.ascontiguousarray(reference))


async def collect(handle: WatchHandle, count: int) -> list[ScreenFrame]:
    frames: list[ScreenFrame] = []
    after = None
    while len(frames) < count:
        frame = await handle.frames.wait_frame(after_sequence=after)
        frames.append(frame)
        after = frame.sequence
    return frames


@pytest.mark.parametrize("codec", ["h264"])  # both codecs on the fake net: test_session_fakenet.py
async def test_watch_a_go_live_stream_and_frames_match_the_source(codec: VideoCodec) -> None:
    with trio.fail_after(40):
        async with joined(codec) as (sb, _gateway, session):
            alice = await go_live(sb, "alice")
            handle = await start_stream_watch(session, alice, settings=WATCH)
            assert handle.state is RoleState.READY and handle.stream_key is not None
            assert handle.stream_key.owner_id == alice
            # A repeat watch of the same target reuses the running handle.
            assert await start_stream_watch(session, alice, settings=WATCH) is handle
            frames = await collect(handle, 8)
            scores = [frame_psnr(sb, alice, f) for f in frames]
            assert min(scores) >= PSNR_GOAL_DB, scores
            assert all(f.codec == codec and f.user_id == alice and f.width == 320 for f in frames)
            stats = handle.statistics()
            (stream,) = stats.streams.values()
            # Frames that arrived before our DAVE session was ready fail (counted); after that only the
            # first frame the strict sandbox makes undecryptable (fidelity.stale_first_video_frame).
            failures = stream.receive.dave_failures
            assert stream.receive.dave_ok > 0 and sum(failures.values()) - failures.get("not_ready", 0) <= 1
            assert stream.decode is not None and stream.decode.decode_errors == 0
            assert stats.sink_wants_sent >= 1 and stats.time_to_first_frame is not None
            await handle.stop()
            assert handle.state is RoleState.DISCONNECTED and handle.reason == "stopped"
            assert session.voice.state is RoleState.READY


async def test_webcam_watch_on_the_voice_leg() -> None:
    with trio.fail_after(40):
        async with joined("h264") as (sb, _gateway, session):
            assert sb.media is not None
            bob = user_id(sb, "bob")
            await sb.world.join_voice(bob, sb.voice_channel_id)
            await sb.world.set_webcam(bob, True)
            handle = await start_webcam_watch(session, bob, WATCH)
            frames = await collect(handle, 3)
            assert all(f.stream_type == "camera" and f.user_id == bob for f in frames)
            source = sb.media.webcam(bob).source_frame(frames[-1].rtp_timestamp)
            assert source is not None
            reference = plane_array(scale_frame(source, max_pixels=WATCH.preferred_pixel_count), 0)
            luma = simplejpeg.decode_jpeg(frames[-1].jpeg, colorspace="GRAY")[:, :, 0]
            assert plane_psnr(np.ascontiguousarray(luma), np.ascontiguousarray(reference)) >= PSNR_GOAL_DB
            await handle.stop()
            assert handle.reason == "stopped" and session.voice.state is RoleState.READY
