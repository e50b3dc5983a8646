"""Voice gateway heartbeat clock (sans-io): op3 cadence, nonces, op6 acks, zombie detection.

Owned by :class:`~clank.protocol.voice_gateway.VoiceGatewayCore`. Time is an argument; the
clock says when the next op3 is due and whether the previous one was answered.
"""

from __future__ import annotations

__all__ = ["HeartbeatClock"]


class HeartbeatClock:
    """One connection's heartbeat state (reset on each new websocket). Not thread-safe."""

    def __init__(self) -> None:
        self.cadence: float | None = None
        """Seconds between op3s (Hello's interval, capped); ``None`` before Hello."""
        self.next_due: float | None = None
        self._pending_nonce: int | None = None
        self._pending_sent_at = 0.0
        self._last_nonce = -1
        self.sent = 0
        self.acks = 0
        self.latency: float | None = None

    @property
    def outstanding(self) -> bool:
        """An op3 is waiting for its op6."""
        return self._pending_nonce is not None

    def start(self, interval: float, cap: float | None, now: float) -> None:
        """Hello: beat every ``interval`` seconds (or ``cap``, when shorter), first one in a cadence."""
        self.cadence = interval if cap is None else min(interval, cap)
        self.next_due = now + self.cadence

    def update_cadence(self, interval: float, cap: float | None) -> None:
        """A repeated Hello only changes the cadence."""
        self.cadence = interval if cap is None else min(interval, cap)

    def beat(self, now: float) -> int:
        """Record an op3 sent now; returns its nonce (monotonic milliseconds)."""
        nonce = max(int(now * 1000), self._last_nonce + 1)
        self._last_nonce = nonce
        self._pending_nonce = nonce
        self._pending_sent_at = now
        self.sent += 1
        if self.cadence is not None:
            self.next_due = now + self.cadence
        return nonce

    def ack(self, now: float) -> float | None:
        """An op6 (any ``t``: Discord's need not echo ours); the latency, or ``None`` if unasked."""
        if self._pending_nonce is None:
            return None
        self._pending_nonce = None
        self.acks += 1
        self.latency = max(0.0, now - self._pending_sent_at)
        return self.latency

    def stop(self) -> None:
        """The connection ended: nothing is due, nothing outstanding."""
        self.next_due = None
        self._pending_nonce = None

    def reset(self) -> None:
        """A new websocket: no cadence until its Hello."""
        self.cadence = None
        self.stop()
