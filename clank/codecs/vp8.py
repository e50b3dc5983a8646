"""VP8 over RTP (RFC 7741): payload descriptor, depacketizer, packetizer.

Payload descriptor (first bytes of every VP8 RTP payload):

    byte0           X | R | N | S | R | PID(3)     S=1: first packet of a partition; PID=0: first partition
    if X: byte1     I | L | T | K | RSV(4)
      if I:         M | PictureID(7)  [+ PictureID low byte when M=1: 15-bit id]
      if L:         TL0PICIDX(8)
      if T or K:    TID(2) | Y(1) | KEYIDX(5)
    then the VP8 payload; on a frame's first packet its first byte's bit0 is the *inverse* key flag.
"""

from __future__ import annotations

import attrs

from clank.codecs.assembly import FrameAssembler
from clank.errors import MalformedPacket, UsageError

_X = 0x80
_N = 0x20
_S = 0x10
_PID = 0x07
_I = 0x80
_L = 0x40
_T = 0x20
_K = 0x10
_M = 0x80
PICTURE_ID_MOD = 1 << 15
_DESCRIPTOR_SIZE = 4  # what packetize_vp8 writes: byte0, X byte, 2-byte PictureID


@attrs.frozen
class Vp8Descriptor:
    """A parsed VP8 payload descriptor; ``size`` is its length in bytes."""

    non_reference: bool
    start: bool
    partition: int
    picture_id: int | None
    tl0_pic_idx: int | None
    tid: int | None
    layer_sync: bool
    key_idx: int | None
    size: int

    @property
    def frame_start(self) -> bool:
        return self.start and self.partition == 0

    @classmethod
    def parse(cls, payload: bytes) -> Vp8Descriptor:
        """Parse the descriptor; MalformedPacket if truncated or nothing follows it."""

        def byte_at(index: int) -> int:
            if index >= len(payload):
                raise MalformedPacket("vp8", "truncated payload descriptor")
            return payload[index]

        first = byte_at(0)
        offset = 1
        picture_id = tl0 = tid = key_idx = None
        layer_sync = False
        if first & _X:
            ext = byte_at(offset)
            offset += 1
            if ext & _I:
                high = byte_at(offset)
                offset += 1
                if high & _M:
                    picture_id = ((high & 0x7F) << 8) | byte_at(offset)
                    offset += 1
                else:
                    picture_id = high & 0x7F
            if ext & _L:
                tl0 = byte_at(offset)
                offset += 1
            if ext & (_T | _K):
                tk = byte_at(offset)
                offset += 1
                if ext & _T:
                    tid = tk >> 6
                    layer_sync = bool(tk & 0x20)
                if ext & _K:
                    key_idx = tk & 0x1F
        if offset >= len(payload):
            raise MalformedPacket("vp8", "no payload after descriptor")
        return cls(
            non_reference=bool(first & _N),
            start=bool(first & _S),
            partition=first & _PID,
            picture_id=picture_id,
            tl0_pic_idx=tl0,
            tid=tid,
            layer_sync=layer_sync,
            key_idx=key_idx,
            size=offset,
        )


def descriptor_span(payload: bytes) -> tuple[int, bool]:
    """``(size, frame_start)`` of ``Vp8Descriptor.parse(payload)`` without building it (per
    packet on the receive path); the same MalformedPacket for the same bad bytes."""
    n = len(payload)
    if not n:
        raise MalformedPacket("vp8", "truncated payload descriptor")
    first = payload[0]
    offset = 1
    if first & _X:
        if n <= 1:
            raise MalformedPacket("vp8", "truncated payload descriptor")
        ext = payload[1]
        offset = 2
        if ext & _I:
            if offset >= n:
                raise MalformedPacket("vp8", "truncated payload descriptor")
            offset += 2 if payload[offset] & _M else 1
        offset += bool(ext & _L) + bool(ext & (_T | _K))
        if offset > n:
            raise MalformedPacket("vp8", "truncated payload descriptor")
    if offset >= n:
        raise MalformedPacket("vp8", "no payload after descriptor")
    return offset, first & (_S | _PID) == _S


class Vp8Depacketizer(FrameAssembler):
    """RTP payloads in sequence order (plus Gaps) -> VP8 frames (``AssembledFrame``)."""

    def __init__(self, *, deliver_incomplete: bool = False) -> None:
        super().__init__(deliver_incomplete=deliver_incomplete)
        self._parts: list[bytes] = []
        self._started = False
        self._keyframe = False

    def _begin_frame(self) -> None:
        self._parts = []
        self._started = False
        self._keyframe = False

    def _append(self, payload: bytes) -> bool:
        size, frame_start = descriptor_span(payload)
        body = payload[size:]
        if frame_start:
            if self._started:
                return False  # a second frame start under one timestamp: boundaries are lost
            self._started = True
            self._keyframe = body[0] & 0x01 == 0
        elif not self._started:
            return False  # the frame's first packet is missing
        self._parts.append(body)
        return True

    def _end_frame(self) -> tuple[bytes, bool, bool, bool]:
        result = (b"".join(self._parts), self._keyframe, self._started, False)
        self._begin_frame()
        return result


def packetize_vp8(frame: bytes, picture_id: int, mtu: int = 1100) -> list[bytes]:
    """RTP payloads for one VP8 frame with descriptor ``[0x80|S] [0x80] [0x80|pid_hi] [pid_lo]``.

    ``picture_id`` is taken mod 2**15; the caller increments it per frame and sets the marker on the
    last packet.
    """
    if mtu <= _DESCRIPTOR_SIZE:
        raise UsageError(f"VP8 packetization needs mtu > {_DESCRIPTOR_SIZE}")
    if not frame:
        raise UsageError("cannot packetize an empty VP8 frame")
    pid = picture_id % PICTURE_ID_MOD
    tail = bytes((_I, _M | (pid >> 8), pid & 0xFF))
    chunk = mtu - _DESCRIPTOR_SIZE
    return [
        bytes((_X | (_S if offset == 0 else 0),)) + tail + frame[offset : offset + chunk]
        for offset in range(0, len(frame), chunk)
    ]
