"""IP discovery and UDP keep-alive wire formats: vectors, round trips, every truncation, fuzz."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clank.errors import MalformedPacket, UsageError
from clank.wire import ip_discovery, udp_keepalive
from clank.wire.ip_discovery import DiscoveryRequest, DiscoveryResponse

REQUEST_12873 = bytes.fromhex("000100460000 3249".replace(" ", "")) + bytes(66)
RESPONSE_12873 = (
    bytes.fromhex("0002004600003249")
    + b"203.0.113.5"
    + bytes(64 - len("203.0.113.5"))
    + bytes.fromhex("c3cb")
)


def test_request_matches_appendix_a() -> None:
    assert ip_discovery.build_request(12873) == REQUEST_12873
    assert len(REQUEST_12873) == 74
    assert DiscoveryRequest.parse(REQUEST_12873) == DiscoveryRequest(12873)


def test_response_matches_appendix_a() -> None:
    assert ip_discovery.build_response(12873, "203.0.113.5", 50123) == RESPONSE_12873
    assert DiscoveryResponse.parse(RESPONSE_12873) == DiscoveryResponse(12873, "203.0.113.5", 50123)


def test_request_is_not_a_response() -> None:
    with pytest.raises(MalformedPacket):
        DiscoveryResponse.parse(REQUEST_12873)
    with pytest.raises(MalformedPacket):
        DiscoveryRequest.parse(RESPONSE_12873)


@pytest.mark.parametrize("cut", range(74))
def test_every_truncation_is_malformed(cut: int) -> None:
    with pytest.raises(MalformedPacket):
        DiscoveryResponse.parse(RESPONSE_12873[:cut])
    with pytest.raises(MalformedPacket):
        DiscoveryRequest.parse(REQUEST_12873[:cut])


@pytest.mark.parametrize(
    "bad",
    [
        RESPONSE_12873[:2] + b"\x00\x45" + RESPONSE_12873[4:],  # wrong length field
        RESPONSE_12873[:8] + b"not-an-ip" + bytes(55) + RESPONSE_12873[72:],
        RESPONSE_12873[:8] + b"\xff" * 64 + RESPONSE_12873[72:],  # no NUL, not ASCII
        RESPONSE_12873[:8] + bytes(64) + RESPONSE_12873[72:],  # empty address
    ],
)
def test_bad_responses_are_malformed(bad: bytes) -> None:
    with pytest.raises(MalformedPacket):
        DiscoveryResponse.parse(bad)


def test_overlong_address_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        ip_discovery.build_response(1, "1" * 64, 1)


@given(st.integers(0, 2**32 - 1), st.ip_addresses(), st.integers(0, 65535))
def test_response_round_trip(ssrc: int, ip: object, port: int) -> None:
    response = DiscoveryResponse(ssrc, str(ip), port)
    assert DiscoveryResponse.parse(response.serialize()) == response


@given(st.binary(max_size=100))
def test_discovery_parsers_raise_only_malformed(data: bytes) -> None:
    for parse in (DiscoveryResponse.parse, DiscoveryRequest.parse):
        try:
            parse(data)
        except MalformedPacket:
            pass


def test_keepalive_bytes_are_a_little_endian_counter() -> None:
    # discord.js voice: Buffer.alloc(8); writeUInt32LE(counter, 0)
    assert udp_keepalive.build_keepalive(7) == bytes.fromhex("0700000000000000")
    assert udp_keepalive.build_keepalive(0x01020304) == bytes.fromhex("0403020100000000")
    assert udp_keepalive.build_keepalive(2**32) == bytes(8)  # wraps
    assert udp_keepalive.parse_keepalive(udp_keepalive.build_keepalive(99)) == 99


@given(st.binary(max_size=12))
def test_keepalive_parser_raises_only_malformed(data: bytes) -> None:
    try:
        counter = udp_keepalive.parse_keepalive(data)
    except MalformedPacket:
        assert len(data) != udp_keepalive.KEEPALIVE_SIZE
    else:
        assert len(data) == udp_keepalive.KEEPALIVE_SIZE
        assert udp_keepalive.build_keepalive(counter)[:4] == data[:4]
