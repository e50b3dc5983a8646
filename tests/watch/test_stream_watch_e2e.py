"""End to end over loopback: gateway client + voice session + stream_watch roles against the sandbox.

Real sockets on 127.0.0.1, websockets, AEAD, DAVE (davey) on both sides, PyAV encoders in the
sandbox's simulated streamers and our decoders. Video is small (320x240) to keep the tests quick.
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
from clank.errors import WatchError
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


@pytest.mark.parametrize("codec", ["h264", "vp8"])
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


async def test_stream_delete_and_a_server_crash_end_only_their_watch() -> None:
    with trio.fail_after(60):
        async with joined("h264") as (sb, _gateway, session):
            assert sb.media is not None
            alice = await go_live(sb, "alice")
            bob = await go_live(sb, "bob")
            watch_alice = await start_stream_watch(session, alice, settings=WATCH)
            watch_bob = await start_stream_watch(session, bob, settings=WATCH)
            await collect(watch_alice, 2)
            await collect(watch_bob, 2)
            with session.voice.api.subscribe_audio(alice, buffer=500) as audio:
                await sb.world.set_speaking(alice, True)
                await audio.receive()
                # STREAM_DELETE: only alice's watch ends.
                await sb.world.stop_stream(alice)
                with pytest.raises(WatchError) as info:
                    await collect(watch_alice, 1000)
                assert info.value.reason in ("stream_deleted", "target_left")
                assert watch_alice.reason in ("stream_deleted", "target_left")
                assert watch_bob.active
                seen = watch_bob.frames.latest
                assert seen is not None
                await watch_bob.frames.wait_frame(after_sequence=seen.sequence)
                # A stream server crash (call terminated): only bob's watch ends.
                assert watch_bob.stream_key is not None
                sb.media.faults.crash_stream(str(watch_bob.stream_key), 4022)
                await watch_bob.wait_stopped()
                assert watch_bob.reason == "transport"
                # Audio kept flowing on the voice role the whole time, without concealment.
                items = []
                while len(items) < 50:
                    items.append(await audio.receive())
                assert not any(i.concealed for i in items)
            assert session.voice.state is RoleState.READY
            assert session.voice.api.statistics().audio_receive.users[0].lost == 0


async def test_failure_reasons_are_reported_not_hung() -> None:
    with trio.fail_after(30):
        async with joined("h264") as (sb, _gateway, session):
            alice = user_id(sb, "alice")
            await sb.world.join_voice(alice, sb.voice_channel_id)
            # Alice is in voice but not live: the gateway refuses the watch.
            with pytest.raises(WatchError) as info:
                await start_stream_watch(session, alice, settings=WATCH)
            assert info.value.reason in ("stream_deleted", "no_credentials")
            with pytest.raises(WatchError) as own:
                await start_stream_watch(session, sb.our_user_id, settings=WATCH)
            assert own.value.reason == "own_stream"
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
