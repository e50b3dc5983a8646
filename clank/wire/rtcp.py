"""RTCP (RFC 3550 / 4585 / 5104): reports, SDES, BYE, APP, generic NACK, PLI and FIR.

Sans-io. RTCP shares the media socket (RFC 5761 mux) and is recognised by its second byte
(192-223, see :func:`clank.wire.rtp.classify`). Under the rtpsize transport modes it is
AEAD-protected (see ``clank.crypto.transport``); this module handles the plain packets only.
A datagram may be a *compound* packet: sub-packets are iterated by their length fields
(:func:`parse_compound`). Packet types and feedback formats we do not model are kept as
:class:`UnknownRtcp` rather than rejected (Discord may send e.g. transport-cc or REMB).

Common header (big-endian)::

    byte 0   V(2)=2 | P(1) | count or FMT(5)
    byte 1   packet type (200 SR, 201 RR, 202 SDES, 203 BYE, 204 APP, 205 RTPFB, 206 PSFB)
    2..3     length = (total bytes / 4) - 1
    then the body; with P set, the last body byte counts padding bytes (itself included)
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

import attrs

from clank.errors import MalformedPacket, UsageError

RTCP_VERSION = 2
# V|P|count u8, packet type u8, length in words minus one u16
_COMMON = struct.Struct("!BBH")
# a single u32 (SSRCs)
_U32 = struct.Struct("!I")
# two u32: sender SSRC, media SSRC (feedback messages, RFC 4585 §6.1)
_FEEDBACK = struct.Struct("!II")
# SR sender info: SSRC u32, NTP timestamp u64, RTP timestamp u32, packet count u32, octet count u32
_SENDER_INFO = struct.Struct("!IQIII")
# report block: SSRC u32, fraction lost u8 | cumulative lost s24, highest seq u32, jitter u32,
# last SR u32, delay since last SR u32 (24 bytes)
_REPORT_BLOCK = struct.Struct("!IIIIII")
# generic NACK FCI: PID u16, BLP u16
_NACK_FCI = struct.Struct("!HH")
# FIR FCI: SSRC u32, command sequence number u8, reserved 3 bytes
_FIR_FCI = struct.Struct("!IB3x")
# APP: SSRC u32, name 4 ASCII bytes
_APP = struct.Struct("!I4s")

SR = 200
RR = 201
SDES = 202
BYE = 203
APP = 204
RTPFB = 205
PSFB = 206
FMT_GENERIC_NACK = 1
FMT_PLI = 1
FMT_FIR = 4
_MAX_COUNT = 31


def _fail(reason: str) -> MalformedPacket:
    return MalformedPacket("rtcp", reason)


def _frame(count: int, packet_type: int, body: bytes) -> bytes:
    """Header + body; pads the body to a word boundary with RTP-style padding if needed."""
    if not 0 <= count <= _MAX_COUNT:
        raise UsageError(f"RTCP count/FMT must be 0..31, got {count}")
    pad = -len(body) % 4
    b0 = (RTCP_VERSION << 6) | count
    if pad:
        b0 |= 0x20
        body = body + bytes(pad - 1) + bytes((pad,))
    return _COMMON.pack(b0, packet_type, (4 + len(body)) // 4 - 1) + body


@attrs.frozen
class ReportBlock:
    """Reception statistics for one source (RFC 3550 §6.4.1)."""

    ssrc: int
    fraction_lost: int = 0  # fixed point /256
    cumulative_lost: int = 0  # signed 24-bit
    highest_sequence: int = 0  # extended highest sequence number received
    jitter: int = 0
    last_sr: int = 0  # middle 32 bits of the last SR's NTP timestamp
    delay_since_last_sr: int = 0  # 1/65536 s

    @classmethod
    def parse_from(cls, buf: bytes, offset: int) -> ReportBlock:
        ssrc, lost_word, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(buf, offset)
        cumulative = lost_word & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 0x1000000
        return cls(ssrc, lost_word >> 24, cumulative, highest, jitter, lsr, dlsr)

    def serialize(self) -> bytes:
        lost_word = ((self.fraction_lost & 0xFF) << 24) | (self.cumulative_lost & 0xFFFFFF)
        return _REPORT_BLOCK.pack(
            self.ssrc, lost_word, self.highest_sequence, self.jitter, self.last_sr, self.delay_since_last_sr
        )


def _parse_blocks(body: bytes, offset: int, count: int) -> tuple[ReportBlock, ...]:
    if len(body) < offset + count * _REPORT_BLOCK.size:
        raise _fail(f"{count} report blocks do not fit in {len(body)} bytes")
    return tuple(ReportBlock.parse_from(body, offset + i * _REPORT_BLOCK.size) for i in range(count))


@attrs.frozen
class SenderReport:
    """SR (PT 200): sender info plus report blocks."""

    ssrc: int
    ntp_timestamp: int  # 64-bit NTP time (seconds << 32 | fraction)
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()

    @classmethod
    def _parse(cls, count: int, body: bytes) -> SenderReport:
        if len(body) < _SENDER_INFO.size:
            raise _fail("truncated sender report")
        ssrc, ntp, rtp_ts, packets, octets = _SENDER_INFO.unpack_from(body)
        return cls(ssrc, ntp, rtp_ts, packets, octets, _parse_blocks(body, _SENDER_INFO.size, count))

    def serialize(self) -> bytes:
        info = _SENDER_INFO.pack(
            self.ssrc, self.ntp_timestamp, self.rtp_timestamp, self.packet_count, self.octet_count
        )
        return _frame(len(self.reports), SR, info + b"".join(r.serialize() for r in self.reports))


@attrs.frozen
class ReceiverReport:
    """RR (PT 201): the reporter's SSRC plus report blocks."""

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()

    @classmethod
    def _parse(cls, count: int, body: bytes) -> ReceiverReport:
        if len(body) < 4:
            raise _fail("truncated receiver report")
        return cls(_U32.unpack_from(body)[0], _parse_blocks(body, 4, count))

    def serialize(self) -> bytes:
        return _frame(
            len(self.reports), RR, _U32.pack(self.ssrc) + b"".join(r.serialize() for r in self.reports)
        )


@attrs.frozen
class SdesChunk:
    ssrc: int
    items: tuple[tuple[int, bytes], ...] = ()  # (item type, value), e.g. (1, b"cname")


@attrs.frozen
class SourceDescription:
    """SDES (PT 202). Parsed so it can be skipped safely; nothing in clank consumes it."""

    chunks: tuple[SdesChunk, ...] = ()

    @classmethod
    def _parse(cls, count: int, body: bytes) -> SourceDescription:
        chunks: list[SdesChunk] = []
        i = 0
        for _ in range(count):
            if i + 4 > len(body):
                raise _fail("truncated SDES chunk")
            ssrc = _U32.unpack_from(body, i)[0]
            i += 4
            items: list[tuple[int, bytes]] = []
            while True:
                if i >= len(body):
                    raise _fail("SDES chunk without its terminating null item")
                item_type = body[i]
                if item_type == 0:
                    i += 1
                    i += -i % 4  # chunks end on a word boundary
                    break
                if i + 2 > len(body) or i + 2 + body[i + 1] > len(body):
                    raise _fail("SDES item overruns the packet")
                length = body[i + 1]
                items.append((item_type, bytes(body[i + 2 : i + 2 + length])))
                i += 2 + length
            chunks.append(SdesChunk(ssrc, tuple(items)))
        return cls(tuple(chunks))

    def serialize(self) -> bytes:
        out = bytearray()
        for chunk in self.chunks:
            out += _U32.pack(chunk.ssrc)
            for item_type, value in chunk.items:
                out += bytes((item_type, len(value))) + value
            out.append(0)
            out += bytes(-len(out) % 4)
        return _frame(len(self.chunks), SDES, bytes(out))


@attrs.frozen
class Bye:
    """BYE (PT 203): sources leaving, with an optional reason."""

    ssrcs: tuple[int, ...]
    reason: bytes = b""

    @classmethod
    def _parse(cls, count: int, body: bytes) -> Bye:
        end = 4 * count
        if len(body) < end:
            raise _fail("truncated BYE source list")
        ssrcs = struct.unpack_from(f"!{count}I", body)
        reason = b""
        if len(body) > end:
            length = body[end]
            if end + 1 + length > len(body):
                raise _fail("BYE reason overruns the packet")
            reason = bytes(body[end + 1 : end + 1 + length])
        return cls(tuple(ssrcs), reason)

    def serialize(self) -> bytes:
        body = struct.pack(f"!{len(self.ssrcs)}I", *self.ssrcs)
        if self.reason:
            reason = bytes((len(self.reason),)) + self.reason
            body += reason + bytes(-len(reason) % 4)
        return _frame(len(self.ssrcs), BYE, body)


@attrs.frozen
class AppPacket:
    """APP (PT 204): application-defined; carried through, never interpreted."""

    subtype: int
    ssrc: int
    name: bytes
    data: bytes = b""

    @classmethod
    def _parse(cls, count: int, body: bytes) -> AppPacket:
        if len(body) < _APP.size:
            raise _fail("truncated APP packet")
        ssrc, name = _APP.unpack_from(body)
        return cls(count, ssrc, name, bytes(body[_APP.size :]))

    def serialize(self) -> bytes:
        if len(self.name) != 4:
            raise UsageError("APP name must be 4 bytes")
        return _frame(self.subtype, APP, _APP.pack(self.ssrc, self.name) + self.data)


@attrs.frozen
class GenericNack:
    """Generic NACK (PT 205, FMT 1): lost packets as (PID, BLP) pairs (RFC 4585 §6.2.1)."""

    sender_ssrc: int
    media_ssrc: int
    items: tuple[tuple[int, int], ...]

    @classmethod
    def for_sequences(cls, sender_ssrc: int, media_ssrc: int, sequences: Iterable[int]) -> GenericNack:
        return cls(sender_ssrc, media_ssrc, tuple(nack_fci(sequences)))

    def lost_sequences(self) -> list[int]:
        return nack_sequences(self.items)

    @classmethod
    def _parse(cls, body: bytes) -> GenericNack:
        if len(body) < _FEEDBACK.size:
            raise _fail("truncated NACK")
        sender, media = _FEEDBACK.unpack_from(body)
        n = (len(body) - _FEEDBACK.size) // _NACK_FCI.size
        items = tuple(_NACK_FCI.unpack_from(body, _FEEDBACK.size + 4 * i) for i in range(n))
        return cls(sender, media, items)

    def serialize(self) -> bytes:
        fci = b"".join(_NACK_FCI.pack(pid, blp) for pid, blp in self.items)
        return _frame(FMT_GENERIC_NACK, RTPFB, _FEEDBACK.pack(self.sender_ssrc, self.media_ssrc) + fci)


@attrs.frozen
class PictureLossIndication:
    """PLI (PT 206, FMT 1): ask the sender of ``media_ssrc`` for a keyframe."""

    sender_ssrc: int
    media_ssrc: int

    @classmethod
    def _parse(cls, body: bytes) -> PictureLossIndication:
        if len(body) < _FEEDBACK.size:
            raise _fail("truncated PLI")
        return cls(*_FEEDBACK.unpack_from(body))

    def serialize(self) -> bytes:
        return _frame(FMT_PLI, PSFB, _FEEDBACK.pack(self.sender_ssrc, self.media_ssrc))


@attrs.frozen
class FullIntraRequest:
    """FIR (PT 206, FMT 4, RFC 5104): (SSRC, command sequence number) entries; media SSRC is 0."""

    sender_ssrc: int
    entries: tuple[tuple[int, int], ...]
    media_ssrc: int = 0

    @classmethod
    def _parse(cls, body: bytes) -> FullIntraRequest:
        if len(body) < _FEEDBACK.size:
            raise _fail("truncated FIR")
        sender, media = _FEEDBACK.unpack_from(body)
        n = (len(body) - _FEEDBACK.size) // _FIR_FCI.size
        entries = tuple(_FIR_FCI.unpack_from(body, _FEEDBACK.size + 8 * i) for i in range(n))
        return cls(sender, entries, media)

    def serialize(self) -> bytes:
        fci = b"".join(_FIR_FCI.pack(ssrc, seq & 0xFF) for ssrc, seq in self.entries)
        return _frame(FMT_FIR, PSFB, _FEEDBACK.pack(self.sender_ssrc, self.media_ssrc) + fci)


@attrs.frozen
class UnknownRtcp:
    """Any other packet type or feedback format, kept verbatim (padding already removed)."""

    packet_type: int
    count: int
    body: bytes

    def serialize(self) -> bytes:
        return _frame(self.count, self.packet_type, self.body)


RtcpPacket = (
    SenderReport
    | ReceiverReport
    | SourceDescription
    | Bye
    | AppPacket
    | GenericNack
    | PictureLossIndication
    | FullIntraRequest
    | UnknownRtcp
)


def _parse_one(count: int, packet_type: int, body: bytes) -> RtcpPacket:
    if packet_type == SR:
        return SenderReport._parse(count, body)
    if packet_type == RR:
        return ReceiverReport._parse(count, body)
    if packet_type == SDES:
        return SourceDescription._parse(count, body)
    if packet_type == BYE:
        return Bye._parse(count, body)
    if packet_type == APP:
        return AppPacket._parse(count, body)
    if packet_type == RTPFB and count == FMT_GENERIC_NACK:
        return GenericNack._parse(body)
    if packet_type == PSFB and count == FMT_PLI:
        return PictureLossIndication._parse(body)
    if packet_type == PSFB and count == FMT_FIR:
        return FullIntraRequest._parse(body)
    return UnknownRtcp(packet_type, count, bytes(body))


def parse_compound(buf: bytes) -> tuple[RtcpPacket, ...]:
    """Parse one datagram's worth of RTCP: one or more sub-packets, each by its length field."""
    if len(buf) < _COMMON.size:
        raise _fail(f"{len(buf)} bytes is shorter than an RTCP header")
    packets: list[RtcpPacket] = []
    offset = 0
    while offset < len(buf):
        if len(buf) - offset < _COMMON.size:
            raise _fail("trailing bytes after the last RTCP packet")
        b0, packet_type, length = _COMMON.unpack_from(buf, offset)
        if b0 >> 6 != RTCP_VERSION:
            raise _fail(f"version {b0 >> 6} != 2")
        if not 192 <= packet_type <= 223:
            raise _fail(f"packet type {packet_type} is not RTCP")
        end = offset + 4 * (length + 1)
        if end > len(buf):
            raise _fail(f"length field says {4 * (length + 1)} bytes, {len(buf) - offset} present")
        body = buf[offset + 4 : end]
        if b0 & 0x20:
            pad = body[-1] if body else 0
            if pad == 0 or pad > len(body):
                raise _fail(f"bad padding count {pad}")
            body = body[: len(body) - pad]
        packets.append(_parse_one(b0 & 0x1F, packet_type, body))
        offset = end
    return tuple(packets)


def serialize_compound(packets: Sequence[RtcpPacket]) -> bytes:
    return b"".join(p.serialize() for p in packets)


def nack_fci(sequences: Iterable[int]) -> list[tuple[int, int]]:
    """Pack lost sequence numbers into (PID, BLP) pairs.

    Pass them in sending order (ascending modulo 2^16); a sequence within 16 after the current
    PID sets a BLP bit, anything else starts a new pair. Duplicates are ignored.
    """
    items: list[tuple[int, int]] = []
    pid = -1
    blp = 0
    for raw in sequences:
        seq = raw & 0xFFFF
        if pid >= 0:
            delta = (seq - pid) & 0xFFFF
            if delta == 0:
                continue
            if delta <= 16:
                blp |= 1 << (delta - 1)
                continue
            items.append((pid, blp))
        pid, blp = seq, 0
    if pid >= 0:
        items.append((pid, blp))
    return items


def nack_sequences(items: Iterable[tuple[int, int]]) -> list[int]:
    """The lost sequence numbers a list of (PID, BLP) pairs names, in order."""
    out: list[int] = []
    for pid, blp in items:
        out.append(pid)
        out.extend((pid + bit + 1) & 0xFFFF for bit in range(16) if blp >> bit & 1)
    return out
