"""Frame assembly shared by the H264 and VP8 depacketizers: boundaries, gaps, counters.

The rules (see discord-protocol.md §5.2 and §7.7 causes 1-3):
- a frame ends on the marker bit, or when a packet with another timestamp arrives;
- a hole in the sequence (a ``Gap`` from the reorder buffer, or a discontinuity when fed directly)
  damages the frame in progress *and* the next frame to start (the missing packets may have been the
  end of one or the start of the other);
- a damaged frame is never handed on as complete (DAVE would fail on it); it is dropped and counted,
  and a keyframe becomes needed until a complete keyframe is assembled;
- bad payloads are counted and dropped; ``push`` never raises on network input.
"""

from __future__ import annotations

import attrs

from clank.codecs.packet import SEQ_MOD, AssembledFrame, Gap, MediaPacket
from clank.errors import MalformedPacket


class UnsupportedPayload(MalformedPacket):
    """A well-formed payload of a kind we do not handle (e.g. H264 STAP-B, MTAP, FU-B)."""


@attrs.frozen
class DepacketizerStatistics:
    """Every pushed packet lands in exactly one of accepted/malformed/unsupported/duplicates/empty."""

    packets: int
    accepted: int
    malformed: int
    unsupported: int
    duplicates: int
    empty: int
    gaps: int
    frames_started: int
    frames_complete: int
    frames_dropped: int
    keyframes: int


class FrameAssembler:
    """Codec-independent depacketizer driver; subclasses parse payloads into the frame body."""

    def __init__(self, *, deliver_incomplete: bool = False) -> None:
        self._deliver_incomplete = deliver_incomplete
        self._keyframe_needed = True  # nothing decodable until the first keyframe
        self._prev_seq: int | None = None
        self._gap_before_next = False
        self._in_frame = False
        self._timestamp = 0
        self._first_seq = 0
        self._last_seq = 0
        self._count = 0
        self._damaged = False
        self._packets = 0
        self._accepted = 0
        self._malformed = 0
        self._unsupported = 0
        self._duplicates = 0
        self._empty = 0
        self._gaps = 0
        self._frames_started = 0
        self._frames_complete = 0
        self._frames_dropped = 0
        self._keyframes = 0

    # -- codec hooks ---------------------------------------------------------------------------

    def _begin_frame(self) -> None:
        raise NotImplementedError

    def _append(self, payload: bytes) -> bool:
        """Add one payload to the frame body; False if it cannot follow what came before.

        Raises ``MalformedPacket`` (or ``UnsupportedPayload``) for bad bytes, before changing state.
        """
        raise NotImplementedError

    def _end_frame(self) -> tuple[bytes, bool, bool, bool]:
        """(data, keyframe, structurally complete, carries parameter sets) of the frame in progress."""
        raise NotImplementedError

    # -- public --------------------------------------------------------------------------------

    @property
    def keyframe_needed(self) -> bool:
        """True until a complete keyframe arrives, and again after a frame is dropped."""
        return self._keyframe_needed

    def push(self, item: MediaPacket | Gap) -> list[AssembledFrame]:
        """Feed one packet or Gap (in sequence order); returns frames that became ready."""
        if isinstance(item, Gap):
            self._on_gap()
            self._prev_seq = None if item.count == 0 else (item.first_seq + item.count - 1) % SEQ_MOD
            return []
        return self.push_packet(item)

    def flush(self) -> list[AssembledFrame]:
        """End the frame in progress (stream stopped); it is complete only if structurally whole."""
        return self._finish() if self._in_frame else []

    def statistics(self) -> DepacketizerStatistics:
        return DepacketizerStatistics(
            packets=self._packets,
            accepted=self._accepted,
            malformed=self._malformed,
            unsupported=self._unsupported,
            duplicates=self._duplicates,
            empty=self._empty,
            gaps=self._gaps,
            frames_started=self._frames_started,
            frames_complete=self._frames_complete,
            frames_dropped=self._frames_dropped,
            keyframes=self._keyframes,
        )

    # -- internals -----------------------------------------------------------------------------

    def _on_gap(self) -> None:
        self._gaps += 1
        self._gap_before_next = True
        if self._in_frame:
            self._damaged = True

    def push_packet(self, packet: MediaPacket) -> list[AssembledFrame]:
        """``push`` for a packet (the receive path's short form: no Gap check)."""
        self._packets += 1
        seq, timestamp, marker = packet.seq % SEQ_MOD, packet.timestamp, packet.marker
        payload = packet.payload
        previous = self._prev_seq
        if previous is not None:
            if seq == previous:
                self._duplicates += 1
                return []
            if seq != (previous + 1) % SEQ_MOD:
                self._on_gap()
        self._prev_seq = seq
        out: list[AssembledFrame] = []
        if self._in_frame and timestamp != self._timestamp:
            out = self._finish()
        if not payload:
            # Nothing to add (an all-padding packet should not get here); still honour the marker.
            self._empty += 1
            if marker and self._in_frame:
                out += self._finish()
            return out
        if not self._in_frame:
            self._start(packet)
        else:
            # The hole (if any) was inside this frame, which is already marked damaged.
            self._gap_before_next = False
        self._count += 1
        self._last_seq = seq
        try:
            if not self._append(payload):
                self._damaged = True
        except UnsupportedPayload:
            self._unsupported += 1
            self._damaged = True
        except MalformedPacket:
            self._malformed += 1
            self._damaged = True
        else:
            self._accepted += 1
        if marker:
            out += self._finish()
        return out

    def _start(self, packet: MediaPacket) -> None:
        self._in_frame = True
        self._frames_started += 1
        self._timestamp = packet.timestamp
        self._first_seq = packet.seq % SEQ_MOD
        self._last_seq = self._first_seq
        self._count = 0
        self._damaged = self._gap_before_next
        self._gap_before_next = False
        self._begin_frame()

    def _finish(self) -> list[AssembledFrame]:
        data, keyframe, whole, parameter_sets = self._end_frame()
        self._in_frame = False
        complete = whole and not self._damaged and bool(data)
        frame = AssembledFrame(
            timestamp=self._timestamp,
            data=data,
            keyframe=keyframe,
            complete=complete,
            first_seq=self._first_seq,
            last_seq=self._last_seq,
            packet_count=self._count,
            parameter_sets=parameter_sets,
        )
        if complete:
            self._frames_complete += 1
            if keyframe:
                self._keyframes += 1
                self._keyframe_needed = False
            return [frame]
        self._frames_dropped += 1
        self._keyframe_needed = True
        return [frame] if self._deliver_incomplete else []
