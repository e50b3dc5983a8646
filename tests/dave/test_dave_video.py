"""Video through DAVE: real libx264 / libvpx access units encrypted by one member, decrypted by another."""

from __future__ import annotations

import re
from fractions import Fraction

import av
import numpy as np
import pytest
from dave_net import DaveNet

from clank.crypto.dave import DaveSessionCore
from clank.crypto.dave_wire import describe_frame

_START_CODE = re.compile(b"\x00?\x00\x00\x01")


def _normalize_annexb(au: bytes) -> bytes:
    """DAVE rewrites every start code to 4 bytes; compare NAL by NAL."""
    nals = [n for n in _START_CODE.split(au) if n]
    return b"".join(b"\x00\x00\x00\x01" + n for n in nals)


def _encode(codec: str, frames: int = 6) -> list[bytes]:
    encoder = av.CodecContext.create(codec, "w")
    encoder.width, encoder.height, encoder.pix_fmt = 160, 96, "yuv420p"
    encoder.time_base = Fraction(1, 30)
    encoder.framerate = Fraction(30, 1)
    if codec == "libx264":
        encoder.options = {"preset": "ultrafast", "tune": "zerolatency", "bframes": "0"}
    encoder.gop_size = 3
    out: list[bytes] = []
    rng = np.random.default_rng(1)
    for i in range(frames):
        image = rng.integers(0, 255, (96, 160, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out += [bytes(p) for p in encoder.encode(frame)]
    out += [bytes(p) for p in encoder.encode(None)]
    return [p for p in out if p]


@pytest.fixture(scope="module")
def pair() -> tuple[DaveSessionCore, DaveSessionCore]:
    net = DaveNet(21)
    alice, bob = DaveSessionCore(1, net.group_id), DaveSessionCore(2, net.group_id)
    net.join(alice)
    net.join(bob)
    net.settle()
    return alice, bob


def test_h264_access_units_round_trip(pair: tuple[DaveSessionCore, DaveSessionCore]) -> None:
    alice, bob = pair
    units = _encode("libx264")
    assert units and units[0].startswith(b"\x00\x00\x00\x01")
    for au in units:
        wire = alice.encrypt_video("h264", au)
        info = describe_frame(wire)
        assert info["valid"] and info["ranges"], info
        assert _normalize_annexb(bob.decrypt(1, "video", wire)) == _normalize_annexb(au)
    assert bob.statistics().decrypt_counters(1, "video").ok == len(units)


def test_vp8_frames_round_trip(pair: tuple[DaveSessionCore, DaveSessionCore]) -> None:
    alice, bob = pair
    frames = _encode("libvpx")
    for frame in frames:
        wire = alice.encrypt_video("vp8", frame)
        # Keyframes keep 10 clear bytes, delta frames 1.
        clear = 10 if not frame[0] & 1 else 1
        assert describe_frame(wire)["ranges"] == [[0, clear]]
        assert bob.decrypt(1, "video", wire) == frame


def test_synthetic_h264_with_sps_pps_idr_and_p_slice(pair: tuple[DaveSessionCore, DaveSessionCore]) -> None:
    alice, bob = pair
    sps = b"\x00\x00\x00\x01\x67\x42\xc0\x1e\xda\x02\x80\xbf\xe5\x84"
    pps = b"\x00\x00\x00\x01\x68\xce\x3c\x80"
    idr = b"\x00\x00\x00\x01\x65\x88\x84" + bytes(range(1, 200))
    p_slice = b"\x00\x00\x00\x01\x41\x9a\x20" + bytes(range(3, 120))
    for au in (sps + pps + idr, p_slice):
        assert bob.decrypt(1, "video", alice.encrypt_video("h264", au)) == au
