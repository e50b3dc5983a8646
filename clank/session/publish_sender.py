"""The media plane of our Go Live: the publish state, the video sender and its tasks.

:class:`PublishState` is the shared state of one publish (it lives across role rebuilds by the
session): source, pause, viewers, the send core and encode worker of the current stream leg,
and the media-path callbacks that run on the trio thread (``on_rtcp``: NACK/PLI/FIR into the
send core; ``on_encoded``: DAVE-encrypt with the sender retry rule, then packetize).
:func:`open_video_sender` runs the sender on one connected stream leg::

    video sender (nursery; lifetime = the block)
     ├─ encode worker    long-lived libx264 thread (io/encode_worker.py)
     ├─ frame clock      every 1/fps: source picture -> worker (keyframe when asked)
     ├─ pacer            VideoSendCore.poll -> seal -> UDP (RTX answers first)
     ├─ sender reports   RTCP SR every 5 s
     └─ source runner    the source's feeder (``run()``); a finished source ends the stream

The control plane (go live, credentials, STREAM_DELETE, pause/resume, stop) is
:mod:`clank.session.stream_publish`.
"""

from __future__ import annotations

import collections
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final, Protocol

import attrs
import av
import trio

from clank.config import PublishSettings
from clank.errors import DaveError
from clank.io.encode_worker import EncodedAccessUnit, EncodeWorker, EncodeWorkerStatistics, open_encode_worker
from clank.io.gateway import GatewayClient
from clank.io.media_connection import MediaConnection
from clank.logging import get_logger
from clank.media.encoder import VideoEncoder
from clank.media.publish_source import PublishSource
from clank.protocol.video_send import (
    VideoSendConfig,
    VideoSendCore,
    VideoSendStatistics,
    encrypt_h264_checked,
)
from clank.session.roles import RoleHandle, RoleState
from clank.session.stream_leg import StreamLegSession
from clank.wire import rtcp
from clank.wire import voice_gateway as vg
from clank.wire.gateway_events import StreamKey

if TYPE_CHECKING:
    from clank.session.voice_session import VoiceSessionStatistics

__all__ = [
    "PublishState",
    "PublishStatistics",
    "StreamPublishSession",
    "announce",
    "close_source",
    "open_video_sender",
    "session_rebuilds",
]

log = get_logger("clank.publish")

SR_CHECK_INTERVAL: Final = 1.0
ENCODER_HEADROOM: Final = 0.85
"""x264 targets (and VBV-caps at) this share of ``max_bitrate``: RTP/extension overhead fits under it."""
SOURCE_FRAMES_KEPT: Final = 90
SENT_TIMESTAMPS_KEPT: Final = 4096


class StreamPublishSession(StreamLegSession, Protocol):
    """What the publish needs from the voice session (``clank.session.voice_session``)."""

    gateway: GatewayClient
    guild_id: str
    channel_id: str

    async def stop_role(self, name: str, reason: str = "stopped") -> None: ...

    def statistics(self) -> VoiceSessionStatistics: ...


@attrs.frozen
class PublishStatistics:
    stream_key: str | None
    state: RoleState
    reason: str | None
    paused: bool
    source: str | None
    viewers: int
    frames_encoded: int
    frames_sent: int
    keyframes: int
    bitrate: float
    encode_p99_ms: float | None
    nacks_answered: int
    plis_answered: int
    frames_dropped: int
    dave_retries: int
    dave_not_ready: int
    keyframe_response_ms: float | None
    live_at: float | None
    send: VideoSendStatistics | None
    encode: EncodeWorkerStatistics | None
    server_moves: int = 0
    """Times the stream leg reconnected on a mid-publish STREAM_SERVER_UPDATE (Discord moved it)."""


class PublishState:
    """Shared state of the publish (lives across role rebuilds by the session)."""

    def __init__(
        self, session: StreamPublishSession, settings: PublishSettings, source: PublishSource | None
    ) -> None:
        self.session = session
        self.settings = settings
        self.source = source
        self.key: StreamKey | None = None
        self.handle: RoleHandle[PublishState] | None = None
        self.connection: MediaConnection | None = None
        self.core: VideoSendCore | None = None
        self.worker: EncodeWorker | None = None
        self.end_reason: str | None = None
        self.stop_requested = False
        self.paused = False
        self.live_at: float | None = None
        self.server_moves = 0
        """Times the stream leg reconnected on a STREAM_SERVER_UPDATE while live."""
        self.ended_at: float | None = None
        self.rebuilds = session_rebuilds(session)
        self.viewers: set[str] = set()
        self.sources: collections.OrderedDict[int, av.VideoFrame] = collections.OrderedDict()
        self.last_sent: av.VideoFrame | None = None
        self.sent_timestamps: collections.deque[int] = collections.deque(maxlen=SENT_TIMESTAMPS_KEPT)
        self.pli_pending_at: float | None = None
        self.keyframe_response: float | None = None
        self.wake = trio.Event()
        self.source_changed = trio.Event()
        self.stop_reason = "stopped"
        self.decode_limiter = trio.CapacityLimiter(1)
        self.c = collections.Counter[str]()

    def reset(self) -> None:
        self.end_reason = None
        self.ended_at = None
        self.rebuilds = session_rebuilds(self.session)
        self.key = None
        self.connection = None
        self.core = None
        self.worker = None
        self.live_at = None
        self.viewers.clear()

    def poke(self) -> None:
        self.wake.set()

    def statistics(self) -> PublishStatistics:
        handle = self.handle
        send = None if self.core is None else self.core.statistics()
        encode = None if self.worker is None else self.worker.statistics()
        return PublishStatistics(
            stream_key=None if self.key is None else str(self.key),
            state=RoleState.CONNECTING if handle is None else handle.state,
            reason=self.end_reason,
            paused=self.paused,
            source=None if self.source is None else self.source.name,
            viewers=len(self.viewers),
            frames_encoded=0 if encode is None else encode.encoded,
            frames_sent=0 if send is None else send.frames_sent,
            keyframes=0 if send is None else send.keyframes_sent,
            bitrate=0.0 if send is None else send.bitrate,
            encode_p99_ms=None if encode is None else encode.encode_p99_ms,
            nacks_answered=0 if send is None else send.nacks_answered,
            plis_answered=0 if send is None else send.plis_received + send.firs_received,
            frames_dropped=self.c["frames_dropped"] + (0 if encode is None else encode.dropped),
            dave_retries=self.c["dave_retries"],
            dave_not_ready=self.c["dave_not_ready"],
            keyframe_response_ms=None if self.keyframe_response is None else self.keyframe_response * 1000,
            live_at=self.live_at,
            send=send,
            encode=encode,
            server_moves=self.server_moves,
        )

    # ------------------------------------------------------------------ media path (trio thread)

    def on_rtcp(self, packets: tuple[rtcp.RtcpPacket, ...], now: float) -> None:
        core = self.core
        if core is None:
            return
        before = core.statistics()
        core.on_rtcp(packets, now)
        after = core.statistics()
        asked = after.plis_received + after.firs_received > before.plis_received + before.firs_received
        if asked and self.pli_pending_at is None:
            self.pli_pending_at = now
        self.poke()

    def on_encoded(self, unit: EncodedAccessUnit) -> None:
        core, conn = self.core, self.connection
        if core is None or conn is None or self.paused:
            self.c["frames_dropped"] += 1
            return
        try:
            encrypted, attempts = encrypt_h264_checked(
                lambda au: conn.dave.encrypt_video("h264", au), unit.data
            )
        except DaveError:
            self.c["dave_not_ready"] += 1
            core.request_keyframe(force=True)
            return
        self.c["dave_retries"] += attempts - 1
        if encrypted is None:
            self.c["frames_dropped"] += 1
            core.request_keyframe(force=True)
            return
        now = trio.current_time()
        timestamp = core.push_frame(
            encrypted, keyframe=unit.keyframe, capture_time=unit.capture_time, now=now
        )
        if timestamp is None:
            return
        self.sent_timestamps.append(timestamp)
        if unit.keyframe and self.pli_pending_at is not None:
            self.keyframe_response = now - self.pli_pending_at
            self.pli_pending_at = None
        if unit.source is not None:
            self.last_sent = unit.source
            self.sources[timestamp] = unit.source
            while len(self.sources) > SOURCE_FRAMES_KEPT:
                self.sources.popitem(last=False)
        self.poke()


def session_rebuilds(session: StreamPublishSession) -> int:
    """How often the voice session was rebuilt (a new voice session id) so far."""
    return session.statistics().rebuilds


async def announce(conn: MediaConnection, settings: PublishSettings, *, active: bool) -> None:
    """op12 (our screen stream, active or not) and op5 (2 = SOUNDSHARE while live, else 0)."""
    await conn.video_state(
        active,
        max_bitrate=settings.max_bitrate,
        max_framerate=settings.fps,
        max_resolution=vg.MaxResolution("fixed", settings.width, settings.height),
    )
    await conn.speaking(vg.Speaking.SOUNDSHARE if active else 0)


@asynccontextmanager
async def open_video_sender(
    publish: PublishState, conn: MediaConnection, stream: vg.ReadyStream, handle: RoleHandle[PublishState]
) -> AsyncIterator[None]:
    """Send video on ``conn``'s Ready ``stream`` while in the block: live (op12 + op5) at entry."""
    settings = publish.settings
    rng = random.Random()
    publish.core = core = VideoSendCore(
        VideoSendConfig(
            ssrc=stream.ssrc,
            rtx_ssrc=stream.rtx_ssrc,
            fps=settings.fps,
            max_bitrate=settings.max_bitrate,
            mtu=settings.mtu,
            pacing_factor=settings.pacing_factor,
            first_sequence=rng.randrange(1 << 16),
            first_rtx_sequence=rng.randrange(1 << 16),
            first_timestamp=rng.randrange(1 << 32),
        )
    )
    if publish.paused:
        core.pause()
    encoder = VideoEncoder(
        "h264",
        settings.width,
        settings.height,
        settings.fps,
        int(settings.max_bitrate * ENCODER_HEADROOM),
        keyframe_interval=settings.keyframe_interval_s,
        cap_bitrate=True,
    )
    publish.connection = conn
    async with open_encode_worker(encoder, on_output=publish.on_encoded) as worker:
        publish.worker = worker
        await announce(conn, settings, active=not publish.paused)
        publish.live_at = trio.current_time()
        handle.set_state(RoleState.READY)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_frame_clock, publish, core, worker, conn)
            nursery.start_soon(_pacer, publish, core, conn)
            nursery.start_soon(_sender_reports, core, conn)
            nursery.start_soon(_source_runner, publish, handle)
            yield
            nursery.cancel_scope.cancel()


def _dave_usable(conn: MediaConnection) -> bool:
    dave = conn.dave
    return dave.protocol_version == 0 or dave.ready


async def _frame_clock(
    publish: PublishState, core: VideoSendCore, worker: EncodeWorker, conn: MediaConnection
) -> None:
    """Every 1/fps on absolute deadlines: the source's picture to the encoder (keyframe when asked)."""
    period = 1.0 / publish.settings.fps
    deadline = trio.current_time()
    while True:
        deadline += period
        now = trio.current_time()
        if deadline < now - 1.0:  # fell far behind (a stalled loop): skip ahead, don't burst
            deadline = now
        await trio.sleep_until(deadline)
        source = publish.source
        if publish.paused or source is None:
            continue
        if not _dave_usable(conn):
            publish.c["dave_not_ready"] += 1
            core.request_keyframe(force=True)
            continue
        frame = source.next_frame(deadline)
        if frame is None:
            continue
        keyframe = core.take_keyframe_request(trio.current_time())
        if not worker.submit(frame, deadline, keyframe=keyframe) and keyframe:
            core.request_keyframe(force=True)


async def _pacer(publish: PublishState, core: VideoSendCore, conn: MediaConnection) -> None:
    """Release what the send core's pacer allows; sleep until its next deadline or a new frame."""
    while True:
        publish.wake = trio.Event()
        for packet in core.poll(trio.current_time()):
            conn.send_rtp_packet(packet.header, packet.plaintext)
        deadline = core.next_deadline()
        with trio.move_on_at(float("inf") if deadline is None else deadline):
            await publish.wake.wait()


def close_source(source: PublishSource | None) -> None:
    close = getattr(source, "close", None)
    if close is not None:
        close()


async def _source_runner(publish: PublishState, handle: RoleHandle[PublishState]) -> None:
    """Run the current source's feeder (``run()``, if it has one); a finished source ends the stream."""
    while True:
        source = publish.source
        changed = publish.source_changed
        run: Callable[[], Awaitable[None]] | None = getattr(source, "run", None)
        if run is None:
            await changed.wait()
            continue
        finished = False
        async with trio.open_nursery() as nursery:

            async def feed(feeder: Callable[[], Awaitable[None]]) -> None:
                nonlocal finished
                await feeder()
                finished = True
                nursery.cancel_scope.cancel()

            nursery.start_soon(feed, run)
            await changed.wait()
            nursery.cancel_scope.cancel()
        if finished and publish.source is source:
            log.info("publish source ended", source=getattr(source, "name", None))
            publish.stop_requested = True
            publish.stop_reason = "source_ended"
            handle.stop_nowait("source ended")
            return


async def _sender_reports(core: VideoSendCore, conn: MediaConnection) -> None:
    while True:
        await trio.sleep(SR_CHECK_INTERVAL)
        report = core.sender_report(trio.current_time(), time.time())
        if report is not None:
            conn.send_rtcp(report)
