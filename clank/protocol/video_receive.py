"""Video receive core (sans-io): RTP packets of remote video SSRCs in, whole decodable frames out.

One :class:`VideoReceiver` per transport role (a ``stream_watch`` leg, or webcams on the ``voice``
leg). The driver hands it every media packet that is not audio, already transport-decrypted with
padding and extension elements stripped (``TransportCipher.open_rtp``), plus ``now`` in seconds.
Per remote video SSRC the pipeline is (discord-protocol.md §4.5, §4.7, §5.2, §5.4, §7.6)::

    RTX unwrap (RFC 4588; rtx ssrc or RTX PT -> primary ssrc, seq = OSN)
      -> ReorderBuffer (in sequence order; holes become Gaps after ``reorder_delay``)
      -> H264 / VP8 depacketizer chosen by *our* PT table (a PT switch = codec change, §5.5)
      -> DAVE decrypt of the assembled frame (``decrypt(user_id, frame)``; failures counted)
      -> H264: cached SPS/PPS prepended to IDRs that lack them (after DAVE, never before)
      -> EncodedVideoFrame (for the decode worker)

Feedback is decided here and returned as plain RTCP datagrams from :meth:`VideoReceiver.poll`
(one RTCP packet per datagram, so both transport AAD framings can protect it):

* Generic NACK for holes the reorder buffer reports (``NackScheduler``: first after 20 ms, retried
  about once per RTT, given up after 1 s, at most 20 NACK packets/s per stream);
* PLI (or FIR) when a keyframe is needed: on first join (as soon as the SSRC is bound), after a
  frame that could not be repaired, after a decoder reset (:meth:`request_keyframe`), and at once
  for every stream when DAVE becomes ready (:meth:`dave_ready`: the first keyframe usually went
  by before the MLS welcome, §6);
* a Receiver Report every ``report_interval`` with one block per stream (RFC 3550 §6.4.2, A.3, A.8).

Nothing here raises on network input: unknown SSRCs, unknown PTs, malformed payloads, duplicate and
late packets are dropped and counted per reason. Frames are not handed on before a stream's first
keyframe (a decoder cannot start from a P frame); after a loss, later complete frames still are
(the decoder conceals until the requested keyframe arrives). When no keyframe comes for
``conceal_after`` seconds after a join (a sender with sparse keyframes that ignores PLI), H264
P frames are handed on anyway (``frames_concealed``): the persistent decoder builds a picture from
them and flags it ``concealed`` until the next keyframe. VP8 cannot do this (libvpx and FFmpeg refuse
inter frames without a prior keyframe).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

from clank.codecs.feedback import (
    KeyframeReason,
)
from clank.codecs.packet import AssembledFrame, Gap, MediaPacket
from clank.codecs.receive_stats import MAX_REPORT_BLOCKS
from clank.crypto.dave_wire import MAGIC_MARKER
from clank.errors import DecryptionFailed, UsageError
from clank.protocol.video_receive_stream import ReceiveStream
from clank.protocol.video_receive_types import (
    CODEC_NAMES,
    DIAGNOSTICS_KEPT,
    DROP_AWAITING_KEYFRAME,
    DROP_DAVE,
    DROP_EMPTY,
    DROP_INACTIVE,
    DROP_INCOMPLETE,
    DROP_RTX_MALFORMED,
    DROP_RTX_PROBE,
    DROP_SUPPRESSED,
    DROP_UNKNOWN_PT,
    DROP_UNKNOWN_SSRC,
    RATE_WINDOW,
    CodecChanged,
    DecryptDiagnostic,
    DecryptFn,
    EncodedVideoFrame,
    ReceiveEvent,
    StreamBound,
    StreamType,
    StreamUnbound,
    VideoCodecName,
    VideoReceiveConfig,
    VideoReceiverStatistics,
    VideoStreamStatistics,
    build_sink_wants,
    codec_table,
    stream_type_of,
)
from clank.protocol.voice_gateway import VideoState
from clank.wire import voice_gateway as vg
from clank.wire.rtcp import (
    ReceiverReport,
    SenderReport,
)
from clank.wire.rtp import RtpHeader

_new_tuple = tuple.__new__

__all__ = [
    "CODEC_NAMES",
    "DIAGNOSTICS_KEPT",
    "DROP_AWAITING_KEYFRAME",
    "DROP_DAVE",
    "DROP_EMPTY",
    "DROP_INACTIVE",
    "DROP_INCOMPLETE",
    "DROP_RTX_MALFORMED",
    "DROP_RTX_PROBE",
    "DROP_SUPPRESSED",
    "DROP_UNKNOWN_PT",
    "DROP_UNKNOWN_SSRC",
    "RATE_WINDOW",
    "CodecChanged",
    "DecryptDiagnostic",
    "DecryptFn",
    "EncodedVideoFrame",
    "ReceiveEvent",
    "StreamBound",
    "StreamType",
    "StreamUnbound",
    "VideoCodecName",
    "VideoReceiveConfig",
    "VideoReceiver",
    "VideoReceiverStatistics",
    "VideoStreamStatistics",
    "build_sink_wants",
    "codec_table",
    "stream_type_of",
]


class VideoReceiver:
    """All remote video SSRCs of one transport role; see the module docstring."""

    def __init__(self, config: VideoReceiveConfig, decrypt: DecryptFn | None = None) -> None:
        if config.reorder_delay < 0 or config.report_interval <= 0:
            raise UsageError("reorder_delay must be >= 0 and report_interval > 0")
        self.config = config
        self.local_ssrc = config.local_ssrc
        """Our SSRC on the leg (RTCP sender SSRC); set it once Ready told us (0 until then)."""
        self._decrypt = decrypt
        self._pt_codec, self._rtx_pt = codec_table(config.codecs)
        self._streams: dict[int, ReceiveStream] = {}
        self._rtx_to_primary: dict[int, int] = {}
        self._suppressed: set[tuple[str, StreamType]] = set()
        self._dave_ready = False
        self._packets = 0
        self._dropped: collections.Counter[str] = collections.Counter()
        self._rtcp_sent = 0
        self._next_report: float | None = None
        self.feedback_pending = False
        """Set when ``poll`` has new work sooner than ``next_deadline`` said (a hole, a keyframe
        need); the driver clears it and runs ``poll`` promptly. Lets it sleep long otherwise."""

    # ------------------------------------------------------------------ bindings

    def on_video_state(self, state: VideoState, now: float) -> list[ReceiveEvent]:
        """Apply a merged op12 state (``VoiceGatewayCore`` does the partial-update merging)."""
        layers: dict[int, vg.VideoStream | None] = {s.ssrc: s for s in state.streams if s.ssrc}
        if not layers and state.video_ssrc:
            layers[state.video_ssrc] = None
        events: list[ReceiveEvent] = []
        for ssrc, stream in list(self._streams.items()):
            if stream.user_id == state.user_id and ssrc not in layers:
                events += self._unbind(ssrc)
        for ssrc, layer in layers.items():
            rtx = layer.rtx_ssrc if layer is not None else state.rtx_ssrc
            stream_type = stream_type_of(layer, self.config.default_stream_type)
            active = layer.active if layer is not None else True
            events.append(self._bind(ssrc, state.user_id, rtx or None, stream_type, active, now))
        return events

    def on_client_disconnected(self, user_id: str) -> list[ReceiveEvent]:
        events: list[ReceiveEvent] = []
        for ssrc, stream in list(self._streams.items()):
            if stream.user_id == user_id:
                events += self._unbind(ssrc)
        return events

    def bind(
        self,
        ssrc: int,
        user_id: str,
        now: float,
        *,
        rtx_ssrc: int | None = None,
        stream_type: StreamType | None = None,
    ) -> StreamBound:
        """Bind one SSRC directly (e.g. from Ready streams or a test)."""
        return self._bind(ssrc, user_id, rtx_ssrc, stream_type or self.config.default_stream_type, True, now)

    def _bind(
        self, ssrc: int, user_id: str, rtx_ssrc: int | None, stream_type: StreamType, active: bool, now: float
    ) -> StreamBound:
        stream = self._streams.get(ssrc)
        if stream is None or stream.user_id != user_id:
            stream = self._streams[ssrc] = ReceiveStream(ssrc, user_id, self.config, now)
            self.feedback_pending = True  # the join's keyframe request
        if stream.rtx_ssrc is not None and stream.rtx_ssrc != rtx_ssrc:
            self._rtx_to_primary.pop(stream.rtx_ssrc, None)
        stream.rtx_ssrc = rtx_ssrc
        if rtx_ssrc:
            self._rtx_to_primary[rtx_ssrc] = ssrc
        stream.stream_type = stream_type
        if active and not stream.active:
            self._need_keyframe(stream, KeyframeReason.JOIN, now)
        stream.active = active
        return StreamBound(ssrc, user_id, rtx_ssrc, stream_type, active)

    def _unbind(self, ssrc: int) -> list[ReceiveEvent]:
        stream = self._streams.pop(ssrc)
        if stream.rtx_ssrc is not None:
            self._rtx_to_primary.pop(stream.rtx_ssrc, None)
        return [StreamUnbound(ssrc, stream.user_id)]

    def user_for_ssrc(self, ssrc: int) -> str | None:
        stream = self._streams.get(ssrc)
        if stream is None:
            primary = self._rtx_to_primary.get(ssrc)
            stream = None if primary is None else self._streams.get(primary)
        return None if stream is None else stream.user_id

    def is_video_ssrc(self, ssrc: int) -> bool:
        return ssrc in self._streams or ssrc in self._rtx_to_primary

    def is_video_payload_type(self, payload_type: int) -> bool:
        return payload_type in self._pt_codec or payload_type in self._rtx_pt

    # ------------------------------------------------------------------ policy inputs

    def suppress(self, user_id: str, stream_type: StreamType) -> None:
        """Drop frames of ``user_id``'s ``stream_type`` (a native watch of that screen is active)."""
        self._suppressed.add((user_id, stream_type))

    def unsuppress(self, user_id: str, stream_type: StreamType, now: float) -> None:
        if (user_id, stream_type) in self._suppressed:
            self._suppressed.discard((user_id, stream_type))
            for stream in self._streams.values():
                if stream.user_id == user_id and stream.stream_type == stream_type:
                    stream.started = False
                    self._need_keyframe(stream, KeyframeReason.JOIN, now)

    def dave_ready(self, now: float) -> None:
        """DAVE just became usable: ask every stream for a keyframe now (not rate-limited)."""
        self._dave_ready = True
        for stream in self._streams.values():
            self._need_keyframe(stream, KeyframeReason.JOIN, now)
            stream.forced_keyframe_request = True
        self.feedback_pending = True

    def _need_keyframe(self, stream: ReceiveStream, reason: KeyframeReason, now: float) -> None:
        if stream.awaiting_since is None and reason is not KeyframeReason.JOIN:
            stream.awaiting_since = now  # a loss (or decoder trouble): concealment clock starts
        if not stream.keyframes.waiting:
            self.feedback_pending = True
        stream.keyframes.need(reason, now)

    def request_keyframe(self, ssrc: int, reason: KeyframeReason, now: float) -> None:
        """The decoder was reset or reports errors: ask for a keyframe (rate-limited)."""
        stream = self._streams.get(ssrc)
        if stream is not None:
            self._need_keyframe(stream, reason, now)

    def on_rtcp(self, packets: Iterable[object], now: float) -> None:
        """Sender Reports of the senders we receive: remembered for LSR/DLSR in our reports."""
        for packet in packets:
            if isinstance(packet, SenderReport):
                stream = self._streams.get(packet.ssrc)
                if stream is not None:
                    stream.report.sender_report(packet.ntp_timestamp, now)

    # ------------------------------------------------------------------ media

    def receive(self, header: RtpHeader, payload: bytes, now: float) -> list[ReceiveEvent]:
        """One decrypted media packet (payload after padding and extension strip). Never raises."""
        self._packets += 1
        ssrc = header.ssrc
        stream = self._streams.get(ssrc)
        if (
            stream is None
            or header.payload_type != stream.media_pt
            or not payload
            or (depacketizer := stream.depacketizer) is None
        ):
            return self._receive_other(header, payload, stream, now)
        # The common case: media of a bound stream in the codec it already has.
        seq, timestamp = header.sequence, header.timestamp
        packet = _new_tuple(MediaPacket, (seq, timestamp, header.marker, payload, ssrc, now))
        if stream.report.packet(seq, timestamp, now):
            self.feedback_pending = True  # a hole: NACK timing starts now
        if not stream.reorder.release_next(packet):
            return self._drain(stream, stream.reorder.push(packet, now), now, [])
        events: list[ReceiveEvent] = []
        for frame in depacketizer.push_packet(packet):
            events += self._on_frame(stream, frame, now)
        if depacketizer.keyframe_needed:
            self._need_keyframe(stream, KeyframeReason.GAP, now)
        return events

    def _receive_other(
        self, header: RtpHeader, payload: bytes, stream: ReceiveStream | None, now: float
    ) -> list[ReceiveEvent]:
        """``receive`` for RTX, unknown SSRCs and PTs, empty payloads and codec changes."""
        ssrc = header.ssrc
        pt = header.payload_type
        rtx = stream is None or pt in self._rtx_pt
        if stream is None:  # an RTX SSRC: its primary from op12, or the usual primary + 1
            primary = self._rtx_to_primary.get(ssrc)
            if primary is None and pt in self._rtx_pt:
                primary = ssrc - 1 if ssrc - 1 in self._streams else None
            if primary is None:
                self._dropped[DROP_UNKNOWN_SSRC] += 1
                return []
            stream = self._streams[primary]
        packet = MediaPacket(header.sequence, header.timestamp, header.marker, payload, ssrc, now)
        if rtx:  # (also RTX on the media SSRC itself, as some senders do: unwrapped in place)
            stream.rtx_received += 1
            pt = self._rtx_pt.get(pt, pt)
            original = stream.rtx.unwrap(packet, stream.ssrc)
            if original is None:
                stream.dropped[DROP_RTX_MALFORMED if len(payload) < 2 else DROP_RTX_PROBE] += 1
                return []
            packet = original
        elif not payload:
            stream.dropped[DROP_EMPTY] += 1
            return []
        codec = self._pt_codec.get(pt)
        if codec is None:
            stream.dropped[DROP_UNKNOWN_PT] += 1
            return []
        events: list[ReceiveEvent] = []
        if codec != stream.codec:
            previous = stream.set_codec(codec)
            stream.media_pt = None  # an RTX packet may change the codec: the short path re-learns it
            if previous is not None:
                self._need_keyframe(stream, KeyframeReason.DECODER_RESET, now)
            events.append(CodecChanged(stream.ssrc, stream.user_id, previous, codec))
        if ssrc == stream.ssrc and pt == header.payload_type:
            stream.media_pt = pt  # later packets of this PT take the short path in ``receive``
        if stream.first_packet_at is None:
            stream.first_packet_at = now
        if ssrc == stream.ssrc and stream.report.packet(packet.seq, packet.timestamp, now):
            self.feedback_pending = True  # a hole: NACK timing starts now
        return self._drain(stream, stream.reorder.push(packet, now), now, events)

    def tick(self, now: float) -> list[ReceiveEvent]:
        """Release holes whose wait expired (frames may complete as a result)."""
        events: list[ReceiveEvent] = []
        for stream in list(self._streams.values()):
            deadline = stream.reorder.next_deadline()
            if deadline is not None and deadline <= now:
                events = self._drain(stream, stream.reorder.pop_ready(now), now, events)
        return events

    def _drain(
        self, stream: ReceiveStream, ready: list[MediaPacket | Gap], now: float, events: list[ReceiveEvent]
    ) -> list[ReceiveEvent]:
        depacketizer = stream.depacketizer
        if depacketizer is None:
            return events
        for item in ready:
            for frame in depacketizer.push(item):
                events += self._on_frame(stream, frame, now)
        if depacketizer.keyframe_needed:
            # A frame was lost beyond repair (or none decodable came yet): the chain is broken.
            self._need_keyframe(stream, KeyframeReason.GAP, now)
        return events

    def _on_frame(self, stream: ReceiveStream, frame: AssembledFrame, now: float) -> list[ReceiveEvent]:
        stream.frames_assembled += 1
        stream.fps_in.tick(now)
        data = frame.data
        if (stream.user_id, stream.stream_type) in self._suppressed:
            stream.frames_dropped[DROP_SUPPRESSED] += 1
            return []
        if not stream.active:
            stream.frames_dropped[DROP_INACTIVE] += 1
            return []
        if self._decrypt is not None:
            try:
                plain = self._decrypt(stream.user_int, data)
            except DecryptionFailed as exc:
                stream.dave_failed += 1
                stream.dave_failures[exc.reason] += 1
                stream.frames_dropped[DROP_DAVE] += 1
                self._need_keyframe(stream, KeyframeReason.GAP, now)
                if frame.keyframe:
                    stream.keyframes.answer_lost()  # re-ask after min_interval, not repeat_interval
                if not self._dave_ready:
                    # Frames that arrive before our DAVE session is ready (before the welcome) are
                    # expected to fail: counted, not diagnosed (no warning on the happy path).
                    stream.dave_failed_before_ready += 1
                    return []
                return stream.diagnose(frame, exc.reason, self.config.diagnostics_interval, now)
            if data.endswith(MAGIC_MARKER):
                stream.dave_ok += 1
            else:
                stream.dave_passthrough += 1
            data = plain
        else:
            stream.dave_passthrough += 1
        assert stream.codec is not None
        if stream.codec == "h264" and (frame.keyframe or frame.parameter_sets):
            # (Frames with neither an IDR nor an SPS/PPS give the cache nothing to see or add.)
            data = stream.parameter_sets.prepend_missing(data)
        if frame.keyframe:
            stream.keyframes.keyframe_received()
            stream.started = True
            stream.awaiting_since = None
            stream.keyframes_emitted += 1
            if stream.pli_sent_at is not None:  # a live run tells whether PLIs are honoured
                stream.pli_to_keyframe = now - stream.pli_sent_at
                stream.pli_sent_at = None
        conceal = False
        if not frame.keyframe:
            conceal = stream.concealing(self.config.conceal_after, now)
            if not stream.started and not conceal:
                stream.frames_dropped[DROP_AWAITING_KEYFRAME] += 1
                return []
            stream.frames_concealed += conceal
        stream.frames_emitted += 1
        if stream.first_frame_at is None:
            stream.first_frame_at = now
        return [
            EncodedVideoFrame(
                ssrc=stream.ssrc,
                user_id=stream.user_id,
                codec=stream.codec,
                stream_type=stream.stream_type,
                timestamp=frame.timestamp,
                keyframe=frame.keyframe,
                data=data,
                first_seq=frame.first_seq,
                last_seq=frame.last_seq,
                assembled_at=now,
                conceal=conceal,
            )
        ]

    # ------------------------------------------------------------------ feedback

    def poll(self, now: float) -> list[bytes]:
        """RTCP datagrams (plain, one packet each) to send now: NACKs, PLI/FIR, receiver report."""
        out: list[bytes] = []
        local = self.local_ssrc
        for stream in self._streams.values():
            if not stream.active or (stream.user_id, stream.stream_type) in self._suppressed:
                continue
            out += stream.feedback(local, self.config, now)
        if self._next_report is None:
            self._next_report = now + self.config.report_interval
        elif now >= self._next_report:
            self._next_report = now + self.config.report_interval
            blocks = [
                block
                for ssrc, stream in self._streams.items()
                if (block := stream.report.block(ssrc, now)) is not None
            ][:MAX_REPORT_BLOCKS]
            if blocks:
                out.append(ReceiverReport(local, tuple(blocks)).serialize())
        self._rtcp_sent += len(out)
        return out

    def next_deadline(self) -> float | None:
        """When ``tick``/``poll`` next have something to do (None: nothing scheduled)."""
        times: list[float] = []
        if self._next_report is not None and self._streams:
            times.append(self._next_report)
        for stream in self._streams.values():
            for deadline in (
                stream.reorder.next_deadline(),
                stream.nack.next_deadline() if self.config.nack else None,
                stream.keyframes.next_deadline(),
            ):
                if deadline is not None:
                    times.append(deadline)
            if stream.forced_keyframe_request:
                times.append(stream.bound_at)
        return min(times) if times else None

    # ------------------------------------------------------------------ queries

    def streams(self) -> tuple[int, ...]:
        return tuple(self._streams)

    def stream_statistics(self, ssrc: int) -> VideoStreamStatistics | None:
        stream = self._streams.get(ssrc)
        return None if stream is None else stream.statistics()

    def statistics(self) -> VideoReceiverStatistics:
        return VideoReceiverStatistics(
            packets=self._packets,
            dropped=dict(self._dropped),
            rtcp_sent=self._rtcp_sent,
            streams={ssrc: stream.statistics() for ssrc, stream in self._streams.items()},
        )
