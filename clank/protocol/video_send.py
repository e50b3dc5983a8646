"""The sans-io send core of a Go Live publisher: packetize, pace, RTX, sender reports, keyframe asks.

One :class:`VideoSendCore` per published video stream (discord-protocol.md §5.3, §4.6, §4.7)::

    encrypted access unit ──push_frame──► H264 packetizer (single NAL / STAP-A / FU-A, marker on
                                          the last packet, one 90 kHz timestamp per frame)
                                            │  RetransmissionStore.remember (seq -> payload)
                                            ▼
    RTCP NACK ──on_rtcp──► RTX (RFC 4588) ─► pacer: RTX first, then media; a leaky bucket at
    RTCP PLI/FIR ─► keyframe wanted            ``pacing_factor`` x max bitrate with a small burst
                                            │
                                     poll(now) ──► OutgoingPacket (header + plaintext)

Time is an argument: ``now`` (monotonic seconds) and, for sender reports, ``wallclock`` (Unix
seconds). The driver seals and sends what :meth:`VideoSendCore.poll` returns, sleeps until
:meth:`VideoSendCore.next_deadline`, and asks :meth:`VideoSendCore.take_keyframe_request` before
encoding each frame. Keyframe requests are rate limited (``keyframe_min_interval``): a PLI storm
costs one IDR per interval, and a request inside the interval is kept and served when it ends.

The DAVE sender retry rule (§7.6) lives here too: :func:`dave_h264_frame_is_safe` says whether
an encrypted access unit can be split on start codes (no ``00 00 01`` outside the clear ranges),
and :func:`encrypt_h264_checked` retries the encryptor (a fresh nonce each call) until it is.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from typing import Final

import attrs

from clank.codecs.h264 import packetize_h264
from clank.codecs.rtx import RetransmissionStore
from clank.crypto.dave_wire import MAGIC_MARKER, DaveTrailer
from clank.errors import MalformedPacket, UsageError
from clank.wire import rtcp
from clank.wire import voice_gateway as vg
from clank.wire.rtp import VIDEO_EXTENSION, RtpExtension, RtpHeader

__all__ = [
    "DAVE_ENCRYPT_ATTEMPTS",
    "VIDEO_CLOCK",
    "OutgoingPacket",
    "VideoSendConfig",
    "VideoSendCore",
    "VideoSendStatistics",
    "dave_h264_frame_is_safe",
    "encrypt_h264_checked",
]

VIDEO_CLOCK: Final = 90_000
#: How often the encryptor is retried for a frame whose ciphertext contains a start code (libdave: 10).
DAVE_ENCRYPT_ATTEMPTS: Final = 10
#: Seconds between NTP (1900) and Unix (1970) epochs.
_NTP_EPOCH_OFFSET: Final = 2_208_988_800
_SHORT_START_CODE: Final = b"\x00\x00\x01"
#: Window over which the send bitrate is measured.
_RATE_WINDOW: Final = 2.0


@attrs.frozen
class VideoSendConfig:
    ssrc: int
    rtx_ssrc: int
    payload_type: int = vg.H264_PT
    rtx_payload_type: int = vg.H264_RTX_PT
    fps: int = 30
    max_bitrate: int = 2_500_000
    mtu: int = 1100
    """RTP payload bytes per packet (before the extension elements)."""
    aggregate: bool = True
    """Small NALs (SPS + PPS) share one STAP-A packet."""
    pacing_factor: float = 2.5
    """The pacer drains at this multiple of ``max_bitrate``."""
    burst_bytes: int = 8 * 1100
    """Bytes that may leave back to back before the pacer spaces packets."""
    max_queue_seconds: float = 0.5
    """A backlog longer than this (at the pacing rate) is flushed and a keyframe asked for."""
    rtx_capacity: int = 2048
    min_resend_interval: float = 0.02
    keyframe_min_interval: float = 0.5
    sr_interval: float = 5.0
    extension: RtpExtension = VIDEO_EXTENSION
    first_sequence: int = 0
    first_rtx_sequence: int = 0
    first_timestamp: int = 0

    def __attrs_post_init__(self) -> None:
        if self.fps < 1 or self.max_bitrate < 1 or self.mtu < 64 or self.pacing_factor <= 0:
            raise UsageError("video send config needs fps >= 1, max_bitrate >= 1, mtu >= 64, pacing > 0")

    @property
    def pacing_rate(self) -> float:
        """Bytes per second the pacer releases."""
        return self.pacing_factor * self.max_bitrate / 8


@attrs.frozen
class OutgoingPacket:
    """One packet to seal and send: ``plaintext`` is extension elements + payload."""

    header: RtpHeader
    plaintext: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    rtx: bool = False


@attrs.frozen
class VideoSendStatistics:
    frames_sent: int
    keyframes_sent: int
    packets_sent: int
    bytes_sent: int
    rtx_sent: int
    nacks_received: int
    nacks_answered: int
    nacked_unknown: int
    plis_received: int
    firs_received: int
    keyframe_requests_served: int
    sender_reports: int
    receiver_reports: int
    fraction_lost: float | None
    jitter: int | None
    rtt: float | None
    queue_packets: int
    queue_flushes: int
    max_queue_delay: float
    bitrate: float
    paused: bool


class VideoSendCore:
    """See the module docstring."""

    def __init__(self, config: VideoSendConfig) -> None:
        self.config = config
        self._seq = config.first_sequence & 0xFFFF
        self._rtx_seq = config.first_rtx_sequence & 0xFFFF
        self._ts_base = config.first_timestamp & 0xFFFFFFFF
        self._t0: float | None = None
        self._last_ts: int | None = None
        self._last_capture = 0.0
        self._store = RetransmissionStore(config.rtx_capacity, config.min_resend_interval)
        self._media: collections.deque[tuple[OutgoingPacket, float]] = collections.deque()
        self._rtx: collections.deque[tuple[OutgoingPacket, float]] = collections.deque()
        self._budget = float(config.burst_bytes)
        self._budget_at: float | None = None
        self._keyframe_pending = True  # the first frame is a keyframe
        self._last_keyframe_served = -1e9
        self._paused = False
        self._last_sr: float | None = None
        self._sr_sent: collections.OrderedDict[int, float] = collections.OrderedDict()
        self._sent_window: collections.deque[tuple[float, int]] = collections.deque()
        self._fraction_lost: float | None = None
        self._jitter: int | None = None
        self._rtt: float | None = None
        self._max_queue_delay = 0.0
        self._c = collections.Counter[str]()

    # ------------------------------------------------------------------ control

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Stop sending video: queued media packets are dropped (RTX answers too)."""
        self._paused = True
        self._media.clear()
        self._rtx.clear()

    def resume(self) -> None:
        """Send again; the next frame must be a keyframe (served at once, not rate limited)."""
        self._paused = False
        self.request_keyframe(force=True)

    def request_keyframe(self, *, force: bool = False) -> None:
        """Ask for an IDR at the next frame (``force`` bypasses the rate limit)."""
        self._keyframe_pending = True
        if force:
            self._last_keyframe_served = -1e9

    def take_keyframe_request(self, now: float) -> bool:
        """True when the next encoded frame must be a keyframe (the request is then served)."""
        if not self._keyframe_pending or now - self._last_keyframe_served < self.config.keyframe_min_interval:
            return False
        self._keyframe_pending = False
        self._last_keyframe_served = now
        self._c["keyframe_requests_served"] += 1
        return True

    # ------------------------------------------------------------------ media

    def timestamp_for(self, capture_time: float) -> int:
        """The 90 kHz RTP timestamp of a frame captured at ``capture_time`` (strictly increasing)."""
        if self._t0 is None:
            self._t0 = capture_time
        ts = (self._ts_base + round((capture_time - self._t0) * VIDEO_CLOCK)) & 0xFFFFFFFF
        last = self._last_ts
        if last is not None and not 0 < (ts - last) & 0xFFFFFFFF < 1 << 31:
            ts = (last + 1) & 0xFFFFFFFF  # same or earlier capture time: keep time moving forward
        return ts

    def push_frame(
        self, access_unit: bytes, *, keyframe: bool, capture_time: float, now: float
    ) -> int | None:
        """Packetize one (DAVE-encrypted) Annex-B access unit and queue it; its RTP timestamp.

        None while paused (nothing is queued). A backlog over ``max_queue_seconds`` is flushed
        first and a keyframe asked for (the flushed frames would only arrive late).
        """
        if self._paused:
            self._c["frames_refused_paused"] += 1
            return None
        config = self.config
        if self._queued_bytes() > config.pacing_rate * config.max_queue_seconds:
            self._media.clear()
            self._c["queue_flushes"] += 1
            self.request_keyframe()
        timestamp = self.timestamp_for(capture_time)
        self._last_ts = timestamp
        self._last_capture = capture_time
        payloads = packetize_h264(access_unit, config.mtu, aggregate=config.aggregate)
        ext = config.extension
        for index, payload in enumerate(payloads):
            marker = index == len(payloads) - 1
            header = RtpHeader(
                config.payload_type,
                self._seq,
                timestamp,
                config.ssrc,
                marker,
                False,
                (),
                ext.profile,
                ext.words,
            )
            self._store.remember(self._seq, timestamp, marker, payload)
            self._seq = (self._seq + 1) & 0xFFFF
            self._media.append((OutgoingPacket(header, ext.body + payload), now))
        self._c["frames_sent"] += 1
        if keyframe:
            self._c["keyframes_sent"] += 1
        return timestamp

    def poll(self, now: float) -> list[OutgoingPacket]:
        """Packets the pacer releases now (RTX before media)."""
        self._refill(now)
        out: list[OutgoingPacket] = []
        while self._budget > 0 and (self._rtx or self._media):
            queue = self._rtx if self._rtx else self._media
            packet, queued_at = queue.popleft()
            size = len(packet.plaintext)
            self._budget -= size
            self._max_queue_delay = max(self._max_queue_delay, now - queued_at)
            self._c["packets_sent"] += 1
            self._c["bytes_sent"] += size
            if packet.rtx:
                self._c["rtx_sent"] += 1
            self._sent_window.append((now, size))
            out.append(packet)
        while self._sent_window and now - self._sent_window[0][0] > _RATE_WINDOW:
            self._sent_window.popleft()
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`poll` has something to release (None: nothing queued)."""
        if not (self._rtx or self._media):
            return None
        if self._budget > 0 or self._budget_at is None:
            return self._budget_at if self._budget_at is not None else 0.0
        return self._budget_at + (-self._budget + 1) / self.config.pacing_rate

    def _refill(self, now: float) -> None:
        if self._budget_at is not None:
            self._budget += (now - self._budget_at) * self.config.pacing_rate
        self._budget = min(self._budget, float(self.config.burst_bytes))
        self._budget_at = now

    def _queued_bytes(self) -> int:
        return sum(len(p.plaintext) for p, _ in self._media)

    # ------------------------------------------------------------------ RTCP

    def on_rtcp(self, packets: Iterable[rtcp.RtcpPacket], now: float) -> None:
        """NACK -> RTX queued; PLI/FIR -> keyframe request; RR -> loss, jitter, RTT."""
        ssrc = self.config.ssrc
        for item in packets:
            if isinstance(item, rtcp.GenericNack) and item.media_ssrc == ssrc:
                self._c["nacks_received"] += 1
                if not self._paused:
                    self._answer_nack(item.lost_sequences(), now)
            elif isinstance(item, rtcp.PictureLossIndication) and item.media_ssrc == ssrc:
                self._c["plis_received"] += 1
                self.request_keyframe()
            elif isinstance(item, rtcp.FullIntraRequest) and any(s == ssrc for s, _ in item.entries):
                self._c["firs_received"] += 1
                self.request_keyframe()
            elif isinstance(item, rtcp.ReceiverReport | rtcp.SenderReport):
                for block in item.reports:
                    if block.ssrc == ssrc:
                        self._on_report_block(block, now)

    def _answer_nack(self, sequences: list[int], now: float) -> None:
        config = self.config
        ext = config.extension
        for resend in self._store.answer(sequences, now):
            header = RtpHeader(
                config.rtx_payload_type,
                self._rtx_seq,
                resend.timestamp,
                config.rtx_ssrc,
                resend.marker,
                False,
                (),
                ext.profile,
                ext.words,
            )
            self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
            self._rtx.append((OutgoingPacket(header, ext.body + resend.payload, rtx=True), now))

    def _on_report_block(self, block: rtcp.ReportBlock, now: float) -> None:
        self._c["receiver_reports"] += 1
        self._fraction_lost = block.fraction_lost / 256
        self._jitter = block.jitter
        sent_at = self._sr_sent.get(block.last_sr)
        if block.last_sr and sent_at is not None:
            self._rtt = max(0.0, now - sent_at - block.delay_since_last_sr / 65536)

    def sender_report(self, now: float, wallclock: float) -> bytes | None:
        """A serialized SR when one is due (every ``sr_interval`` once media was sent), else None."""
        if self._last_ts is None or self._paused:
            return None
        if self._last_sr is not None and now - self._last_sr < self.config.sr_interval:
            return None
        self._last_sr = now
        ntp = int((wallclock + _NTP_EPOCH_OFFSET) * (1 << 32)) & 0xFFFF_FFFF_FFFF_FFFF
        rtp_ts = (self._last_ts + round((now - self._last_capture) * VIDEO_CLOCK)) & 0xFFFFFFFF
        report = rtcp.SenderReport(
            self.config.ssrc,
            ntp,
            rtp_ts,
            self._c["packets_sent"] & 0xFFFFFFFF,
            self._c["bytes_sent"] & 0xFFFFFFFF,
        )
        self._sr_sent[(ntp >> 16) & 0xFFFFFFFF] = now
        while len(self._sr_sent) > 16:
            self._sr_sent.popitem(last=False)
        self._c["sender_reports"] += 1
        return report.serialize()

    # ------------------------------------------------------------------ queries

    def statistics(self) -> VideoSendStatistics:
        c = self._c
        store = self._store.statistics()
        window = self._sent_window
        span = (window[-1][0] - window[0][0]) if len(window) >= 2 else 0.0
        bitrate = 8 * sum(size for _, size in window) / span if span > 0 else 0.0
        return VideoSendStatistics(
            frames_sent=c["frames_sent"],
            keyframes_sent=c["keyframes_sent"],
            packets_sent=c["packets_sent"],
            bytes_sent=c["bytes_sent"],
            rtx_sent=c["rtx_sent"],
            nacks_received=c["nacks_received"],
            nacks_answered=store.answered,
            nacked_unknown=store.unknown,
            plis_received=c["plis_received"],
            firs_received=c["firs_received"],
            keyframe_requests_served=c["keyframe_requests_served"],
            sender_reports=c["sender_reports"],
            receiver_reports=c["receiver_reports"],
            fraction_lost=self._fraction_lost,
            jitter=self._jitter,
            rtt=self._rtt,
            queue_packets=len(self._media) + len(self._rtx),
            queue_flushes=c["queue_flushes"],
            max_queue_delay=self._max_queue_delay,
            bitrate=bitrate,
            paused=self._paused,
        )


# ---------------------------------------------------------------------- DAVE sender retry rule


def dave_h264_frame_is_safe(frame: bytes) -> bool:
    """True if ``frame`` (a DAVE-encrypted H264 access unit) has no start code outside its clear ranges.

    Every ``00 00 01`` must lie wholly inside the unencrypted ranges (the start codes and headers
    DAVE leaves clear); one in the ciphertext, across a range edge or in the trailer would make
    the receiver split the frame at the wrong place. A frame that is not a DAVE frame (DAVE off,
    passthrough) is safe by definition: it is plain Annex-B. Never raises.
    """
    if not frame.endswith(MAGIC_MARKER):
        return True
    try:
        trailer = DaveTrailer.parse(frame)
    except MalformedPacket:
        return False
    clear = _merge(trailer.ranges)
    index = frame.find(_SHORT_START_CODE)
    while index != -1:
        end = index + len(_SHORT_START_CODE)
        if not any(lo <= index and end <= hi for lo, hi in clear):
            return False
        index = frame.find(_SHORT_START_CODE, index + 1)
    return True


def _merge(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for offset, size in ranges:
        if merged and offset <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], offset + size))
        else:
            merged.append((offset, offset + size))
    return merged


def encrypt_h264_checked(
    encrypt: Callable[[bytes], bytes], access_unit: bytes, attempts: int = DAVE_ENCRYPT_ATTEMPTS
) -> tuple[bytes | None, int]:
    """Encrypt with retries until :func:`dave_h264_frame_is_safe`; ``(frame or None, attempts used)``.

    Each call of ``encrypt`` uses the next nonce, so a retry changes the ciphertext and tag.
    None means every attempt produced an unsafe frame: drop it and ask for a keyframe.
    """
    for attempt in range(1, attempts + 1):
        frame = encrypt(access_unit)
        if dave_h264_frame_is_safe(frame):
            return frame, attempt
    return None, attempts
