"""The whole voice session on the fake network under ``autojump_clock``: our gateway client, voice
session, voice and stream_watch legs against the sandbox (main gateway, voice and stream servers,
simulated streamers, real davey) — no sockets, virtual time, deterministic.

Shown here: rejoin through the main gateway on 4006 with a new session (every role rebuilt),
STREAM_DELETE ends only its watch, a stream-server crash (4022) ends only its watch while voice
continues, a resumable stream-server crash (4015) keeps the watch, refusal reasons, 5% loss
repaired by NACK/RTX, and minutes of an idle watch (CPU work runs inline: clank.io.offload).
"""

from __future__ import annotations

import numpy as np
import pytest
import simplejpeg
import trio
import trio.testing
from fake_session import fake_session, go_live, media, user_id, wait_until

from clank.config import WatchSettings
from clank.errors import WatchError
from clank.media.decoder import VideoCodec
from clank.media.jpeg import scale_frame
from clank.media.quality import plane_array, plane_psnr
from clank.sandbox.app import Sandbox
from clank.session.roles import RoleState
from clank.session.stream_watch import start_stream_watch
from clank.watch.frames import ScreenFrame

WATCH = WatchSettings(max_fps=5.0, preferred_pixel_count=160 * 120, credentials_timeout_s=5.0)
pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


PSNR_GOAL_DB = 30.0


def frame_psnr(sb: Sandbox, owner: str, frame: ScreenFrame) -> float:
    source = media(sb).streamer(owner).source_frame(frame.rtp_timestamp)
    assert source is not None, "the streamer no longer has that source frame"
    reference = plane_array(scale_frame(source, max_pixels=WATCH.preferred_pixel_count), 0)
    luma = simplejpeg.decode_jpeg(frame.jpeg, colorspace="GRAY")[:, :, 0]
    return plane_psnr(np.ascontiguousarray(luma), np.ascontiguousarray(reference))


async def test_4006_rejoins_with_a_new_session_and_rebuilds_every_role(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(3600):  # virtual
        async with fake_session() as (_net, sb, session):
            first = session.voice
            old_session = session.session_id
            media(sb).faults.close(sb.our_user_id, 4006)
            await wait_until(lambda: session.voice is not first)
            await session.voice.wait_ready()
            assert session.session_id is not None and session.session_id != old_session
            stats = session.statistics()
            assert stats.rejoins == 1 and stats.rebuilds == 0  # a rejoin starts from nothing
            assert first.state is RoleState.FAILED


async def test_a_new_session_id_rebuilds_every_role(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(3600):  # virtual
        async with fake_session() as (_net, sb, session):
            alice = await go_live(sb, "alice")
            watch = await start_stream_watch(session, alice, settings=WATCH)
            voice, old_session = session.voice, session.session_id
            await sb.world.join_voice(sb.our_user_id, sb.voice_channel_id, new_session=True)
            await wait_until(lambda: session.statistics().rebuilds == 1)
            await wait_until(lambda: session.voice is not voice and session.voice.state is RoleState.READY)
            assert session.session_id not in (None, old_session)
            assert voice.state is not RoleState.READY
            assert session.statistics().rejoins == 0
            # The server dropped us as a viewer with the old session: the old watch ended.
            await wait_until(lambda: not watch.active)


@pytest.mark.parametrize(("code", "survives"), [(4022, False), (4015, True)])
async def test_a_stream_server_crash_ends_or_resumes_only_its_watch(
    code: int, survives: bool, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(3600):  # virtual
        async with fake_session() as (_net, sb, session):
            alice = await go_live(sb, "alice")
            bob = await go_live(sb, "bob")
            watch_alice = await start_stream_watch(session, alice, settings=WATCH)
            watch_bob = await start_stream_watch(session, bob, settings=WATCH)
            assert watch_bob.stream_key is not None
            with session.voice.api.subscribe_audio(alice, buffer=500) as audio:
                await sb.world.set_speaking(alice, True)
                await audio.receive()
                media(sb).faults.crash_stream(str(watch_bob.stream_key), code)
                if survives:
                    await trio.sleep(3)
                    assert watch_bob.active and watch_bob.state is RoleState.READY
                else:
                    await watch_bob.wait_stopped()
                    assert watch_bob.reason == "transport"
                # Audio kept flowing on the voice leg the whole time, without concealment.
                items = [await audio.receive() for _ in range(50)]
                assert not any(i.concealed for i in items)
            assert watch_alice.active and watch_alice.state is RoleState.READY
            assert session.voice.state is RoleState.READY
            assert session.voice.api.connection.statistics().resumes == 0


async def test_five_percent_loss_is_repaired_with_nack_and_rtx(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Seeded 5% downlink loss on the stream leg: NACK + RTX repair >= 99% of the frames sent in
    exactly 4 virtual seconds. Under the virtual clock encode and decode run inline on the trio
    thread (clank.io.offload), so the clock never jumps while a frame is half done."""
    with trio.fail_after(3600):  # virtual
        async with fake_session(fps=30, bitrate=400_000) as (_net, sb, session):
            alice = await go_live(sb, "alice")
            handle = await start_stream_watch(session, alice, settings=WATCH)
            assert handle.stream_key is not None
            await handle.frames.wait_frame()
            before = handle.statistics().streams
            (ssrc,) = before
            start = before[ssrc].receive
            sent_before = media(sb).streamer(alice).statistics().frames_sent
            await media(sb).faults.link(
                sb.our_user_id, "downlink", loss=0.05, seed=5, stream_key=str(handle.stream_key)
            )
            await trio.sleep(4.0)
            end = handle.statistics().streams[ssrc].receive
            sent = media(sb).streamer(alice).statistics().frames_sent - sent_before
            emitted = end.frames_emitted - start.frames_emitted
            assert end.packets_recovered - start.packets_recovered > 10
            assert end.rtx_received > start.rtx_received
            # 30 fps for 4 s; >= 99% of them emitted (a few may still be in flight).
            assert sent >= 119 and emitted >= 0.99 * sent - 3, (emitted, sent, end.frames_dropped)
            # What came through the lossy link still looks like the source.
            frame = handle.frames.latest
            assert frame is not None
            frame = await handle.frames.wait_frame(after_sequence=frame.sequence)
            assert frame_psnr(sb, alice, frame) >= PSNR_GOAL_DB


async def test_stream_delete_ends_only_its_watch(autojump_clock: trio.testing.MockClock) -> None:
    """STREAM_DELETE of alice's stream tears down her watch (its leg, its pipeline) and nothing else:
    bob's watch keeps producing pictures, the voice leg keeps relaying audio without concealment."""
    with trio.fail_after(3600):  # virtual
        async with fake_session() as (_net, sb, session):
            alice = await go_live(sb, "alice")
            bob = await go_live(sb, "bob")
            watch_alice = await start_stream_watch(session, alice, settings=WATCH)
            watch_bob = await start_stream_watch(session, bob, settings=WATCH)
            await watch_alice.frames.wait_frame()
            await watch_bob.frames.wait_frame()
            with session.voice.api.subscribe_audio(alice, buffer=500) as audio:
                await sb.world.set_speaking(alice, True)
                await audio.receive()
                await sb.world.stop_stream(alice)
                after: int | None = None
                with pytest.raises(WatchError) as info:
                    while True:  # frames still in flight, then the store's closing reason
                        after = (await watch_alice.frames.wait_frame(after_sequence=after)).sequence
                assert info.value.reason == "stream_deleted"
                assert watch_alice.reason == "stream_deleted"
                assert not watch_alice.active
                assert watch_bob.active and watch_bob.state is RoleState.READY
                seen = watch_bob.frames.latest
                assert seen is not None
                await watch_bob.frames.wait_frame(after_sequence=seen.sequence)
                items = [await audio.receive() for _ in range(50)]
                assert not any(i.concealed for i in items)
            assert session.voice.state is RoleState.READY
            assert session.voice.api.statistics().audio_receive.users[0].lost == 0


async def test_failure_reasons_are_reported_not_hung(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(600):  # virtual: the credentials timeout passes
        async with fake_session() as (_net, sb, session):
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


async def test_an_idle_watch_keeps_both_legs_and_the_main_gateway_alive(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Three virtual minutes of a 1 fps watch: heartbeats on the main gateway and both legs, UDP
    keep-alives, no op21 (a health check, only when the leg fails), no resume or reconnect (hours
    of heartbeats on a leg alone: tests/voice/test_media_leg_fakenet.py)."""
    minutes = 3
    with trio.fail_after(3 * 3600):  # virtual
        async with fake_session(fps=1) as (_net, sb, session):
            alice = await go_live(sb, "alice")
            watch = await start_stream_watch(session, alice, settings=WATCH)
            await trio.sleep(minutes * 60)
            assert watch.active and watch.state is RoleState.READY
            stats = watch.statistics()
            assert stats.keepalives_sent == 0  # op21 is a health check: only when the leg fails
            assert stats.connection is not None and stats.connection.keepalives_sent >= minutes * 60 // 5 - 1
            assert stats.connection.resumes == 0 and stats.connection.reconnects == 0
            assert stats.frames_published >= minutes * 60 - 5  # 1 fps, all the way
            voice = session.voice.api.connection.statistics()
            assert voice.resumes == 0 and voice.reconnects == 0
            assert voice.gateway.heartbeats_sent >= minutes * 60 // 42


@pytest.mark.parametrize("codec", ["h264", "vp8"])
async def test_frames_of_either_codec_match_the_source(
    codec: VideoCodec, autojump_clock: trio.testing.MockClock
) -> None:
    """VP8 needs more bits than H264 for the same quality (the real-socket e2e test is H264 only)."""
    bitrate = 150_000 if codec == "h264" else 400_000
    with trio.fail_after(600):  # virtual
        async with fake_session(codec=codec, fps=10, bitrate=bitrate) as (_net, sb, session):
            alice = await go_live(sb, "alice")
            handle = await start_stream_watch(session, alice, settings=WATCH)
            assert await start_stream_watch(session, alice, settings=WATCH) is handle  # reused
            frames = []
            after: int | None = None
            while len(frames) < 6:
                frame = await handle.frames.wait_frame(after_sequence=after)
                frames.append(frame)
                after = frame.sequence
            scores = [frame_psnr(sb, alice, f) for f in frames]
            assert min(scores) >= PSNR_GOAL_DB, scores
            assert all(f.codec == codec and f.user_id == alice and f.width == 160 for f in frames)
            (stream,) = handle.statistics().streams.values()
            assert stream.decode is not None and stream.decode.decode_errors == 0
            await handle.stop()
            assert handle.reason == "stopped" and session.voice.state is RoleState.READY
