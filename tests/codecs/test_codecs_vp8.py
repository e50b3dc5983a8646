from __future__ import annotations

import random

import pytest
from codecs_streams import lossy_channel, rtp_packets, run_through, vp8_frames
from hypothesis import given
from hypothesis import strategies as st

from clank.codecs.packet import Gap, MediaPacket
from clank.codecs.vp8 import Vp8Depacketizer, Vp8Descriptor, descriptor_span, packetize_vp8
from clank.errors import MalformedPacket, UsageError

KEY_BODY = b"\x50\x42\x00\x9d\x01\x2a" + bytes(range(200))  # bit0 == 0: keyframe
DELTA_BODY = b"\x31" + bytes(range(100))


def test_packetizer_writes_the_discord_descriptor() -> None:
    packets = packetize_vp8(KEY_BODY, picture_id=0x1234, mtu=104)
    assert packets[0][:4] == bytes((0x90, 0x80, 0x80 | 0x12, 0x34))
    assert all(p[:4] == bytes((0x80, 0x80, 0x92, 0x34)) for p in packets[1:])
    assert b"".join(p[4:] for p in packets) == KEY_BODY
    assert all(len(p) <= 104 for p in packets)


def test_picture_id_wraps_at_15_bits() -> None:
    (packet,) = packetize_vp8(DELTA_BODY, picture_id=0x8001)
    assert Vp8Descriptor.parse(packet).picture_id == 1


def test_packetizer_rejects_bad_arguments() -> None:
    with pytest.raises(UsageError):
        packetize_vp8(DELTA_BODY, 0, mtu=4)
    with pytest.raises(UsageError):
        packetize_vp8(b"", 0)


@pytest.mark.parametrize(
    ("descriptor", "expected"),
    [
        (b"\x10", dict(start=True, partition=0, picture_id=None, size=1)),
        (b"\x03", dict(start=False, partition=3, size=1)),
        (b"\x90\x80\x05", dict(picture_id=5, size=3)),
        (b"\x90\x80\xff\xff", dict(picture_id=0x7FFF, size=4)),
        (
            b"\xb0\xf0\x81\x02\x07\xe3",
            dict(
                non_reference=True, picture_id=0x102, tl0_pic_idx=7, tid=3, layer_sync=True, key_idx=3, size=6
            ),
        ),
        (b"\x90\x10\x1f", dict(tid=None, key_idx=31, size=3)),
    ],
)
def test_descriptor_fields(descriptor: bytes, expected: dict[str, object]) -> None:
    parsed = Vp8Descriptor.parse(descriptor + b"\x00")
    for name, value in expected.items():
        assert getattr(parsed, name) == value


def test_every_truncation_of_a_descriptor_is_malformed() -> None:
    full = b"\xb0\xf0\x81\x02\x07\xe3"
    for end in range(len(full) + 1):
        with pytest.raises(MalformedPacket):
            Vp8Descriptor.parse(full[:end])


@given(st.binary(max_size=12))
def test_descriptor_parse_raises_only_malformed_packet(data: bytes) -> None:
    try:
        parsed = Vp8Descriptor.parse(data)
    except MalformedPacket:
        return
    assert 1 <= parsed.size < len(data)


def push_all(depacketizer: Vp8Depacketizer, payloads: list[bytes], seq: int = 0, ts: int = 0) -> list:
    frames = []
    for index, payload in enumerate(payloads):
        last = index == len(payloads) - 1
        frames += depacketizer.push(MediaPacket(seq=seq + index, timestamp=ts, marker=last, payload=payload))
    return frames


def test_keyframe_flag_comes_from_the_inverse_key_bit() -> None:
    depacketizer = Vp8Depacketizer()
    key_payloads = packetize_vp8(KEY_BODY, 1, mtu=50)
    (key,) = push_all(depacketizer, key_payloads, seq=0, ts=0)
    (delta,) = push_all(depacketizer, packetize_vp8(DELTA_BODY, 2, mtu=50), seq=len(key_payloads), ts=3000)
    assert key.keyframe and not delta.keyframe
    assert key.data == KEY_BODY and delta.data == DELTA_BODY


def test_missing_start_packet_drops_the_frame() -> None:
    depacketizer = Vp8Depacketizer()
    assert push_all(depacketizer, packetize_vp8(KEY_BODY, 1, mtu=50)[1:]) == []
    assert depacketizer.keyframe_needed
    assert depacketizer.statistics().frames_dropped == 1


def test_gap_inside_a_frame_drops_it() -> None:
    depacketizer = Vp8Depacketizer()
    payloads = packetize_vp8(KEY_BODY, 1, mtu=50)
    depacketizer.push(MediaPacket(0, 0, False, payloads[0]))
    depacketizer.push(Gap(first_seq=1, count=1, reason="lost"))
    assert push_all(depacketizer, payloads[2:], seq=2) == []


def test_libvpx_stream_round_trips_with_reordering_and_duplicates() -> None:
    frames_in = vp8_frames()
    packets = rtp_packets(
        [packetize_vp8(frame, index, mtu=500) for index, frame in enumerate(frames_in)], start_seq=65500
    )
    delivered = lossy_channel(packets, random.Random(11), duplicate=0.1, reorder_window=5)
    frames = run_through(delivered, Vp8Depacketizer().push)
    assert [f.data for f in frames] == list(frames_in)
    assert [f.keyframe for f in frames] == [frame[0] & 1 == 0 for frame in frames_in]
    assert frames[0].keyframe


def test_libvpx_stream_with_loss_only_yields_intact_frames() -> None:
    frames_in = vp8_frames()
    packets = rtp_packets([packetize_vp8(frame, index, mtu=200) for index, frame in enumerate(frames_in)])
    delivered = lossy_channel(packets, random.Random(5), drop=0.05, reorder_window=2)
    depacketizer = Vp8Depacketizer()
    frames = run_through(delivered, depacketizer.push)
    expected = {90000 + 3000 * i: frame for i, frame in enumerate(frames_in)}
    assert 0 < len(frames) < len(frames_in)
    assert all(f.complete and f.data == expected[f.timestamp] for f in frames)


@given(st.one_of(st.binary(max_size=8), st.tuples(st.sampled_from([0x80, 0x90, 0x91, 0x10, 0x00]),
       st.sampled_from([0x00, 0x80, 0xC0, 0xF0, 0x40, 0x20, 0x10]), st.binary(max_size=5))
       .map(lambda t: bytes(t[:2]) + t[2])))  # fmt: skip
def test_descriptor_span_is_parse_without_the_object(payload: bytes) -> None:
    try:
        descriptor = Vp8Descriptor.parse(payload)
    except MalformedPacket as exc:
        with pytest.raises(MalformedPacket) as caught:
            descriptor_span(payload)
        assert caught.value.reason == exc.reason
        return
    assert descriptor_span(payload) == (descriptor.size, descriptor.frame_start)
