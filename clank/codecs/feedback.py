"""Receiver feedback decisions: which sequence numbers to NACK, when to ask for a keyframe.

Pure bookkeeping; the caller turns decisions into RTCP (Generic NACK, PLI or FIR) with the RTCP
wire module and passes ``now`` in seconds.

NACK timing per missing seq: first NACK ``first_delay`` after the hole was first reported (a little
reordering is normal), then every ``retry_interval`` (about one RTT), until ``give_up_after`` or
``max_retries``. At most ``max_packets_per_second`` NACK packets (token bucket, burst of the same
size); each packet lists at most ``max_seqs_per_packet`` seqs.

Keyframe requests: see ``KeyframePolicy`` and ``KEYFRAME_REASONS``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import attrs

from clank.codecs.packet import SEQ_MOD
from clank.errors import UsageError


@attrs.frozen
class NackPolicy:
    first_delay: float = 0.02
    retry_interval: float = 0.1
    give_up_after: float = 1.0
    max_retries: int = 10
    max_packets_per_second: float = 20.0
    max_seqs_per_packet: int = 64


@attrs.frozen
class NackStatistics:
    packets: int
    seqs_sent: int
    retries: int
    given_up: int
    resolved: int
    rate_limited: int
    tracked: int


@attrs.define
class _Missing:
    first_seen: float
    last_sent: float | None = None
    sent_count: int = 0


class NackScheduler:
    """Decides which missing seqs to NACK now; feed it the reorder buffer's ``missing()`` list."""

    def __init__(self, policy: NackPolicy | None = None) -> None:
        self._policy = policy or NackPolicy()
        if self._policy.max_packets_per_second <= 0 or self._policy.max_seqs_per_packet < 1:
            raise UsageError("NackPolicy needs a positive rate and max_seqs_per_packet >= 1")
        self._retry_interval = self._policy.retry_interval
        self._tracked: dict[int, _Missing] = {}
        self._abandoned: set[int] = set()  # given up, but still reported missing: don't restart
        self._tokens = self._policy.max_packets_per_second
        self._refilled_at: float | None = None
        self._packets = 0
        self._seqs_sent = 0
        self._retries = 0
        self._given_up = 0
        self._resolved = 0
        self._rate_limited = 0

    def set_rtt(self, rtt: float) -> None:
        """Retry about once per round trip (never faster than 10 ms)."""
        self._retry_interval = max(0.01, rtt)

    def poll(self, missing: Iterable[int], now: float) -> list[int]:
        """The u16 seqs to put in one NACK packet now (empty: send nothing)."""
        self._track(missing, now)
        policy = self._policy
        due: list[int] = []
        for seq, state in list(self._tracked.items()):
            if now - state.first_seen >= policy.give_up_after or state.sent_count >= policy.max_retries:
                del self._tracked[seq]
                self._abandoned.add(seq)
                self._given_up += 1
            elif now >= self._due_at(state):
                due.append(seq)
        if not due:
            return []
        self._refill(now)
        if self._tokens < 1:
            self._rate_limited += 1
            return []
        self._tokens -= 1
        due = due[: policy.max_seqs_per_packet]
        for seq in due:
            state = self._tracked[seq]
            if state.sent_count:
                self._retries += 1
            state.sent_count += 1
            state.last_sent = now
        self._packets += 1
        self._seqs_sent += len(due)
        return due

    def next_deadline(self) -> float | None:
        """The earliest time at which ``poll`` may have something new to do."""
        times = [
            min(self._due_at(state), state.first_seen + self._policy.give_up_after)
            for state in self._tracked.values()
        ]
        return min(times) if times else None

    def statistics(self) -> NackStatistics:
        return NackStatistics(
            packets=self._packets,
            seqs_sent=self._seqs_sent,
            retries=self._retries,
            given_up=self._given_up,
            resolved=self._resolved,
            rate_limited=self._rate_limited,
            tracked=len(self._tracked),
        )

    def _track(self, missing: Iterable[int], now: float) -> None:
        current = {seq % SEQ_MOD for seq in missing}
        for seq in [seq for seq in self._tracked if seq not in current]:
            # Arrived, or the reorder buffer gave up on it: either way, stop asking.
            del self._tracked[seq]
            self._resolved += 1
        self._abandoned &= current
        for seq in sorted(current - self._abandoned):
            self._tracked.setdefault(seq, _Missing(first_seen=now))

    def _due_at(self, state: _Missing) -> float:
        if state.last_sent is None:
            return state.first_seen + self._policy.first_delay
        return state.last_sent + self._retry_interval

    def _refill(self, now: float) -> None:
        rate = self._policy.max_packets_per_second
        if self._refilled_at is not None:
            self._tokens = min(rate, self._tokens + (now - self._refilled_at) * rate)
        self._refilled_at = now


class KeyframeReason(enum.Enum):
    JOIN = "join"  # first join: nothing decodable until an IDR
    GAP = "gap"  # a frame was lost beyond recovery
    DECODER_RESET = "decoder_reset"  # the decoder was recreated or reported an error


# Every reason triggers a request; the table is here so tests (and readers) can iterate over it.
KEYFRAME_REASONS: tuple[KeyframeReason, ...] = tuple(KeyframeReason)


class KeyframeRequestKind(enum.Enum):
    PLI = "pli"
    FIR = "fir"


@attrs.frozen
class KeyframePolicy:
    """``min_interval``: never two requests closer than this; ``repeat_interval``: re-ask this often
    until a keyframe arrives (the seed used 2 s)."""

    kind: KeyframeRequestKind = KeyframeRequestKind.PLI
    min_interval: float = 1.0
    repeat_interval: float = 2.0


@attrs.frozen
class KeyframeRequest:
    kind: KeyframeRequestKind
    reason: KeyframeReason
    fir_seq: int | None  # FIR command sequence number (u8), None for PLI


@attrs.frozen
class KeyframeStatistics:
    needed: int
    requests: int
    satisfied: int


class KeyframeRequester:
    """Rate-limited keyframe requests: call ``need``/``keyframe_received``, then ``poll``."""

    def __init__(self, policy: KeyframePolicy | None = None) -> None:
        self._policy = policy or KeyframePolicy()
        if self._policy.min_interval < 0 or self._policy.repeat_interval < self._policy.min_interval:
            raise UsageError("KeyframePolicy needs 0 <= min_interval <= repeat_interval")
        self._pending: KeyframeReason | None = None
        self._pending_since = 0.0
        self._outstanding = False  # a request was sent for the current need
        self._last_request: float | None = None
        self._fir_seq = 0
        self._needed = 0
        self._requests = 0
        self._satisfied = 0

    @property
    def waiting(self) -> bool:
        """True while a keyframe is needed and has not arrived."""
        return self._pending is not None

    def need(self, reason: KeyframeReason, now: float) -> None:
        """A keyframe is needed (repeat calls for the same outage are harmless)."""
        if self._pending is None:
            self._needed += 1
            self._pending = reason
            self._pending_since = now

    def keyframe_received(self) -> None:
        if self._pending is not None:
            self._satisfied += 1
        self._pending = None
        self._outstanding = False

    def answer_lost(self) -> None:
        """The keyframe that answered our request arrived unusable (it failed DAVE decrypt: the
        sender's first frame under new keys, say). Waiting ``repeat_interval`` for a sender that did
        answer would cost a second of pictures; the next request is due after ``min_interval``."""
        self._outstanding = False

    def poll(self, now: float) -> KeyframeRequest | None:
        """A request to send now, or None."""
        deadline = self.next_deadline()
        if self._pending is None or deadline is None or now < deadline:
            return None
        self._last_request = now
        self._outstanding = True
        self._requests += 1
        fir_seq = None
        if self._policy.kind is KeyframeRequestKind.FIR:
            fir_seq = self._fir_seq
            self._fir_seq = (self._fir_seq + 1) % 256
        return KeyframeRequest(kind=self._policy.kind, reason=self._pending, fir_seq=fir_seq)

    def next_deadline(self) -> float | None:
        if self._pending is None:
            return None
        if self._last_request is None:
            return self._pending_since
        interval = self._policy.repeat_interval if self._outstanding else self._policy.min_interval
        return max(self._pending_since, self._last_request + interval)

    def statistics(self) -> KeyframeStatistics:
        return KeyframeStatistics(needed=self._needed, requests=self._requests, satisfied=self._satisfied)
