"""Voice UDP keepalive ping: 8 bytes, a magic word then the sender's sequence number.

Sans-io. Optional and single-source (discord-protocol.md §4.2): receivers must recognise and
filter these before RTP/RTCP parsing; the sandbox answers requests with responses.

Layout (big-endian)::

    off  size  field
    0    4     magic: 0x1337CAFE request, 0x1337F00D response
    4    4     sequence (u32, chosen by the requester, echoed by the responder)
"""

from __future__ import annotations

import struct

import attrs

from clank.errors import MalformedPacket

_PING = struct.Struct("!II")
PING_SIZE = _PING.size  # 8
PING_REQUEST_MAGIC = 0x1337CAFE
PING_RESPONSE_MAGIC = 0x1337F00D
_REQUEST_PREFIX = PING_REQUEST_MAGIC.to_bytes(4, "big")
_RESPONSE_PREFIX = PING_RESPONSE_MAGIC.to_bytes(4, "big")


def is_ping(buf: bytes) -> bool:
    """True for an 8-byte datagram starting with either ping magic."""
    return len(buf) == PING_SIZE and (buf[:4] == _REQUEST_PREFIX or buf[:4] == _RESPONSE_PREFIX)


@attrs.frozen
class UdpPing:
    """One ping request (``is_response=False``) or its echo."""

    sequence: int
    is_response: bool = False

    @classmethod
    def parse(cls, buf: bytes) -> UdpPing:
        if len(buf) != PING_SIZE:
            raise MalformedPacket("udp_ping", f"expected {PING_SIZE} bytes, got {len(buf)}")
        magic, sequence = _PING.unpack(buf)
        if magic == PING_REQUEST_MAGIC:
            return cls(sequence=sequence, is_response=False)
        if magic == PING_RESPONSE_MAGIC:
            return cls(sequence=sequence, is_response=True)
        raise MalformedPacket("udp_ping", f"bad magic {magic:#010x}")

    def serialize(self) -> bytes:
        magic = PING_RESPONSE_MAGIC if self.is_response else PING_REQUEST_MAGIC
        return _PING.pack(magic, self.sequence & 0xFFFFFFFF)

    def response(self) -> UdpPing:
        """The echo a responder sends back for this request."""
        return UdpPing(sequence=self.sequence, is_response=True)


def build_ping(sequence: int) -> bytes:
    return UdpPing(sequence).serialize()


def build_pong(sequence: int) -> bytes:
    return UdpPing(sequence, is_response=True).serialize()
