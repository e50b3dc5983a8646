"""Video receive → decode → frames for one media leg: the part shared by stream and webcam watches.

A :class:`VideoPipeline` wraps the sans-io :class:`~clank.protocol.video_receive.VideoReceiver`
and is driven by the leg's media connection callbacks (all synchronous, in the UDP receive task:
no channel hop per packet). Whole access units go to a long-lived decode worker thread per
(user, ssrc) (``clank.io.decode_worker``); emitted pictures become :class:`ScreenFrame` values in
the :class:`LatestFrameStore` of the watch that wants them (and the shared latest-wins channel)::

    media connection (UDP task) --on_packet--> VideoReceiver --EncodedVideoFrame--> decode worker
                                                    |                                   | thread
                        feedback task <--poll/tick--+         ScreenFrame <--on_output--+
                        (RTCP NACK/PLI/RR when due,           -> sink.store / sink.channel
                         REMB every second)

Run it with :func:`open_video_pipeline` (it owns the feedback task and the decoder tasks).
Which frames are wanted is decided by *sinks*: ``add_sink((user_id, stream_type), sink)``; frames
nobody wants are dropped after DAVE (counted) and their decoders are never started.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final

import attrs
import trio

from clank.codecs.bandwidth import RembConfig, RembController, RembInputs, RembStatistics
from clank.codecs.feedback import KeyframeReason
from clank.config import WatchSettings
from clank.io.decode_worker import DecodedImage, DecodeWorker, DecodeWorkerStatistics, open_decode_worker
from clank.logging import get_logger
from clank.protocol.video_receive import (
    CodecChanged,
    DecryptDiagnostic,
    EncodedVideoFrame,
    ReceiveEvent,
    StreamType,
    StreamUnbound,
    VideoCodecName,
    VideoReceiver,
    VideoStreamStatistics,
)
from clank.protocol.voice_gateway import VideoState
from clank.session.watch_frames import FrameChannel, LatestFrameStore, ScreenFrame
from clank.wire.rtcp import RtcpPacket
from clank.wire.rtp import RtpHeader

log = get_logger("clank.video")

FEEDBACK_IDLE: Final = 0.25
"""Longest sleep of the feedback task when the receiver has nothing scheduled sooner. New work
(a hole to NACK, a keyframe to ask for) wakes it at once through ``feedback_pending``; decoder
trouble is noticed within this interval (keyframe requests are rate-limited to 1/s anyway)."""
PENDING_FRAMES: Final = 8
#: After our DAVE session becomes ready, a sender keeps its old keys until the group's transition
#: executes (op22): its frames fail with ``no_valid_cryptor`` meanwhile. Expected when we join, so
#: a stream that has not decrypted yet gets this long before such failures are warnings.
DAVE_JOIN_GRACE: Final = 5.0
"""Access units held per stream while its decoder thread starts (a keyframe flushes older ones)."""

SinkKey = tuple[str, StreamType]
SendRtcp = Callable[[bytes], bool]


@attrs.define(eq=False)
class FrameSink:
    """Where one watch's frames go."""

    store: LatestFrameStore
    channel: FrameChannel | None = None
    sequence: int = 0
    emitted: int = 0
    first_frame_at: float | None = None


@attrs.frozen
class WatchStreamStatistics:
    """QoS of one watched SSRC: receive side (packets, DAVE, feedback) and decode side."""

    receive: VideoStreamStatistics
    decode: DecodeWorkerStatistics | None
    frames_out: int  # ScreenFrames published
    width: int
    height: int
    bitrate_bps: int = 0
    """Receive rate of this SSRC (and its RTX) over the last REMB interval."""
    rid: str | None = None
    """The simulcast layer (op12 ``rid``) this SSRC carries, when the streamer named one."""


@attrs.define(eq=False)
class _Decoder:
    codec: VideoCodecName
    scope: trio.CancelScope
    worker: DecodeWorker | None = None
    pending: list[EncodedVideoFrame] = attrs.field(factory=list)
    stats: DecodeWorkerStatistics | None = None


class VideoPipeline:
    """See the module docstring. Create with :func:`open_video_pipeline`."""

    def __init__(
        self,
        receiver: VideoReceiver,
        settings: WatchSettings,
        send_rtcp: SendRtcp,
        nursery: trio.Nursery,
        *,
        synchronous_decode: bool = False,
    ) -> None:
        self.receiver = receiver
        self.settings = settings
        self._send_rtcp = send_rtcp
        self._nursery = nursery
        self._synchronous = synchronous_decode
        self._sinks: dict[SinkKey, FrameSink] = {}
        self._decoders: dict[int, _Decoder] = {}
        self._finished: dict[int, DecodeWorkerStatistics] = {}
        self._frames_out: dict[int, int] = {}
        self._unwanted = 0
        self._diagnostics = 0
        self._dave_ready_at: float | None = None
        self._wake = trio.Event()
        # Congestion feedback (REMB): bytes per SSRC since the last REMB, and what they were.
        max_bps = settings.remb_max_kbps * 1000
        self._remb = (
            RembController(RembConfig(max_bps=max_bps, start_bps=min(RembConfig().start_bps, max_bps)))
            if max_bps >= RembConfig().min_bps
            else None
        )
        self._bytes: dict[int, int] = {}
        self._rates: dict[int, int] = {}
        self._rids: dict[int, str | None] = {}
        self._rtx_of: dict[int, int] = {}
        self._remb_prior: dict[int, tuple[int, int]] = {}
        self._dropped_prior = 0

    # ------------------------------------------------------------------ sinks

    def add_sink(self, key: SinkKey, sink: FrameSink) -> None:
        self._sinks[key] = sink

    def remove_sink(self, key: SinkKey) -> None:
        self._sinks.pop(key, None)
        for ssrc in self.receiver.streams():
            stats = self.receiver.stream_statistics(ssrc)
            if stats is not None and (stats.user_id, stats.stream_type) == key:
                self._stop_decoder(ssrc)

    # ------------------------------------------------------------------ connection callbacks (sync)

    def on_packet(self, header: RtpHeader, payload: bytes, now: float) -> None:
        ssrc = header.ssrc
        self._bytes[ssrc] = self._bytes.get(ssrc, 0) + len(payload)
        receiver = self.receiver
        events = receiver.receive(header, payload, now)
        if events:
            self._handle(events)
        if receiver.feedback_pending:
            receiver.feedback_pending = False
            self._wake.set()

    def on_rtcp(self, packets: tuple[RtcpPacket, ...], now: float) -> None:
        self.receiver.on_rtcp(packets, now)

    def on_video_state(self, state: VideoState, now: float) -> None:
        for stream in state.streams:
            self._rids[stream.ssrc] = stream.rid
            if stream.rtx_ssrc:
                self._rtx_of[stream.rtx_ssrc] = stream.ssrc
        if state.video_ssrc and state.rtx_ssrc:
            self._rtx_of.setdefault(state.rtx_ssrc, state.video_ssrc)
        self._handle(self.receiver.on_video_state(state, now))
        self._wake.set()

    def on_client_disconnected(self, user_id: str) -> None:
        self._handle(self.receiver.on_client_disconnected(user_id))

    def dave_ready(self, now: float) -> None:
        if self._dave_ready_at is None:
            self._dave_ready_at = now
        self.receiver.dave_ready(now)
        self._wake.set()

    # ------------------------------------------------------------------ events

    def _joining(self, event: DecryptDiagnostic) -> bool:
        """A ``no_valid_cryptor`` failure of a stream that never decrypted, soon after our DAVE
        session became ready: the sender has not switched to the group's new keys yet."""
        ready_at = self._dave_ready_at
        if event.reason != "no_valid_cryptor" or ready_at is None:
            return False
        if trio.current_time() - ready_at > DAVE_JOIN_GRACE:
            return False
        stream = self.receiver.statistics().streams.get(event.ssrc)
        return stream is None or stream.dave_ok == 0

    def _handle(self, events: list[ReceiveEvent]) -> None:
        for event in events:
            if isinstance(event, EncodedVideoFrame):
                self._on_frame(event)
            elif isinstance(event, DecryptDiagnostic):
                self._diagnostics += 1
                joining = self._joining(event)
                frame = dict(event.frame)
                if joining:
                    frame.pop("tail_hex", None)  # the expected case: no hex dump on the happy path
                (log.info if joining else log.warning)(
                    "video frame failed DAVE decrypt"
                    + (" (joining: the sender's transition)" if joining else ""),
                    ssrc=event.ssrc,
                    user_id=event.user_id,
                    reason=event.reason,
                    timestamp=event.timestamp,
                    seqs=(event.first_seq, event.last_seq),
                    packets=event.packet_count,
                    suppressed_since_last=event.suppressed_since_last,
                    frame=frame,
                )
            elif isinstance(event, CodecChanged):
                log.info("video codec", ssrc=event.ssrc, user_id=event.user_id, codec=event.codec)
            elif isinstance(event, StreamUnbound):
                self._stop_decoder(event.ssrc)

    def _on_frame(self, frame: EncodedVideoFrame) -> None:
        sink = self._sinks.get((frame.user_id, frame.stream_type))
        if sink is None:
            self._unwanted += 1
            return
        decoder = self._decoders.get(frame.ssrc)
        if decoder is not None and decoder.codec != frame.codec:
            self._stop_decoder(frame.ssrc)
            decoder = None
        if decoder is None:
            decoder = self._decoders[frame.ssrc] = _Decoder(frame.codec, trio.CancelScope())
            self._nursery.start_soon(self._run_decoder, frame.ssrc, decoder, frame.user_id, frame.stream_type)
        if decoder.worker is None:
            if frame.keyframe:
                decoder.pending.clear()
            decoder.pending.append(frame)
            del decoder.pending[:-PENDING_FRAMES]
            return
        decoder.worker.submit(frame.data, frame.timestamp, keyframe=frame.keyframe, conceal=frame.conceal)

    def _stop_decoder(self, ssrc: int) -> None:
        decoder = self._decoders.pop(ssrc, None)
        if decoder is not None:
            decoder.scope.cancel()

    async def _run_decoder(self, ssrc: int, decoder: _Decoder, user_id: str, stream_type: StreamType) -> None:
        settings = self.settings
        on_output = functools.partial(self._on_image, ssrc, decoder.codec, user_id, stream_type)
        with decoder.scope:
            async with open_decode_worker(
                decoder.codec,
                on_output=on_output,
                max_fps=settings.max_fps,
                max_pixels=settings.preferred_pixel_count,
                jpeg_quality=settings.jpeg_quality,
                synchronous=self._synchronous,
            ) as worker:
                decoder.worker = worker
                pending, decoder.pending = decoder.pending, []
                for frame in pending:
                    worker.submit(frame.data, frame.timestamp, keyframe=frame.keyframe, conceal=frame.conceal)
                try:
                    await trio.sleep_forever()
                finally:
                    # Cancelled with the session, the worker closes before the UDP task has seen the
                    # cancellation: a datagram it still hands on is held in ``pending`` (dropped with
                    # the pipeline), not submitted to a closed worker (a UsageError, the watch failed).
                    decoder.worker = None
                    decoder.stats = worker.statistics()
                    self._finished[ssrc] = decoder.stats

    def _on_image(
        self, ssrc: int, codec: VideoCodecName, user_id: str, stream_type: StreamType, image: DecodedImage
    ) -> None:
        sink = self._sinks.get((user_id, stream_type))
        if sink is None:
            return
        now = trio.current_time()
        sink.sequence += 1
        sink.emitted += 1
        if sink.first_frame_at is None:
            sink.first_frame_at = now
        self._frames_out[ssrc] = self._frames_out.get(ssrc, 0) + 1
        frame = ScreenFrame(
            jpeg=image.jpeg.data,
            width=image.jpeg.width,
            height=image.jpeg.height,
            rtp_timestamp=image.timestamp,
            user_id=user_id,
            ssrc=ssrc,
            codec=codec,
            stream_type=stream_type,
            change_score=image.change.score,
            change_ema=image.change.smoothed,
            scene_cut=image.change.scene_cut,
            wall_time=now,
            sequence=sink.sequence,
            source_width=image.source_width,
            source_height=image.source_height,
            keyframe=image.keyframe,
            decode_delay=image.decode_delay,
            change_mean_abs_diff=image.change.mean_abs_diff,
            concealed=image.concealed,
        )
        if not sink.store.closed:
            sink.store.publish(frame)
        if sink.channel is not None:
            try:
                sink.channel.send_nowait(frame)
            except trio.ClosedResourceError:
                sink.channel = None

    # ------------------------------------------------------------------ feedback

    async def _feedback(self) -> None:
        """Release expired holes, send NACK/PLI/RR, turn decoder trouble into keyframe requests."""
        while True:
            self._wake = trio.Event()  # before reading state: a later set() is never missed
            self.receiver.feedback_pending = False
            now = trio.current_time()
            self._handle(self.receiver.tick(now))
            for ssrc, decoder in self._decoders.items():
                if decoder.worker is not None and decoder.worker.keyframe_wanted:
                    self.receiver.request_keyframe(ssrc, KeyframeReason.DECODER_RESET, now)
            for datagram in self.receiver.poll(now):
                self._send_rtcp(datagram)
            self._congestion_feedback(now)
            deadline = self.receiver.next_deadline()
            remb_at = None if self._remb is None else self._remb.next_deadline()
            if remb_at is not None:
                deadline = remb_at if deadline is None else min(deadline, remb_at)
            wake_at = now + FEEDBACK_IDLE if deadline is None else min(deadline, now + FEEDBACK_IDLE)
            with trio.move_on_at(max(wake_at, now + 0.001)):
                await self._wake.wait()

    def _congestion_feedback(self, now: float) -> None:
        """One REMB per interval for the SSRCs a sink wants (see ``clank.codecs.bandwidth``)."""
        remb = self._remb
        if remb is None or not remb.due(now):
            return
        wanted: list[int] = []
        expected = lost = 0
        for ssrc in self.receiver.streams():
            stats = self.receiver.stream_statistics(ssrc)
            if stats is None or (stats.user_id, stats.stream_type) not in self._sinks:
                continue
            wanted.append(ssrc)
            seen = stats.packets_received + stats.packets_lost
            prior_seen, prior_lost = self._remb_prior.get(ssrc, (0, 0))
            self._remb_prior[ssrc] = (seen, stats.packets_lost)
            expected += max(0, seen - prior_seen)
            lost += max(0, stats.packets_lost - prior_lost)
        dropped = sum(d.worker.statistics().dropped for d in self._decoders.values() if d.worker is not None)
        decoder_dropped = max(0, dropped - self._dropped_prior)
        self._dropped_prior = dropped
        counted, self._bytes = self._bytes, {}
        per_primary: dict[int, int] = {}
        for ssrc, count in counted.items():
            primary = self._rtx_of.get(ssrc, ssrc)
            per_primary[primary] = per_primary.get(primary, 0) + count
        started = remb.last_at
        elapsed = None if started is None else now - started
        if elapsed is not None and elapsed > 0:
            self._rates = {ssrc: int(count * 8 / elapsed) for ssrc, count in per_primary.items()}
        inputs = RembInputs(
            bytes_received=sum(per_primary.get(ssrc, 0) for ssrc in wanted),
            packets_expected=expected,
            packets_lost=lost,
            decoder_dropped=decoder_dropped,
        )
        message = remb.next(inputs, now, self.receiver.local_ssrc, wanted)
        if message is not None:
            self._send_rtcp(message.serialize())

    def remb_statistics(self) -> RembStatistics | None:
        """REMBs sent and the current estimate (None: ``watch.remb_max_kbps`` is 0)."""
        return None if self._remb is None else self._remb.statistics()

    # ------------------------------------------------------------------ statistics

    def stream_statistics(self) -> dict[int, WatchStreamStatistics]:
        out: dict[int, WatchStreamStatistics] = {}
        for ssrc in self.receiver.streams():
            receive = self.receiver.stream_statistics(ssrc)
            if receive is None:
                continue
            decoder = self._decoders.get(ssrc)
            decode = (
                decoder.worker.statistics()
                if decoder is not None and decoder.worker is not None
                else self._finished.get(ssrc)
            )
            out[ssrc] = WatchStreamStatistics(
                receive=receive,
                decode=decode,
                frames_out=self._frames_out.get(ssrc, 0),
                width=decode.width if decode is not None else 0,
                height=decode.height if decode is not None else 0,
                bitrate_bps=self._rates.get(ssrc, 0),
                rid=self._rids.get(ssrc),
            )
        return out

    def decoded_frames(self, ssrc: int) -> int:
        """Pictures of ``ssrc`` decoded so far (0 before its decoder runs): the one figure a
        realtime check polls, without building the statistics snapshot (``bench_watch`` polls
        it for every stream several times a second, on the trio thread it measures)."""
        decoder = self._decoders.get(ssrc)
        if decoder is not None and decoder.worker is not None:
            return decoder.worker.decoded_frames
        finished = self._finished.get(ssrc)
        return 0 if finished is None else finished.decoded_frames

    @property
    def unwanted_frames(self) -> int:
        return self._unwanted


@asynccontextmanager
async def open_video_pipeline(
    receiver: VideoReceiver,
    settings: WatchSettings,
    send_rtcp: SendRtcp,
    *,
    synchronous_decode: bool = False,
) -> AsyncIterator[VideoPipeline]:
    """Run a pipeline (feedback task + decoder tasks) for the duration of the block."""
    async with trio.open_nursery() as nursery:
        pipeline = VideoPipeline(
            receiver, settings, send_rtcp, nursery, synchronous_decode=synchronous_decode
        )
        nursery.start_soon(pipeline._feedback)
        try:
            yield pipeline
        finally:
            nursery.cancel_scope.cancel()
