"""RTX retransmission (RFC 4588): unwrap on receive, wrap and a retransmission store on send.

RTX payload layout (after the RTX packet's own RTP header, padding and extensions are stripped):

    OSN u16 BE   the original sequence number
    ...          the original RTP payload (empty = a padding-only bandwidth probe)

The RTX packet carries the original timestamp and marker; only SSRC, PT and seq differ.
"""

from __future__ import annotations

import struct
from collections import OrderedDict

import attrs

from clank.codecs.packet import SEQ_MOD, MediaPacket
from clank.errors import MalformedPacket, UsageError

_OSN = struct.Struct(">H")


@attrs.frozen
class RtxPayload:
    osn: int
    payload: bytes = attrs.field(repr=lambda p: f"<{len(p)} bytes>")

    @classmethod
    def parse(cls, buf: bytes) -> RtxPayload:
        if len(buf) < _OSN.size:
            raise MalformedPacket("rtx", f"payload of {len(buf)} bytes has no OSN")
        (osn,) = _OSN.unpack_from(buf)
        return cls(osn=osn, payload=bytes(buf[_OSN.size :]))

    def serialize(self) -> bytes:
        return _OSN.pack(self.osn % SEQ_MOD) + self.payload


def wrap_rtx(osn: int, payload: bytes) -> bytes:
    """The RTX payload retransmitting ``payload`` originally sent with sequence number ``osn``."""
    return RtxPayload(osn=osn % SEQ_MOD, payload=payload).serialize()


@attrs.frozen
class RtxStatistics:
    unwrapped: int
    probes: int
    malformed: int


class RtxUnwrapper:
    """Turns RTX packets back into primary-stream packets; drops and counts probes and junk."""

    def __init__(self) -> None:
        self._unwrapped = 0
        self._probes = 0
        self._malformed = 0

    def unwrap(self, packet: MediaPacket, primary_ssrc: int) -> MediaPacket | None:
        """The original packet (seq = OSN, SSRC = primary), or None for a probe or malformed packet."""
        try:
            rtx = RtxPayload.parse(packet.payload)
        except MalformedPacket:
            self._malformed += 1
            return None
        if not rtx.payload:
            self._probes += 1
            return None
        self._unwrapped += 1
        return packet._replace(seq=rtx.osn, payload=rtx.payload, ssrc=primary_ssrc)

    def statistics(self) -> RtxStatistics:
        return RtxStatistics(unwrapped=self._unwrapped, probes=self._probes, malformed=self._malformed)


@attrs.frozen
class Retransmission:
    """What to send on the RTX stream: the caller adds an RTP header with the RTX SSRC/PT/seq."""

    osn: int
    timestamp: int
    marker: bool
    payload: bytes = attrs.field(repr=lambda p: f"<{len(p)} bytes>")  # already RTX-wrapped


@attrs.frozen
class RetransmissionStatistics:
    stored: int
    requested: int
    answered: int
    unknown: int
    suppressed: int


@attrs.frozen
class _Sent:
    timestamp: int
    marker: bool
    payload: bytes
    last_resent: float | None = None


class RetransmissionStore:
    """Bounded ring of recently sent packets (seq -> payload) for answering NACKs.

    A packet is resent at most once per ``min_resend_interval`` so a burst of duplicate NACKs does
    not multiply the retransmission traffic.
    """

    def __init__(self, capacity: int = 1024, min_resend_interval: float = 0.05) -> None:
        if capacity < 1:
            raise UsageError("RetransmissionStore capacity must be >= 1")
        self._capacity = capacity
        self._min_interval = min_resend_interval
        self._sent: OrderedDict[int, _Sent] = OrderedDict()
        self._stored = 0
        self._requested = 0
        self._answered = 0
        self._unknown = 0
        self._suppressed = 0

    def remember(self, seq: int, timestamp: int, marker: bool, payload: bytes) -> None:
        """Record a packet just sent on the primary stream (the payload as sent, before SRTP)."""
        seq %= SEQ_MOD
        self._sent.pop(seq, None)
        self._sent[seq] = _Sent(timestamp=timestamp, marker=marker, payload=payload)
        self._stored += 1
        while len(self._sent) > self._capacity:
            self._sent.popitem(last=False)

    def answer(self, seqs: list[int], now: float) -> list[Retransmission]:
        """Retransmissions for the NACKed ``seqs`` that are still stored, in request order."""
        out: list[Retransmission] = []
        for raw in seqs:
            seq = raw % SEQ_MOD
            self._requested += 1
            sent = self._sent.get(seq)
            if sent is None:
                self._unknown += 1
                continue
            if sent.last_resent is not None and now - sent.last_resent < self._min_interval:
                self._suppressed += 1
                continue
            self._sent[seq] = attrs.evolve(sent, last_resent=now)
            self._answered += 1
            out.append(
                Retransmission(
                    osn=seq, timestamp=sent.timestamp, marker=sent.marker, payload=wrap_rtx(seq, sent.payload)
                )
            )
        return out

    def statistics(self) -> RetransmissionStatistics:
        return RetransmissionStatistics(
            stored=self._stored,
            requested=self._requested,
            answered=self._answered,
            unknown=self._unknown,
            suppressed=self._suppressed,
        )
