"""Webcam watch (``start_webcam_watch``) rides on the voice leg: one ``webcam_watch`` role per session
hooks the voice role's video packet handler, keeps the SSRC bindings from the leg's op12 state,
sends op15 partitioned by kind (camera SSRCs of watched users wanted; screen SSRCs 0 — those
belong to the stream leg) and suppresses screen frames of users we watch natively.
"""

from __future__ import annotations

from typing import Final

import trio

from clank.config import WatchSettings
from clank.errors import (
    WatchError,
)
from clank.io.media_connection import (
    MediaConnection,
)
from clank.protocol import voice_gateway as vgc
from clank.protocol.video_receive import StreamType, VideoReceiver, build_sink_wants
from clank.session.roles import RoleHandle, RoleState
from clank.session.video_pipeline import VideoPipeline, open_video_pipeline
from clank.session.voice_role import VoiceRole
from clank.session.watch_frames import FrameChannel
from clank.session.watch_handle import (
    SINK_WANTS_INTERVAL_SETTLED,
    Wakeup,
    WatchHandle,
    WatchSession,
    WatchState,
    check_in_voice,
    dave_decrypt,
    receive_config,
)
from clank.wire import voice_gateway as vg
from clank.wire.rtp import RtpHeader

__all__ = ["WEBCAM_ROLE", "WebcamRole", "start_webcam_watch", "suppress_screen", "unsuppress_screen"]

WEBCAM_SYNC_INTERVAL: Final = 1.0
"""Webcam role: how often op12 bindings and DAVE readiness are re-read from the voice leg."""
WEBCAM_ROLE: Final = "webcam_watch"


class WebcamRole:
    """The voice leg's video pipeline, shared by every webcam watch of the session."""

    def __init__(self, session: WatchSession, settings: WatchSettings) -> None:
        self.session = session
        self.settings = settings
        self.receiver = VideoReceiver(
            receive_config(settings, "camera"),
            lambda user, frame: dave_decrypt(self._connection, user, frame),
        )
        self.pipeline: VideoPipeline | None = None
        self.handle: RoleHandle[WebcamRole] | None = None
        self.watched: dict[str, WatchState] = {}
        self.suppressed: set[str] = set()
        self._wants_changed = Wakeup()
        self._connection: MediaConnection | None = None

    def on_packet(
        self, header: RtpHeader, payload: bytes, now: float, binding: vgc.SsrcBinding | None
    ) -> None:
        pipeline = self.pipeline
        if pipeline is None:
            return
        if binding is not None and not self.receiver.is_video_ssrc(header.ssrc):
            state = None if self._connection is None else self._connection.core.video_state(binding.user_id)
            if state is not None:
                pipeline.on_video_state(state, now)
        pipeline.on_packet(header, payload, now)

    def send_rtcp(self, datagram: bytes) -> bool:
        return self._connection is not None and self._connection.send_rtcp(datagram)

    def watch_changed(self) -> None:
        self._wants_changed.set()

    async def sync_loop(self, voice: VoiceRole) -> None:
        """Re-read op12 bindings and DAVE readiness from the voice leg; send partitioned op15."""
        dave_was_ready = False
        sent: vg.MediaSinkWants | None = None
        last_sent_at = -1e9
        while True:
            self._wants_changed.clear()
            conn: MediaConnection = voice.connection
            self._connection = conn
            pipeline = self.pipeline
            now = trio.current_time()
            users = {b.user_id for b in conn.core.ssrc_map().values() if b.kind == "video"}
            states = [s for s in (conn.core.video_state(u) for u in users) if s is not None]
            if pipeline is not None:
                for state in states:
                    pipeline.on_video_state(state, now)
                self.receiver.local_ssrc = conn.ssrc or 0
                ready = conn.dave.ready
                if ready and not dave_was_ready:
                    pipeline.dave_ready(now)
                dave_was_ready = ready
            watched = frozenset(self.watched)  # users whose webcam is watched

            def want(user: str, kind: StreamType, watched: frozenset[str] = watched) -> bool:
                return kind == "camera" and user in watched

            wants = build_sink_wants(
                states,
                want=want,
                quality=self.settings.preferred_quality,
                pixel_count=self.settings.preferred_pixel_count,
                default_stream_type="camera",
                any_quality=self.settings.preferred_quality,
            )
            if wants != sent or now - last_sent_at >= SINK_WANTS_INTERVAL_SETTLED:
                await conn.media_sink_wants(wants)
                sent, last_sent_at = wants, now
            with trio.move_on_after(WEBCAM_SYNC_INTERVAL):
                await self._wants_changed.wait()


async def _webcam_role(
    handle: RoleHandle[WebcamRole],
    webcam: WebcamRole,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    webcam.handle = handle
    handle.attach(webcam)
    session = webcam.session
    voice_handle = session.voice
    task_status.started()
    await voice_handle.wait_ready()
    voice = voice_handle.api
    async with open_video_pipeline(webcam.receiver, webcam.settings, webcam.send_rtcp) as pipeline:
        webcam.pipeline = pipeline
        for user in webcam.suppressed:
            webcam.receiver.suppress(user, "screen")
        voice.set_video_receiver(webcam.on_packet)
        handle.set_state(RoleState.READY)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(webcam.sync_loop, voice)
                await voice_handle.wait_stopped()
                nursery.cancel_scope.cancel()
        finally:
            voice.set_video_receiver(None)
            webcam.pipeline = None
            for watch in webcam.watched.values():
                if watch.end_reason is None:
                    watch.end_reason = "voice_ended"
                    watch.sink.store.close("voice_ended")
            webcam.watched.clear()
    raise WatchError("voice_ended", "the voice role ended")


async def start_webcam_watch(
    session: WatchSession,
    user_id: str,
    settings: WatchSettings | None = None,
    *,
    frames_out: FrameChannel | None = None,
) -> WatchHandle:
    """Watch ``user_id``'s webcam on the voice leg; the handle's store gets its frames."""
    settings = settings or session.settings.watch
    watches = session.watches
    existing = watches.handles.get((user_id, "camera"))
    if existing is not None and existing.active:
        return existing
    check_in_voice(session)
    webcam = watches.webcam
    if webcam is None or webcam.handle is None or webcam.handle.state.final:
        webcam = watches.webcam = WebcamRole(session, settings)
        webcam.suppressed = {t for (t, kind), h in watches.handles.items() if kind == "screen" and h.active}
        webcam.handle = await session.start_role(WEBCAM_ROLE, _webcam_role, webcam)
    watch = WatchState(session, user_id, "camera", settings, frames_out)
    watch.handle = webcam.handle
    role_webcam = webcam

    async def stop() -> None:
        if watch.end_reason is None:
            watch.end_reason = "stopped"
            role_webcam.watched.pop(user_id, None)
            if role_webcam.pipeline is not None:
                role_webcam.pipeline.remove_sink((user_id, "camera"))
            watch.sink.store.close("stopped")
            role_webcam.watch_changed()
        await trio.lowlevel.checkpoint()

    watch_handle = WatchHandle(watch, stop)
    watches.handles[(user_id, "camera")] = watch_handle
    await webcam.handle.wait_state(RoleState.READY)
    if webcam.pipeline is None:
        watch.end_reason = "voice_ended"
        watch.sink.store.close("voice_ended")
        raise WatchError("voice_ended", webcam.handle.reason or "")
    watch.pipeline = webcam.pipeline
    webcam.pipeline.add_sink((user_id, "camera"), watch.sink)
    webcam.watched[user_id] = watch
    webcam.watch_changed()
    return watch_handle


def suppress_screen(session: WatchSession, user_id: str) -> None:
    webcam = session.watches.webcam
    if webcam is not None:
        webcam.suppressed.add(user_id)
        webcam.receiver.suppress(user_id, "screen")


def unsuppress_screen(session: WatchSession, user_id: str) -> None:
    webcam = session.watches.webcam
    if webcam is not None and user_id in webcam.suppressed:
        webcam.suppressed.discard(user_id)
        webcam.receiver.unsuppress(user_id, "screen", trio.current_time())
