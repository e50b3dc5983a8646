"""RTCP receive statistics for one RTP source (RFC 3550 A.3 / A.8): loss, jitter, LSR/DLSR.

Sans-io and clock-free: callers pass ``now`` (seconds). The video receiver
(``protocol/video_receive.py``) keeps one per received stream, counts primary packets into it,
notes the sender's Sender Reports and turns it into a receiver-report block on its schedule.
"""

from __future__ import annotations

from typing import Final

from clank.wire.rtcp import ReportBlock

MAX_REPORT_BLOCKS: Final = 31  # RTCP count field
NTP_MIDDLE_MASK: Final = 0xFFFF_FFFF
VIDEO_CLOCK: Final = 90_000


class ReceptionStatistics:
    """RFC 3550 A.3 / A.8 reception statistics for one source (primary packets only)."""

    def __init__(self) -> None:
        self.base: int | None = None  # extended seq of the first packet
        self.highest = 0  # extended highest seq
        self.received = 0
        self.expected_prior = 0
        self.received_prior = 0
        self.transit: float | None = None
        self.jitter = 0.0  # in RTP timestamp units
        self.last_sr: int = 0  # middle 32 bits of the last SR's NTP timestamp
        self.last_sr_at: float | None = None

    def sender_report(self, ntp_timestamp: int, now: float) -> None:
        """Remember a Sender Report of this source, for LSR/DLSR in our next report block."""
        self.last_sr = (ntp_timestamp >> 16) & NTP_MIDDLE_MASK
        self.last_sr_at = now

    def packet(self, seq: int, timestamp: int, now: float) -> bool:
        """Count one packet; True when it revealed a hole (a sequence number was skipped)."""
        # Per packet on the receive path: constants inlined (SEQ_MOD, VIDEO_CLOCK), one branch each.
        self.received += 1
        hole = False
        if self.base is None:
            self.base = self.highest = seq
        else:
            delta = (seq - self.highest) & 0xFFFF
            if delta < 0x8000:
                self.highest += delta
                hole = delta > 1
        transit = now * 90_000 - timestamp
        previous = self.transit
        self.transit = transit
        if previous is not None:
            d = transit - previous
            if d < 0:
                d = -d
            # Timestamps jump by whole frames; ignore absurd values (restarts, wraps).
            if d < 900_000:
                self.jitter += (d - self.jitter) / 16
        return hole

    def block(self, ssrc: int, now: float) -> ReportBlock | None:
        if self.base is None:
            return None
        expected = self.highest - self.base + 1
        lost = max(0, expected - self.received)
        expected_interval = expected - self.expected_prior
        received_interval = self.received - self.received_prior
        self.expected_prior, self.received_prior = expected, self.received
        lost_interval = expected_interval - received_interval
        fraction = (
            0 if expected_interval <= 0 or lost_interval <= 0 else (lost_interval << 8) // expected_interval
        )
        dlsr = 0
        if self.last_sr_at is not None:
            dlsr = int((now - self.last_sr_at) * 65536) & 0xFFFF_FFFF
        return ReportBlock(
            ssrc=ssrc,
            fraction_lost=min(fraction, 255),
            cumulative_lost=min(lost, 0x7FFFFF),
            highest_sequence=self.highest & 0xFFFF_FFFF,
            jitter=int(self.jitter) & 0xFFFF_FFFF,
            last_sr=self.last_sr,
            delay_since_last_sr=dlsr,
        )
