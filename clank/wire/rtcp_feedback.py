"""RTCP congestion feedback: REMB (PSFB FMT 15) and transport-wide CC feedback (RTPFB FMT 15).

Sans-io. :mod:`clank.wire.rtcp` keeps both as :class:`~clank.wire.rtcp.UnknownRtcp` (it models
the RFC 3550/4585/5104 packets); :func:`parse_feedback` reads one of those as a :class:`Remb` or
:class:`TransportCcFeedback`, and each value's ``serialize()`` frames itself through
``UnknownRtcp`` so the common header lives in one place.

REMB (draft-alvestrand-rmcat-remb-03 §2.2), after the common header (V=2, FMT=15, PT=206)::

    0..3    SSRC of packet sender
    4..7    SSRC of media source (always 0)
    8..11   unique identifier "REMB"
    12      Num SSRC (u8)
    13..15  BR Exp (6 bits) | BR Mantissa (18 bits): bitrate = mantissa << exp  (bits per second)
    16..    SSRC feedback, Num SSRC x u32

Transport-wide CC feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1), after the
common header (V=2, FMT=15, PT=205)::

    0..3    SSRC of packet sender
    4..7    SSRC of media source
    8..9    base sequence number (u16)
    10..11  packet status count (u16)
    12..14  reference time (s24, multiples of 64 ms)
    15      feedback packet count (u8)
    then packet chunks (u16 each), then one receive delta per received packet
    (1 byte for "small delta" 0..63.75 ms, 2 bytes signed for "large or negative"; 250 us units),
    zero-padded to a word.

    run-length chunk:   0 | S(2) | run length(13)
    status vector:      1 | 0 | 14 x 1-bit symbol   or   1 | 1 | 7 x 2-bit symbol
    symbols: 0 not received, 1 received (small delta), 2 received (large or negative delta)
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

import attrs

from clank.errors import MalformedPacket, UsageError
from clank.wire.rtcp import PSFB, RTPFB, RtcpPacket, UnknownRtcp

__all__ = [
    "FMT_REMB",
    "FMT_TRANSPORT_CC",
    "REMB_IDENTIFIER",
    "Remb",
    "TransportCcFeedback",
    "parse_feedback",
]

FMT_REMB: Final = 15  # PSFB application layer feedback, identified by "REMB"
FMT_TRANSPORT_CC: Final = 15  # RTPFB transport-wide congestion control feedback
REMB_IDENTIFIER: Final = b"REMB"
# sender SSRC u32, media SSRC u32, identifier 4 bytes, num SSRC u8, exp|mantissa 3 bytes
_REMB = struct.Struct("!II4sB3s")
# sender SSRC u32, media SSRC u32, base seq u16, status count u16, reference time s24 + fb count u8
_TCC = struct.Struct("!IIHHI")
_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")
_S16 = struct.Struct("!h")
MANTISSA_BITS: Final = 18
MAX_EXPONENT: Final = 63
MAX_REMB_SSRCS: Final = 255
DELTA_UNIT_US: Final = 250
"""Receive deltas are in multiples of 250 us."""
REFERENCE_UNIT_US: Final = 64_000
"""The reference time is in multiples of 64 ms."""
SYMBOL_NOT_RECEIVED: Final = 0
SYMBOL_SMALL_DELTA: Final = 1
SYMBOL_LARGE_DELTA: Final = 2
_MAX_RUN: Final = (1 << 13) - 1


def _fail(reason: str) -> MalformedPacket:
    return MalformedPacket("rtcp feedback", reason)


@attrs.frozen
class Remb:
    """Receiver Estimated Maximum Bitrate: what the receiver can take for ``ssrcs``, bits/s."""

    sender_ssrc: int
    bitrate: int
    ssrcs: tuple[int, ...]
    media_ssrc: int = 0

    @staticmethod
    def encode_bitrate(bitrate: int) -> tuple[int, int]:
        """``(exponent, mantissa)`` with ``mantissa << exponent <= bitrate`` (the largest such)."""
        if bitrate < 0:
            raise UsageError(f"REMB bitrate must be >= 0, got {bitrate}")
        exponent = max(0, bitrate.bit_length() - MANTISSA_BITS)
        if exponent > MAX_EXPONENT:
            raise UsageError(f"REMB bitrate {bitrate} does not fit 18-bit mantissa << 6-bit exponent")
        return exponent, bitrate >> exponent

    @classmethod
    def parse_body(cls, body: bytes) -> Remb:
        """The body after the common header of a PSFB FMT 15 packet."""
        if len(body) < _REMB.size:
            raise _fail(f"REMB of {len(body)} bytes is shorter than its {_REMB.size}-byte fixed part")
        sender, media, identifier, count, packed = _REMB.unpack_from(body)
        if identifier != REMB_IDENTIFIER:
            raise _fail(f"application feedback identifier {identifier!r} is not REMB")
        end = _REMB.size + 4 * count
        if len(body) < end:
            raise _fail(f"REMB says {count} SSRCs, has room for {(len(body) - _REMB.size) // 4}")
        word = int.from_bytes(packed, "big")
        bitrate = (word & ((1 << MANTISSA_BITS) - 1)) << (word >> MANTISSA_BITS)
        ssrcs = struct.unpack_from(f"!{count}I", body, _REMB.size)
        return cls(sender, bitrate, tuple(ssrcs), media)

    def serialize(self) -> bytes:
        if len(self.ssrcs) > MAX_REMB_SSRCS:
            raise UsageError(f"REMB carries at most {MAX_REMB_SSRCS} SSRCs, got {len(self.ssrcs)}")
        exponent, mantissa = self.encode_bitrate(self.bitrate)
        packed = ((exponent << MANTISSA_BITS) | mantissa).to_bytes(3, "big")
        body = _REMB.pack(self.sender_ssrc, self.media_ssrc, REMB_IDENTIFIER, len(self.ssrcs), packed)
        body += b"".join(_U32.pack(s) for s in self.ssrcs)
        return UnknownRtcp(PSFB, FMT_REMB, body).serialize()


@attrs.frozen
class TransportCcFeedback:
    """Arrival times of transport-wide sequence numbers ``base_sequence ..`` (``None``: lost).

    ``arrivals`` holds one entry per sequence number, in order, as microseconds relative to
    ``reference_time * 64 ms`` (the first received one is usually ``0..`` ); the wire carries them
    as 250 us deltas, so values are rounded to that grid when serialized.
    """

    sender_ssrc: int
    media_ssrc: int
    base_sequence: int
    reference_time: int
    """Signed 24-bit, 64 ms units."""
    feedback_count: int
    arrivals: tuple[int | None, ...]

    @classmethod
    def parse_body(cls, body: bytes) -> TransportCcFeedback:
        if len(body) < _TCC.size:
            raise _fail(f"transport-cc feedback of {len(body)} bytes is shorter than {_TCC.size}")
        sender, media, base, count, ref_word = _TCC.unpack_from(body)
        reference = ref_word >> 8
        if reference & 0x800000:
            reference -= 0x1000000
        feedback_count = ref_word & 0xFF
        symbols: list[int] = []
        offset = _TCC.size
        while len(symbols) < count:
            if offset + 2 > len(body):
                raise _fail(f"packet chunks end after {len(symbols)} of {count} statuses")
            (chunk,) = _U16.unpack_from(body, offset)
            offset += 2
            if chunk & 0x8000 == 0:
                symbol, run = (chunk >> 13) & 0x3, chunk & _MAX_RUN
                if symbol == 3:
                    raise _fail("run-length chunk with the reserved status symbol 3")
                symbols += [symbol] * min(run, count - len(symbols))
            elif chunk & 0x4000 == 0:
                bits = [(chunk >> (13 - i)) & 0x1 for i in range(14)]
                symbols += bits[: count - len(symbols)]
            else:
                pairs = [(chunk >> (12 - 2 * i)) & 0x3 for i in range(7)]
                if 3 in pairs[: count - len(symbols)]:
                    raise _fail("status vector chunk with the reserved status symbol 3")
                symbols += pairs[: count - len(symbols)]
        arrivals: list[int | None] = []
        clock = 0
        for symbol in symbols:
            if symbol == SYMBOL_NOT_RECEIVED:
                arrivals.append(None)
                continue
            if symbol == SYMBOL_SMALL_DELTA:
                if offset + 1 > len(body):
                    raise _fail("receive deltas end early")
                delta = body[offset]
                offset += 1
            else:
                if offset + 2 > len(body):
                    raise _fail("receive deltas end early")
                (delta,) = _S16.unpack_from(body, offset)
                offset += 2
            clock += delta * DELTA_UNIT_US
            arrivals.append(clock)
        return cls(sender, media, base, reference, feedback_count, tuple(arrivals))

    def serialize(self) -> bytes:
        count = len(self.arrivals)
        if count > 0xFFFF:
            raise UsageError(f"transport-cc feedback covers at most 65535 packets, got {count}")
        if not -(1 << 23) <= self.reference_time < (1 << 23):
            raise UsageError(f"reference time {self.reference_time} does not fit 24 signed bits")
        symbols: list[int] = []
        deltas = bytearray()
        clock = 0
        for arrival in self.arrivals:
            if arrival is None:
                symbols.append(SYMBOL_NOT_RECEIVED)
                continue
            delta = round((arrival - clock) / DELTA_UNIT_US)
            if 0 <= delta <= 0xFF:
                symbols.append(SYMBOL_SMALL_DELTA)
                deltas.append(delta)
            elif -(1 << 15) <= delta < (1 << 15):
                symbols.append(SYMBOL_LARGE_DELTA)
                deltas += _S16.pack(delta)
            else:
                raise UsageError(f"receive delta of {delta * DELTA_UNIT_US} us does not fit 16 bits")
            clock += delta * DELTA_UNIT_US
        ref_word = ((self.reference_time & 0xFFFFFF) << 8) | (self.feedback_count & 0xFF)
        body = bytearray(
            _TCC.pack(self.sender_ssrc, self.media_ssrc, self.base_sequence & 0xFFFF, count, ref_word)
        )
        for chunk in _chunks(symbols):
            body += _U16.pack(chunk)
        body += deltas
        body += bytes(-len(body) % 4)  # zero padding (not RTP-style: the draft says so)
        return UnknownRtcp(RTPFB, FMT_TRANSPORT_CC, bytes(body)).serialize()


def _chunks(symbols: Sequence[int]) -> list[int]:
    """Run-length chunks for runs of 7 or more, two-bit status vectors otherwise."""
    out: list[int] = []
    i = 0
    while i < len(symbols):
        run = 1
        while i + run < len(symbols) and symbols[i + run] == symbols[i] and run < _MAX_RUN:
            run += 1
        if run >= 7:
            out.append((symbols[i] << 13) | run)
            i += run
            continue
        group = list(symbols[i : i + 7])
        chunk = 0xC000
        for j, symbol in enumerate(group):
            chunk |= symbol << (12 - 2 * j)
        out.append(chunk)
        i += len(group)
    return out


def parse_feedback(packet: RtcpPacket) -> Remb | TransportCcFeedback | None:
    """REMB or transport-cc feedback out of a parsed RTCP packet; None for anything else.

    Raises :class:`~clank.errors.MalformedPacket` when the packet claims to be one and is not
    (a PSFB FMT 15 whose identifier is not ``REMB`` is other application feedback: None).
    """
    if not isinstance(packet, UnknownRtcp) or packet.count != 15:
        return None
    if packet.packet_type == PSFB:
        if packet.body[8:12] != REMB_IDENTIFIER:
            return None
        return Remb.parse_body(packet.body)
    if packet.packet_type == RTPFB:
        return TransportCcFeedback.parse_body(packet.body)
    return None
