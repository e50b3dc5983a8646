"""Our x264 SPS already has the VUI that DVS normalises to before DAVE (discord-protocol §5.3).

Discord clients' libwebrtc rewrites SPS VUIs it dislikes, and the SPS is DAVE-authenticated: a
rewritten SPS breaks the tag of every keyframe. The normal form is a VUI with
``bitstream_restriction_flag = 1``, ``max_num_reorder_frames = 0``, ``max_dec_frame_buffering =
max_num_ref_frames`` and no ``video_signal_type``. This test parses the SPS our encoder settings
produce (baseline profile: no chroma/scaling fields) and checks that form, so a config change that
breaks it fails here rather than live.
"""

from __future__ import annotations

import av
import numpy as np

from clank.codecs.annexb import NAL_SPS, nal_type, split_nals
from clank.media.encoder import VideoEncoder


class Bits:
    def __init__(self, rbsp: bytes) -> None:
        self.data = rbsp
        self.pos = 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.data[self.pos // 8]
            value = (value << 1) | ((byte >> (7 - self.pos % 8)) & 1)
            self.pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.u(1) == 0:
            zeros += 1
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k % 2 else -(k // 2)


def _rbsp(nal: bytes) -> bytes:
    out = bytearray()
    zeros = 0
    for byte in nal[1:]:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _hrd(b: Bits) -> None:
    count = b.ue() + 1
    b.u(4), b.u(4)
    for _ in range(count):
        b.ue(), b.ue(), b.u(1)
    b.u(5), b.u(5), b.u(5), b.u(5)


def parse_baseline_sps(nal: bytes) -> dict[str, int]:
    b = Bits(_rbsp(nal))
    profile = b.u(8)
    b.u(8)  # constraint flags
    b.u(8)  # level
    b.ue()  # sps id
    assert profile in (66, 77), f"profile {profile}: this parser only knows baseline/main"
    b.ue()  # log2_max_frame_num - 4
    poc_type = b.ue()
    if poc_type == 0:
        b.ue()
    elif poc_type == 1:
        b.u(1), b.se(), b.se()
        for _ in range(b.ue()):
            b.se()
    refs = b.ue()
    b.u(1)  # gaps
    b.ue(), b.ue()  # width/height in MBs
    if not b.u(1):  # frame_mbs_only
        b.u(1)
    b.u(1)  # direct_8x8
    if b.u(1):  # cropping
        b.ue(), b.ue(), b.ue(), b.ue()
    out = {"max_num_ref_frames": refs, "vui": b.u(1)}
    if not out["vui"]:
        return out
    if b.u(1) and b.u(8) == 255:  # aspect ratio info, extended SAR
        b.u(16), b.u(16)
    if b.u(1):  # overscan
        b.u(1)
    out["video_signal_type"] = b.u(1)
    if out["video_signal_type"]:
        b.u(3), b.u(1)
        if b.u(1):
            b.u(8), b.u(8), b.u(8)
    if b.u(1):  # chroma loc
        b.ue(), b.ue()
    if b.u(1):  # timing
        b.u(32), b.u(32), b.u(1)
    nal_hrd, vcl_hrd = b.u(1), 0
    if nal_hrd:
        _hrd(b)
    vcl_hrd = b.u(1)
    if vcl_hrd:
        _hrd(b)
    if nal_hrd or vcl_hrd:
        b.u(1)
    b.u(1)  # pic_struct
    out["bitstream_restriction"] = b.u(1)
    if out["bitstream_restriction"]:
        b.u(1), b.ue(), b.ue(), b.ue(), b.ue()
        out["max_num_reorder_frames"] = b.ue()
        out["max_dec_frame_buffering"] = b.ue()
    return out


def test_our_x264_sps_is_already_in_the_normal_form_dave_viewers_need() -> None:
    encoder = VideoEncoder("h264", 320, 240, 30, 500_000, cap_bitrate=True)
    rgb = np.zeros((240, 320, 3), dtype=np.uint8)
    rgb[60:180, 80:240] = (200, 120, 40)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    (first,) = encoder.encode(frame)
    assert first.keyframe
    (sps,) = [n for n in split_nals(first.data) if nal_type(n) == NAL_SPS]
    fields = parse_baseline_sps(sps)
    assert fields["vui"] == 1 and fields["video_signal_type"] == 0, fields
    assert fields["bitstream_restriction"] == 1 and fields["max_num_reorder_frames"] == 0, fields
    assert fields["max_dec_frame_buffering"] == fields["max_num_ref_frames"], fields
