"""The sans-io video send core: packetization, pacing, RTX, keyframe requests, SR, DAVE retry rule."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import given, settings

from clank.codecs.annexb import START_CODE, join_nals
from clank.codecs.h264 import H264Depacketizer
from clank.codecs.packet import MediaPacket
from clank.codecs.rtx import RtxPayload
from clank.errors import MalformedPacket
from clank.protocol.video_send import (
    OutgoingPacket,
    VideoSendConfig,
    VideoSendCore,
    dave_h264_frame_is_safe,
    encrypt_h264_checked,
)
from clank.wire import rtcp
from clank.wire.rtp import VIDEO_EXTENSION

SSRC, RTX_SSRC = 31, 32
CONFIG = VideoSendConfig(ssrc=SSRC, rtx_ssrc=RTX_SSRC, fps=30, max_bitrate=2_500_000, first_sequence=65530)
# NAL bodies without zero bytes cannot contain a start code (what emulation prevention guarantees).
nal_body = st.binary(min_size=1, max_size=3000).map(lambda b: bytes(x or 1 for x in b))
nals = st.lists(st.tuples(st.sampled_from([0x65, 0x41, 0x67, 0x68, 0x06]), nal_body), min_size=1, max_size=6)


def drain(
    core: VideoSendCore, start: float = 0.0, step: float = 0.001, limit: float = 5.0
) -> list[OutgoingPacket]:
    out: list[OutgoingPacket] = []
    now = start
    while now < start + limit:
        out += core.poll(now)
        deadline = core.next_deadline()
        if deadline is None:
            break
        now = max(now + step, deadline)
    return out


def payload(packet: OutgoingPacket) -> bytes:
    return packet.plaintext[len(VIDEO_EXTENSION.body) :]


@settings(max_examples=60, deadline=None)
@given(nals)
def test_packetize_then_depacketize_gives_the_access_unit_back(units: list[tuple[int, bytes]]) -> None:
    access_unit = join_nals([bytes((header,)) + body for header, body in units])
    core = VideoSendCore(CONFIG)
    timestamp = core.push_frame(access_unit, keyframe=True, capture_time=1.0, now=0.0)
    packets = drain(core)
    assert [p.header.marker for p in packets] == [False] * (len(packets) - 1) + [True]
    assert {p.header.timestamp for p in packets} == {timestamp}
    assert all(len(payload(p)) <= CONFIG.mtu for p in packets)
    seqs = [p.header.sequence for p in packets]
    assert seqs == [(65530 + i) & 0xFFFF for i in range(len(packets))]  # wraps at 2**16
    depacketizer = H264Depacketizer()
    frames = []
    for p in packets:
        frames += depacketizer.push(
            MediaPacket(p.header.sequence, p.header.timestamp, p.header.marker, payload(p), SSRC, 0.0)
        )
    assert len(frames) == 1 and frames[0].complete and frames[0].data == access_unit


def test_timestamps_are_90_khz_from_capture_time_and_always_increase() -> None:
    core = VideoSendCore(CONFIG)
    a = core.push_frame(START_CODE + b"\x41\x01", keyframe=False, capture_time=10.0, now=0.0)
    b = core.push_frame(START_CODE + b"\x41\x02", keyframe=False, capture_time=10.0 + 1 / 30, now=0.0)
    c = core.push_frame(START_CODE + b"\x41\x03", keyframe=False, capture_time=10.0, now=0.0)
    assert a is not None and b is not None and c is not None
    assert (b - a) & 0xFFFFFFFF == 3000 and (c - b) & 0xFFFFFFFF == 1


def test_a_keyframe_burst_is_paced_not_sent_at_line_rate() -> None:
    core = VideoSendCore(CONFIG)
    big = join_nals([b"\x65" + bytes([7]) * 100_000])
    core.push_frame(big, keyframe=True, capture_time=0.0, now=0.0)
    first = core.poll(0.0)
    assert 0 < sum(len(p.plaintext) for p in first) <= CONFIG.burst_bytes + CONFIG.mtu + 8
    times: list[float] = []
    now = 0.0
    while core.next_deadline() is not None:
        deadline = core.next_deadline()
        assert deadline is not None
        now = max(now, deadline)
        if core.poll(now):
            times.append(now)
    expected = 100_000 / CONFIG.pacing_rate  # ~41 ms at 2.5 x 2.5 Mbit/s
    assert times[-1] >= 0.8 * (expected - CONFIG.burst_bytes / CONFIG.pacing_rate)
    assert times[-1] < 2 * expected


def test_nack_is_answered_with_rfc4588_rtx_before_new_media() -> None:
    core = VideoSendCore(CONFIG)
    core.push_frame(join_nals([b"\x65" + bytes([9]) * 5000]), keyframe=True, capture_time=0.0, now=0.0)
    sent = drain(core)
    lost = sent[2]
    core.push_frame(START_CODE + b"\x41\x05", keyframe=False, capture_time=0.033, now=0.1)
    core.on_rtcp([rtcp.GenericNack.for_sequences(99, SSRC, [lost.header.sequence, 12345])], 0.1)
    out = core.poll(0.2)
    rtx = out[0]
    assert rtx.rtx and rtx.header.ssrc == RTX_SSRC and rtx.header.payload_type == CONFIG.rtx_payload_type
    assert rtx.header.timestamp == lost.header.timestamp and rtx.header.marker == lost.header.marker
    original = RtxPayload.parse(payload(rtx))
    assert original.osn == lost.header.sequence and original.payload == payload(lost)
    stats = core.statistics()
    assert stats.nacks_received == 1 and stats.nacks_answered == 1 and stats.nacked_unknown == 1
    assert not out[1].rtx


def test_pli_and_fir_ask_for_a_keyframe_rate_limited() -> None:
    core = VideoSendCore(CONFIG)
    assert core.take_keyframe_request(0.0)  # the first frame is a keyframe
    assert not core.take_keyframe_request(0.1)
    core.on_rtcp([rtcp.PictureLossIndication(99, SSRC)], 1.0)
    assert core.take_keyframe_request(1.0)
    core.on_rtcp([rtcp.FullIntraRequest(99, ((SSRC, 1),))], 1.1)
    assert not core.take_keyframe_request(1.1)  # inside keyframe_min_interval: kept, not lost
    assert core.take_keyframe_request(1.0 + CONFIG.keyframe_min_interval)
    core.on_rtcp([rtcp.PictureLossIndication(99, 777)], 3.0)  # another stream's PLI
    assert not core.take_keyframe_request(3.0)
    stats = core.statistics()
    assert stats.plis_received == 1 and stats.firs_received == 1 and stats.keyframe_requests_served == 3


def test_pause_sends_nothing_and_resume_starts_with_a_keyframe() -> None:
    core = VideoSendCore(CONFIG)
    core.take_keyframe_request(0.0)
    core.push_frame(START_CODE + b"\x41\x01", keyframe=False, capture_time=0.0, now=0.0)
    core.pause()
    assert core.poll(0.1) == [] and core.next_deadline() is None
    assert core.push_frame(START_CODE + b"\x41\x02", keyframe=False, capture_time=0.1, now=0.1) is None
    assert core.sender_report(10.0, 1.7e9) is None
    core.resume()
    assert core.take_keyframe_request(0.2)  # not rate limited


def test_sender_report_counts_and_rtt_from_receiver_report() -> None:
    core = VideoSendCore(CONFIG)
    ts = core.push_frame(START_CODE + b"\x41" + bytes([3]) * 500, keyframe=False, capture_time=5.0, now=5.0)
    assert ts is not None
    drain(core, start=5.0)
    data = core.sender_report(5.5, 1_700_000_000.0)
    assert data is not None and core.sender_report(6.0, 1_700_000_000.5) is None
    (report,) = rtcp.parse_compound(data)
    assert isinstance(report, rtcp.SenderReport) and report.ssrc == SSRC
    assert report.packet_count == 1 and report.octet_count == 500 + 1 + len(VIDEO_EXTENSION.body)
    assert (report.rtp_timestamp - ts) & 0xFFFFFFFF == 45000
    lsr = (report.ntp_timestamp >> 16) & 0xFFFFFFFF
    block = rtcp.ReportBlock(SSRC, fraction_lost=64, jitter=7, last_sr=lsr, delay_since_last_sr=65536 // 10)
    core.on_rtcp([rtcp.ReceiverReport(99, (block,))], 5.75)
    stats = core.statistics()
    assert stats.fraction_lost == 0.25 and stats.jitter == 7
    assert stats.rtt is not None and abs(stats.rtt - 0.15) < 0.01


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_feedback_parsing_of_arbitrary_bytes_never_breaks_the_core(data: bytes) -> None:
    core = VideoSendCore(CONFIG)
    try:
        packets = rtcp.parse_compound(data)
    except MalformedPacket:
        return
    core.on_rtcp(packets, 0.0)
    core.poll(0.0)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=120).map(lambda b: b + b"\xfa\xfa"))
def test_the_retry_rule_check_never_raises(frame: bytes) -> None:
    assert dave_h264_frame_is_safe(frame) in (True, False)


def test_the_retry_rule_rejects_a_start_code_in_the_ciphertext() -> None:
    # One clear range (0, 6): the start code + NAL header + 1 byte; ciphertext after it.
    trailer = bytes(8) + b"\x04" + b"\x00\x06" + b"\x0e" + b"\xfa\xfa"
    assert trailer[-3] == len(trailer)
    good = START_CODE + b"\x65\x88" + b"\x11\x22\x33\x44" + trailer
    bad = START_CODE + b"\x65\x88" + b"\x11\x00\x00\x01" + trailer
    edge = START_CODE + b"\x65\x00" + b"\x00\x01\x33\x44" + trailer  # across the range edge
    assert dave_h264_frame_is_safe(good)
    assert not dave_h264_frame_is_safe(bad) and not dave_h264_frame_is_safe(edge)
    assert dave_h264_frame_is_safe(START_CODE + b"\x65\x00\x00\x01")  # not DAVE: plain Annex-B
    outputs = iter([bad, edge, good])
    frame, attempts = encrypt_h264_checked(lambda au: next(outputs), b"au")
    assert frame == good and attempts == 3
    frame, attempts = encrypt_h264_checked(lambda au: bad, b"au", attempts=4)
    assert frame is None and attempts == 4


def test_real_davey_frames_from_x264_pass_the_retry_rule_and_decrypt() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dave"))
    from dave_net import DaveNet  # type: ignore[import-not-found]

    from clank.codecs.annexb import normalize_start_codes
    from clank.crypto.dave import DaveSessionCore
    from clank.media.encoder import VideoEncoder
    from clank.media.synth import ScreenSynth

    net = DaveNet(0)
    sender, receiver = DaveSessionCore(1, net.group_id), DaveSessionCore(2, net.group_id)
    net.join(sender)
    net.join(receiver)
    net.settle()
    synth = ScreenSynth(320, 240, fps=30, seed=3)
    encoder = VideoEncoder("h264", 320, 240, 30, 400_000, keyframe_interval=0.5, cap_bitrate=True)
    core = VideoSendCore(CONFIG)
    checked = 0
    for index in range(45):
        for unit in encoder.encode(synth.frame(index)):
            frame, attempts = encrypt_h264_checked(lambda au: sender.encrypt_video("h264", au), unit.data)
            assert frame is not None and attempts >= 1 and dave_h264_frame_is_safe(frame)
            assert receiver.decrypt(1, "video", frame) == normalize_start_codes(unit.data)
            core.push_frame(frame, keyframe=unit.keyframe, capture_time=index / 30, now=index / 30)
            checked += 1
    assert checked == 45 and core.statistics().keyframes_sent >= 2
