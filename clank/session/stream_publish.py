"""Publishing our own Go Live: the ``stream_publish`` role (discord-protocol.md §2.8 #2, §5.3, §6, C.2).

``await start_stream_publish(session, source=PushedFrames())`` starts a child role nursery of the
voice session and returns a :class:`PublishHandle` once video can flow, or raises
``PublishError(reason)`` (:data:`PUBLISH_FAILURES`). Inside the role::

    stream_publish role nursery
     ├─ registry events      our key's credentials and STREAM_DELETE (session.registry)
     ├─ media connection     stream server WS + UDP (server_id = rtc_server_id, our voice session
     │                       id, video + screen/100, op1 H264 encode, DAVE group rtc_server_id - 1)
     └─ video sender         encode worker, frame clock, pacer, sender reports, source runner
                             (clank.session.publish_sender)

The control plane drives the Go Live registry like the watch does (one flow per stream key,
:mod:`clank.session.stream_leg`); each dispatch is parsed once, by the registry:

1. op18 STREAM_CREATE (``type: guild``; ``registry.request_go_live``), then op22
   ``paused: false`` (what Discord's own client and DVS do); wait ``publish.credentials_timeout_s``
   for the registry's *fresh* credentials of ``guild:<guild>:<channel>:<us>`` (STREAM_CREATE +
   a STREAM_SERVER_UPDATE answering this op18: stale cached ones are not used).
2. The stream leg: op12 announces our screen stream (ssrc, rtx_ssrc, active, max resolution,
   frame rate and bitrate from ``[publish]``), op5 speaking 2 (SOUNDSHARE). Each encoded access
   unit is DAVE-encrypted on the leg's own DAVE session with the sender retry rule
   (``encrypt_h264_checked``), then packetized and paced by :class:`VideoSendCore`. Frames wait
   for DAVE to be ready (a viewer with passthrough off would drop clear frames).
3. A new STREAM_SERVER_UPDATE while live (Discord moved the stream) reconnects the stream leg on
   the new credentials (``statistics().server_moves``); the publish, its source and key stay.
4. Pause: op22 ``paused: true``, op12 inactive, op5 0, no video RTP; resume: the reverse, and the
   first frame is a keyframe. Stop: op19, the role ends. A STREAM_DELETE from the server ends the
   role with ``stream_deleted``; a stream-leg failure with ``transport`` — only this role: voice
   and every watch carry on. A voice ``session_id`` change rebuilds it (it goes live again).

Only one publish runs per session; starting one while it runs switches the source and keeps the
live stream (a keyframe starts the new picture).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import av
import trio

from clank.config import PublishSettings
from clank.errors import (
    ClankError,
    CryptoError,
    InvalidArgument,
    ProtocolError,
    PublishError,
    TransportError,
    WatchError,
)
from clank.io.groups import describe, first_of, leaves
from clank.io.media_connection import MediaEvent, TransportStateChanged, open_media_connection
from clank.io.offload import run_cpu
from clank.logging import bound, get_logger
from clank.media.publish_source import PublishSource, PushedFrames, decode_image
from clank.protocol import voice_gateway as vgc
from clank.protocol.stream_events import StreamEvent, StreamInfo
from clank.protocol.streams import StreamRegistry
from clank.session.publish_sender import (
    PublishState,
    PublishStatistics,
    announce,
    close_source,
    open_video_sender,
    session_rebuilds,
)
from clank.session.roles import RoleHandle, RoleState
from clank.session.stream_leg import (
    deleted_reason,
    moved_credentials,
    open_registry_inbox,
    stream_leg_params,
    wait_fresh_credentials,
    wait_leg_ready,
)
from clank.session.watch_handle import WatchSession, check_in_voice
from clank.session.watches import WatchInbox
from clank.wire import voice_gateway as vg
from clank.wire.gateway_events import StreamKey

__all__ = ["PUBLISH_FAILURES", "PUBLISH_ROLE", "PublishHandle", "current_publish", "start_stream_publish"]

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
"""Seconds for the op19 sent when the publish ends (bounded, shielded)."""
DELETE_GRACE: Final = 0.3
"""After a stream-leg failure, a STREAM_DELETE arriving this soon names the reason instead."""
REBUILD_WINDOW: Final = 5.0
"""A STREAM_DELETE this close before a session rebuild is taken as caused by it (we go live again)."""


class PublishHandle:
    """Our running (or ended) Go Live: stream key, state, source, pause/resume/stop, statistics."""

    def __init__(self, publish: PublishState) -> None:
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
        close_source(old)
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
            await announce(conn, p.settings, active=not paused)
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


def current_publish(session: WatchSession) -> PublishHandle | None:
    """The session's publish handle (running or the last one that ended), if any."""
    return session.publishing


async def start_stream_publish(
    session: WatchSession, *, source: PublishSource | None = None, settings: PublishSettings | None = None
) -> PublishHandle:
    """Go live with ``source``; returns once video can flow, or raises ``PublishError``.

    When a publish is already running its source is switched (the live stream is kept).
    """
    existing = session.publishing
    if existing is not None and existing.active:
        if source is not None:
            existing.set_source(source)
        return existing
    try:
        check_in_voice(session)
    except WatchError as exc:
        raise PublishError(exc.reason, exc.detail) from exc.__cause__
    publish = PublishState(session, settings or session.settings.publish, source)
    handle = PublishHandle(publish)
    session.publishing = handle
    role = await session.start_role(PUBLISH_ROLE, _publish_role, publish)
    publish.handle = role
    await wait_leg_ready(role, lambda: publish.end_reason, PublishError)
    return handle


async def _publish_role(
    handle: RoleHandle[PublishState],
    publish: PublishState,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    publish.handle = handle
    handle.attach(publish, publish.statistics)
    session = publish.session
    registry = session.registry
    task_status.started()
    if publish.end_reason is not None:
        if publish.stop_requested or not _rebuilt_since_end(publish):
            return  # relaunched by a session rebuild after the publish had ended for good
        publish.reset()
    reason = "interrupted"
    try:
        with open_registry_inbox(registry) as inbox:
            key = registry.request_go_live(session.guild_id or None, session.channel_id, trio.current_time())
            publish.key = key
            with bound(stream_key=str(key)):
                creds: StreamInfo | None = await _go_live(publish, key, inbox)
                while creds is not None:
                    try:
                        creds = await _run_leg(handle, publish, key, creds, inbox)
                    except* (TransportError, ProtocolError, CryptoError):
                        # The server often closes the leg right after STREAM_DELETE: that reason wins.
                        deleted = await _pending_delete(key, inbox)
                        if deleted is not None:
                            raise PublishError("stream_deleted", deleted) from None
                        raise
                    if creds is not None:
                        publish.server_moves += 1
                        publish.live_at = None  # live again once the new leg sends
                        log.info("stream server moved; reconnecting the publish")
    except* WatchError as group:
        failure = first_of(group, WatchError)
        reason = "transport" if failure is None else failure.reason
        raise
    except* (TransportError, ProtocolError, CryptoError) as group:
        if reason == "interrupted":  # a PublishError next to it (stream_deleted ...) names the reason
            reason = "transport"
        leaf = leaves(group)[0]
        raise PublishError("transport", describe(leaf)) from leaf
    finally:
        if publish.stop_requested:
            reason = publish.stop_reason
        publish.end_reason = reason
        publish.ended_at = trio.current_time()
        if reason != "interrupted":
            close_source(publish.source)
        key_sent = publish.key
        # op19 unless the stream is gone already (its STREAM_DELETE: the registry says None).
        stop = None if key_sent is None else registry.stop_go_live(key_sent)
        if stop is not None and reason != "stream_deleted":
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


def _rebuilt_since_end(publish: PublishState) -> bool:
    """A session rebuild relaunched us: go live again if the rebuild is what ended the stream.

    ``interrupted`` is the rebuild cancelling the role; a STREAM_DELETE just before the rebuild
    (the server deletes a stream whose owner's voice session changed) counts too.
    """
    if publish.end_reason == "interrupted":
        return True
    recent = publish.ended_at is not None and trio.current_time() - publish.ended_at <= REBUILD_WINDOW
    rebuilt = session_rebuilds(publish.session) > publish.rebuilds
    return publish.end_reason == "stream_deleted" and recent and rebuilt


def _raise_if_deleted(key: StreamKey, events: list[StreamEvent]) -> None:
    deleted = deleted_reason(events, key)
    if deleted is not None:
        raise PublishError("stream_deleted", deleted)


async def _go_live(publish: PublishState, key: StreamKey, inbox: WatchInbox) -> StreamInfo:
    """op18 + op22 (the registry has the request), then the registry's fresh credentials of ``key``."""
    session = publish.session
    await session.gateway.stream_create(session.guild_id or None, session.channel_id)
    await session.gateway.stream_set_paused(str(key), publish.paused)
    log.info("go live requested", stream_key=str(key))
    timeout = publish.settings.credentials_timeout_s
    with trio.move_on_after(timeout):
        return await wait_fresh_credentials(
            session.registry, inbox, key, lambda events: _raise_if_deleted(key, events)
        )
    raise PublishError("no_credentials", f"no stream server for {key} within {timeout} s")


async def _pending_delete(key: StreamKey, inbox: WatchInbox) -> str | None:
    """The reason of a STREAM_DELETE for ``key`` arriving within ``DELETE_GRACE`` s, else None."""
    with trio.move_on_after(DELETE_GRACE):
        while True:
            deleted = deleted_reason(inbox.take(), key)
            if deleted is not None:
                return deleted
            await inbox.wait()
    return None


async def _follow_registry(
    registry: StreamRegistry, key: StreamKey, inbox: WatchInbox, current: StreamInfo
) -> StreamInfo:
    """Registry events while live: the new credentials when the stream server moved;
    ``PublishError("stream_deleted")`` when our stream is deleted."""
    while True:
        await inbox.wait()
        _raise_if_deleted(key, inbox.take())
        moved = moved_credentials(registry, key, current)
        if moved is not None:
            return moved


async def _run_leg(
    handle: RoleHandle[PublishState],
    publish: PublishState,
    key: StreamKey,
    creds: StreamInfo,
    inbox: WatchInbox,
) -> StreamInfo:
    """Publish on ``creds`` until the stream server moves (the new credentials) or the publish ends."""
    params = stream_leg_params(
        publish.session,
        "stream_publish",
        creds,
        vg.StreamRequest(type="screen", rid="100", quality=100),
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
        async with open_video_sender(publish, conn, stream, handle):
            log.info("stream publish live", server_id=params.server_id, ssrc=stream.ssrc)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(codec_guard)
                moved = await _follow_registry(publish.session.registry, key, inbox, creds)
                nursery.cancel_scope.cancel()
    return moved
