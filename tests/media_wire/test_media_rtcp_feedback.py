"""REMB and transport-wide CC feedback (clank.wire.rtcp_feedback): builders, parsers, fuzz."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clank.errors import MalformedPacket, UsageError
from clank.wire import rtcp
from clank.wire.rtcp_feedback import Remb, TransportCcFeedback, parse_feedback

u32 = st.integers(0, 0xFFFF_FFFF)


def _one(datagram: bytes) -> rtcp.RtcpPacket:
    (packet,) = rtcp.parse_compound(datagram)
    return packet


def test_remb_matches_the_draft_layout() -> None:
    # draft-alvestrand-rmcat-remb-03: 1 SSRC, 1 000 000 b/s = 244140 (18 bits) << 2, rounded down.
    wire = Remb(sender_ssrc=0x11223344, bitrate=1_000_000, ssrcs=(0xAABBCCDD,)).serialize()
    assert wire[:4] == bytes((0x8F, 206, 0, 5))  # V=2, FMT=15, PT=206, length 5 words
    assert wire[4:8] == bytes.fromhex("11223344") and wire[8:12] == bytes(4)
    assert wire[12:16] == b"REMB" and wire[16] == 1
    word = int.from_bytes(wire[17:20], "big")
    assert (word >> 18, word & 0x3FFFF) == (2, 250_000)
    assert wire[20:24] == bytes.fromhex("AABBCCDD")
    parsed = parse_feedback(_one(wire))
    assert parsed == Remb(0x11223344, 1_000_000, (0xAABBCCDD,))


@given(sender=u32, bitrate=st.integers(0, (1 << 40)), ssrcs=st.lists(u32, max_size=40))
def test_remb_round_trips_within_the_mantissa_precision(sender: int, bitrate: int, ssrcs: list[int]) -> None:
    parsed = parse_feedback(_one(Remb(sender, bitrate, tuple(ssrcs)).serialize()))
    assert isinstance(parsed, Remb)
    assert parsed.sender_ssrc == sender and parsed.ssrcs == tuple(ssrcs)
    assert parsed.bitrate <= bitrate and bitrate - parsed.bitrate < max(1, bitrate >> 17)


def test_remb_bitrate_and_ssrc_limits_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="bitrate"):
        Remb(1, -1, ()).serialize()
    with pytest.raises(UsageError, match="SSRCs"):
        Remb(1, 1000, tuple(range(256))).serialize()


def test_other_application_feedback_and_other_packets_are_not_feedback() -> None:
    afb = rtcp.UnknownRtcp(rtcp.PSFB, 15, bytes(8) + b"GOOG" + bytes(4))
    assert parse_feedback(_one(afb.serialize())) is None
    assert parse_feedback(rtcp.PictureLossIndication(1, 2)) is None
    assert parse_feedback(rtcp.UnknownRtcp(rtcp.RTPFB, 3, bytes(8))) is None


def test_a_remb_naming_more_ssrcs_than_it_holds_is_malformed() -> None:
    wire = bytearray(Remb(1, 5000, (7,)).serialize())
    wire[16] = 3  # claims three SSRCs, holds one
    with pytest.raises(MalformedPacket, match="SSRC"):
        parse_feedback(_one(bytes(wire)))


arrival_deltas = st.one_of(
    st.none(),
    st.integers(0, 255).map(lambda d: d * 250),  # small deltas
    st.integers(-(1 << 15), (1 << 15) - 1).map(lambda d: d * 250),  # large or negative
)


@st.composite
def transport_cc(draw: st.DrawFn) -> TransportCcFeedback:
    steps = draw(st.lists(arrival_deltas, min_size=1, max_size=120))
    clock = 0
    arrivals: list[int | None] = []
    for step in steps:
        if step is None:
            arrivals.append(None)
        else:
            clock += step
            arrivals.append(clock)
    return TransportCcFeedback(
        sender_ssrc=draw(u32),
        media_ssrc=draw(u32),
        base_sequence=draw(st.integers(0, 0xFFFF)),
        reference_time=draw(st.integers(-(1 << 23), (1 << 23) - 1)),
        feedback_count=draw(st.integers(0, 255)),
        arrivals=tuple(arrivals),
    )


@given(transport_cc())
@settings(max_examples=200)
def test_transport_cc_feedback_round_trips(feedback: TransportCcFeedback) -> None:
    wire = feedback.serialize()
    assert len(wire) % 4 == 0 and wire[1] == rtcp.RTPFB and wire[0] & 0x1F == 15
    assert parse_feedback(_one(wire)) == feedback


def test_transport_cc_uses_run_length_for_long_runs_and_vectors_otherwise() -> None:
    received = tuple(i * 1000 for i in range(20))
    wire = TransportCcFeedback(1, 2, 100, 5, 0, received).serialize()
    chunk = int.from_bytes(wire[20:22], "big")
    assert chunk >> 15 == 0 and (chunk >> 13) & 3 == 1 and chunk & 0x1FFF == 20  # one run of 20
    mixed = (0, None, 250, None, 500, None, 750)
    wire = TransportCcFeedback(1, 2, 100, 5, 0, mixed).serialize()
    chunk = int.from_bytes(wire[20:22], "big")
    assert chunk >> 14 == 0b11  # a two-bit status vector
    assert parse_feedback(_one(wire)) == TransportCcFeedback(1, 2, 100, 5, 0, mixed)


@given(st.binary(max_size=80))
def test_feedback_parsers_raise_only_malformed_packet(body: bytes) -> None:
    for packet_type in (rtcp.PSFB, rtcp.RTPFB):
        try:
            parse_feedback(rtcp.UnknownRtcp(packet_type, 15, body))
        except MalformedPacket:
            pass
    try:
        Remb.parse_body(body)
    except MalformedPacket:
        pass


def test_every_truncation_of_a_transport_cc_feedback_is_malformed_or_shorter() -> None:
    feedback = TransportCcFeedback(9, 8, 65530, -3, 7, (0, None, 1000, 60_000, -250, None, 250) * 3)
    wire = feedback.serialize()
    body = wire[4:]
    for cut in range(len(body)):
        try:
            TransportCcFeedback.parse_body(body[:cut])
        except MalformedPacket:
            continue
        # A cut inside the zero padding still parses to the same feedback.
        assert TransportCcFeedback.parse_body(body[:cut]) == feedback
