"""Watching: the ``stream_watch`` role (one per watched Go Live) and webcam watch on the voice leg.

``await start_stream_watch(session, user_id, settings=...)`` starts a child role nursery of the
voice session (``session.start_role``) and returns a :class:`WatchHandle` once frames can flow,
or raises ``WatchError(reason)``. Inside the role (discord-protocol.md §2.8 #3, §6, Appendix C.1)::

    stream_watch:<user> role nursery
     ├─ gateway dispatches     STREAM_CREATE/SERVER_UPDATE/DELETE, the target's VOICE_STATE_UPDATE
     ├─ media connection       stream server WS + UDP (server_id = rtc_server_id, our voice
     │                         session_id, DAVE group rtc_server_id - 1, video + screen stream)
     ├─ video pipeline         receive core (inline in UDP task) + feedback task + decoder thread
     └─ sink wants             op15 every 2 s until the first frame, then every 10 s and on op12

The Go Live registry (``session.registry``) owns the watch bookkeeping per stream key: op20 is
requested through it, its credentials are the registry's, its STREAM_DELETE and voice-state events
end the watch (each dispatch is parsed once, by the registry), and op21 follows its
:class:`~clank.protocol.stream_watches.StreamPingPolicy` — sent by ``session.watches``
(:mod:`clank.session.watches`) from the leg states the role reports.

1. op20 with the stream key: the registry's if it knows the stream, else synthesized from our
   voice channel (a watcher may ask before STREAM_CREATE, §2.7).
2. Credentials (rtc_server_id from STREAM_CREATE, endpoint + token from STREAM_SERVER_UPDATE)
   are awaited for ``watch.credentials_timeout_s``; see :data:`WATCH_FAILURES` for the reasons.
3. The watch ends — only this role, the voice role and other watches carry on — on
   STREAM_DELETE (``stream_deleted``), the target leaving voice or stopping its stream
   (``target_left``), a transport failure of the stream leg (``transport``), ``stop()``
   (``stopped``) or the session ending (cancelled with it). The frame store is closed with the
   reason and op19 tells the gateway we stopped watching.

Several watches run at once (one role each, up to ``watch.max_concurrent_watches``); a repeat
watch of the same target returns the running handle.
"""

from __future__ import annotations

import math
from typing import Final

import attrs
import trio

from clank.config import WatchSettings
from clank.errors import (
    ClankError,
    CryptoError,
    ProtocolError,
    TransportError,
    WatchError,
)
from clank.io.groups import describe, first_of, leaves
from clank.io.media_connection import (
    DaveStateChanged,
    MediaConnection,
    MediaEvent,
    TransportStateChanged,
    open_media_connection,
)
from clank.logging import bound, get_logger
from clank.protocol import voice_gateway as vgc
from clank.protocol.stream_events import (
    DeleteUnknownStream,
    StreamCreated,
    StreamDeleted,
    StreamEvent,
    StreamInfo,
    UserGoLiveEnded,
)
from clank.protocol.video_receive import VideoReceiver, build_sink_wants
from clank.session.roles import RoleHandle, RoleState
from clank.session.stream_audio import StreamAudio
from clank.session.stream_leg import (
    deleted_reason,
    moved_credentials,
    stream_leg_params,
    wait_fresh_credentials,
    wait_leg_ready,
)
from clank.session.video_pipeline import open_video_pipeline
from clank.session.watch_frames import FrameChannel
from clank.session.watch_handle import (
    SINK_WANTS_INTERVAL_SETTLED,
    SINK_WANTS_INTERVAL_STARTING,
    Wakeup,
    WatchHandle,
    WatchSession,
    WatchState,
    check_in_voice,
    dave_decrypt,
    receive_config,
)
from clank.session.watches import WatchInbox
from clank.session.webcam_watch import suppress_screen, unsuppress_screen
from clank.wire import voice_gateway as vg
from clank.wire.gateway_events import StreamKey

__all__ = ["start_stream_watch"]

log = get_logger("clank.watch")

STOP_BUDGET: Final = 1.0
"""Seconds for the op19 sent when a watch ends (bounded, shielded)."""
HEALTH_CHECK_POLL_S: Final = 5.0
"""How often the stream leg's health is looked at (for op21)."""
STREAM_STALL_S: Final = 10.0
"""No media packet for this long counts as a failing stream leg."""
UNAVAILABLE_HOLD_S: Final = 30.0
"""A STREAM_DELETE with ``unavailable: true`` holds the watch this long for a STREAM_CREATE."""


# ---------------------------------------------------------------------- stream watch


async def start_stream_watch(
    session: WatchSession,
    target_user_id: str,
    *,
    settings: WatchSettings | None = None,
    frames_out: FrameChannel | None = None,
) -> WatchHandle:
    """Watch ``target_user_id``'s Go Live; returns once media flows, or raises ``WatchError``.

    ``frames_out`` (optional) also receives every frame (the screen-watch pipeline's channel).
    """
    settings = settings or session.settings.watch
    watches = session.watches
    existing = watches.handles.get((target_user_id, "screen"))
    if existing is not None and existing.active:
        return existing
    if target_user_id == session.user_id:
        raise WatchError("own_stream", "cannot watch our own Go Live")
    check_in_voice(session)
    running = [h for (_, kind), h in watches.handles.items() if kind == "screen" and h.active]
    if len(running) >= settings.max_concurrent_watches:
        raise WatchError("too_many_watches", f"{len(running)} watches running")
    watch = WatchState(session, target_user_id, "screen", settings, frames_out)
    name = f"stream_watch:{target_user_id}"

    async def stop() -> None:
        watch.stop_requested = True
        await session.stop_role(name, "stopped")

    watch_handle = WatchHandle(watch, stop)
    watches.handles[(target_user_id, "screen")] = watch_handle
    role = await session.start_role(name, _stream_watch_role, watch)
    watch.handle = role
    await wait_leg_ready(role, lambda: watch.end_reason)
    return watch_handle


async def _stream_watch_role(
    handle: RoleHandle[WatchState],
    watch: WatchState,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    watch.handle = handle
    handle.attach(watch, watch.statistics)
    session = watch.session
    task_status.started()
    if watch.end_reason is not None:
        if watch.stop_requested or watch.end_reason != "interrupted":
            return  # relaunched by a session rebuild after the watch had ended for good
        # The session was rebuilt (new voice session id): watch again with a fresh store.
        watch.reset()
    reason = "interrupted"
    inbox = session.watches.open_inbox()
    try:
        with bound(watch_target=watch.target):
            key = _stream_key(session, watch.target)
            watch.key = key
            info: StreamInfo | None = await _request_credentials(session, watch, key, inbox)
            while info is not None:
                # A STREAM_SERVER_UPDATE mid-watch (Discord moved the stream): reconnect the
                # stream leg with the new credentials, keeping the watch, its store and frames.
                info = await _watch_stream(handle, watch, key, info, inbox)
                if info is not None:
                    watch.server_moves += 1
                    log.info("stream server moved; reconnecting", stream_key=str(key))
    except* WatchError as group:
        failure = first_of(group, WatchError)
        reason = "transport" if failure is None else failure.reason
        raise
    except* (TransportError, ProtocolError, CryptoError) as group:
        reason = "transport"
        leaf = leaves(group)[0]
        raise WatchError("transport", describe(leaf)) from leaf
    finally:
        inbox.close()
        if watch.stop_requested:
            reason = "stopped"
        watch.end_reason = reason
        watch.sink.store.close(reason)
        unsuppress_screen(session, watch.target)
        watched_key = watch.key
        if watched_key is not None:
            book = session.registry.watches.book(watched_key)
            if book is not None:
                watch.keepalives_sent = book.pings_sent
            stop = session.registry.stop_watch(watched_key)  # None after STREAM_DELETE: no op19
            if stop is not None:
                with trio.move_on_after(STOP_BUDGET, shield=True):
                    try:
                        await session.gateway.stream_delete(str(watched_key))
                    except ClankError:
                        pass  # the gateway is gone: nothing to tell it
        log.info(
            "stream watch ended",
            target=watch.target,
            reason=reason,
            frames=watch.sink.emitted,
            stream_key=None if watched_key is None else str(watched_key),
        )


def _stream_key(session: WatchSession, target: str) -> StreamKey:
    """The registry's key for the target's stream, else one synthesized from our voice channel."""
    registry = session.registry
    known = registry.stream_for_user(target, session.guild_id or None)
    if known is not None:
        return known.key
    member = registry.member(target)
    if member is not None and member.channel_id is not None and member.channel_id != session.channel_id:
        raise WatchError("target_not_in_voice", f"user {target} is in another channel")
    return StreamKey.for_voice_channel(session.guild_id or None, session.channel_id, target)


async def _request_credentials(
    session: WatchSession, watch: WatchState, key: StreamKey, inbox: WatchInbox
) -> StreamInfo:
    """op20 through the registry, then its credentials for ``key`` (STREAM_CREATE + SERVER_UPDATE)."""
    registry = session.registry
    requested_at = trio.current_time()
    request = registry.request_watch(key, requested_at)
    session.watches.schedule_changed()
    for frame in request.frames:
        await session.gateway.stream_watch(str(frame.d["stream_key"]))
    log.info("stream watch requested", stream_key=str(key), synthesized=request.synthesized)
    with trio.move_on_after(watch.settings.credentials_timeout_s):
        known = await wait_fresh_credentials(
            registry, inbox, key, lambda events: _check_events(session, watch, key, events, watching=False)
        )
        watch.credentials_at = trio.current_time()
        return known
    raise WatchError(
        "no_credentials", f"no stream server for {key} within {watch.settings.credentials_timeout_s} s"
    )


def _check_events(
    session: WatchSession, watch: WatchState, key: StreamKey, events: list[StreamEvent], *, watching: bool
) -> None:
    """End the watch (``WatchError``) on the registry's STREAM_DELETE or the target leaving.

    Before the stream leg is up only the target leaving the channel ends the watch: a voice
    state with ``self_stream: false`` may be a stale one from before the stream started (a
    refused watch is answered with STREAM_DELETE anyway).
    """
    deleted = deleted_reason(events, key)
    if deleted is not None:
        raise WatchError("stream_deleted", deleted)
    for event in events:
        if isinstance(event, UserGoLiveEnded) and event.user_id == watch.target and not event.own:
            member = session.registry.member(watch.target)
            channel = None if member is None else member.channel_id
            if channel != session.channel_id or (watching and event.reason == "self_stream_false"):
                raise WatchError("target_left", f"channel={channel} reason={event.reason}")


async def _watch_stream(
    handle: RoleHandle[WatchState],
    watch: WatchState,
    key: StreamKey,
    creds: StreamInfo,
    inbox: WatchInbox,
) -> StreamInfo | None:
    """Watch on ``creds`` until the stream server moves (the new credentials) or the watch ends."""
    session = watch.session
    params = stream_leg_params(
        session,
        "stream_watch",
        creds,
        vg.StreamRequest(type="screen", rid="100", quality=watch.settings.preferred_quality),
        sink_wants_format=vg.SinkWantsFormat(watch.settings.sink_wants_format),
    )
    link = _Link()
    receiver = VideoReceiver(receive_config(watch.settings, "screen"), link.decrypt)
    wants_changed = Wakeup()
    audio = StreamAudio(session, watch.target, handle)  # Go Live stream audio (stream_audio.py)

    def on_event(event: MediaEvent) -> None:
        audio.on_event(event)
        pipeline = watch.pipeline
        now = trio.current_time()
        if isinstance(event, vgc.SessionEstablished):
            receiver.local_ssrc = event.ssrc
        elif pipeline is None:
            return
        elif isinstance(event, vgc.VideoState):
            pipeline.on_video_state(event, now)
            wants_changed.set()
        elif isinstance(event, vgc.ClientDisconnected):
            pipeline.on_client_disconnected(event.user_id)
        elif isinstance(event, DaveStateChanged):
            if link.connection is not None and link.connection.dave.ready:
                pipeline.dave_ready(now)
        elif isinstance(event, TransportStateChanged):
            # Leg health for op21 is judged by _health_loop (polled, like a person would notice).
            if event.state == "reconnecting":
                handle.set_state(RoleState.RECONNECTING, event.reason, event.close_code)
            elif event.state == "ready" and watch.connected_at is not None:
                handle.set_state(RoleState.READY)

    async with open_video_pipeline(receiver, watch.settings, link.send_rtcp) as pipeline:
        watch.pipeline = pipeline
        pipeline.add_sink((watch.target, "screen"), watch.sink)
        suppress_screen(session, watch.target)
        async with open_media_connection(
            params,
            packet_handler=audio.wrap(pipeline.on_packet),
            rtcp_handler=pipeline.on_rtcp,
            event_handler=on_event,
        ) as conn:
            link.connection = conn
            audio.attach(conn)
            watch.connection = conn
            receiver.local_ssrc = conn.ssrc or 0
            if conn.dave.ready:
                pipeline.dave_ready(trio.current_time())
            watch.connected_at = trio.current_time()
            # clankvox announces our (inactive) video so the server starts sending others' op12.
            await conn.video_state(False)
            handle.set_state(RoleState.READY)
            log.info("stream watch connected", stream_key=str(key), server_id=params.server_id)
            session.registry.watch_leg_state(key, connected=True, healthy=True, now=watch.connected_at)
            session.watches.schedule_changed()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_sink_wants_loop, watch, conn, wants_changed)
                nursery.start_soon(_health_loop, watch, key)
                moved = await _follow_registry(session, watch, key, inbox, creds)
                nursery.cancel_scope.cancel()
    return moved


async def _follow_registry(
    session: WatchSession, watch: WatchState, key: StreamKey, inbox: WatchInbox, current: StreamInfo
) -> StreamInfo:
    """Registry events while watching: the new credentials when the stream server moved;
    ``WatchError`` when the watch must end.

    STREAM_DELETE with ``unavailable: true`` holds the watch up to ``UNAVAILABLE_HOLD_S`` for a
    STREAM_CREATE (+ STREAM_SERVER_UPDATE) to revive it.
    """
    registry = session.registry
    unavailable_until = math.inf
    while True:
        with trio.move_on_at(unavailable_until):
            await inbox.wait()
        now = trio.current_time()
        if now >= unavailable_until:
            raise WatchError("stream_deleted", f"unavailable for {UNAVAILABLE_HOLD_S} s")
        events = inbox.take()
        rest: list[StreamEvent] = []
        for event in events:
            if isinstance(event, StreamDeleted | DeleteUnknownStream) and event.stream_key == key:
                if event.unavailable:
                    log.info("stream unavailable; holding the watch", stream_key=str(key))
                    unavailable_until = now + UNAVAILABLE_HOLD_S
                    registry.watches.request(key, now)  # still ours while held (no new op20)
                    continue
            elif isinstance(event, StreamCreated) and event.stream_key == key:
                unavailable_until = math.inf
            rest.append(event)
        _check_events(session, watch, key, rest, watching=True)
        moved = moved_credentials(registry, key, current)
        if moved is not None:
            return moved


async def _sink_wants_loop(watch: WatchState, conn: MediaConnection, changed: Wakeup) -> None:
    """op15 for the streamer's SSRCs: every 2 s until the first frame, then every 10 s and on op12."""
    settings = watch.settings
    target = watch.target
    while True:
        changed.clear()
        states = [s for s in (conn.core.video_state(target),) if s is not None]
        wants = build_sink_wants(
            states,
            want=lambda user, kind: user == target,
            quality=settings.preferred_quality,
            pixel_count=settings.preferred_pixel_count,
            default_stream_type="screen",
            any_quality=settings.preferred_quality,
        )
        await conn.media_sink_wants(wants)
        watch.sink_wants_sent += 1
        interval = SINK_WANTS_INTERVAL_STARTING if watch.sink.emitted == 0 else SINK_WANTS_INTERVAL_SETTLED
        with trio.move_on_after(interval):
            await changed.wait()


async def _health_loop(watch: WatchState, key: StreamKey) -> None:
    """Report the stream leg's health to the registry, which owns the op21 schedule: op21 is a
    health check, not a keep-alive (it may make Discord check and reallocate the stream server),
    so with ``StreamPingPolicy(only_when_failing=True)`` it goes out only while the leg is failing:
    not ready, or no media packet for ``STREAM_STALL_S`` (the network's view, counted on the trio
    thread — a slow decoder is not the server's fault); at most once per interval, across
    reconnects (the registry's book outlives a stream-server move)."""
    registry = watch.session.registry
    last_packets = 0
    progress_at = trio.current_time()
    while True:
        await trio.sleep(HEALTH_CHECK_POLL_S)
        now = trio.current_time()
        conn = watch.connection
        packets = 0 if conn is None else conn.statistics().packets_in
        if packets != last_packets:
            last_packets, progress_at = packets, now
        if conn is not None and conn.state == "disconnected":
            return  # we are leaving this leg on purpose: nothing to health-check
        connected = conn is not None and conn.state == "ready"
        failing = not connected or now - progress_at > STREAM_STALL_S
        book = registry.watches.book(key)
        if book is not None and book.leg_healthy == failing:
            if failing:
                log.info("stream leg failing; op21 health checks follow", stream_key=str(key))
            registry.watch_leg_state(key, connected=connected, healthy=not failing, now=now)
            watch.session.watches.schedule_changed()


@attrs.define(eq=False)
class _Link:
    """Late binding of the connection for the pipeline's RTCP sends."""

    connection: MediaConnection | None = None

    def send_rtcp(self, datagram: bytes) -> bool:
        connection = self.connection
        return connection is not None and connection.send_rtcp(datagram)

    def decrypt(self, user_id: int, frame: bytes) -> bytes:
        return dave_decrypt(self.connection, user_id, frame)
