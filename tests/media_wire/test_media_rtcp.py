"""RTCP packets: fixed layouts from the reference, round trips, compound parsing, truncations, fuzz."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clank.errors import MalformedPacket
from clank.wire import rtcp
from clank.wire.rtcp import (
    AppPacket,
    Bye,
    FullIntraRequest,
    GenericNack,
    PictureLossIndication,
    ReceiverReport,
    ReportBlock,
    RtcpPacket,
    SdesChunk,
    SenderReport,
    SourceDescription,
    UnknownRtcp,
    nack_fci,
    nack_sequences,
    parse_compound,
    serialize_compound,
)

u32 = st.integers(0, 0xFFFFFFFF)
blocks = st.builds(
    ReportBlock,
    ssrc=u32,
    fraction_lost=st.integers(0, 255),
    cumulative_lost=st.integers(-(2**23), 2**23 - 1),
    highest_sequence=u32,
    jitter=u32,
    last_sr=u32,
    delay_since_last_sr=u32,
)
block_lists = st.lists(blocks, max_size=3).map(tuple)
packets: st.SearchStrategy[RtcpPacket] = st.one_of(
    st.builds(SenderReport, u32, st.integers(0, 2**64 - 1), u32, u32, u32, block_lists),
    st.builds(ReceiverReport, u32, block_lists),
    st.builds(
        SourceDescription,
        st.lists(
            st.builds(
                SdesChunk,
                u32,
                st.lists(st.tuples(st.integers(1, 8), st.binary(max_size=20)), max_size=3).map(tuple),
            ),
            max_size=3,
        ).map(tuple),
    ),
    st.builds(Bye, st.lists(u32, max_size=4).map(tuple), st.binary(max_size=30)),
    st.builds(AppPacket, st.integers(0, 31), u32, st.binary(min_size=4, max_size=4), st.binary(max_size=12)),
    st.builds(
        GenericNack, u32, u32, st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))).map(tuple)
    ),
    st.builds(PictureLossIndication, u32, u32),
    st.builds(FullIntraRequest, u32, st.lists(st.tuples(u32, st.integers(0, 255)), max_size=3).map(tuple)),
    st.builds(UnknownRtcp, st.sampled_from([207, 195, 205, 206]), st.integers(5, 14), st.binary(max_size=16)),
)


def test_reference_sizes() -> None:
    sr = SenderReport(0x3249, 0, 0, 0, 0).serialize()
    assert sr[:4] == bytes.fromhex("80c80006") and len(sr) == 28
    rr = ReceiverReport(0x3249).serialize()
    assert rr == bytes.fromhex("80c9000100003249")
    pli = PictureLossIndication(12873, 20000).serialize()
    assert pli == bytes.fromhex("81ce0002000032490000 4e20".replace(" ", ""))
    fir = FullIntraRequest(1, ((2, 3),)).serialize()
    assert fir == bytes.fromhex("84ce0004 00000001 00000000 00000002 03000000".replace(" ", ""))
    nack = GenericNack(1, 2, ((100, 0b101),)).serialize()
    assert nack == bytes.fromhex("81cd0003 00000001 00000002 00640005".replace(" ", ""))


@given(packets)
def test_round_trip(packet: RtcpPacket) -> None:
    wire = packet.serialize()
    assert len(wire) % 4 == 0
    assert parse_compound(wire) == (packet,)


@given(st.lists(packets, min_size=1, max_size=4))
def test_compound_round_trip(items: list[RtcpPacket]) -> None:
    assert parse_compound(serialize_compound(items)) == tuple(items)


@given(packets)
def test_every_truncation_is_malformed(packet: RtcpPacket) -> None:
    wire = packet.serialize()
    for cut in range(len(wire)):
        with pytest.raises(MalformedPacket):
            parse_compound(wire[:cut])


@given(st.binary(max_size=120))
def test_parse_raises_only_malformed(data: bytes) -> None:
    try:
        parse_compound(data)
    except MalformedPacket:
        pass


@given(st.lists(packets, min_size=1, max_size=3), st.data())
def test_corrupted_compound_raises_only_malformed(items: list[RtcpPacket], data: st.DataObject) -> None:
    wire = bytearray(serialize_compound(items))
    index = data.draw(st.integers(0, len(wire) - 1))
    wire[index] = data.draw(st.integers(0, 255))
    try:
        parse_compound(bytes(wire))
    except MalformedPacket:
        pass


def test_padding_on_the_last_packet_is_removed() -> None:
    body = rtcp.ReceiverReport(7).serialize()[4:] + bytes.fromhex("00000004")
    wire = bytes([0xA0, 201, 0, 2]) + body
    assert parse_compound(wire) == (ReceiverReport(7),)


@pytest.mark.parametrize("pad", [0, 9])
def test_bad_padding_is_malformed(pad: int) -> None:
    wire = bytes([0xA0, 201, 0, 1]) + bytes(3) + bytes([pad])
    with pytest.raises(MalformedPacket):
        parse_compound(wire)


def test_non_rtcp_type_and_version_are_malformed() -> None:
    with pytest.raises(MalformedPacket):
        parse_compound(bytes([0x80, 120, 0, 1]) + bytes(4))
    with pytest.raises(MalformedPacket):
        parse_compound(bytes([0x40, 201, 0, 1]) + bytes(4))


def test_nack_fci_packs_runs() -> None:
    assert nack_fci([100, 101, 103, 116]) == [(100, 0b1000_0000_0000_0101)]
    assert nack_fci([100, 117]) == [(100, 0), (117, 0)]
    assert nack_fci([65535, 0, 1]) == [(65535, 0b11)]  # across the wrap
    assert nack_fci([5, 5, 6]) == [(5, 1)]
    assert nack_fci([]) == []
    assert nack_sequences([(65535, 0b11)]) == [65535, 0, 1]


@given(st.integers(0, 0xFFFF), st.lists(st.integers(1, 40), max_size=30))
def test_nack_fci_round_trip(start: int, gaps: list[int]) -> None:
    seqs = [start]
    for gap in gaps:
        seqs.append((seqs[-1] + gap) & 0xFFFF)
    if len({*seqs}) != len(seqs):  # wrapped all the way round: not a realistic loss list
        return
    assert nack_sequences(nack_fci(seqs)) == seqs
    assert GenericNack.for_sequences(1, 2, seqs).lost_sequences() == seqs
