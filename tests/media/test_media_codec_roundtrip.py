"""Real encoders (libx264, libvpx) into our decoder: quality, keyframes, state, bad input."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clank.codecs.annexb import nal_types
from clank.errors import UsageError
from clank.media.decoder import VideoCodec, VideoDecoder, access_unit_is_keyframe
from clank.media.encoder import EncodedFrame, VideoEncoder
from clank.media.quality import psnr
from clank.media.synth import ScreenSynth

CODECS: list[VideoCodec] = ["h264", "vp8"]
FPS = 30
FRAMES = 24


@pytest.fixture(scope="module")
def synth() -> ScreenSynth:
    return ScreenSynth(1280, 720, fps=FPS)


def _encode(
    codec: VideoCodec, synth: ScreenSynth, count: int, *, force_at: int | None = None
) -> list[EncodedFrame]:
    encoder = VideoEncoder(codec, synth.width, synth.height, FPS, 2_500_000)
    out: list[EncodedFrame] = []
    for index in range(count):
        if index == force_at:
            encoder.force_keyframe()
        out += encoder.encode(synth.frame(index))
    return out + encoder.flush()


@pytest.mark.parametrize("codec", CODECS)
def test_encode_decode_720p_keeps_quality(codec: VideoCodec, synth: ScreenSynth) -> None:
    encoded = _encode(codec, synth, FRAMES)
    assert len(encoded) == FRAMES  # zero latency: one output per input
    decoder = VideoDecoder(codec)
    decoded = []
    for index, frame in enumerate(encoded):
        decoded += decoder.decode(frame.data, timestamp=index * 3000)
    assert len(decoded) == FRAMES
    assert [d.timestamp for d in decoded] == [i * 3000 for i in range(FRAMES)]
    assert (decoded[0].width, decoded[0].height) == (1280, 720)
    for index in (0, FRAMES // 2, FRAMES - 1):
        assert psnr(decoded[index].image, synth.frame(index)) >= 30.0
    stats = decoder.statistics()
    assert stats.errors == 0 and stats.frames == FRAMES and not stats.needs_keyframe


@pytest.mark.parametrize("codec", CODECS)
def test_keyframes_first_and_on_request(codec: VideoCodec, synth: ScreenSynth) -> None:
    encoded = _encode(codec, synth, 12, force_at=7)
    keyframes = [i for i, f in enumerate(encoded) if f.keyframe]
    assert keyframes == [0, 7]
    assert [access_unit_is_keyframe(codec, f.data) for f in encoded] == [f.keyframe for f in encoded]


def test_h264_is_annexb_with_parameter_sets_on_every_idr(synth: ScreenSynth) -> None:
    encoded = _encode("h264", synth, 10, force_at=5)
    for frame in encoded:
        # Every start code is the 4-byte form.
        assert frame.data.count(b"\x00\x00\x01") == frame.data.count(b"\x00\x00\x00\x01")
        types = nal_types(frame.data)
        if frame.keyframe:
            assert types[:2] == [7, 8] and 5 in types
        else:
            assert 5 not in types and 7 not in types
    sps = encoded[0].data[4:8]
    assert sps[1] == 66  # profile_idc baseline
    assert sps[2] & 0x40  # constraint_set1: constrained baseline, as browsers send


@pytest.mark.parametrize("codec", CODECS)
def test_p_frames_need_the_state_of_the_frames_before(codec: VideoCodec, synth: ScreenSynth) -> None:
    encoded = _encode(codec, synth, 6)
    persistent = VideoDecoder(codec)
    assert all(persistent.decode(f.data, i) for i, f in enumerate(encoded))
    # A decoder that never saw the keyframe cannot decode the P frames: counted, not raised.
    fresh = VideoDecoder(codec, reset_after_errors=100)
    outputs = [fresh.decode(f.data, i) for i, f in enumerate(encoded[1:])]
    assert outputs == [[]] * 5
    assert fresh.statistics().errors == 5 and fresh.needs_keyframe


@pytest.mark.parametrize("codec", CODECS)
def test_garbage_is_counted_and_resets_after_n_errors(codec: VideoCodec, synth: ScreenSynth) -> None:
    decoder = VideoDecoder(codec, reset_after_errors=3)
    rng = random.Random(7)
    for index in range(7):
        garbage = b"\x00\x00\x00\x01\x65" + rng.randbytes(300) if codec == "h264" else rng.randbytes(300)
        assert decoder.decode(garbage, index) == []
    stats = decoder.statistics()
    assert stats.errors == 7 and stats.resets == 2 and stats.consecutive_errors == 1
    assert decoder.needs_keyframe
    # After the reset a keyframe starts a fresh chain and clears the request.
    encoded = _encode(codec, synth, 3)
    for index, frame in enumerate(encoded):
        assert len(decoder.decode(frame.data, 100 + index)) == 1
    assert not decoder.statistics().needs_keyframe
    assert decoder.statistics().consecutive_errors == 0


def test_empty_access_unit_is_an_error() -> None:
    decoder = VideoDecoder("h264")
    assert decoder.decode(b"", 0) == []
    assert decoder.statistics().errors == 1


def test_unknown_codec_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        VideoDecoder("av1")  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        VideoEncoder("h264", 641, 360, 30, 1_000_000)


@pytest.mark.parametrize(
    ("codec", "data", "expected"),
    [
        ("h264", b"\x00\x00\x00\x01\x67\x42\x00\x00\x00\x01\x68\xce\x00\x00\x01\x65\x88", True),
        ("h264", b"\x00\x00\x00\x01\x67\x42\x00\x00\x00\x01\x68\xce", False),
        ("h264", b"\x00\x00\x00\x01\x41\x9a", False),
        ("h264", b"\x00\x00\x01", False),
        ("h264", b"", False),
        ("vp8", b"\x10\x02\x00\x9d\x01\x2a", True),
        ("vp8", b"\x11\x02\x00", False),
        ("vp8", b"", False),
    ],
)
def test_access_unit_is_keyframe_table(codec: VideoCodec, data: bytes, expected: bool) -> None:
    assert access_unit_is_keyframe(codec, data) is expected


@given(data=st.binary(max_size=400), codec=st.sampled_from(CODECS))
def test_decoder_never_raises_on_arbitrary_bytes(data: bytes, codec: VideoCodec) -> None:
    decoder = VideoDecoder(codec, reset_after_errors=2)
    for index in range(2):
        frames = decoder.decode(data, index)
        assert isinstance(frames, list)
    access_unit_is_keyframe(codec, data)
    stats = decoder.statistics()
    assert stats.access_units == 2
