"""Publishing our own Go Live: the ``stream_publish`` role (discord-protocol.md §2.8 #2, §5.3, §6, C.2).

``await start_stream_publish(session, source=PushedFrames())`` starts a child role nursery of the
voice session and returns a :class:`PublishHandle` once video can flow, or raises
``PublishError(reason)`` (:data:`PUBLISH_FAILURES`). Inside the role::

    stream_publish role nursery
     ├─ gateway dispatches   STREAM_CREATE / STREAM_SERVER_UPDATE / STREAM_DELETE for our key
     ├─ media connection     stream server WS + UDP (server_id = rtc_server_id, our voice session
     │                       id, video + screen/100, op1 H264 encode, DAVE group rtc_server_id - 1)
     ├─ encode worker        long-lived libx264 thread (io/encode_worker.py)
     ├─ frame clock          every 1/fps: source picture -> worker (keyframe when asked)
     ├─ pacer                VideoSendCore.poll -> seal -> UDP (RTX answers first)
     └─ sender reports       RTCP SR every 5 s

1. op18 STREAM_CREATE (``type: guild``), then op22 ``paused: false`` (what Discord's own client
   and DVS do); wait ``publish.credentials_timeout_s`` for STREAM_CREATE + STREAM_SERVER_UPDATE of
   ``guild:<guild>:<channel>:<us>``.
2. The stream leg: op12 announces our screen stream (ssrc, rtx_ssrc, active, max resolution,
   frame rate and bitrate from ``[publish]``), op5 speaking 2 (SOUNDSHARE). Each encoded access
   unit is DAVE-encrypted on the leg's own DAVE session with the sender retry rule
   (``encrypt_h264_checked``), then packetized and paced by :class:`VideoSendCore`. Frames wait
   for DAVE to be ready (a viewer with passthrough off would drop clear frames).
3. Pause: op22 ``paused: true``, op12 inactive, op5 0, no video RTP; resume: the reverse, and the
   first frame is a keyframe. Stop: op19, the role ends. A STREAM_DELETE from the server ends the
   role with ``stream_deleted``; a stream-leg failure with ``transport`` — only this role: voice
   and every watch carry on. A voice ``session_id`` change rebuilds it (it goes live again).

Only one publish runs per session; starting one while it runs switches the source and keeps the
live stream (a keyframe starts the new picture).
"""

from __future__ import annotations

import collections
import random
import time
import weakref
from collections.abc import Mapping
from typing import Any, Final

import attrs
import av
import trio

from clank.config import PublishSettings
from clank.errors import (
    ClankError,
    CryptoError,
    DaveError,
    InvalidArgument,
    MalformedMessage,
    ProtocolError,
    PublishError,
    TransportError,
    WatchError,
)
from clank.io.encode_worker import EncodedAccessUnit, EncodeWorkerStatistics, open_encode_worker
from clank.io.gateway import Dispatch
from clank.io.media_connection import (
    MediaConnection,
    MediaEvent,
    TransportStateChanged,
    open_media_connection,
)
from clank.io.media_leg_params import MediaConnectionParams
from clank.io.offload import run_cpu
from clank.logging import bound, get_logger, register_secret
from clank.media.encoder import VideoEncoder
from clank.media.publish_source import PublishSource, PushedFrames, decode_image
from clank.protocol import voice_gateway as vgc
from clank.protocol.video_send import (
    VideoSendConfig,
    VideoSendCore,
    VideoSendStatistics,
    encrypt_h264_checked,
)
from clank.session.roles import RoleHandle, RoleState
from clank.session.watch_handle import WatchSession
from clank.wire import rtcp
from clank.wire import voice_gateway as vg
from clank.wire.gateway_events import (
    StreamCreate,
    StreamDelete,
    StreamKey,
    StreamServerUpdate,
    dave_group_id_for_stream,
)

__all__ = ["PUBLISH_FAILURES", "PUBLISH_ROLE", "PublishHandle", "PublishStatistics", "start_stream_publish"]

log = get_logger("clank.publish")

PUBLISH_ROLE: Final = "stream_publish"
PUBLISH_FAILURES: Final[Mapping[str, str]] = {
    "not_in_voice": "we are not (yet) in a voice channel with a running voice role",
    "no_credentials": "no STREAM_CREATE + STREAM_SERVER_UPDATE of our key in publish.credentials_timeout_s",
    "stream_deleted": "STREAM_DELETE for our stream (we left voice, the server ended it, ...)",
    "transport": "the stream leg failed (websocket closed, handshake timeout, protocol error)",
    "no_send_stream": "the stream server's Ready assigned no video stream to send on",
    "codec": "the server asked for a video codec other than H264 (op4 or op14)",
    "interrupted": "the voice session ended or was rebuilt (a rebuild goes live again)",
    "wrong_source": "an image was pushed while the source is not 'frames'",
    "source_ended": "the music or media came to its end (not an error: the stream stops)",
}
"""Stable ``PublishError.reason`` codes of a publish that could not start or ended."""

STOP_BUDGET: Final = 1.0
DELETE_GRACE: Final = 0.3
"""After a stream-leg failure, a STREAM_DELETE arriving this soon names the reason instead."""
REBUILD_WINDOW: Final = 5.0
"""A STREAM_DELETE this close before a session rebuild is taken as caused by it (we go live again)."""
DISPATCH_BUFFER: Final = 64
SR_CHECK_INTERVAL: Final = 1.0
ENCODER_HEADROOM: Final = 0.85
"""x264 targets (and VBV-caps at) this share of ``max_bitrate``: RTP/extension overhead fits under it."""
SOURCE_FRAMES_KEPT: Final = 90
SENT_TIMESTAMPS_KEPT: Final = 4096
_EVENTS: Final = frozenset({"STREAM_CREATE", "STREAM_SERVER_UPDATE", "STREAM_DELETE", "STREAM_UPDATE"})


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


class _Publish:
    """Shared state of the publish (lives across role rebuilds by the session)."""

    def __init__(
        self, session: WatchSession, settings: PublishSettings, source: PublishSource | None
    ) -> None:
        self.session = session
        self.settings = settings
        self.source = source
        self.key: StreamKey | None = None
        self.handle: RoleHandle[Any] | None = None
        self.connection: MediaConnection | None = None
        self.core: VideoSendCore | None = None
        self.worker: Any = None
        self.end_reason: str | None = None
        self.stop_requested = False
        self.paused = False
        self.live_at: float | None = None
        self.ended_at: float | None = None
        self.rebuilds = _rebuilds(session)
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
        self.rebuilds = _rebuilds(self.session)
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


class PublishHandle:
    """Our running (or ended) Go Live: stream key, state, source, pause/resume/stop, statistics."""

    def __init__(self, publish: _Publish) -> None:
        self._p = publish

    def __repr__(self) -> str:
        return f"PublishHandle(key={self.stream_key}, state={self.state.value}, paused={self.paused})"

    @property
    def stream_key(self) -> StreamKey | None:
        return self._p.key

    @property
    def state(self) -> RoleState:
        reason = self._p.end_reason
        if reason is not None:
            return RoleState.DISCONNECTED if reason in ("stopped", "source_ended") else RoleState.FAILED
        handle = self._p.handle
        return RoleState.CONNECTING if handle is None else handle.state

    @property
    def reason(self) -> str | None:
        """Why the publish ended (a :data:`PUBLISH_FAILURES` code, or ``stopped``); None while live."""
        return self._p.end_reason

    @property
    def active(self) -> bool:
        return self._p.end_reason is None and not self.state.final

    @property
    def paused(self) -> bool:
        return self._p.paused

    def live_again(self) -> bool:
        """True once video can flow on the current role (after a rebuild: the new one)."""
        return self._p.live_at is not None

    @property
    def source(self) -> PublishSource | None:
        return self._p.source

    @property
    def last_sent_frame(self) -> av.VideoFrame | None:
        """The picture of the latest frame we sent (the dashboard's preview)."""
        return self._p.last_sent

    def source_frame(self, rtp_timestamp: int) -> av.VideoFrame | None:
        """The picture sent with ``rtp_timestamp`` (the last few seconds are kept)."""
        return self._p.sources.get(rtp_timestamp)

    def sent_timestamps(self) -> list[int]:
        """RTP timestamps of the frames we sent, oldest first (the last 4096)."""
        return list(self._p.sent_timestamps)

    def statistics(self) -> PublishStatistics:
        return self._p.statistics()

    def set_source(self, source: PublishSource | None) -> None:
        """Switch what is published; the stream stays live and the new picture starts with a keyframe."""
        p = self._p
        old = p.source
        if old is source:
            return
        p.source = source
        _close_source(old)
        p.source_changed.set()
        p.source_changed = trio.Event()
        if p.core is not None:
            p.core.request_keyframe(force=True)

    async def push_image(
        self, data: bytes, content_type: str, *, raw_size: tuple[int, int] | None = None
    ) -> None:
        """Decode (off the trio thread) and queue one image on the pushed-frames source."""
        source = self._p.source
        if not isinstance(source, PushedFrames):
            raise PublishError("wrong_source", "the publish source is not 'frames'")
        settings = self._p.settings
        if len(data) > settings.max_image_bytes:
            raise InvalidArgument(
                "image", f"{len(data)} bytes is over publish.max_image_bytes ({settings.max_image_bytes})"
            )
        frame = await run_cpu(
            lambda: decode_image(data, content_type, settings.width, settings.height, raw_size=raw_size),
            limiter=self._p.decode_limiter,
        )
        source.push(frame)

    async def pause(self) -> None:
        """op22 paused, op12 inactive, op5 0; no video RTP until :meth:`resume`."""
        await self._set_paused(True)

    async def resume(self) -> None:
        """op22 unpaused, op12 active, op5 2; the first frame is a keyframe."""
        await self._set_paused(False)

    async def _set_paused(self, paused: bool) -> None:
        p = self._p
        if p.paused == paused or not self.active:
            return
        p.paused = paused
        core, conn, key = p.core, p.connection, p.key
        if core is not None:
            core.pause() if paused else core.resume()
        hook = getattr(p.source, "pause" if paused else "resume", None)
        if hook is not None:
            hook()  # music pauses with the stream
        if key is not None:
            await p.session.gateway.stream_set_paused(str(key), paused)
        if conn is not None:
            await _announce(conn, p.settings, active=not paused)
        log.info("publish paused" if paused else "publish resumed", stream_key=str(key))

    async def stop(self) -> None:
        """op19 and end the role (bounded); idempotent."""
        self._p.stop_requested = True
        await self._p.session.stop_role(PUBLISH_ROLE, "stopped")

    async def wait_stopped(self) -> None:
        handle = self._p.handle
        if handle is not None:
            await handle.wait_stopped()


# ---------------------------------------------------------------------- starting


_BOOKS: weakref.WeakKeyDictionary[Any, PublishHandle] = weakref.WeakKeyDictionary()


def current_publish(session: WatchSession) -> PublishHandle | None:
    """The session's publish handle (running or the last one that ended), if any."""
    return _BOOKS.get(session)


async def start_stream_publish(
    session: WatchSession, *, source: PublishSource | None = None, settings: PublishSettings | None = None
) -> PublishHandle:
    """Go live with ``source``; returns once video can flow, or raises ``PublishError``.

    When a publish is already running its source is switched (the live stream is kept).
    """
    existing = _BOOKS.get(session)
    if existing is not None and existing.active:
        if source is not None:
            existing.set_source(source)
        return existing
    try:
        voice = session.voice
    except ClankError as exc:
        raise PublishError("not_in_voice", str(exc)) from exc
    if voice.state.final or session.session_id is None:
        raise PublishError("not_in_voice", f"voice role is {voice.state.value}")
    publish = _Publish(session, settings or session.settings.publish, source)
    handle = PublishHandle(publish)
    _BOOKS[session] = handle
    role = await session.start_role(PUBLISH_ROLE, _publish_role, publish)
    publish.handle = role
    state = await role.wait_state(RoleState.READY)
    if state is not RoleState.READY:
        error = role.error
        if isinstance(error, WatchError):
            raise PublishError(error.reason, error.detail)
        raise PublishError(publish.end_reason or "transport", role.reason or "")
    return handle


async def _publish_role(
    handle: RoleHandle[Any],
    publish: _Publish,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    publish.handle = handle
    handle.attach(publish, publish.statistics)
    session = publish.session
    task_status.started()
    if publish.end_reason is not None:
        if publish.stop_requested or not _rebuilt_since_end(publish):
            return  # relaunched by a session rebuild after the publish had ended for good
        publish.reset()
    reason = "interrupted"
    try:
        with session.gateway.subscribe(DISPATCH_BUFFER, events=_EVENTS) as dispatches:
            key = StreamKey.for_voice_channel(session.guild_id or None, session.channel_id, session.user_id)
            publish.key = key
            with bound(stream_key=str(key)):
                creds = await _go_live(session, publish, key, dispatches)
                try:
                    await _run_leg(handle, publish, key, creds, dispatches)
                except* (TransportError, ProtocolError, CryptoError):
                    # The server often closes the leg right after STREAM_DELETE: that reason wins.
                    deleted = await _pending_delete(key, dispatches)
                    if deleted is not None:
                        raise PublishError("stream_deleted", deleted) from None
                    raise
    except* WatchError as group:
        reason = _leaf_reason(group)
        raise
    except* (TransportError, ProtocolError, CryptoError) as group:
        if reason == "interrupted":  # a PublishError next to it (stream_deleted ...) names the reason
            reason = "transport"
        leaf = _first_leaf(group)
        raise PublishError("transport", f"{type(leaf).__name__}: {leaf}") from leaf
    finally:
        if publish.stop_requested:
            reason = publish.stop_reason
        publish.end_reason = reason
        publish.ended_at = trio.current_time()
        if reason != "interrupted":
            _close_source(publish.source)
        key_sent = publish.key
        if key_sent is not None and reason != "stream_deleted":
            with trio.move_on_after(STOP_BUDGET, shield=True):
                try:
                    await session.gateway.stream_delete(str(key_sent))
                except ClankError:
                    pass  # the gateway is gone: nothing to tell it
        stats = publish.statistics()
        log.info(
            "stream publish ended",
            reason=reason,
            frames=stats.frames_sent,
            keyframes=stats.keyframes,
            stream_key=None if key_sent is None else str(key_sent),
        )


def _rebuilds(session: WatchSession) -> int:
    statistics = getattr(session, "statistics", None)
    return int(getattr(statistics(), "rebuilds", 0)) if statistics is not None else 0


def _rebuilt_since_end(publish: _Publish) -> bool:
    """A session rebuild relaunched us: go live again if the rebuild is what ended the stream.

    ``interrupted`` is the rebuild cancelling the role; a STREAM_DELETE just before the rebuild
    (the server deletes a stream whose owner's voice session changed) counts too.
    """
    if publish.end_reason == "interrupted":
        return True
    recent = publish.ended_at is not None and trio.current_time() - publish.ended_at <= REBUILD_WINDOW
    return publish.end_reason == "stream_deleted" and recent and _rebuilds(publish.session) > publish.rebuilds


async def _pending_delete(key: StreamKey, dispatches: trio.MemoryReceiveChannel[Dispatch]) -> str | None:
    """The reason of a STREAM_DELETE for ``key`` arriving within ``DELETE_GRACE`` s, else None."""
    with trio.move_on_after(DELETE_GRACE):
        async for dispatch in dispatches:
            try:
                _apply_dispatch(key, dispatch, None)
            except PublishError as exc:
                return exc.detail
    return None


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _leaf_reason(group: BaseExceptionGroup[WatchError]) -> str:
    leaf = _first_leaf(group)
    return leaf.reason if isinstance(leaf, WatchError) else "transport"


@attrs.define
class _Credentials:
    rtc_server_id: str | None = None
    rtc_channel_id: str | None = None
    endpoint: str | None = None
    token: str | None = attrs.field(default=None, repr=False)

    @property
    def complete(self) -> bool:
        return bool(self.rtc_server_id and self.endpoint and self.token)


async def _go_live(
    session: WatchSession, publish: _Publish, key: StreamKey, dispatches: trio.MemoryReceiveChannel[Dispatch]
) -> _Credentials:
    creds = _Credentials()
    await session.gateway.stream_create(session.guild_id or None, session.channel_id)
    await session.gateway.stream_set_paused(str(key), publish.paused)
    log.info("go live requested", stream_key=str(key))
    timeout = publish.settings.credentials_timeout_s
    with trio.move_on_after(timeout):
        while not creds.complete:
            _apply_dispatch(key, await dispatches.receive(), creds)
    if not creds.complete:
        raise PublishError("no_credentials", f"no stream server for {key} within {timeout} s")
    assert creds.token is not None
    register_secret(creds.token)
    return creds


def _apply_dispatch(key: StreamKey, dispatch: Dispatch, creds: _Credentials | None) -> None:
    """Credentials from STREAM_* dispatches; raises ``PublishError`` when the stream is deleted."""
    try:
        if dispatch.name == "STREAM_CREATE":
            create = StreamCreate.parse(dispatch.data)
            if create.stream_key == key and creds is not None:
                creds.rtc_server_id = create.rtc_server_id
                creds.rtc_channel_id = create.rtc_channel_id
        elif dispatch.name == "STREAM_SERVER_UPDATE":
            update = StreamServerUpdate.parse(dispatch.data)
            if update.stream_key == key and creds is not None:
                creds.endpoint, creds.token = update.endpoint, update.token
        elif dispatch.name == "STREAM_DELETE":
            delete = StreamDelete.parse(dispatch.data)
            if delete.stream_key == key:
                raise PublishError("stream_deleted", delete.reason or "")
    except MalformedMessage as exc:
        log.warning("publish dispatch malformed", event=dispatch.name, error=str(exc))


async def _announce(conn: MediaConnection, settings: PublishSettings, *, active: bool) -> None:
    """op12 (our screen stream, active or not) and op5 (2 = SOUNDSHARE while live, else 0)."""
    await conn.video_state(
        active,
        max_bitrate=settings.max_bitrate,
        max_framerate=settings.fps,
        max_resolution=vg.MaxResolution("fixed", settings.width, settings.height),
    )
    await conn.speaking(vg.Speaking.SOUNDSHARE if active else 0)


async def _run_leg(
    handle: RoleHandle[Any],
    publish: _Publish,
    key: StreamKey,
    creds: _Credentials,
    dispatches: trio.MemoryReceiveChannel[Dispatch],
) -> None:
    session = publish.session
    assert creds.rtc_server_id is not None and creds.endpoint is not None and creds.token is not None
    session_id = session.session_id
    if session_id is None:
        raise PublishError("not_in_voice", "no voice session id")
    settings = publish.settings
    group = dave_group_id_for_stream(creds.rtc_server_id)
    params = MediaConnectionParams(
        role="stream_publish",
        endpoint=creds.endpoint,
        server_id=creds.rtc_server_id,
        channel_id=str(group),  # one stream channel id: rtc_server_id - 1, as for the DAVE group
        user_id=session.user_id,
        session_id=session_id,
        token=creds.token,
        dave_group_id=group,
        settings=session.settings,
        video=True,
        streams=(vg.StreamRequest(type="screen", rid="100", quality=100),),
        transports=session.transports,
    )

    refused: list[str] = []
    codec_changed = trio.Event()

    async def codec_guard() -> None:
        await codec_changed.wait()
        raise PublishError("codec", f"the server switched the stream to {refused[0]}; we encode H264 only")

    def on_event(event: MediaEvent) -> None:
        if isinstance(event, vgc.ClientsConnected):
            publish.viewers.update(event.user_ids)
            if publish.core is not None:
                publish.core.request_keyframe()  # a newcomer can start decoding at once
        elif isinstance(event, vgc.ClientDisconnected):
            publish.viewers.discard(event.user_id)
        elif isinstance(event, vgc.SessionUpdate):
            codec = event.update.video_codec
            if codec is not None and codec.upper() != "H264":
                refused.append(codec)  # op14 asks for a codec we do not encode: end (only) this role
                codec_changed.set()
        elif isinstance(event, TransportStateChanged):
            if event.state == "reconnecting":
                handle.set_state(RoleState.RECONNECTING, event.reason, event.close_code)
            elif event.state == "ready" and publish.live_at is not None:
                handle.set_state(RoleState.READY)

    async with open_media_connection(params, rtcp_handler=publish.on_rtcp, event_handler=on_event) as conn:
        described = conn.session
        if described is not None and described.video_codec not in (None, "H264"):
            raise PublishError("codec", f"the server wants {described.video_codec}")
        if not conn.ready_streams:
            raise PublishError("no_send_stream", "Ready has no video stream")
        stream = conn.ready_streams[0]
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
            await _announce(conn, settings, active=not publish.paused)
            publish.live_at = trio.current_time()
            handle.set_state(RoleState.READY)
            log.info("stream publish live", server_id=params.server_id, ssrc=stream.ssrc)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_frame_clock, publish, core, worker, conn)
                nursery.start_soon(_pacer, publish, core, conn)
                nursery.start_soon(_sender_reports, core, conn)
                nursery.start_soon(_source_runner, publish, handle)
                nursery.start_soon(codec_guard)
                async for dispatch in dispatches:
                    _apply_dispatch(key, dispatch, None)
                nursery.cancel_scope.cancel()  # the gateway client stopped: so does the publish


def _dave_usable(conn: MediaConnection) -> bool:
    dave = conn.dave
    return dave.protocol_version == 0 or dave.ready


async def _frame_clock(publish: _Publish, core: VideoSendCore, worker: Any, conn: MediaConnection) -> None:
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


async def _pacer(publish: _Publish, core: VideoSendCore, conn: MediaConnection) -> None:
    """Release what the send core's pacer allows; sleep until its next deadline or a new frame."""
    while True:
        publish.wake = trio.Event()
        for packet in core.poll(trio.current_time()):
            conn.send_rtp_packet(packet.header, packet.plaintext)
        deadline = core.next_deadline()
        with trio.move_on_at(float("inf") if deadline is None else deadline):
            await publish.wake.wait()


def _close_source(source: PublishSource | None) -> None:
    close = getattr(source, "close", None)
    if close is not None:
        close()


async def _source_runner(publish: _Publish, handle: RoleHandle[Any]) -> None:
    """Run the current source's feeder (``run()``, if it has one); a finished source ends the stream."""
    while True:
        source = publish.source
        changed = publish.source_changed
        run = getattr(source, "run", None)
        if run is None:
            await changed.wait()
            continue
        finished = False
        async with trio.open_nursery() as nursery:

            async def feed(run: Any = run) -> None:
                nonlocal finished
                await run()
                finished = True
                nursery.cancel_scope.cancel()

            nursery.start_soon(feed)
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
