"""Receiver-side bandwidth estimate for watched video, sent as REMB (sans-io, clock-free).

Discord's answer SDP lists ``goog-remb`` (and ``transport-cc``) for video: its SFU picks what to
forward to a viewer (simulcast layer, bitrate) from the viewer's feedback. A viewer that sends
none may be kept on the lowest layer. :class:`RembController` turns what the watch observes into
one REMB per interval:

* **receive rate**: bytes of the watched SSRCs since the last REMB (the pipeline counts them);
* **loss**: the fraction of packets given up on in the interval (the receiver's statistics);
* **decode capacity**: access units the decode worker had to drop (its queue was full).

Rules, per interval (the loss-based half of Google congestion control, which libwebrtc's REMB
senders use too): the decoder falling behind caps the estimate at 85 % of what arrived; loss
above 10 % multiplies it by ``1 - loss / 2``; loss below 2 % grows it by 8 % (to at least 1.5x
what arrived, so an idle start climbs quickly); in between it holds. It never leaves
``[min_bps, max_bps]``; ``max_bps`` is our decode ceiling (config ``watch.remb_max_kbps``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import attrs

from clank.errors import UsageError
from clank.wire.rtcp_feedback import Remb

__all__ = ["RembConfig", "RembController", "RembInputs", "RembStatistics"]

LOSS_HIGH: Final = 0.10
LOSS_LOW: Final = 0.02
GROWTH: Final = 1.08
OBSERVED_HEADROOM: Final = 1.5
DECODER_BEHIND: Final = 0.85


@attrs.frozen
class RembConfig:
    max_bps: int = 8_000_000
    """Our decode ceiling: the estimate never goes above it."""
    min_bps: int = 150_000
    start_bps: int = 2_500_000
    """First estimate (Discord's 720p30 Go Live layer is around 2.5 Mb/s)."""
    interval: float = 1.0
    """Seconds between REMBs (libwebrtc sends about one a second)."""

    def __attrs_post_init__(self) -> None:
        if not 0 < self.min_bps <= self.max_bps:
            raise UsageError(f"REMB bounds must be 0 < min <= max, got {self.min_bps}..{self.max_bps}")
        if self.interval <= 0:
            raise UsageError(f"REMB interval must be > 0, got {self.interval}")


@attrs.frozen
class RembInputs:
    """What the watch saw since the previous REMB (the pipeline gathers it)."""

    bytes_received: int
    packets_expected: int
    """Packets received plus packets given up on in the interval."""
    packets_lost: int
    decoder_dropped: int
    """Access units the decode worker dropped (queue full): we cannot decode what arrives."""


@attrs.frozen
class RembStatistics:
    sent: int
    estimate_bps: int
    received_bps: int
    """Receive rate of the watched SSRCs over the last interval, bits/s."""
    loss: float
    decoder_limited: int
    """Intervals in which the decoder's drops capped the estimate."""


class RembController:
    """One per video pipeline. ``due(now)`` says whether ``next(...)`` should run now."""

    def __init__(self, config: RembConfig) -> None:
        self.config = config
        self._estimate = min(max(config.start_bps, config.min_bps), config.max_bps)
        self._last_at: float | None = None
        self._sent = 0
        self._received_bps = 0
        self._loss = 0.0
        self._decoder_limited = 0

    @property
    def estimate_bps(self) -> int:
        return self._estimate

    @property
    def last_at(self) -> float | None:
        """When the current interval began (None before the first ``next``)."""
        return self._last_at

    def next_deadline(self) -> float | None:
        return None if self._last_at is None else self._last_at + self.config.interval

    def due(self, now: float) -> bool:
        return self._last_at is None or now >= self._last_at + self.config.interval

    def next(self, inputs: RembInputs, now: float, sender_ssrc: int, ssrcs: Iterable[int]) -> Remb | None:
        """Update the estimate from one interval's observations; the REMB to send.

        None on the first call (it only starts the first interval) and when no SSRC is watched.
        """
        if self._last_at is None:
            self._last_at = now
            return None
        elapsed = now - self._last_at
        if elapsed <= 0:
            return None
        self._last_at = now
        cfg = self.config
        received = int(inputs.bytes_received * 8 / elapsed)
        loss = inputs.packets_lost / inputs.packets_expected if inputs.packets_expected > 0 else 0.0
        self._received_bps, self._loss = received, loss
        estimate = float(self._estimate)
        if inputs.decoder_dropped > 0 and received > 0:
            estimate = min(estimate, received * DECODER_BEHIND)
            self._decoder_limited += 1
        elif loss > LOSS_HIGH:
            estimate *= 1 - loss / 2
        elif loss < LOSS_LOW:
            estimate = max(estimate * GROWTH, received * OBSERVED_HEADROOM)
        self._estimate = int(min(max(estimate, cfg.min_bps), cfg.max_bps))
        targets = tuple(sorted(set(ssrcs)))
        if not targets:
            return None
        self._sent += 1
        return Remb(sender_ssrc=sender_ssrc, bitrate=self._estimate, ssrcs=targets)

    def statistics(self) -> RembStatistics:
        return RembStatistics(
            sent=self._sent,
            estimate_bps=self._estimate,
            received_bps=self._received_bps,
            loss=self._loss,
            decoder_limited=self._decoder_limited,
        )
