"""Voice UDP IP discovery: the 74-byte request/response that tells a client its public address.

Sans-io. The client sends a request carrying its SSRC; the server answers with the address and
port it saw the request come from (discord-protocol.md §4.1). The sandbox voice server uses
:func:`build_response` and :meth:`DiscoveryRequest.parse`.

Layout (both directions, big-endian)::

    off  size  field
    0    2     type: 1 request, 2 response
    2    2     length = 70 (excludes type and length)
    4    4     SSRC
    8    64    address: zeros in the request; NUL-terminated ASCII IP in the response
    72   2     port: zero in the request
"""

from __future__ import annotations

import ipaddress
import struct

import attrs

from clank.errors import MalformedPacket, UsageError

# type u16, length u16, ssrc u32, address 64 bytes, port u16
_DISCOVERY = struct.Struct("!HHI64sH")
DISCOVERY_SIZE = _DISCOVERY.size  # 74
DISCOVERY_LENGTH = 70
REQUEST_TYPE = 1
RESPONSE_TYPE = 2
_ADDRESS_SIZE = 64


def _unpack(buf: bytes, expected_type: int) -> tuple[int, bytes, int]:
    if len(buf) != DISCOVERY_SIZE:
        raise MalformedPacket("ip_discovery", f"expected {DISCOVERY_SIZE} bytes, got {len(buf)}")
    kind, length, ssrc, address, port = _DISCOVERY.unpack(buf)
    if kind != expected_type:
        raise MalformedPacket("ip_discovery", f"expected type {expected_type}, got {kind}")
    if length != DISCOVERY_LENGTH:
        raise MalformedPacket("ip_discovery", f"length field {length} != {DISCOVERY_LENGTH}")
    return ssrc, address, port


@attrs.frozen
class DiscoveryRequest:
    """A client's discovery request (what the server receives)."""

    ssrc: int

    @classmethod
    def parse(cls, buf: bytes) -> DiscoveryRequest:
        ssrc, _address, _port = _unpack(buf, REQUEST_TYPE)
        return cls(ssrc=ssrc)

    def serialize(self) -> bytes:
        return _DISCOVERY.pack(REQUEST_TYPE, DISCOVERY_LENGTH, self.ssrc, b"", 0)


@attrs.frozen
class DiscoveryResponse:
    """The server's answer: the address and port it saw our request arrive from."""

    ssrc: int
    ip: str
    port: int

    @classmethod
    def parse(cls, buf: bytes) -> DiscoveryResponse:
        ssrc, address, port = _unpack(buf, RESPONSE_TYPE)
        raw = address.split(b"\x00", 1)[0]
        try:
            ip = raw.decode("ascii")
            ipaddress.ip_address(ip)
        except ValueError as exc:  # UnicodeDecodeError is a ValueError
            raise MalformedPacket("ip_discovery", f"bad address {raw[:64]!r}") from exc
        return cls(ssrc=ssrc, ip=ip, port=port)

    def serialize(self) -> bytes:
        return build_response(self.ssrc, self.ip, self.port)


def build_request(ssrc: int) -> bytes:
    """The 74-byte request a client sends right after Ready."""
    return DiscoveryRequest(ssrc).serialize()


def build_response(ssrc: int, ip: str, port: int) -> bytes:
    """The 74-byte response a server sends back (the address must leave room for its NUL)."""
    encoded = ip.encode("ascii")
    if len(encoded) >= _ADDRESS_SIZE:
        raise UsageError(f"address too long for discovery: {ip!r}")
    return _DISCOVERY.pack(RESPONSE_TYPE, DISCOVERY_LENGTH, ssrc, encoded, port)
