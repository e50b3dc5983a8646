"""H264 over RTP (RFC 6184, packetization-mode 1): depacketize to Annex-B, packetize from Annex-B.

Payload layouts (first byte = NAL header ``F|NRI|Type``, Type selects the form):

    1-23  single NAL unit       the whole payload is one NAL
    24    STAP-A                [hdr] then repeated [size u16 BE][NAL of size bytes]
    28    FU-A                  [indicator F|NRI|28] [FU header S|E|R|Type] [fragment]
    25 STAP-B, 26 MTAP16, 27 MTAP24, 29 FU-B, 0/30/31   not used in mode 1: counted and dropped

Receive output always uses 4-byte start codes (DAVE's unencrypted ranges assume them, §5.2/§7.6).
SPS/PPS are *not* prepended here: that happens after DAVE decrypt with ``ParameterSetCache``.
"""

from __future__ import annotations

import struct

from clank.codecs.annexb import (
    NAL_AUD,
    NAL_IDR,
    NAL_PPS,
    NAL_SPS,
    START_CODE,
    nal_type,
    split_nals,
)
from clank.codecs.assembly import FrameAssembler, UnsupportedPayload
from clank.errors import MalformedPacket, UsageError

STAP_A = 24
FU_A = 28
_UNSUPPORTED = {
    0: "reserved",
    25: "STAP-B",
    26: "MTAP16",
    27: "MTAP24",
    29: "FU-B",
    30: "reserved",
    31: "reserved",
}
_FU_START = 0x80
_FU_END = 0x40

# STAP-A aggregation unit size prefix.
_U16 = struct.Struct(">H")


def parse_stap_a(payload: bytes) -> list[bytes]:
    """The NAL units of a STAP-A payload; MalformedPacket on a zero size, overrun or trailing bytes."""
    nals: list[bytes] = []
    offset = 1
    while offset < len(payload):
        if offset + 2 > len(payload):
            raise MalformedPacket("h264", "STAP-A: truncated size field")
        (size,) = _U16.unpack_from(payload, offset)
        offset += 2
        if size == 0 or offset + size > len(payload):
            raise MalformedPacket("h264", f"STAP-A: bad unit size {size}")
        nals.append(payload[offset : offset + size])
        offset += size
    if not nals:
        raise MalformedPacket("h264", "STAP-A: no units")
    return nals


def _invalid_inner(kind: int) -> bool:
    """Types that cannot appear inside an aggregation or fragmentation unit."""
    return kind in _UNSUPPORTED or kind in (STAP_A, FU_A)


class H264Depacketizer(FrameAssembler):
    """RTP payloads in sequence order (plus Gaps) -> Annex-B access units (``AssembledFrame``)."""

    def __init__(self, *, deliver_incomplete: bool = False) -> None:
        super().__init__(deliver_incomplete=deliver_incomplete)
        self._parts: list[bytes] = []
        self._fu_type: int | None = None  # NAL type of an open FU-A, None when none is open
        self._keyframe = False
        self._parameter_sets = False

    def _begin_frame(self) -> None:
        self._parts = []
        self._fu_type = None
        self._keyframe = False
        self._parameter_sets = False

    def _add_nal_start(self, header: int, rest: bytes) -> None:
        kind = header & 0x1F
        if kind == NAL_IDR:
            self._keyframe = True
        elif kind in (NAL_SPS, NAL_PPS):
            self._parameter_sets = True
        self._parts += (START_CODE, bytes((header,)), rest)

    def _append(self, payload: bytes) -> bool:
        kind = payload[0] & 0x1F
        if kind == FU_A and len(payload) > 1:
            header = payload[1]
            if not header & _FU_START and header & 0x1F == self._fu_type:
                # A middle or end fragment of the open FU-A (most packets of a frame).
                self._parts.append(payload[2:])
                if header & _FU_END:
                    self._fu_type = None
                return True
            return self._append_fu_a(payload)
        if kind in _UNSUPPORTED:
            raise UnsupportedPayload("h264", f"payload type {kind} ({_UNSUPPORTED[kind]})")
        if kind == FU_A:
            return self._append_fu_a(payload)
        nals = [payload]
        if kind == STAP_A:
            nals = parse_stap_a(payload)
            if any(_invalid_inner(nal_type(nal)) for nal in nals):
                raise MalformedPacket("h264", "STAP-A: invalid unit type")
        whole = self._fu_type is None  # an open FU-A never got its end
        self._fu_type = None
        for nal in nals:
            self._add_nal_start(nal[0], nal[1:])
        return whole

    def _append_fu_a(self, payload: bytes) -> bool:
        if len(payload) < 2:
            raise MalformedPacket("h264", "FU-A: missing FU header")
        indicator, header = payload[0], payload[1]
        inner = header & 0x1F
        if _invalid_inner(inner):
            raise MalformedPacket("h264", f"FU-A: invalid inner NAL type {inner}")
        if header & _FU_START:
            whole = self._fu_type is None
            self._add_nal_start((indicator & 0xE0) | inner, payload[2:])
            # S and E together is a protocol violation but carries a whole NAL; accept it.
            self._fu_type = None if header & _FU_END else inner
            return whole
        if self._fu_type != inner:
            # A middle/end fragment without its start (or of another NAL): the bytes are useless.
            self._fu_type = None
            return False
        self._parts.append(payload[2:])
        if header & _FU_END:
            self._fu_type = None
        return True

    def _end_frame(self) -> tuple[bytes, bool, bool, bool]:
        whole = self._fu_type is None
        data = b"".join(self._parts)
        keyframe, parameter_sets = self._keyframe, self._parameter_sets
        self._begin_frame()
        return data, keyframe, whole, parameter_sets


class ParameterSetCache:
    """Remembers the latest SPS/PPS and restores them on IDR frames that lack them.

    Use only on *decrypted* frames: prepending before DAVE decrypt would shift DAVE's range offsets.
    """

    def __init__(self) -> None:
        self._sps: bytes | None = None
        self._pps: bytes | None = None

    @property
    def sps(self) -> bytes | None:
        return self._sps

    @property
    def pps(self) -> bytes | None:
        return self._pps

    def observe(self, frame: bytes) -> None:
        """Cache any SPS/PPS in ``frame`` (Annex-B)."""
        self._observe(split_nals(frame))

    def _observe(self, nals: list[bytes]) -> None:
        for nal in nals:
            if nal_type(nal) == NAL_SPS:
                self._sps = nal
            elif nal_type(nal) == NAL_PPS:
                self._pps = nal

    def prepend_missing(self, frame: bytes) -> bytes:
        """Cache SPS/PPS from ``frame``; if it is an IDR lacking them, return it with them prepended.

        The parameter sets go after a leading AUD (which must stay first in an access unit).
        """
        nals = split_nals(frame)
        self._observe(nals)
        types = {nal_type(nal) for nal in nals}
        if NAL_IDR not in types:
            return frame
        missing = [
            cached
            for kind, cached in ((NAL_SPS, self._sps), (NAL_PPS, self._pps))
            if kind not in types and cached is not None
        ]
        if not missing:
            return frame
        prefix = b"".join(START_CODE + nal for nal in missing)
        if nals and nal_type(nals[0]) == NAL_AUD:
            aud_end = frame.find(nals[0]) + len(nals[0])
            return frame[:aud_end] + prefix + frame[aud_end:]
        return prefix + frame


def packetize_h264(access_unit: bytes, mtu: int = 1100, *, aggregate: bool = False) -> list[bytes]:
    """RTP payloads for one Annex-B access unit (3- or 4-byte start codes).

    NALs that fit in ``mtu`` go as single-NAL packets, bigger ones as FU-A fragments. With
    ``aggregate``, runs of consecutive small NALs (e.g. SPS+PPS) share one STAP-A packet. The caller
    sets the marker bit on the last packet and one timestamp on all of them.
    """
    if mtu < 3:
        raise UsageError("H264 packetization needs mtu >= 3")
    packets: list[bytes] = []
    pending: list[bytes] = []  # small NALs waiting to be aggregated

    def flush_pending() -> None:
        if len(pending) == 1:
            packets.append(pending[0])
        elif pending:
            packets.append(_stap_a(pending))
        pending.clear()

    for nal in split_nals(access_unit):
        if len(nal) > mtu:
            flush_pending()
            packets += _fu_a(nal, mtu)
            continue
        if not aggregate:
            packets.append(nal)
            continue
        if pending and _stap_a_size([*pending, nal]) > mtu:
            flush_pending()
        pending.append(nal)
    flush_pending()
    return packets


def _stap_a_size(nals: list[bytes]) -> int:
    return 1 + sum(2 + len(nal) for nal in nals)


def _stap_a(nals: list[bytes]) -> bytes:
    forbidden = max(nal[0] & 0x80 for nal in nals)
    nri = max(nal[0] & 0x60 for nal in nals)
    body = b"".join(_U16.pack(len(nal)) + nal for nal in nals)
    return bytes((forbidden | nri | STAP_A,)) + body


def _fu_a(nal: bytes, mtu: int) -> list[bytes]:
    indicator = (nal[0] & 0xE0) | FU_A
    kind = nal[0] & 0x1F
    body = nal[1:]
    chunk = mtu - 2
    fragments = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    out: list[bytes] = []
    for index, fragment in enumerate(fragments):
        header = kind
        if index == 0:
            header |= _FU_START
        if index == len(fragments) - 1:
            header |= _FU_END
        out.append(bytes((indicator, header)) + fragment)
    return out
