from __future__ import annotations

import random
import struct

import pytest
from codecs_streams import h264_access_units, lossy_channel, rtp_packets, run_through

from clank.codecs.annexb import join_nals, nal_types, normalize_start_codes, split_nals
from clank.codecs.h264 import H264Depacketizer, ParameterSetCache, packetize_h264, parse_stap_a
from clank.codecs.packet import Gap, MediaPacket
from clank.codecs.reorder import ReorderBuffer
from clank.errors import MalformedPacket, UsageError

SPS = bytes.fromhex("6742c00dda0507e840000003004000000f23c50aa8")
PPS = bytes.fromhex("68ce0fc8")
SEI = bytes.fromhex("0605ff01020380")
IDR = bytes.fromhex("65888421") + bytes(range(1, 250)) * 12  # ~3 KB
SLICE = bytes.fromhex("419a2422") + bytes(range(7, 200))
START = b"\x00\x00\x00\x01"


def packet(seq: int, payload: bytes, *, marker: bool = False, ts: int = 3000) -> MediaPacket:
    return MediaPacket(seq=seq, timestamp=ts, marker=marker, payload=payload)


def feed(depacketizer: H264Depacketizer, payloads: list[bytes], seq: int = 0, ts: int = 3000) -> list:
    frames = []
    for index, payload in enumerate(payloads):
        frames += depacketizer.push(packet(seq + index, payload, marker=index == len(payloads) - 1, ts=ts))
    return frames


# -- packetizer --------------------------------------------------------------------------------


def test_small_nals_go_as_single_nal_packets() -> None:
    au = join_nals([SPS, PPS, SLICE])
    assert packetize_h264(au, mtu=1100) == [SPS, PPS, SLICE]


def test_large_nal_is_fragmented_as_fu_a_with_start_and_end_bits() -> None:
    packets = packetize_h264(START + IDR, mtu=1000)
    assert len(packets) == -(-(len(IDR) - 1) // 998)
    assert all(len(p) <= 1000 for p in packets)
    assert all(p[0] == (IDR[0] & 0xE0) | 28 for p in packets)
    assert packets[0][1] == 0x80 | 5
    assert all(p[1] == 5 for p in packets[1:-1])
    assert packets[-1][1] == 0x40 | 5
    assert b"".join(p[2:] for p in packets) == IDR[1:]


def test_nal_exactly_mtu_is_single_and_one_more_is_fragmented() -> None:
    nal = b"\x41" + b"\x11" * 99
    assert packetize_h264(START + nal, mtu=100) == [nal]
    fragments = packetize_h264(START + nal + b"\x22", mtu=100)
    assert [len(f) for f in fragments] == [100, 4]


def test_stap_a_aggregates_small_parameter_sets() -> None:
    packets = packetize_h264(join_nals([SPS, PPS, IDR]), mtu=1100, aggregate=True)
    assert packets[0][0] & 0x1F == 24
    assert parse_stap_a(packets[0]) == [SPS, PPS]
    assert packets[1][0] & 0x1F == 28


def test_packetizer_rejects_a_tiny_mtu() -> None:
    with pytest.raises(UsageError):
        packetize_h264(START + SPS, mtu=2)


# -- depacketizer ------------------------------------------------------------------------------


def test_single_nal_frame_is_rebuilt_with_four_byte_start_codes() -> None:
    depacketizer = H264Depacketizer()
    (frame,) = feed(depacketizer, [SPS, PPS, SEI, SLICE])
    assert frame.data == join_nals([SPS, PPS, SEI, SLICE])
    assert frame.complete and not frame.keyframe
    assert (frame.first_seq, frame.last_seq, frame.packet_count) == (0, 3, 4)


def test_stap_a_and_fu_a_keyframe_round_trip() -> None:
    au = b"\x00\x00\x01" + SPS + b"\x00\x00\x01" + PPS + START + IDR
    depacketizer = H264Depacketizer()
    (frame,) = feed(depacketizer, packetize_h264(au, mtu=500, aggregate=True))
    assert frame.data == normalize_start_codes(au)
    assert frame.keyframe and frame.complete
    assert not depacketizer.keyframe_needed


def test_stap_a_with_bad_sizes_is_malformed() -> None:
    for bad in (b"\x18", b"\x18\x00", b"\x18\x00\x00", b"\x18\x00\x05\x67\x42", b"\x18\x00\x01\x67\x00"):
        with pytest.raises(MalformedPacket):
            parse_stap_a(bad)


def test_unsupported_payload_types_are_counted_and_damage_the_frame() -> None:
    for kind in (0, 25, 26, 27, 29, 30, 31):
        depacketizer = H264Depacketizer()
        assert feed(depacketizer, [SLICE, bytes((kind, 1, 2, 3))]) == []
        stats = depacketizer.statistics()
        assert (stats.unsupported, stats.accepted, stats.frames_dropped) == (1, 1, 1)


def test_fu_a_middle_without_start_drops_the_frame() -> None:
    fragments = packetize_h264(START + IDR, mtu=500)
    depacketizer = H264Depacketizer()
    assert feed(depacketizer, fragments[1:]) == []
    assert depacketizer.statistics().frames_dropped == 1
    assert depacketizer.keyframe_needed


def test_fu_a_without_end_before_marker_drops_the_frame() -> None:
    fragments = packetize_h264(START + IDR, mtu=500)
    depacketizer = H264Depacketizer()
    assert feed(depacketizer, fragments[:-1]) == []


def test_fu_a_interrupted_by_a_new_start_drops_the_frame() -> None:
    fragments = packetize_h264(START + IDR, mtu=500)
    depacketizer = H264Depacketizer()
    assert feed(depacketizer, [*fragments[:2], *fragments]) == []


def test_fu_a_with_start_and_end_in_one_packet_is_a_whole_nal() -> None:
    depacketizer = H264Depacketizer()
    (frame,) = feed(depacketizer, [bytes((0x7C, 0xC5)) + IDR[1:]])
    assert frame.data == START + bytes((0x65,)) + IDR[1:]
    assert frame.keyframe


def test_truncated_fu_a_is_malformed_and_counted() -> None:
    depacketizer = H264Depacketizer()
    assert feed(depacketizer, [b"\x7c"]) == []
    assert depacketizer.statistics().malformed == 1


def test_gap_inside_a_frame_drops_it_and_requests_a_keyframe() -> None:
    au = join_nals([SPS, PPS, IDR])
    payloads = packetize_h264(au, mtu=300)
    depacketizer = H264Depacketizer()
    feed(depacketizer, [SLICE], seq=0, ts=0)  # establishes seq continuity
    frames = []
    for index, payload in enumerate(payloads):
        if index == 4:
            frames += depacketizer.push(Gap(first_seq=1 + index, count=1, reason="lost"))
            continue
        frames += depacketizer.push(packet(1 + index, payload, marker=index == len(payloads) - 1))
    assert frames == []
    assert depacketizer.keyframe_needed
    # The next complete keyframe clears the need.
    (frame,) = feed(depacketizer, payloads, seq=1 + len(payloads), ts=6000)
    assert frame.keyframe and not depacketizer.keyframe_needed


def test_sequence_discontinuity_without_reorder_buffer_is_a_gap() -> None:
    depacketizer = H264Depacketizer()
    assert depacketizer.push(packet(0, SLICE, marker=True, ts=0))
    assert depacketizer.push(packet(1, SPS, ts=3000)) == []
    assert depacketizer.push(packet(3, SLICE, marker=True, ts=3000)) == []
    stats = depacketizer.statistics()
    assert (stats.gaps, stats.frames_dropped) == (1, 1)


def test_gap_between_frames_damages_the_next_frame() -> None:
    depacketizer = H264Depacketizer()
    assert depacketizer.push(packet(0, SLICE, marker=True, ts=0))
    depacketizer.push(Gap(first_seq=1, count=1, reason="lost"))
    # seq 2 could be a middle packet of a frame whose first packet was seq 1.
    assert depacketizer.push(packet(2, SLICE, marker=True, ts=3000)) == []
    assert depacketizer.push(packet(3, SLICE, marker=True, ts=6000))


def test_timestamp_change_without_marker_ends_the_frame() -> None:
    depacketizer = H264Depacketizer()
    assert depacketizer.push(packet(0, SLICE, ts=0)) == []
    (frame,) = depacketizer.push(packet(1, SLICE, ts=3000))
    assert frame.timestamp == 0 and frame.complete
    assert depacketizer.flush()[0].timestamp == 3000


def test_incomplete_frames_can_be_delivered_for_diagnostics() -> None:
    depacketizer = H264Depacketizer(deliver_incomplete=True)
    (frame,) = feed(depacketizer, packetize_h264(START + IDR, mtu=500)[1:])
    assert not frame.complete


def test_duplicate_packet_is_counted_not_appended() -> None:
    depacketizer = H264Depacketizer()
    depacketizer.push(packet(0, SPS))
    depacketizer.push(packet(0, SPS))
    (frame,) = depacketizer.push(packet(1, SLICE, marker=True))
    assert frame.data == join_nals([SPS, SLICE])
    assert depacketizer.statistics().duplicates == 1


# -- parameter sets (after DAVE decrypt) -------------------------------------------------------


def test_parameter_sets_are_prepended_to_idr_frames_that_lack_them() -> None:
    cache = ParameterSetCache()
    first = join_nals([SPS, PPS, IDR])
    assert cache.prepend_missing(first) == first
    assert cache.prepend_missing(join_nals([IDR])) == join_nals([SPS, PPS, IDR])
    assert cache.prepend_missing(join_nals([PPS, IDR])) == join_nals([SPS, PPS, IDR])
    assert cache.prepend_missing(join_nals([SLICE])) == join_nals([SLICE])


def test_parameter_sets_go_after_a_leading_aud() -> None:
    cache = ParameterSetCache()
    cache.observe(join_nals([SPS, PPS]))
    aud = b"\x09\xf0"
    assert cache.prepend_missing(join_nals([aud, IDR])) == join_nals([aud, SPS, PPS, IDR])


def test_nothing_is_prepended_without_a_cached_parameter_set() -> None:
    cache = ParameterSetCache()
    assert cache.prepend_missing(join_nals([IDR])) == join_nals([IDR])


def test_parameter_sets_learned_from_stap_a_frames() -> None:
    depacketizer = H264Depacketizer()
    (frame,) = feed(depacketizer, packetize_h264(join_nals([SPS, PPS, IDR]), mtu=800, aggregate=True))
    cache = ParameterSetCache()
    cache.observe(frame.data)
    assert (cache.sps, cache.pps) == (SPS, PPS)


# -- real libx264 bitstreams -------------------------------------------------------------------


@pytest.mark.parametrize("mtu", [1100, 200])
def test_libx264_stream_round_trips_byte_identical(mtu: int) -> None:
    aus = h264_access_units()
    packets = rtp_packets([packetize_h264(au, mtu=mtu) for au in aus], start_seq=65500)
    frames = run_through(packets, H264Depacketizer().push)
    assert [f.data for f in frames] == [normalize_start_codes(au) for au in aus]
    assert [f.keyframe for f in frames] == [5 in nal_types(au) for au in aus]
    assert sum(f.keyframe for f in frames) == 3


def test_libx264_over_a_reordering_duplicating_channel_round_trips() -> None:
    aus = h264_access_units()
    packets = rtp_packets([packetize_h264(au, mtu=300) for au in aus], start_seq=65400)
    delivered = lossy_channel(packets, random.Random(7), duplicate=0.1, reorder_window=6)
    frames = run_through(delivered, H264Depacketizer().push)
    assert [f.data for f in frames] == [normalize_start_codes(au) for au in aus]


def test_libx264_with_loss_never_yields_a_damaged_frame() -> None:
    aus = h264_access_units()
    packets = rtp_packets([packetize_h264(au, mtu=1100) for au in aus])
    delivered = lossy_channel(packets, random.Random(3), drop=0.02, reorder_window=3)
    depacketizer = H264Depacketizer()
    frames = run_through(delivered, depacketizer.push)
    expected = {3000 * i + 90000: normalize_start_codes(au) for i, au in enumerate(aus)}
    assert frames, "some frames should survive 2% loss"
    assert len(frames) < len(aus)
    for frame in frames:
        assert frame.complete
        assert frame.data == expected[frame.timestamp]
    assert depacketizer.statistics().frames_dropped > 0


def test_rtx_recovery_restores_every_frame() -> None:
    from clank.codecs.rtx import RetransmissionStore, RtxUnwrapper

    aus = h264_access_units()
    packets = rtp_packets([packetize_h264(au, mtu=300) for au in aus])
    store = RetransmissionStore(capacity=4096)
    for p in packets:
        store.remember(p.seq, p.timestamp, p.marker, p.payload)
    dropped = set(range(1010, len(packets) + 1000, 37))
    delivered = [p for p in packets if p.seq not in dropped]
    reorder = ReorderBuffer(max_delay=0.5)
    unwrapper = RtxUnwrapper()
    rtx_seq = iter(range(50000, 60000))

    def retransmit(now: float) -> list[MediaPacket]:
        # The sender answers every NACK at once, wrapped in RTX; we unwrap like the receiver would.
        out = []
        for rtx in store.answer(reorder.missing(now), now):
            wire = MediaPacket(next(rtx_seq), rtx.timestamp, rtx.marker, rtx.payload, ssrc=0x1235)
            restored = unwrapper.unwrap(wire, primary_ssrc=0x1234)
            assert restored is not None
            out.append(restored)
        return out

    frames = run_through(delivered, H264Depacketizer().push, reorder=reorder, inject=retransmit)
    assert [f.data for f in frames] == [normalize_start_codes(au) for au in aus]
    stats = reorder.statistics()
    assert stats.recovered == len(dropped)
    assert stats.lost == 0


def test_stap_a_packetized_libx264_keyframe_round_trips() -> None:
    au = h264_access_units()[0]
    payloads = packetize_h264(au, mtu=1100, aggregate=True)
    assert any(p[0] & 0x1F == 24 for p in payloads)
    (frame,) = run_through(rtp_packets([payloads]), H264Depacketizer().push)
    assert split_nals(frame.data) == split_nals(au)


def test_stap_a_sizes_are_big_endian() -> None:
    payload = packetize_h264(join_nals([SPS, PPS]), aggregate=True)[0]
    assert struct.unpack_from(">H", payload, 1) == (len(SPS),)
