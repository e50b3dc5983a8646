"""RTP header, extensions, padding and the datagram demux."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clank.errors import MalformedPacket, UsageError
from clank.wire import ip_discovery, rtcp, udp_keepalive
from clank.wire.rtp import (
    ONE_BYTE_PROFILE,
    VIDEO_EXTENSION,
    PacketKind,
    RtpExtension,
    RtpHeader,
    build_padding,
    build_plain_packet,
    classify,
    discord_extension_elements,
    strip_extension,
    strip_padding,
)

OPUS_HEADER = bytes.fromhex("80780001000003c000003249")
VIDEO_HEADER = bytes.fromhex("90e7000700000bb80000324abede0001")

headers = st.builds(
    RtpHeader,
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 0xFFFF),
    timestamp=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    marker=st.booleans(),
    padding=st.booleans(),
    csrcs=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15).map(tuple),
    extension_profile=st.one_of(st.none(), st.integers(0, 0xFFFF)),
    extension_words=st.integers(0, 0xFFFF),
).map(lambda h: h if h.extension_profile is not None else h._replace(extension_words=0))


def test_opus_header_bytes() -> None:
    header = RtpHeader(payload_type=120, sequence=1, timestamp=960, ssrc=12873)
    assert header.serialize() == OPUS_HEADER
    assert RtpHeader.parse(OPUS_HEADER + b"payload") == (header, 12)


def test_video_header_with_extension_preamble() -> None:
    header, clear_len = RtpHeader.parse(VIDEO_HEADER)
    assert header == RtpHeader(
        103, 7, 3000, 12874, marker=True, extension_profile=ONE_BYTE_PROFILE, extension_words=1
    )
    assert header.has_extension and clear_len == header.clear_len == 16
    assert header.serialize() == VIDEO_HEADER


def test_csrcs_and_extension_count_in_the_clear_length() -> None:
    header = RtpHeader(96, 1, 2, 3, csrcs=(10, 11), extension_profile=0x1000, extension_words=3)
    parsed, clear_len = RtpHeader.parse(header.serialize())
    assert parsed == header
    assert clear_len == 12 + 8 + 4


@given(headers)
def test_header_round_trip(header: RtpHeader) -> None:
    wire = header.serialize()
    assert RtpHeader.parse(wire) == (header, len(wire))
    assert len(wire) == header.clear_len


@given(headers)
def test_every_truncation_of_a_header_is_malformed(header: RtpHeader) -> None:
    wire = header.serialize()
    for cut in range(len(wire)):
        with pytest.raises(MalformedPacket):
            RtpHeader.parse(wire[:cut])


@given(st.binary(max_size=80))
def test_parse_raises_only_malformed(data: bytes) -> None:
    try:
        header, clear_len = RtpHeader.parse(data)
    except MalformedPacket:
        return
    assert clear_len <= len(data)
    assert header.serialize() == data[:clear_len]


def test_wrong_version_is_malformed() -> None:
    with pytest.raises(MalformedPacket):
        RtpHeader.parse(bytes([0x40]) + OPUS_HEADER[1:])


def test_video_extension_is_a_3_byte_playout_delay() -> None:
    # playout-delay (id 5) is 12-bit min + 12-bit max: 3 data bytes, so the length nibble is 2.
    assert RtpExtension(0xBEDE, bytes.fromhex("52000000")) == VIDEO_EXTENSION
    assert VIDEO_EXTENSION.words == 1
    assert VIDEO_EXTENSION.elements() == [(5, b"\x00\x00\x00")]
    assert discord_extension_elements(VIDEO_EXTENSION) == {"playout-delay": b"\x00\x00\x00"}


def test_discord_extension_ids_parse_with_their_real_sizes() -> None:
    video = RtpExtension.one_byte(
        [(2, b"\x12\x34\x56"), (3, b"\x00\x01"), (5, bytes(3)), (13, b"\x00"), (14, bytes(3))]
    )
    names = discord_extension_elements(video)
    assert list(names) == [
        "abs-send-time",
        "transport-wide-cc",
        "playout-delay",
        "video-orientation",
        "toffset",
    ]
    audio = RtpExtension.one_byte([(1, b"\x9e"), (3, b"\x00\x01")])
    assert discord_extension_elements(audio) == {
        "ssrc-audio-level": b"\x9e",
        "transport-wide-cc": b"\x00\x01",
    }
    with pytest.raises(MalformedPacket, match="playout-delay"):
        discord_extension_elements(RtpExtension.one_byte([(5, b"\x00\x00")]))  # the old 2-byte form
    with pytest.raises(MalformedPacket, match="id 7"):
        discord_extension_elements(RtpExtension.one_byte([(7, b"\x00")]))


@given(st.lists(st.tuples(st.integers(1, 14), st.binary(min_size=1, max_size=16)), max_size=8))
def test_one_byte_extension_round_trip(elements: list[tuple[int, bytes]]) -> None:
    ext = RtpExtension.one_byte(elements)
    assert len(ext.body) % 4 == 0
    assert ext.elements() == elements


@given(st.lists(st.tuples(st.integers(1, 255), st.binary(max_size=40)), max_size=6), st.integers(0, 15))
def test_two_byte_extension_round_trip(elements: list[tuple[int, bytes]], appbits: int) -> None:
    ext = RtpExtension.two_byte(elements, appbits)
    assert ext.profile == 0x1000 | appbits
    assert len(ext.body) % 4 == 0
    # zero-length elements are indistinguishable from... nothing: they still round-trip by id
    assert ext.elements() == elements


def test_one_byte_stop_and_padding_elements() -> None:
    ext = RtpExtension(ONE_BYTE_PROFILE, bytes.fromhex("00 10 aa 00 f0 ff".replace(" ", "")) + bytes(2))
    assert ext.elements() == [(1, b"\xaa")]


@pytest.mark.parametrize(
    "ext",
    [
        RtpExtension(ONE_BYTE_PROFILE, bytes.fromhex("5f000000")),  # claims 16 data bytes
        RtpExtension(0x1000, bytes.fromhex("01ff0000")),  # claims 255 data bytes
        RtpExtension(0x1234, bytes(4)),  # unknown profile
    ],
)
def test_bad_extension_blocks_are_malformed(ext: RtpExtension) -> None:
    with pytest.raises(MalformedPacket):
        ext.elements()


@pytest.mark.parametrize("elements", [[(0, b"x")], [(15, b"x")], [(1, b"")], [(1, bytes(17))]])
def test_invalid_one_byte_elements_are_usage_errors(elements: list[tuple[int, bytes]]) -> None:
    with pytest.raises(UsageError):
        RtpExtension.one_byte(elements)


def test_strip_padding_cases() -> None:
    assert strip_padding(b"abc" + build_padding(3)) == b"abc"
    assert strip_padding(b"abc\x01") == b"abc"
    assert strip_padding(b"abc\x00") == b"abc\x00"  # count 0: ignored
    assert strip_padding(b"ab\x09") == b"ab\x09"  # count > length: ignored
    assert strip_padding(build_padding(4)) == b""  # padding-only probe
    assert strip_padding(b"") == b""


@given(st.binary(max_size=40), st.integers(1, 255))
def test_padding_round_trip(payload: bytes, count: int) -> None:
    assert strip_padding(payload + build_padding(count)) == payload


def test_strip_extension() -> None:
    assert strip_extension(VIDEO_EXTENSION.body + b"nal", 1) == b"nal"
    assert strip_extension(b"abcd", 1) == b""
    with pytest.raises(MalformedPacket):
        strip_extension(b"abc", 1)


def test_plain_packet_layout() -> None:
    header = RtpHeader(103, 7, 3000, 12874, marker=True)
    wire = build_plain_packet(header, b"\x41\x9a", VIDEO_EXTENSION)
    assert wire == VIDEO_HEADER + VIDEO_EXTENSION.body + b"\x41\x9a"


def test_classify_each_kind() -> None:
    assert classify(OPUS_HEADER + b"x") is PacketKind.RTP
    assert classify(VIDEO_HEADER) is PacketKind.RTP
    assert classify(ip_discovery.build_request(1)) is PacketKind.IP_DISCOVERY_REQUEST
    assert classify(ip_discovery.build_response(1, "127.0.0.1", 5)) is PacketKind.IP_DISCOVERY_RESPONSE
    assert classify(udp_keepalive.build_keepalive(3)) is PacketKind.KEEPALIVE
    assert classify(udp_keepalive.build_keepalive(0x80C8)) is PacketKind.KEEPALIVE  # looks like RTCP
    # Protected RTCP is never 8 bytes long: an empty RR plus any trailer is RTCP.
    assert classify(rtcp.ReceiverReport(1).serialize() + bytes(4)) is PacketKind.RTCP
    assert classify(rtcp.PictureLossIndication(1, 2).serialize()) is PacketKind.RTCP
    assert classify(rtcp.GenericNack(1, 2, ((5, 0),)).serialize()) is PacketKind.RTCP
    assert classify(b"") is PacketKind.UNKNOWN
    assert classify(bytes(20)) is PacketKind.UNKNOWN


@pytest.mark.parametrize("second_byte", [192, 200, 205, 206, 223])
def test_rtcp_range_is_the_full_rfc5761_range(second_byte: int) -> None:
    assert classify(bytes([0x80, second_byte]) + bytes(10)) is PacketKind.RTCP


@pytest.mark.parametrize("second_byte", [0x78, 0x67, 0xE7, 191, 224])
def test_media_payload_types_are_rtp(second_byte: int) -> None:
    assert classify(bytes([0x80, second_byte]) + bytes(10)) is PacketKind.RTP


@given(st.binary(max_size=100))
def test_classify_is_total(data: bytes) -> None:
    assert isinstance(classify(data), PacketKind)


def classify_model(data: bytes) -> PacketKind:
    """The demux rules as discord-protocol.md §4.5 step 1 states them, one test after another."""
    n = len(data)
    if n == 8:
        return PacketKind.KEEPALIVE
    if n < 8:
        return PacketKind.UNKNOWN
    if data[0] >> 6 == 2:
        if data[1] in range(192, 224):
            return PacketKind.RTCP
        return PacketKind.RTP if n >= 12 else PacketKind.UNKNOWN
    if n == 74 and data[0] == 0 and data[2:4] == b"\x00\x46" and data[1] in (1, 2):
        return PacketKind.IP_DISCOVERY_RESPONSE if data[1] == 2 else PacketKind.IP_DISCOVERY_REQUEST
    return PacketKind.UNKNOWN


@given(
    st.sampled_from([0x00, 0x80, 0x90, 0xA0, 0xB0, 0x40, 0xC0]),
    st.sampled_from([0, 1, 2, 0x67, 0x78, 191, 192, 200, 223, 224]),
    st.sampled_from([b"", b"\x00\x46", b"\x00\x47"]),
    st.integers(0, 90),
)
def test_classify_matches_the_rules(b0: int, b1: int, middle: bytes, length: int) -> None:
    data = (bytes([b0, b1]) + middle + bytes(100))[:length]
    assert classify(data) is classify_model(data)
