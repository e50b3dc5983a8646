"""Go Live stream state values, the primary-stream ranking table and the registry's typed events.

Sans-io. :class:`clank.protocol.streams.StreamRegistry` produces these (import them from here).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ClassVar, Final, Literal

import attrs

from clank.errors import MalformedMessage
from clank.wire.gateway import GatewayFrame
from clank.wire.gateway_events import (
    StreamKey,
    dave_group_id_for_stream,
)

Source = Literal["voice_state", "guild_create", "ready_supplemental", "stream_create"]

SCAN_SOURCES: Final[Mapping[Source, str]] = {
    "guild_create": "guild_create_voice_states",
    "ready_supplemental": "ready_supplemental_voice_states",
}
"""The ``source`` label clanky logged for streamers found by a voice-state scan."""

SOURCE_LABELS: Final[Mapping[Source, str]] = {
    "voice_state": "voice_state_update",
    "stream_create": "stream_create",
    **SCAN_SOURCES,
}


# --- state values -----------------------------------------------------------------------------


@attrs.frozen
class StreamInfo:
    """What we know about one Go Live stream. Replaced (never mutated) on every change.

    A stream seeded from a voice state is *provisional* (``created_at is None``): its key is
    synthesized and it has no ``rtc_server_id`` until STREAM_CREATE arrives.
    """

    key: StreamKey
    discovered_at: float
    source: Source
    created_at: float | None = None
    rtc_server_id: str | None = None
    rtc_channel_id: str | None = None
    region: str | None = None
    viewer_ids: tuple[str, ...] = ()
    paused: bool = False
    endpoint: str | None = None
    token: str | None = attrs.field(default=None, repr=False)
    credentials_received_at: float | None = None
    credentials_serial: int = 0
    """The registry's order of this stream's credentials among its requests and credentials (0:
    none yet): fresh ones answer a request only when they came after it, even at the same time."""

    @property
    def owner_id(self) -> str:
        return self.key.owner_id

    @property
    def guild_id(self) -> str | None:
        return self.key.guild_id

    @property
    def channel_id(self) -> str:
        return self.key.channel_id

    @property
    def created(self) -> bool:
        return self.created_at is not None

    @property
    def has_credentials(self) -> bool:
        """Everything the stream leg needs: endpoint, token and rtc_server_id (clanky's rule)."""
        return bool(self.endpoint and self.token and self.rtc_server_id)

    @property
    def dave_group_id(self) -> int | None:
        if self.rtc_server_id is None:
            return None
        try:
            return dave_group_id_for_stream(self.rtc_server_id)
        except MalformedMessage:
            return None


@attrs.frozen
class Sharer:
    """A user who shares video: Go Live (``self_stream`` or a known stream) and/or webcam."""

    user_id: str
    guild_id: str | None
    channel_id: str | None
    go_live: bool
    webcam: bool
    stream: StreamInfo | None

    @property
    def has_credentials(self) -> bool:
        return self.stream is not None and self.stream.has_credentials


@attrs.frozen
class RegistryStatistics:
    dispatches_handled: int
    dispatches_ignored: int
    out_of_scope: int
    malformed: int
    streams: int
    pending_credentials: int


# --- ranking (a table, as clanky's rankGoLiveStreamState) --------------------------------------


@attrs.frozen
class RankRule:
    name: str
    weight: int
    applies: Callable[[StreamInfo, str | None], bool]


RANK_RULES: Final[tuple[RankRule, ...]] = (
    RankRule("preferred_target", 100, lambda s, preferred: preferred is not None and s.owner_id == preferred),
    RankRule("active", 10, lambda s, _: s.has_credentials),
    RankRule("credentials_received", 5, lambda s, _: s.credentials_received_at is not None),
    RankRule("discovered", 1, lambda _s, _p: True),
)


def rank_stream(stream: StreamInfo, preferred_owner_id: str | None) -> int:
    return sum(rule.weight for rule in RANK_RULES if rule.applies(stream, preferred_owner_id))


def primary_order_key(stream: StreamInfo, preferred_owner_id: str | None) -> tuple[int, float, str]:
    """Sort key: the smallest is the primary (highest rank, then newest, then smallest owner id)."""
    return (-rank_stream(stream, preferred_owner_id), -stream.discovered_at, stream.owner_id)


# --- events -----------------------------------------------------------------------------------


@attrs.frozen
class StreamEvent:
    """Base of every registry event. ``name`` is the stable log event name."""

    name: ClassVar[str] = "stream_discovery_event"

    def log_fields(self) -> dict[str, object]:
        """Fields for structured logging; no secrets (events carry none, repr=False ones are skipped)."""
        out: dict[str, object] = {}
        for field in attrs.fields(self.__class__):
            if not field.repr:
                continue
            value = getattr(self, field.name)
            if isinstance(value, StreamKey):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            out[field.name] = value
        return out


@attrs.frozen
class UserGoLive(StreamEvent):
    name: ClassVar[str] = "stream_discovery_user_go_live"
    user_id: str
    guild_id: str | None
    channel_id: str | None
    own: bool = False


@attrs.frozen
class UserGoLiveEnded(StreamEvent):
    """A user's stream ended before (or without) STREAM_DELETE. ``reason``: self_stream_false,
    left_voice, channel_changed, replaced_by_stream_create."""

    name: ClassVar[str] = "stream_discovery_user_go_live_ended"
    user_id: str
    guild_id: str | None
    channel_id: str | None
    stream_key: StreamKey | None
    reason: str
    own: bool = False


@attrs.frozen
class GoLiveBootstrapSeeded(StreamEvent):
    name: ClassVar[str] = "stream_discovery_go_live_bootstrap_seeded"
    stream_key: StreamKey
    user_id: str
    guild_id: str | None
    channel_id: str
    source: str


@attrs.frozen
class ExistingStreamerDetected(StreamEvent):
    name: ClassVar[str] = "stream_discovery_existing_streamer_detected"
    user_id: str
    guild_id: str | None
    channel_id: str
    source: str


@attrs.frozen
class GuildCreateScanComplete(StreamEvent):
    name: ClassVar[str] = "stream_discovery_guild_create_scan_complete"
    guild_id: str
    total_voice_states: int
    existing_streamers: int
    streamer_user_ids: tuple[str, ...]
    invalid_voice_states: int


@attrs.frozen
class ReadySupplementalScanComplete(GuildCreateScanComplete):
    name: ClassVar[str] = "stream_discovery_ready_supplemental_scan_complete"


@attrs.frozen
class StreamCreated(StreamEvent):
    name: ClassVar[str] = "stream_discovery_stream_created"
    stream_key: StreamKey
    user_id: str
    guild_id: str | None
    channel_id: str
    rtc_server_id: str | None
    rtc_channel_id: str | None
    region: str | None
    viewer_count: int
    paused: bool
    own: bool
    was_known: bool


@attrs.frozen
class CredentialsReceived(StreamEvent):
    """``endpoint`` is shortened to its first label as clanky logged it; the token never appears."""

    name: ClassVar[str] = "stream_discovery_credentials_received"
    stream_key: StreamKey
    user_id: str
    endpoint: str | None
    has_token: bool
    rtc_server_id: str | None
    latency_ms: int
    own: bool
    from_pending: bool


@attrs.frozen
class ServerUpdateNoStream(StreamEvent):
    """Credentials for a stream we do not know yet; kept until its STREAM_CREATE."""

    name: ClassVar[str] = "stream_discovery_server_update_no_stream"
    stream_key: StreamKey
    kept: bool = True


@attrs.frozen
class PendingCredentialsDropped(StreamEvent):
    name: ClassVar[str] = "stream_discovery_pending_credentials_dropped"
    stream_key: StreamKey
    reason: Literal["expired", "overflow"]


@attrs.frozen
class StreamReallocating(StreamEvent):
    """STREAM_SERVER_UPDATE with ``endpoint: null``: credentials cleared until the next update."""

    name: ClassVar[str] = "stream_discovery_stream_reallocating"
    stream_key: StreamKey
    known: bool
    own: bool


@attrs.frozen
class StreamUpdated(StreamEvent):
    name: ClassVar[str] = "stream_discovery_stream_updated"
    stream_key: StreamKey
    viewer_count: int
    paused: bool
    own: bool


@attrs.frozen
class UpdateUnknownStream(StreamEvent):
    name: ClassVar[str] = "stream_discovery_update_unknown_stream"
    stream_key: StreamKey


@attrs.frozen
class StreamDeleted(StreamEvent):
    name: ClassVar[str] = "stream_discovery_stream_deleted"
    stream_key: StreamKey
    user_id: str
    reason: str | None
    unavailable: bool
    age_ms: int
    own: bool
    was_watched: bool
    was_created: bool


@attrs.frozen
class DeleteUnknownStream(StreamEvent):
    """A delete for a stream we do not know (or already ended). With ``was_watched`` it is the
    gateway refusing our watch request (``reason``: stream_full, unauthorized, ...)."""

    name: ClassVar[str] = "stream_discovery_delete_unknown_stream"
    stream_key: StreamKey
    reason: str | None
    unavailable: bool
    was_watched: bool


@attrs.frozen
class WebcamStarted(StreamEvent):
    name: ClassVar[str] = "stream_discovery_webcam_started"
    user_id: str
    guild_id: str | None
    channel_id: str


@attrs.frozen
class WebcamStopped(StreamEvent):
    name: ClassVar[str] = "stream_discovery_webcam_stopped"
    user_id: str
    guild_id: str | None
    channel_id: str | None


@attrs.frozen
class InvalidStreamKey(StreamEvent):
    name: ClassVar[str] = "stream_discovery_invalid_stream_key"
    dispatch: str
    reason: str


@attrs.frozen
class MalformedDispatch(StreamEvent):
    name: ClassVar[str] = "stream_discovery_malformed_dispatch"
    dispatch: str
    kind: str
    reason: str


@attrs.frozen
class WatchRequested(StreamEvent):
    name: ClassVar[str] = "stream_discovery_watch_requested"
    stream_key: StreamKey
    user_id: str
    synthesized: bool
    replaced_key: StreamKey | None


@attrs.frozen
class WatchRequest:
    """What :meth:`StreamRegistry.request_watch` hands back: the frames to send, in order
    (op19 for a previously watched stream, then op20), and the event to log."""

    stream_key: StreamKey
    synthesized: bool
    frames: tuple[GatewayFrame, ...]
    event: WatchRequested

    @property
    def watch_frame(self) -> GatewayFrame:
        return self.frames[-1]
