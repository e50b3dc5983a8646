"""Concealment without a keyframe: FFmpeg's SHOW_ALL on the persistent decoder (real x264/FFmpeg)."""

from __future__ import annotations

import av
import numpy as np

from clank.codecs.annexb import split_nals
from clank.media.decoder import VideoDecoder
from clank.media.encoder import EncodedFrame, VideoEncoder


def stream_with_one_keyframe(count: int = 60) -> list[EncodedFrame]:
    encoder = VideoEncoder("h264", 160, 120, 30, 300_000, keyframe_interval=1000.0)
    frames: list[EncodedFrame] = []
    for i in range(count):
        picture = np.zeros((120, 160, 3), np.uint8)
        picture[:, (i * 2) % 140 : (i * 2) % 140 + 20] = 220
        frames += encoder.encode(av.VideoFrame.from_ndarray(picture, format="rgb24"))
    return frames


def test_p_frames_without_a_keyframe_decode_only_with_show_all_and_are_flagged() -> None:
    frames = stream_with_one_keyframe()
    assert frames[0].keyframe and not any(f.keyframe for f in frames[1:])
    parameter_sets = b"".join(
        b"\x00\x00\x00\x01" + nal for nal in split_nals(frames[0].data) if nal[0] & 0x1F in (7, 8)
    )
    joined_late = [parameter_sets + frames[20].data] + [f.data for f in frames[21:]]

    plain = VideoDecoder("h264")
    assert sum(len(plain.decode(au, i)) for i, au in enumerate(joined_late)) == 0  # FFmpeg waits

    concealing = VideoDecoder("h264")
    pictures = [p for i, au in enumerate(joined_late) for p in concealing.decode(au, i, show_all=True)]
    assert len(pictures) >= len(joined_late) - 2
    assert all(p.concealed and not p.keyframe for p in pictures)

    # The keyframe ends concealment: its picture and the following ones are clean.
    clean = VideoDecoder("h264")
    out = [p for i, f in enumerate(frames[:5]) for p in clean.decode(f.data, i)]
    assert out[0].keyframe and not any(p.concealed for p in out)
