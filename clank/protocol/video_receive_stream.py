"""One remote video SSRC's receive state and its statistics snapshot (``VideoReceiver``'s per-stream half).

The pipeline stages (reorder, NACK, keyframe requests, RTX, depacketizer, RTCP statistics) and the
counters the status reports; ``clank.protocol.video_receive`` drives them.
"""

from __future__ import annotations

import collections

from clank.codecs.assembly import FrameAssembler
from clank.codecs.feedback import KeyframeReason, KeyframeRequester, KeyframeRequestKind, NackScheduler
from clank.codecs.h264 import H264Depacketizer, ParameterSetCache
from clank.codecs.packet import AssembledFrame
from clank.codecs.receive_stats import VIDEO_CLOCK, ReceptionStatistics
from clank.codecs.reorder import ReorderBuffer
from clank.codecs.rtx import RtxUnwrapper
from clank.codecs.vp8 import Vp8Depacketizer
from clank.crypto.dave_wire import describe_frame
from clank.protocol.video_receive_types import (
    DROP_INCOMPLETE,
    RATE_WINDOW,
    DecryptDiagnostic,
    ReceiveEvent,
    StreamType,
    VideoCodecName,
    VideoReceiveConfig,
    VideoStreamStatistics,
)
from clank.wire.rtcp import FullIntraRequest, GenericNack, PictureLossIndication


class RateMeter:
    def __init__(self) -> None:
        self._times: collections.deque[float] = collections.deque()

    def tick(self, now: float) -> None:
        self._times.append(now)
        while self._times and now - self._times[0] > RATE_WINDOW:
            self._times.popleft()

    def rate(self) -> float:
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0


class ReceiveStream:
    """State of one remote video SSRC."""

    def __init__(self, ssrc: int, user_id: str, config: VideoReceiveConfig, now: float) -> None:
        self.ssrc = ssrc
        self.user_id = user_id
        self.user_int = int(user_id) if user_id.isdecimal() else 0
        self.rtx_ssrc: int | None = None
        self.stream_type: StreamType = config.default_stream_type
        self.active = True
        self.bound_at = now
        self.reorder = ReorderBuffer(config.reorder_capacity, config.reorder_delay)
        self.nack = NackScheduler(config.nack_policy)
        self.keyframes = KeyframeRequester(config.keyframe_policy)
        self.keyframes.need(KeyframeReason.JOIN, now)
        self.rtx = RtxUnwrapper()
        self.codec: VideoCodecName | None = None
        self.media_pt: int | None = None  # the PT of ``codec`` last seen on the primary SSRC
        self.depacketizer: FrameAssembler | None = None
        self.parameter_sets = ParameterSetCache()
        self.report = ReceptionStatistics()
        self.fps_in = RateMeter()
        self.started = False  # a keyframe has been emitted since the last (re)start
        self.awaiting_since: float | None = None  # chain broken (join or loss) and no keyframe since
        self.frames_concealed = 0
        self.pli_sent_at: float | None = None  # first PLI/FIR since the last keyframe
        self.pli_to_keyframe: float | None = None  # seconds, for the last answered request
        self.forced_keyframe_request = False
        self.dropped: collections.Counter[str] = collections.Counter()
        self.frames_dropped: collections.Counter[str] = collections.Counter()
        self.dave_failures: collections.Counter[str] = collections.Counter()
        self.rtx_received = 0
        self.frames_assembled = 0
        self.frames_emitted = 0
        self.keyframes_emitted = 0
        self.dave_ok = 0
        self.dave_failed = 0
        self.dave_failed_before_ready = 0
        self.dave_passthrough = 0
        self.keyframe_requests_forced = 0
        self.first_packet_at: float | None = None
        self.first_frame_at: float | None = None
        self.last_diagnostic_at: float | None = None
        self.diagnostics_suppressed = 0
        # Depacketizer counters survive codec changes.
        self.assembler_frames_dropped_prior = 0

    def set_codec(self, codec: VideoCodecName) -> VideoCodecName | None:
        previous = self.codec
        if self.depacketizer is not None:
            self.assembler_frames_dropped_prior += self.depacketizer.statistics().frames_dropped
        self.codec = codec
        self.depacketizer = H264Depacketizer() if codec == "h264" else Vp8Depacketizer()
        self.parameter_sets = ParameterSetCache()
        self.started = False
        self.awaiting_since = None
        return previous

    def concealing(self, after: float | None, now: float) -> bool:
        """No keyframe for ``after`` seconds since a join or a loss (H264 only)."""
        if after is None or self.codec != "h264":
            return False
        if self.awaiting_since is None:
            if self.started:
                return False  # the chain is intact
            self.awaiting_since = now  # the first frame held back since the join
        return now - self.awaiting_since >= after

    def feedback(self, local: int, config: VideoReceiveConfig, now: float) -> list[bytes]:
        """This stream's NACK and PLI/FIR datagrams due now (``VideoReceiver.poll``)."""
        out: list[bytes] = []
        if config.nack and self.depacketizer is not None:
            seqs = self.nack.poll(self.reorder.missing(now), now)
            if seqs:
                out.append(GenericNack.for_sequences(local, self.ssrc, seqs).serialize())
        request = self.keyframes.poll(now)
        if request is None and self.forced_keyframe_request and self.keyframes.waiting:
            self.keyframe_requests_forced += 1
            kind = config.keyframe_policy.kind
            out.append(keyframe_packet(local, self.ssrc, kind, self.keyframe_requests_forced))
            self.pli_sent_at = now if self.pli_sent_at is None else self.pli_sent_at
        elif request is not None:
            out.append(keyframe_packet(local, self.ssrc, request.kind, request.fir_seq or 0))
            self.pli_sent_at = now if self.pli_sent_at is None else self.pli_sent_at
        self.forced_keyframe_request = False
        return out

    def diagnose(self, frame: AssembledFrame, reason: str, interval: float, now: float) -> list[ReceiveEvent]:
        """A ``DecryptDiagnostic`` for a frame DAVE refused, at most one per ``interval``."""
        last = self.last_diagnostic_at
        if last is not None and now - last < interval:
            self.diagnostics_suppressed += 1
            return []
        self.last_diagnostic_at = now
        suppressed, self.diagnostics_suppressed = self.diagnostics_suppressed, 0
        return [
            DecryptDiagnostic(
                ssrc=self.ssrc,
                user_id=self.user_id,
                reason=reason,
                timestamp=frame.timestamp,
                first_seq=frame.first_seq,
                last_seq=frame.last_seq,
                packet_count=frame.packet_count,
                suppressed_since_last=suppressed,
                frame=describe_frame(frame.data),
            )
        ]

    def statistics(self) -> VideoStreamStatistics:
        reorder = self.reorder.statistics()
        nack = self.nack.statistics()
        keyframes = self.keyframes.statistics()
        dropped = collections.Counter(self.dropped)
        for reason, count in reorder.dropped.items():
            dropped[reason] += count
        frames_dropped = collections.Counter(self.frames_dropped)
        assembler_dropped = self.assembler_frames_dropped_prior
        if self.depacketizer is not None:
            depack = self.depacketizer.statistics()
            assembler_dropped += depack.frames_dropped
            dropped["malformed"] += depack.malformed
            dropped["unsupported"] += depack.unsupported
        if assembler_dropped:
            frames_dropped[DROP_INCOMPLETE] += assembler_dropped
        ttff = None if self.first_frame_at is None else self.first_frame_at - self.bound_at
        return VideoStreamStatistics(
            ssrc=self.ssrc,
            user_id=self.user_id,
            rtx_ssrc=self.rtx_ssrc,
            stream_type=self.stream_type,
            codec=self.codec,
            active=self.active,
            packets_received=reorder.received,
            rtx_received=self.rtx_received,
            packets_lost=reorder.lost,
            packets_recovered=reorder.recovered,
            packets_reordered=reorder.reordered,
            duplicates=reorder.duplicates,
            dropped={k: v for k, v in dropped.items() if v},
            frames_assembled=self.frames_assembled,
            frames_emitted=self.frames_emitted,
            frames_dropped={k: v for k, v in frames_dropped.items() if v},
            keyframes=self.keyframes_emitted,
            dave_ok=self.dave_ok,
            dave_failed=self.dave_failed,
            dave_passthrough=self.dave_passthrough,
            dave_failures=dict(self.dave_failures),
            dave_failed_before_ready=self.dave_failed_before_ready,
            nack_packets=nack.packets,
            nack_seqs=nack.seqs_sent,
            keyframe_requests=keyframes.requests + self.keyframe_requests_forced,
            first_packet_at=self.first_packet_at,
            first_frame_at=self.first_frame_at,
            time_to_first_frame=ttff,
            fps_in=self.fps_in.rate(),
            jitter=self.report.jitter / VIDEO_CLOCK,
            frames_concealed=self.frames_concealed,
            pli_to_keyframe=self.pli_to_keyframe,
        )


def keyframe_packet(local: int, ssrc: int, kind: KeyframeRequestKind, fir_seq: int) -> bytes:
    """One PLI (or FIR, with its sequence number) from ``local`` for ``ssrc``."""
    if kind is KeyframeRequestKind.FIR:
        return FullIntraRequest(local, ((ssrc, fir_seq % 256),)).serialize()
    return PictureLossIndication(local, ssrc).serialize()
