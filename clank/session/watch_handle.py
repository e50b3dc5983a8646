"""What every watch shares: its handle, state and statistics, the session it needs, reason codes.

A watch is either a Go Live ``stream_watch`` role (:mod:`clank.session.stream_watch`) or a webcam
watch on the voice leg (:mod:`clank.session.webcam_watch`). Both hand back a :class:`WatchHandle`
over one :class:`WatchState`, which lives across role rebuilds by the session (its frame store
reopens, so consumers holding ``handle.frames`` keep working). :data:`WATCH_FAILURES` lists the
stable ``WatchError.reason`` codes; :class:`WatchSession` is what a watch needs from the voice
session.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Final, Literal, Protocol, TypeVar

import attrs
import trio

from clank.codecs.bandwidth import RembStatistics
from clank.config import Settings, WatchSettings
from clank.errors import (
    ClankError,
    DecryptionFailed,
    WatchError,
)
from clank.io.gateway import GatewayClient
from clank.io.media_connection import (
    MediaConnection,
)
from clank.io.media_connection_statistics import MediaConnectionStatistics
from clank.io.media_leg_params import MediaTransports
from clank.protocol.streams import StreamRegistry
from clank.protocol.video_receive import StreamType, VideoReceiveConfig
from clank.session.roles import Role, RoleFn, RoleHandle, RoleState
from clank.session.video_pipeline import FrameSink, VideoPipeline, WatchStreamStatistics
from clank.session.voice_role import VoiceRole
from clank.session.watch_frames import FrameChannel, LatestFrameStore
from clank.session.watches import Watches
from clank.wire.gateway_events import StreamKey

if TYPE_CHECKING:
    from clank.session.stream_publish import PublishHandle
    from clank.session.voice_session import VoiceSessionStatistics
    from clank.session.webcam_watch import WebcamRole

__all__ = [
    "SINK_WANTS_INTERVAL_SETTLED",
    "SINK_WANTS_INTERVAL_STARTING",
    "WATCH_FAILURES",
    "Wakeup",
    "WatchHandle",
    "WatchKind",
    "WatchSession",
    "WatchState",
    "WatchStatistics",
    "check_in_voice",
    "dave_decrypt",
    "receive_config",
]

WATCH_FAILURES: Final[Mapping[str, str]] = {
    "not_in_voice": "we are not (yet) in a voice channel with a running voice role",
    "own_stream": "the target is ourselves",
    "target_not_in_voice": "the target is not in our voice channel",
    "too_many_watches": "watch.max_concurrent_watches watches are already running",
    "no_credentials": "no STREAM_CREATE + STREAM_SERVER_UPDATE within watch.credentials_timeout_s",
    "stream_deleted": "STREAM_DELETE for the stream (ended, refused, full ...)",
    "target_left": "the streamer left the channel or stopped streaming",
    "transport": "the stream leg failed (websocket closed, handshake timeout, protocol error)",
    "voice_ended": "the voice role ended (webcam watch)",
    "interrupted": "the voice session ended or was rebuilt (a rebuild restarts the watch)",
}
"""Stable ``WatchError.reason`` codes of a watch that could not start or ended, with meanings."""

SINK_WANTS_INTERVAL_STARTING: Final = 2.0
"""op15 is re-asserted this often until the first frame (clankvox's cadence, §3.9)."""
SINK_WANTS_INTERVAL_SETTLED: Final = 10.0
"""op15 is re-asserted this often once frames flow (and on every op12)."""

WatchKind = Literal["screen", "camera"]


ApiT = TypeVar("ApiT")


class WatchSession(Protocol):
    """What a watch needs from the voice session (``clank.session.voice_session.VoiceSession``)."""

    gateway: GatewayClient
    guild_id: str
    channel_id: str
    settings: Settings
    registry: StreamRegistry
    user_id: str
    transports: MediaTransports
    watches: Watches
    publishing: PublishHandle | None

    @property
    def session_id(self) -> str | None: ...

    @property
    def voice(self) -> RoleHandle[VoiceRole]: ...

    def roles(self) -> dict[str, Role]: ...

    async def start_role(self, name: str, role_fn: RoleFn[ApiT], *args: object) -> RoleHandle[ApiT]: ...

    async def stop_role(self, name: str, reason: str = "stopped") -> None: ...

    def statistics(self) -> VoiceSessionStatistics: ...


@attrs.frozen
class WatchStatistics:
    target_user_id: str
    kind: WatchKind
    stream_key: str | None
    state: RoleState
    reason: str | None
    started_at: float
    credentials_at: float | None
    connected_at: float | None
    first_frame_at: float | None
    time_to_first_frame: float | None  # watch start -> first JPEG
    frames_published: int
    sink_wants_sent: int
    keepalives_sent: int
    streams: Mapping[int, WatchStreamStatistics]
    connection: MediaConnectionStatistics | None
    server_moves: int = 0
    """Times the stream leg reconnected on a mid-watch STREAM_SERVER_UPDATE."""
    remb: RembStatistics | None = None
    """Congestion feedback this watch's pipeline sent (REMB count, current estimate)."""
    also_failed: tuple[str, ...] = ()
    """Errors beside ``reason`` when several ended the watch's role at once."""


class WatchState:
    """Shared state of one watch (lives across role rebuilds by the session)."""

    def __init__(
        self,
        session: WatchSession,
        target: str,
        kind: WatchKind,
        settings: WatchSettings,
        frames_out: FrameChannel | None,
    ) -> None:
        self.session = session
        self.target = target
        self.kind = kind
        self.settings = settings
        self.sink = FrameSink(LatestFrameStore(), frames_out)
        self.key: StreamKey | None = None
        self.started_at = trio.current_time()
        self.credentials_at: float | None = None
        self.connected_at: float | None = None
        self.sink_wants_sent = 0
        self.keepalives_sent = 0
        self.server_moves = 0
        self.pipeline: VideoPipeline | None = None
        self.connection: MediaConnection | None = None
        self.handle: RoleHandle[WatchState] | RoleHandle[WebcamRole] | None = None
        self.end_reason: str | None = None
        self.stop_requested = False

    def reset(self) -> None:
        """Start over after a session rebuild: the same store reopens (waiters were told
        ``interrupted``), so consumers holding ``handle.frames`` keep working."""
        self.sink.store.reopen()
        self.end_reason = None
        self.key = None
        self.credentials_at = self.connected_at = None
        self.pipeline = None
        self.connection = None

    def _keepalives(self) -> int:
        """op21 sent for this watch (the registry's book while it runs)."""
        book = None if self.key is None else self.session.registry.watches.book(self.key)
        return self.keepalives_sent if book is None else book.pings_sent

    def statistics(self) -> WatchStatistics:
        handle = self.handle
        first = self.sink.first_frame_at
        pipeline = self.pipeline
        streams = {} if pipeline is None else pipeline.stream_statistics()
        if self.kind == "camera":
            streams = {s: st for s, st in streams.items() if st.receive.user_id == self.target}
        return WatchStatistics(
            target_user_id=self.target,
            kind=self.kind,
            stream_key=None if self.key is None else str(self.key),
            state=RoleState.CONNECTING if handle is None else handle.state,
            reason=self.end_reason,
            started_at=self.started_at,
            credentials_at=self.credentials_at,
            connected_at=self.connected_at,
            first_frame_at=first,
            time_to_first_frame=None if first is None else first - self.started_at,
            frames_published=self.sink.emitted,
            sink_wants_sent=self.sink_wants_sent,
            keepalives_sent=self._keepalives(),
            streams=streams,
            connection=None if self.connection is None else self.connection.statistics(),
            server_moves=self.server_moves,
            remb=None if pipeline is None else pipeline.remb_statistics(),
            also_failed=() if handle is None else handle.also_failed,
        )


class WatchHandle:
    """A running (or ended) watch: target, stream key, state, frames, statistics, stop."""

    def __init__(self, watch: WatchState, stop: Callable[[], Awaitable[None]]) -> None:
        self._watch = watch
        self._stop = stop

    def __repr__(self) -> str:
        return f"WatchHandle(target={self.target_user_id!r}, kind={self.kind}, state={self.state.value})"

    @property
    def target_user_id(self) -> str:
        return self._watch.target

    @property
    def kind(self) -> WatchKind:
        return self._watch.kind

    @property
    def stream_key(self) -> StreamKey | None:
        return self._watch.key

    @property
    def frames(self) -> LatestFrameStore:
        return self._watch.sink.store

    @property
    def state(self) -> RoleState:
        reason = self._watch.end_reason
        if reason is not None:
            return RoleState.DISCONNECTED if reason == "stopped" else RoleState.FAILED
        handle = self._watch.handle
        return RoleState.CONNECTING if handle is None else handle.state

    @property
    def reason(self) -> str | None:
        """Why the watch ended (a :data:`WATCH_FAILURES` code, or ``stopped``); None while running."""
        return self._watch.end_reason

    @property
    def active(self) -> bool:
        return self._watch.end_reason is None and not self.state.final

    def statistics(self) -> WatchStatistics:
        return self._watch.statistics()

    async def stop(self) -> None:
        """End this watch only (bounded); idempotent."""
        await self._stop()

    def start_soon(self, fn: Callable[[], Awaitable[object]]) -> None:
        """Run ``fn()`` in this watch's scope (its screen notes): cancelled when the watch ends."""
        self._watch.session.watches.start_soon(self, fn)

    async def wait_stopped(self) -> None:
        """Wait until the watch has ended (its frame store is closed then)."""
        store = self._watch.sink.store
        while not store.closed:
            try:
                await store.wait_frame(after_sequence=self._watch.sink.sequence)
            except WatchError:
                return


def check_in_voice(session: WatchSession) -> None:
    """Raise ``WatchError("not_in_voice")`` unless the voice role runs with a voice session id."""
    try:
        voice = session.voice
    except ClankError as exc:
        raise WatchError("not_in_voice", str(exc)) from exc
    if voice.state.final or session.session_id is None:
        raise WatchError("not_in_voice", f"voice role is {voice.state.value}")


def dave_decrypt(connection: MediaConnection | None, user_id: int, frame: bytes) -> bytes:
    """DAVE-decrypt one video frame of ``user_id`` on ``connection``'s leg (counted by the core)."""
    if connection is None:
        raise DecryptionFailed("dave", "not_ready")
    return connection.dave.decrypt(user_id, "video", frame)


def receive_config(settings: WatchSettings, default_type: StreamType) -> VideoReceiveConfig:
    return VideoReceiveConfig(
        default_stream_type=default_type,
        reorder_delay=settings.reorder_delay_ms / 1000,
        nack=settings.nack,
        conceal_after=settings.conceal_after_s,
    )


class Wakeup:
    """A resettable wake-up: ``set`` from sync code, ``wait`` for it (or a timeout) in a loop."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        """Call before reading the state a ``set`` announces, so no change is missed."""
        self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()
