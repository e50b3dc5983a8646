"""World-driven end state: the ``demo`` scenario, observed by raw clients built from our own cores.

Our user joins voice through the main gateway (op4) and connects a raw voice client to the
VOICE_SERVER_UPDATE endpoint; once alice is live it sends op20 and connects a raw stream client
to the STREAM_SERVER_UPDATE endpoint. Video is shrunk to 160x120 (the backend's settings) so the
demo's own 1280x720 default is not paid for in a test. Everything runs on the fake network under
``autojump_clock``: the script's seconds are virtual, encoding runs inline (deterministic).
"""

from __future__ import annotations

import attrs
import av
import trio
import trio.testing
from rtc_helpers import RawVoiceClient, open_world_voice, open_world_watch, user_named, wait_until

from clank.io.fakenet import open_fake_net
from clank.io.gateway import open_gateway_client
from clank.sandbox.app import open_sandbox
from clank.sandbox.rtc.receiver import ReceivedFrame
from clank.sandbox.rtc.streamer import VideoSettings

SMALL_SCREEN = VideoSettings(width=160, height=120, bitrate=150_000, keyframe_interval=0.5)
SMALL_WEBCAM = VideoSettings(width=160, height=120, bitrate=100_000, content="webcam", keyframe_interval=0.5)


def decode_h264(frames: list[ReceivedFrame]) -> list[av.VideoFrame]:
    """Decode the access units from the first keyframe on with PyAV (every one must decode)."""
    start = next(i for i, f in enumerate(frames) if f.keyframe)
    context = av.CodecContext.create("h264", "r")
    pictures: list[av.VideoFrame] = []
    for frame in frames[start:]:
        pictures += context.decode(av.Packet(frame.data))
    return pictures


def frames_of(raw: RawVoiceClient, user_id: str) -> list[ReceivedFrame]:
    return [f for f in raw.frames if f.user_id == int(user_id)]


def has_keyframe_and(count: int, raw: RawVoiceClient, user_id: str) -> bool:
    frames = frames_of(raw, user_id)
    keyframes = [i for i, f in enumerate(frames) if f.keyframe]
    return bool(keyframes) and len(frames) - keyframes[0] >= count


async def test_demo_scenario_end_state(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(600):  # virtual
        async with open_fake_net() as net, open_sandbox(scenario="demo", net=net) as sb:
            assert sb.media is not None
            # The script's first step is a second away: shrink the video before anyone goes live.
            sb.media.settings = attrs.evolve(sb.media.settings, screen=SMALL_SCREEN, webcam=SMALL_WEBCAM)
            alice, bob = user_named(sb, "alice"), user_named(sb, "bob")
            async with (
                open_gateway_client(
                    url=sb.gateway_url, token=sb.token, connect=net.open_websocket
                ) as gateway,
                open_world_voice(sb, gateway, net) as voice,
            ):
                await gateway.wait_ready()
                # alice joins and talks: we hear her, DAVE-decrypted.
                await wait_until(lambda: len(voice.audio_from(int(alice))) >= 25)
                assert voice.dave.statistics().decrypt_counters(int(alice), "audio").ok >= 25

                # alice goes live: op20 -> STREAM_SERVER_UPDATE -> H264 frames that decrypt and decode.
                await wait_until(lambda: sb.world.stream_of(alice) is not None)
                stream = sb.world.stream_of(alice)
                assert stream is not None
                async with open_world_watch(gateway, stream.key, voice, net) as watch:
                    await wait_until(lambda: has_keyframe_and(6, watch, alice))
                    pictures = decode_h264(frames_of(watch, alice))
                    assert len(pictures) >= 6
                    assert {(p.width, p.height) for p in pictures} == {(160, 120)}
                    assert all(f.codec == "h264" for f in watch.frames)
                    assert watch.dave.statistics().decrypt_counters(int(alice), "video").ok >= 6
                    assert watch.session is not None and watch.session.dave_protocol_version == 1

                    # bob joins with his webcam: op12 on the voice leg with a video SSRC, frames arrive.
                    await wait_until(lambda: has_keyframe_and(3, voice, bob))
                    state = voice.core.video_state(bob)
                    assert state is not None and state.has_video and state.streams
                    webcam_ssrc = state.streams[0].ssrc
                    assert {f.ssrc for f in frames_of(voice, bob)} == {webcam_ssrc}
                    assert len(decode_h264(frames_of(voice, bob))) >= 3
                    # The end state of the world: alice in voice and live, bob in voice with his webcam.
                    alice_state, bob_state = sb.world.voice_state(alice), sb.world.voice_state(bob)
                    assert alice_state is not None and alice_state.self_stream
                    assert bob_state is not None and bob_state.self_video
                    # Still hearing alice on the voice leg.
                    heard = len(voice.audio_from(int(alice)))
                    await wait_until(lambda: len(voice.audio_from(int(alice))) >= heard + 5)
