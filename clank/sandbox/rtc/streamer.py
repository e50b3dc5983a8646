"""A simulated video sender: a Go Live screen share, or a webcam on the voice leg.

Real video: synthetic screen-like (or webcam-like) frames from :mod:`clank.media.synth`,
encoded with PyAV (:class:`clank.media.encoder.VideoEncoder`: H264 constrained baseline or VP8)
on a worker thread (``run_cpu``: ``trio.to_thread`` with a one-thread limiter per sender, so
encoding never runs on the trio thread and a sender encodes one frame at a time; inline under a
virtual clock, :mod:`clank.io.offload`), then on the trio thread:
DAVE-encrypt the access unit, packetize (H264 single NAL/STAP-A/FU-A — small NALs such as SPS+PPS
share a STAP-A as libwebrtc sends them — VP8 RFC 7741), RTP with the usual extension and RTP
padding on a seeded share of packets, transport-encrypt, send.

Sparse keyframes (as some Discord senders behave): ``keyframe_interval`` of 30 s or more (or
``KEYFRAMES_AT_START_ONLY``) and ``keyframe_requests=False`` (PLI/FIR are counted and ignored, and a
DAVE hiccup does not force a keyframe either); ``parameter_set_interval`` then repeats SPS/PPS in
band before a P frame so a viewer who joins mid-stream can decode (and conceal) without an IDR.

It keeps a retransmission store (a NACK is answered with RTX on its ``rtx_ssrc`` and RTX PT;
the SFU maps the PT to each receiver's declared RTX PT), answers PLI/FIR with a keyframe
(``force_keyframe``), and keeps the last source frames by RTP timestamp for PSNR checks. It
only encodes while someone can receive (another participant, DAVE ready or off); when it
(re)starts sending, the first frame is a keyframe.
"""

from __future__ import annotations

import collections
import random
import time
from typing import Final, Literal

import attrs
import av
import trio

from clank.codecs.annexb import split_nals
from clank.codecs.h264 import packetize_h264
from clank.codecs.rtx import RetransmissionStore
from clank.codecs.vp8 import packetize_vp8
from clank.errors import DaveError
from clank.io.offload import run_cpu
from clank.logging import get_logger
from clank.media.decoder import VideoCodec
from clank.media.encoder import EncodedFrame, VideoEncoder
from clank.media.synth import FrameSource, ScreenSynth, WebcamSynth
from clank.sandbox.rtc.users import SimulatedMember
from clank.wire import rtcp
from clank.wire import voice_gateway as vg
from clank.wire.rtp import VIDEO_EXTENSION, RtpHeader, build_padding

log = get_logger("clank.sandbox.rtc.streamer")

VIDEO_CLOCK: Final = 90000
MTU: Final = 1100
SOURCE_FRAMES_KEPT: Final = 90
SENT_FRAMES_KEPT: Final = 90
SEND_BUDGET: Final = 0.0005
"""Seconds of sending a frame's packets between yields to the scheduler."""

Content = Literal["screen", "webcam"]
KEYFRAMES_AT_START_ONLY: Final = 1e6
"""A ``keyframe_interval`` (seconds) that means: one keyframe when sending starts, then none."""


@attrs.frozen
class VideoSettings:
    codec: VideoCodec = "h264"
    width: int = 1280
    height: int = 720
    fps: int = 30
    bitrate: int = 2_500_000
    content: Content = "screen"
    keyframe_interval: float = 2.0
    padding_probability: float = 0.1
    seed: int = 0
    keyframe_requests: bool = True
    """Answer PLI/FIR (and DAVE not-ready) with a keyframe; False: counted and ignored."""
    parameter_set_interval: float = 0.0
    """H264: also send the last SPS/PPS before a P frame this often (seconds; 0: only with IDRs)."""


@attrs.frozen
class SentFrame:
    timestamp: int
    keyframe: bool
    plain: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    encrypted: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")


@attrs.frozen
class VideoSenderStatistics:
    frames_encoded: int
    frames_sent: int
    frames_not_ready: int
    packets_sent: int
    padded_packets: int
    keyframes_sent: int
    keyframes_forced: int
    nacks_received: int
    rtx_sent: int
    keyframe_requests: int
    keyframe_requests_ignored: int = 0
    parameter_sets_repeated: int = 0


class VideoSender:
    """Streams video for a member on its first send stream. Run :meth:`run` in a nursery."""

    def __init__(self, member: SimulatedMember, settings: VideoSettings | None = None) -> None:
        self.member = member
        self.settings = settings = settings or VideoSettings()
        if not member.participant.streams:
            raise DaveError("member has no video send stream")
        self.stream = member.participant.streams[0]
        codec = next(c for c in member.participant.codecs if c.name.lower() == settings.codec)
        self.payload_type = codec.payload_type
        self.rtx_payload_type = codec.rtx_payload_type or codec.payload_type
        self._source: FrameSource = (
            ScreenSynth(settings.width, settings.height, fps=settings.fps, seed=settings.seed, headlines=True)
            if settings.content == "screen"
            else WebcamSynth(settings.width, settings.height, fps=settings.fps)
        )
        self._encoder = VideoEncoder(
            settings.codec,
            settings.width,
            settings.height,
            settings.fps,
            settings.bitrate,
            keyframe_interval=settings.keyframe_interval,
        )
        self._limiter = trio.CapacityLimiter(1)
        self._rng = random.Random(settings.seed)
        self._store = RetransmissionStore()
        self._index = 0
        self.hold_picture = False  # tests: keep sending the same picture (a static screen)
        self._seq = self._rng.randrange(1 << 16)
        self._rtx_seq = self._rng.randrange(1 << 16)
        self._timestamp = self._rng.randrange(1 << 32)
        self._picture_id = 0
        self._keyframe_wanted = True
        self._was_sending = False
        self._parameter_sets = b""  # SPS+PPS NALs (Annex-B) of the last keyframe
        self._parameter_sets_at: float | None = None
        self.sources: collections.OrderedDict[int, av.VideoFrame] = collections.OrderedDict()
        self.sent: collections.deque[SentFrame] = collections.deque(maxlen=SENT_FRAMES_KEPT)
        self._stats = collections.Counter[str]()
        member.feedback_handler = self.on_feedback

    # ------------------------------------------------------------------ control

    def announce(self, active: bool) -> None:
        """op12 for this stream (active or not) to everyone in the call."""
        settings = self.settings
        stream = vg.VideoStream(
            ssrc=self.stream.ssrc,
            rtx_ssrc=self.stream.rtx_ssrc,
            rid="100",
            quality=100,
            active=active,
            max_bitrate=settings.bitrate,
            max_framerate=settings.fps,
            max_resolution=vg.MaxResolution("fixed", settings.width, settings.height),
        )
        video = vg.Video(
            audio_ssrc=self.member.audio_ssrc,
            video_ssrc=self.stream.ssrc if active else 0,
            rtx_ssrc=self.stream.rtx_ssrc if active else 0,
            streams=(stream,) if active else (),
        )
        self.member.server.set_video(self.member.participant, video)

    def force_keyframe(self) -> None:
        self._keyframe_wanted = True
        self._stats["keyframes_forced"] += 1

    def source_frame(self, timestamp: int) -> av.VideoFrame | None:
        """The source picture of the frame sent with RTP ``timestamp`` (the last few are kept)."""
        return self.sources.get(timestamp)

    def statistics(self) -> VideoSenderStatistics:
        s = self._stats
        return VideoSenderStatistics(
            frames_encoded=s["frames_encoded"],
            frames_sent=s["frames_sent"],
            frames_not_ready=s["frames_not_ready"],
            packets_sent=s["packets_sent"],
            padded_packets=s["padded_packets"],
            keyframes_sent=s["keyframes_sent"],
            keyframes_forced=s["keyframes_forced"],
            nacks_received=s["nacks_received"],
            rtx_sent=s["rtx_sent"],
            keyframe_requests=s["keyframe_requests"],
            keyframe_requests_ignored=s["keyframe_requests_ignored"],
            parameter_sets_repeated=s["parameter_sets_repeated"],
        )

    # ------------------------------------------------------------------ feedback

    def on_feedback(self, packet: rtcp.RtcpPacket) -> None:
        ssrc = self.stream.ssrc
        if isinstance(packet, rtcp.GenericNack) and packet.media_ssrc == ssrc:
            self._stats["nacks_received"] += 1
            self._retransmit(packet.lost_sequences())
            return
        pli = isinstance(packet, rtcp.PictureLossIndication) and packet.media_ssrc == ssrc
        fir = isinstance(packet, rtcp.FullIntraRequest) and any(s == ssrc for s, _ in packet.entries)
        if pli or fir:
            self._stats["keyframe_requests"] += 1
            if not self.settings.keyframe_requests:
                self._stats["keyframe_requests_ignored"] += 1
                return
            self.force_keyframe()

    def _retransmit(self, sequences: list[int]) -> None:
        for resend in self._store.answer(sequences, trio.current_time()):
            header = RtpHeader(
                self.rtx_payload_type,
                self._rtx_seq & 0xFFFF,
                resend.timestamp,
                self.stream.rtx_ssrc,
                marker=resend.marker,
                extension_profile=VIDEO_EXTENSION.profile,
                extension_words=VIDEO_EXTENSION.words,
            )
            self._rtx_seq += 1
            self.member.send_rtp(header, VIDEO_EXTENSION.body + resend.payload)
            self._stats["rtx_sent"] += 1

    # ------------------------------------------------------------------ sending

    async def run(self) -> None:
        """Announce the stream, then send frames at ``fps`` on absolute deadlines (cancel to stop)."""
        self.announce(True)
        period = 1.0 / self.settings.fps
        deadline = trio.current_time()
        while True:
            deadline += period
            now = trio.current_time()
            if deadline < now - 1.0:
                deadline = now
            await trio.sleep_until(deadline)
            if not self._can_send():
                self._was_sending = False
                continue
            if not self._was_sending:
                self._keyframe_wanted = True
                self._was_sending = True
            keyframe, self._keyframe_wanted = self._keyframe_wanted, False
            index = self._index
            self._index += 0 if self.hold_picture else 1
            source, encoded = await run_cpu(self._encode, index, keyframe, limiter=self._limiter)
            for frame in encoded:
                await self._send_frame(source, frame)

    def _can_send(self) -> bool:
        member = self.member
        if not member.joined or len(member.server.participants()) < 2:
            return False
        session = member.dave_session
        return session.protocol_version == 0 or session.ready

    def _encode(self, index: int, keyframe: bool) -> tuple[av.VideoFrame, list[EncodedFrame]]:
        """Worker thread: render and encode one frame."""
        source = self._source.frame(index)
        if keyframe:
            self._encoder.force_keyframe()
        return source, self._encoder.encode(source)

    def _with_parameter_sets(self, frame: EncodedFrame) -> bytes:
        """H264: remember a keyframe's SPS/PPS; repeat them before a P frame when it is time."""
        if self.settings.codec != "h264":
            return frame.data
        now = trio.current_time()
        if frame.keyframe:
            self._parameter_sets = b"".join(
                b"\x00\x00\x00\x01" + nal for nal in split_nals(frame.data) if nal and nal[0] & 0x1F in (7, 8)
            )
            self._parameter_sets_at = now
            return frame.data
        interval = self.settings.parameter_set_interval
        last = self._parameter_sets_at
        if interval <= 0 or not self._parameter_sets or last is None or now - last < interval:
            return frame.data
        self._parameter_sets_at = now
        self._stats["parameter_sets_repeated"] += 1
        return self._parameter_sets + frame.data

    async def _send_frame(self, source: av.VideoFrame, frame: EncodedFrame) -> None:
        """DAVE-encrypt, packetize and send one access unit; a keyframe's packets (several ms of
        work) yield to the scheduler every ``SEND_BUDGET``: an in-process demo shares the trio
        thread with clank's audio pacer."""
        self._stats["frames_encoded"] += 1
        data = self._with_parameter_sets(frame)
        try:
            encrypted = self.member.dave_session.encrypt_video(self.settings.codec, data)
        except DaveError:
            self._stats["frames_not_ready"] += 1
            if self.settings.keyframe_requests:
                self._keyframe_wanted = True
            return
        timestamp = self._timestamp & 0xFFFFFFFF
        self._timestamp += VIDEO_CLOCK // self.settings.fps
        if self.settings.codec == "h264":
            payloads = packetize_h264(encrypted, MTU, aggregate=True)
        else:
            payloads = packetize_vp8(encrypted, self._picture_id, MTU)
            self._picture_id += 1
        budget_end = time.perf_counter() + SEND_BUDGET
        for i, payload in enumerate(payloads):
            if time.perf_counter() >= budget_end:
                await trio.lowlevel.checkpoint()
                budget_end = time.perf_counter() + SEND_BUDGET
            marker = i == len(payloads) - 1
            padding = b""
            if self._rng.random() < self.settings.padding_probability:
                padding = build_padding(self._rng.randint(1, 48))
                self._stats["padded_packets"] += 1
            header = RtpHeader(
                self.payload_type,
                self._seq & 0xFFFF,
                timestamp,
                self.stream.ssrc,
                marker=marker,
                padding=bool(padding),
                extension_profile=VIDEO_EXTENSION.profile,
                extension_words=VIDEO_EXTENSION.words,
            )
            self._store.remember(self._seq, timestamp, marker, payload)
            self._seq += 1
            self.member.send_rtp(header, VIDEO_EXTENSION.body + payload + padding)
            self._stats["packets_sent"] += 1
        self._stats["frames_sent"] += 1
        if frame.keyframe:
            self._stats["keyframes_sent"] += 1
        self.sources[timestamp] = source
        while len(self.sources) > SOURCE_FRAMES_KEPT:
            self.sources.popitem(last=False)
        self.sent.append(SentFrame(timestamp, frame.keyframe, data, encrypted))
