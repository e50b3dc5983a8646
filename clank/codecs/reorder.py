"""Per-SSRC reorder buffer for video RTP packets (sans-io, time is an argument).

Packets are released strictly in sequence order. When a packet is missing, the buffer waits for it
(a retransmission may come) for at most ``max_delay`` seconds measured from the moment a later packet
revealed the hole; after that the hole is released as a ``Gap`` so the depacketizer drops the frame
instead of handing DAVE a frame with missing bytes.

Sequence numbers are u16 on the wire; internally they are extended (cycle count * 65536 + seq) by
choosing the value nearest to the highest one seen, so wraparound at 65535 is invisible.

A forward or backward jump larger than ``max_jump`` is first treated as a stray packet; only if the
very next packet continues from it (RFC 3550 A.1 probation) is the stream considered restarted and the
buffer reset.
"""

from __future__ import annotations

from collections import Counter, OrderedDict

import attrs

from clank.codecs.packet import SEQ_MOD, Gap, MediaPacket
from clank.errors import UsageError

# Drop reasons (keys of ``ReorderStatistics.dropped``).
DROP_DUPLICATE = "duplicate"
DROP_TOO_LATE = "too_late"  # arrived after its hole was already released as a Gap
DROP_STALE = "stale"  # older than anything we still track
DROP_JUMP = "jump"  # a far-away sequence number on probation

_HALF = SEQ_MOD // 2
# How many declared-lost sequence numbers we remember to tell "too late" from "duplicate".
_LOST_MEMORY = 1024


@attrs.frozen
class ReorderStatistics:
    """``received`` = ``released`` + sum(``dropped``) + ``buffered``. ``reordered``: arrived after a
    higher seq; ``recovered``: arrived after ``missing()`` had reported it (e.g. answered by RTX);
    ``lost``: seqs released as Gaps."""

    received: int
    released: int
    duplicates: int
    reordered: int
    lost: int
    recovered: int
    resets: int
    buffered: int
    dropped: dict[str, int]


class ReorderBuffer:
    """Bounded in-order release of ``MediaPacket`` with loss deadlines; see the module docstring."""

    def __init__(self, capacity: int = 512, max_delay: float = 0.3, max_jump: int = 3000) -> None:
        if capacity < 1 or max_delay < 0 or max_jump < capacity:
            raise UsageError("need capacity >= 1, max_delay >= 0 and max_jump >= capacity")
        self._capacity = capacity
        self._max_delay = max_delay
        self._max_jump = max_jump
        self._packets: dict[int, MediaPacket] = {}
        # Extended seq -> time a later packet revealed it missing (only for seqs in [next, highest]).
        self._missing_since: dict[int, float] = {}
        self._reported_missing: set[int] = set()
        self._recently_lost: OrderedDict[int, None] = OrderedDict()
        self._next: int | None = None  # extended seq of the next packet to release
        self._origin = 0  # extended seq the stream (re)started at; anything older is stale
        self._highest = 0
        self._probation: int | None = None  # u16 seq that would confirm a jump
        self._ready: list[MediaPacket | Gap] = []
        self._received = 0
        self._released = 0
        self._duplicates = 0
        self._reordered = 0
        self._lost = 0
        self._recovered = 0
        self._resets = 0
        self._dropped: Counter[str] = Counter()

    # -- input ---------------------------------------------------------------------------------

    def insert(self, packet: MediaPacket, now: float) -> None:
        """Accept one packet (never raises for any u16 ``seq``)."""
        self._received += 1
        seq = packet.seq % SEQ_MOD
        if self._next is None:
            self._start_at(seq)
        assert self._next is not None
        ext = self._extend(seq)
        if ext > self._highest + self._max_jump or ext < self._next - self._max_jump:
            self._on_jump(packet, seq, now)
            return
        self._probation = None
        if ext < self._next:
            self._drop_old(ext)
            return
        if ext in self._packets:
            self._duplicates += 1
            self._dropped[DROP_DUPLICATE] += 1
            return
        if ext < self._highest:
            self._reordered += 1
        if ext in self._missing_since:
            del self._missing_since[ext]
            if ext in self._reported_missing:
                self._reported_missing.discard(ext)
                self._recovered += 1
        elif ext > self._highest:
            for hole in range(max(self._highest + 1, self._next), ext):
                self._missing_since[hole] = now
            self._highest = ext
        self._packets[ext] = packet
        self._make_room()

    def release_next(self, packet: MediaPacket) -> bool:
        """The in-order short path: True when ``packet`` is the next expected one and nothing is
        held, missing or waiting to be popped; it then counts as inserted and released, and the
        caller hands it on itself. False (nothing changed): use ``insert`` and ``pop_ready``."""
        following = self._next
        if (
            following is None
            or following != self._highest + 1
            or packet.seq != following & 0xFFFF
            or self._ready
            or self._missing_since
        ):
            return False
        self._received += 1
        self._released += 1
        self._probation = None
        self._highest = following
        self._next = following + 1
        return True

    def push(self, packet: MediaPacket, now: float) -> list[MediaPacket | Gap]:
        """``insert`` then ``pop_ready`` (through ``release_next`` when it applies)."""
        if self.release_next(packet):
            return [packet]
        self.insert(packet, now)
        return self.pop_ready(now)

    # -- output --------------------------------------------------------------------------------

    def pop_ready(self, now: float) -> list[MediaPacket | Gap]:
        """Everything releasable now, in order: packets, and Gaps for holes past their deadline."""
        self._release(now)
        ready, self._ready = self._ready, []
        return ready

    def missing(self, now: float) -> list[int]:
        """u16 sequence numbers currently known missing (candidates for NACK), oldest first."""
        del now  # part of the API so callers can't forget time; holes are reported as soon as seen
        found = sorted(self._missing_since)
        self._reported_missing.update(found)
        return [ext % SEQ_MOD for ext in found]

    def next_deadline(self) -> float | None:
        """When ``pop_ready`` will next have something to give up on, or None."""
        if self._next is None or self._next not in self._missing_since:
            return None
        return self._missing_since[self._next] + self._max_delay

    def statistics(self) -> ReorderStatistics:
        return ReorderStatistics(
            received=self._received,
            released=self._released,
            duplicates=self._duplicates,
            reordered=self._reordered,
            lost=self._lost,
            recovered=self._recovered,
            resets=self._resets,
            buffered=len(self._packets),
            dropped=dict(self._dropped),
        )

    # -- internals -----------------------------------------------------------------------------

    def _start_at(self, seq: int) -> None:
        # Start one cycle up so packets from "before" the first one never go negative.
        self._next = SEQ_MOD + seq
        self._origin = self._next
        self._highest = self._next - 1

    def _extend(self, seq: int) -> int:
        reference = max(self._highest, 0)
        delta = (seq - reference) % SEQ_MOD
        if delta >= _HALF:
            delta -= SEQ_MOD
        return reference + delta

    def _on_jump(self, packet: MediaPacket, seq: int, now: float) -> None:
        if self._probation != seq:
            self._probation = (seq + 1) % SEQ_MOD
            self._dropped[DROP_JUMP] += 1
            return
        # Two in a row: the sender really restarted. Flush what we hold, then start over.
        self._probation = None
        self._resets += 1
        self._flush_all()
        self._ready.append(Gap(first_seq=seq, count=0, reason="reset"))
        self._missing_since.clear()
        self._reported_missing.clear()
        self._recently_lost.clear()
        self._start_at(seq)
        self._received -= 1  # insert() counts it again
        self.insert(packet, now)

    def _drop_old(self, ext: int) -> None:
        if ext in self._recently_lost:
            self._dropped[DROP_TOO_LATE] += 1
        elif self._next is not None and ext >= self._origin and self._next - ext <= self._capacity:
            self._duplicates += 1
            self._dropped[DROP_DUPLICATE] += 1
        else:
            self._dropped[DROP_STALE] += 1

    def _make_room(self) -> None:
        assert self._next is not None
        # Keep every tracked seq within [next, next + capacity).
        while self._highest - self._next >= self._capacity:
            if self._next in self._packets:
                self._emit_packet(self._next)
            else:
                self._emit_lost_run("overflow", stop=self._highest - self._capacity + 1)

    def _release(self, now: float) -> None:
        assert self._next is not None or not self._packets
        while self._next is not None and self._next <= self._highest:
            if self._next in self._packets:
                self._emit_packet(self._next)
            elif self._missing_since.get(self._next, now) + self._max_delay <= now:
                self._emit_lost_run("lost", stop=None, now=now)
            else:
                break

    def _flush_all(self) -> None:
        while self._next is not None and self._next <= self._highest:
            if self._next in self._packets:
                self._emit_packet(self._next)
            else:
                self._emit_lost_run("lost", stop=None)

    def _emit_packet(self, ext: int) -> None:
        self._ready.append(self._packets.pop(ext))
        self._released += 1
        assert self._next is not None
        self._next += 1

    def _emit_lost_run(self, reason: str, stop: int | None, now: float | None = None) -> None:
        """Declare the run of missing seqs at ``next`` lost (up to ``stop`` or the next packet)."""
        assert self._next is not None
        first = self._next
        while self._next <= self._highest and self._next not in self._packets:
            if stop is not None and self._next >= stop:
                break
            since = self._missing_since.get(self._next)
            if now is not None and since is not None and since + self._max_delay > now:
                break
            self._missing_since.pop(self._next, None)
            self._reported_missing.discard(self._next)
            self._remember_lost(self._next)
            self._next += 1
        count = self._next - first
        if count:
            self._lost += count
            self._ready.append(Gap(first_seq=first % SEQ_MOD, count=count, reason=reason))

    def _remember_lost(self, ext: int) -> None:
        self._recently_lost[ext] = None
        while len(self._recently_lost) > _LOST_MEMORY:
            self._recently_lost.popitem(last=False)
