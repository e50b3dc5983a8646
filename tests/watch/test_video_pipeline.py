"""The trio video pipeline: receive core -> decoder thread -> ScreenFrames in the store and channel."""

from __future__ import annotations

import io

import numpy as np
import pytest
import trio
import trio.testing
from PIL import Image
from watch_kit import LOCAL_SSRC, MEDIA_SSRC, RTX_SSRC, STREAMER_ID, Streamer, dave_pair

from clank.config import WatchSettings
from clank.crypto.dave import DaveSessionCore
from clank.media.decoder import VideoCodec
from clank.media.quality import plane_psnr
from clank.protocol.video_receive import VideoReceiveConfig, VideoReceiver
from clank.session.video_pipeline import FrameSink, open_video_pipeline
from clank.watch.frames import FrameChannel, LatestFrameStore
from clank.wire.rtcp import parse_compound


@pytest.fixture(scope="module")
def dave() -> tuple[DaveSessionCore, DaveSessionCore]:
    return dave_pair()


def _luma(jpeg: bytes) -> np.ndarray:  # type: ignore[type-arg]
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"))


async def test_frames_reach_the_store_and_channel_through_the_decode_thread(
    dave: tuple[DaveSessionCore, DaveSessionCore],
) -> None:
    """The real clock: the decode worker's own thread (under a virtual clock it would run inline);
    the thread does not depend on the codec, so H264 only (both codecs: the inline test)."""
    await _frames_reach_the_store_and_channel("h264", False, dave)


@pytest.mark.parametrize("codec", ["h264", "vp8"])
async def test_frames_reach_the_store_and_channel_decoding_inline(
    codec: VideoCodec, dave: tuple[DaveSessionCore, DaveSessionCore], autojump_clock: trio.testing.MockClock
) -> None:
    await _frames_reach_the_store_and_channel(codec, True, dave)


async def _frames_reach_the_store_and_channel(
    codec: VideoCodec, synchronous: bool, dave: tuple[DaveSessionCore, DaveSessionCore]
) -> None:
    sender, watcher = dave
    streamer = Streamer(codec, dave=sender)
    receiver = VideoReceiver(
        VideoReceiveConfig(local_ssrc=LOCAL_SSRC), lambda user, frame: watcher.decrypt(user, "video", frame)
    )
    settings = WatchSettings(max_fps=10.0, preferred_pixel_count=320 * 180)
    sent: list[bytes] = []
    store = LatestFrameStore()
    channel = FrameChannel(capacity=64)
    with trio.fail_after(20):
        async with open_video_pipeline(
            receiver, settings, lambda d: sent.append(d) or True, synchronous_decode=synchronous
        ) as pipeline:
            pipeline.add_sink((str(STREAMER_ID), "screen"), FrameSink(store, channel))
            receiver.bind(MEDIA_SSRC, str(STREAMER_ID), trio.current_time(), rtx_ssrc=RTX_SSRC)
            for _ in range(30):
                for packet in streamer.next_frame():
                    pipeline.on_packet(packet.header, packet.payload, trio.current_time())
                await trio.sleep(1 / 30)
            first = await channel.receive()
            # 30 frames at 30 fps, at most 10 fps out: about 10 pictures (the last may still be due).
            while store.latest is not None and store.latest.rtp_timestamp < 27 * 3000:
                await store.wait_frame(after_sequence=store.latest.sequence)
            stats = pipeline.stream_statistics()[MEDIA_SSRC]
            decoded = pipeline.decoded_frames(MEDIA_SSRC)
    latest = store.latest
    assert latest is not None and first.sequence == 1
    assert 8 <= latest.sequence <= 11
    assert latest.width * latest.height <= 320 * 180 and latest.user_id == str(STREAMER_ID)
    assert latest.codec == codec and latest.stream_type == "screen" and latest.ssrc == MEDIA_SSRC
    assert channel.statistics().sent == latest.sequence and channel.statistics().dropped == 0
    # The JPEG shows the source frame it came from.
    source = streamer.sources[latest.rtp_timestamp]
    decoded_luma = _luma(latest.jpeg)
    source_luma = np.asarray(source.to_image().convert("L"))
    assert plane_psnr(decoded_luma, source_luma) >= 25.0  # luma after full-range JPEG, both ways
    assert stats.receive.frames_emitted == 30 and stats.decode is not None
    assert stats.decode.decoded_frames == 30 and stats.frames_out == latest.sequence
    assert decoded == 30  # the bare counter agrees with the snapshot
    assert stats.width == 320
    # Whatever feedback went out is well-formed RTCP (the keyframe came first: no PLI needed).
    assert all(parse_compound(d) for d in sent)


async def test_unwanted_frames_are_not_decoded(
    dave: tuple[DaveSessionCore, DaveSessionCore], autojump_clock: trio.testing.MockClock
) -> None:
    sender, watcher = dave
    streamer = Streamer("h264", dave=sender)
    receiver = VideoReceiver(
        VideoReceiveConfig(local_ssrc=LOCAL_SSRC), lambda user, frame: watcher.decrypt(user, "video", frame)
    )
    with trio.fail_after(10):
        async with open_video_pipeline(
            receiver, WatchSettings(), lambda d: True, synchronous_decode=True
        ) as pipeline:
            receiver.bind(MEDIA_SSRC, str(STREAMER_ID), trio.current_time())
            for _ in range(5):
                for packet in streamer.next_frame():
                    pipeline.on_packet(packet.header, packet.payload, trio.current_time())
            await trio.sleep(0.1)
            assert pipeline.unwanted_frames == 5
            assert pipeline.stream_statistics()[MEDIA_SSRC].decode is None
            assert pipeline.decoded_frames(MEDIA_SSRC) == 0
