"""Go Live stream discovery: which users share their screen, and the credentials to watch them.

Sans-io and synchronous. The main-gateway driver feeds every dispatch into
:meth:`StreamRegistry.handle_dispatch` with ``now`` (seconds); the registry returns typed events for
logging / reacting and keeps the state that the watch and publish roles query. Outgoing gateway
frames (op19/op20/op21) are returned by :meth:`request_watch`, :meth:`stop_watch` and
:meth:`keepalive_due`; nothing here sends or sleeps.

Behaviour follows clanky's ``src/selfbot/streamDiscovery.ts`` (and how ``bot.ts`` consumed its
callbacks), plus the extras listed below.

* ``VOICE_STATE_UPDATE`` ``self_stream: true`` is the earliest Go Live signal: a *provisional*
  stream with the synthesized key is seeded (``stream_discovery_go_live_bootstrap_seeded``).
  ``self_stream: false`` (or ``channel_id: null``: the user left voice) ends that user's streams
  before STREAM_DELETE arrives. ``self_video`` is tracked per user for webcam fallback / sharers.
  Our own user's voice state is tracked separately and never seeds a watchable stream.
* ``STREAM_CREATE`` records ``rtc_server_id`` & co. Keys other than ``guild:<g>:<c>:<u>`` and
  ``call:<c>:<u>`` produce ``stream_discovery_invalid_stream_key`` (never an exception).
* ``STREAM_SERVER_UPDATE`` stores endpoint + token. Unlike clanky, credentials for a stream we do
  not know yet are *kept* (bounded, expiring) and applied when STREAM_CREATE arrives.
  ``endpoint: null`` means reallocation: credentials are cleared until the next update.
* ``STREAM_UPDATE`` changes viewers / paused; ``STREAM_DELETE`` removes the stream and clears the
  watched key (also for deletes of streams we never saw: a refused watch is answered that way).
* ``GUILD_CREATE`` / ``READY_SUPPLEMENTAL`` voice states seed streams that were live before we
  connected (``stream_discovery_existing_streamer_detected`` + ``..._scan_complete``).
* Our own Go Live (key owner == our user) is kept apart as :attr:`StreamRegistry.own_stream`.

Deliberate differences from clanky: ``user_go_live`` is reported on the *transition* to streaming,
not on every voice-state update of a streaming user (mute toggles would repeat it); a user has at
most one stream, so a new key for the same owner (channel move) replaces the old one; a complete
GUILD_CREATE voice-state list is authoritative (users missing from it have left voice).

Primary stream (clanky ``syncPrimaryGoLiveStream``): every known stream is scored with
:data:`RANK_RULES` (preferred target +100, active = full credentials +10, credentials received +5,
discovered +1 — always true for a registry entry, kept for fidelity), then the newest
``discovered_at`` wins, then the smaller owner id. The preferred target is the owner of the watched
stream if we are watching, else the caller's preference, else the owner of the stream that was
most recently seeded/created/credentialed (clanky passed the upserted stream's user as the
preference on every upsert, and no preference after a removal; so do we).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Final, Literal

import attrs

from clank.errors import MalformedMessage, WatchError
from clank.protocol.stream_watches import (
    STREAM_PING,
    StreamPingPolicy,
    StreamWatches,
)
from clank.wire.gateway import GatewayFrame
from clank.wire.gateway_events import (
    STREAM_KEY_KIND,
    GuildVoiceStates,
    ReadySupplemental,
    StreamCreate,
    StreamDelete,
    StreamKey,
    StreamServerUpdate,
    StreamUpdate,
    VoiceState,
    dave_group_id_for_stream,
    stream_delete_frame,
    stream_ping_frame,
    stream_watch_frame,
)

# op21 is optional and single-sourced (UDOC); its schedule is a policy (stream_watches.STREAM_PING).

PENDING_CREDENTIALS_LIMIT: Final = 16
"""STREAM_SERVER_UPDATEs kept for streams not created yet; the oldest is dropped beyond this."""

PENDING_CREDENTIALS_TTL: Final = 60.0
"""Seconds a pending STREAM_SERVER_UPDATE waits for its STREAM_CREATE before it is dropped."""

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


# --- the registry -----------------------------------------------------------------------------

DISPATCH_PARSERS: Final[Mapping[str, Callable[[object], object]]] = {
    "VOICE_STATE_UPDATE": VoiceState.parse,
    "STREAM_CREATE": StreamCreate.parse,
    "STREAM_SERVER_UPDATE": StreamServerUpdate.parse,
    "STREAM_UPDATE": StreamUpdate.parse,
    "STREAM_DELETE": StreamDelete.parse,
    "GUILD_CREATE": GuildVoiceStates.parse,
    "READY_SUPPLEMENTAL": ReadySupplemental.parse,
    # A user session's READY inlines its guilds (voice states included) and no GUILD_CREATE follows.
    "READY": ReadySupplemental.parse,
}
"""The dispatches the registry consumes; every other dispatch name is ignored."""


@attrs.frozen
class _PendingCredentials:
    update: StreamServerUpdate
    received_at: float


def _short_endpoint(endpoint: str | None) -> str | None:
    return None if endpoint is None else f"{endpoint.split('.')[0]}..."


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


class StreamRegistry:
    """Go Live discovery for one voice session of ``user_id``.

    ``guild_ids`` limits the registry to those guilds (dispatches for others are counted and
    ignored; DM-call streams, which have no guild, are then out of scope too). ``None`` accepts all.
    """

    def __init__(
        self,
        user_id: str,
        guild_ids: Iterable[str] | None = None,
        *,
        ping_policy: StreamPingPolicy = STREAM_PING,
    ) -> None:
        self.user_id = user_id
        self._guild_ids = None if guild_ids is None else frozenset(guild_ids)
        self._streams: dict[str, StreamInfo] = {}
        self._own_stream: StreamInfo | None = None
        self._members: dict[str, VoiceState] = {}
        self._own_voice_state: VoiceState | None = None
        self._pending: dict[str, _PendingCredentials] = {}
        self.watches = StreamWatches(ping_policy)
        """Watch bookkeeping per stream key (op20 sent, op21 schedule, leg state)."""
        self._listeners: list[Callable[[Sequence[StreamEvent]], None]] = []
        self._touched_owner: str | None = None
        self._handled = 0
        self._ignored = 0
        self._out_of_scope = 0
        self._malformed = 0

    # --- input ---------------------------------------------------------------------------------

    def handle_dispatch(self, name: str, data: object, now: float) -> list[StreamEvent]:
        """Feed one main-gateway dispatch. Never raises for bad payloads: they become events."""
        parser = DISPATCH_PARSERS.get(name)
        if parser is None:
            self._ignored += 1
            return []
        self._handled += 1
        events: list[StreamEvent] = self._expire_pending(now)
        try:
            payload = parser(data)
        except MalformedMessage as exc:
            self._malformed += 1
            if exc.kind == STREAM_KEY_KIND:
                events.append(InvalidStreamKey(dispatch=name, reason=exc.reason))
            else:
                events.append(MalformedDispatch(dispatch=name, kind=exc.kind, reason=exc.reason))
            return events
        events += self._apply(payload, now)
        if events:
            for listener in list(self._listeners):
                listener(events)
        return events

    def subscribe(self, listener: Callable[[Sequence[StreamEvent]], None]) -> Callable[[], None]:
        """Call ``listener`` (synchronously) with the events of every dispatch; returns the
        unsubscribe function. The voice session's watches follow the registry this way, so each
        dispatch is parsed once, here."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return unsubscribe

    def _apply(self, payload: object, now: float) -> list[StreamEvent]:
        match payload:
            case VoiceState():
                return self._apply_voice_state(payload, now, "voice_state")
            case StreamCreate():
                return self._apply_stream_create(payload, now)
            case StreamServerUpdate():
                return self._apply_server_update(payload, now)
            case StreamUpdate():
                return self._apply_stream_update(payload)
            case StreamDelete():
                return self._apply_stream_delete(payload, now)
            case GuildVoiceStates():
                return self._apply_scan(payload, now, "guild_create")
            case ReadySupplemental():
                events: list[StreamEvent] = []
                for guild in payload.guilds:
                    events += self._apply_scan(guild, now, "ready_supplemental")
                return events
        raise AssertionError(f"no handler for {type(payload).__name__}")  # DISPATCH_PARSERS drift

    def _in_scope(self, guild_id: str | None) -> bool:
        if self._guild_ids is None or guild_id in self._guild_ids:
            return True
        self._out_of_scope += 1
        return False

    # --- voice states --------------------------------------------------------------------------

    def _apply_voice_state(self, vs: VoiceState, now: float, source: Source) -> list[StreamEvent]:
        if not self._in_scope(vs.guild_id):
            return []
        if vs.user_id == self.user_id:
            return self._apply_own_voice_state(vs)
        user = vs.user_id
        previous = self._members.get(user)
        was_streaming = previous is not None and previous.self_stream
        events: list[StreamEvent] = []
        if vs.channel_id is None:
            self._members.pop(user, None)
            events += self._end_user_streams(user, "left_voice", announce=vs if was_streaming else None)
            if previous is not None and previous.self_video:
                events.append(WebcamStopped(user_id=user, guild_id=vs.guild_id, channel_id=None))
            return events
        self._members[user] = vs
        if vs.self_video and not (previous is not None and previous.self_video):
            events.append(WebcamStarted(user_id=user, guild_id=vs.guild_id, channel_id=vs.channel_id))
        elif previous is not None and previous.self_video and not vs.self_video:
            events.append(WebcamStopped(user_id=user, guild_id=vs.guild_id, channel_id=vs.channel_id))
        if not vs.self_stream:
            events += self._end_user_streams(
                user, "self_stream_false", announce=vs if was_streaming else None
            )
            return events
        moved = previous is not None and previous.channel_id != vs.channel_id
        if source == "voice_state":
            if not was_streaming or moved:
                events.append(UserGoLive(user_id=user, guild_id=vs.guild_id, channel_id=vs.channel_id))
        else:
            events.append(
                ExistingStreamerDetected(
                    user_id=user, guild_id=vs.guild_id, channel_id=vs.channel_id, source=SCAN_SOURCES[source]
                )
            )
        key = StreamKey.for_voice_channel(vs.guild_id, vs.channel_id, user)
        events += self._end_user_streams(user, "channel_changed", keep=key)
        if str(key) not in self._streams:
            self._streams[str(key)] = StreamInfo(key=key, discovered_at=now, source=source)
            events.append(
                GoLiveBootstrapSeeded(
                    stream_key=key,
                    user_id=user,
                    guild_id=vs.guild_id,
                    channel_id=vs.channel_id,
                    source=SOURCE_LABELS[source],
                )
            )
            events += self._apply_pending(key, now)
        self._touched_owner = user
        return events

    def _apply_own_voice_state(self, vs: VoiceState) -> list[StreamEvent]:
        """Our own state: tracked, never a watchable stream. Only a true -> false transition (or
        leaving voice) ends our own stream, because our STREAM_CREATE precedes our
        ``self_stream: true`` (Appendix C.2)."""
        previous = self._own_voice_state
        was_streaming = previous is not None and previous.self_stream
        self._own_voice_state = vs if vs.channel_id is not None else None
        events: list[StreamEvent] = []
        if vs.self_stream and vs.channel_id is not None and not was_streaming:
            events.append(
                UserGoLive(user_id=vs.user_id, guild_id=vs.guild_id, channel_id=vs.channel_id, own=True)
            )
        left = vs.channel_id is None
        if left or (was_streaming and not vs.self_stream):
            own = self._own_stream
            if own is not None or was_streaming:
                self._own_stream = None
                events.append(
                    UserGoLiveEnded(
                        user_id=vs.user_id,
                        guild_id=vs.guild_id,
                        channel_id=vs.channel_id,
                        stream_key=None if own is None else own.key,
                        reason="left_voice" if left else "self_stream_false",
                        own=True,
                    )
                )
        return events

    def _end_user_streams(
        self, user_id: str, reason: str, *, keep: StreamKey | None = None, announce: VoiceState | None = None
    ) -> list[StreamEvent]:
        """Remove every stream of ``user_id`` except ``keep``; one event per removed stream, or one
        without a key (placed at the ``announce`` voice state) when the user had none."""
        ended = [s for s in self._streams.values() if s.owner_id == user_id and s.key != keep]
        events: list[StreamEvent] = []
        for stream in ended:
            del self._streams[str(stream.key)]
            events.append(
                UserGoLiveEnded(
                    user_id=user_id,
                    guild_id=stream.guild_id,
                    channel_id=stream.channel_id,
                    stream_key=stream.key,
                    reason=reason,
                )
            )
        if ended:
            self._touched_owner = None
        elif announce is not None:
            events.append(
                UserGoLiveEnded(
                    user_id=user_id,
                    guild_id=announce.guild_id,
                    channel_id=announce.channel_id,
                    stream_key=None,
                    reason=reason,
                )
            )
        return events

    def _apply_scan(self, guild: GuildVoiceStates, now: float, source: Source) -> list[StreamEvent]:
        if not self._in_scope(guild.guild_id):
            return []
        events: list[StreamEvent] = []
        for vs in guild.voice_states:
            events += self._apply_voice_state(vs, now, source)
        if guild.complete:
            # The list is the whole guild: anyone we still think is in voice there has left.
            present = {vs.user_id for vs in guild.voice_states}
            for user_id, member in list(self._members.items()):
                if member.guild_id == guild.guild_id and user_id not in present:
                    gone = VoiceState(guild_id=guild.guild_id, channel_id=None, user_id=user_id)
                    events += self._apply_voice_state(gone, now, "voice_state")
        streamers = tuple(
            vs.user_id
            for vs in guild.voice_states
            if vs.self_stream and vs.channel_id is not None and vs.user_id != self.user_id
        )
        if streamers:
            scan_event = (
                GuildCreateScanComplete if source == "guild_create" else ReadySupplementalScanComplete
            )
            events.append(
                scan_event(
                    guild_id=guild.guild_id,
                    total_voice_states=len(guild.voice_states),
                    existing_streamers=len(streamers),
                    streamer_user_ids=streamers,
                    invalid_voice_states=guild.invalid_voice_states,
                )
            )
        return events

    # --- streams -------------------------------------------------------------------------------

    def _is_own(self, key: StreamKey) -> bool:
        return key.owner_id == self.user_id

    def _lookup(self, key: StreamKey) -> StreamInfo | None:
        if self._is_own(key):
            own = self._own_stream
            return own if own is not None and own.key == key else None
        return self._streams.get(str(key))

    def _store(self, info: StreamInfo, *, touch: bool = True) -> None:
        """Save ``info``; ``touch`` makes its owner the implicit primary preference (an upsert)."""
        if self._is_own(info.key):
            self._own_stream = info
        else:
            self._streams[str(info.key)] = info
            if touch:
                self._touched_owner = info.owner_id

    def _apply_stream_create(self, sc: StreamCreate, now: float) -> list[StreamEvent]:
        key = sc.stream_key
        if not self._in_scope(key.guild_id):
            return []
        events: list[StreamEvent] = []
        own = self._is_own(key)
        if not own:
            events += self._end_user_streams(key.owner_id, "replaced_by_stream_create", keep=key)
        previous = self._lookup(key)
        fields: dict[str, Any] = {
            "created_at": now,
            "rtc_server_id": sc.rtc_server_id,
            "rtc_channel_id": sc.rtc_channel_id,
            "region": sc.region,
            "viewer_ids": sc.viewer_ids,
            "paused": sc.paused,
        }
        if previous is None:
            info = StreamInfo(key=key, discovered_at=now, source="stream_create", **fields)
        else:
            if previous.rtc_server_id is not None and previous.rtc_server_id != sc.rtc_server_id:
                # A different stream server: the old credentials belong to it.
                fields.update(endpoint=None, token=None, credentials_received_at=None)
            info = attrs.evolve(previous, **fields)
        self._store(info)
        events.append(
            StreamCreated(
                stream_key=key,
                user_id=key.owner_id,
                guild_id=key.guild_id,
                channel_id=key.channel_id,
                rtc_server_id=sc.rtc_server_id,
                rtc_channel_id=sc.rtc_channel_id,
                region=sc.region,
                viewer_count=len(sc.viewer_ids),
                paused=sc.paused,
                own=own,
                was_known=previous is not None,
            )
        )
        events += self._apply_pending(key, now)
        return events

    def _apply_server_update(self, update: StreamServerUpdate, now: float) -> list[StreamEvent]:
        key = update.stream_key
        if not self._in_scope(key.guild_id):
            return []
        info = self._lookup(key)
        own = self._is_own(key)
        if update.endpoint is None:
            self._pending.pop(str(key), None)
            if info is not None:
                cleared = attrs.evolve(info, endpoint=None, token=None, credentials_received_at=None)
                self._store(cleared, touch=False)
            return [StreamReallocating(stream_key=key, known=info is not None, own=own)]
        if info is None:
            return self._store_pending(update, now)
        return [self._set_credentials(info, update, now, from_pending=False)]

    def _set_credentials(
        self, info: StreamInfo, update: StreamServerUpdate, now: float, *, from_pending: bool
    ) -> CredentialsReceived:
        self._store(
            attrs.evolve(info, endpoint=update.endpoint, token=update.token, credentials_received_at=now)
        )
        return CredentialsReceived(
            stream_key=info.key,
            user_id=info.owner_id,
            endpoint=_short_endpoint(update.endpoint),
            has_token=bool(update.token),
            rtc_server_id=info.rtc_server_id,
            latency_ms=_ms(now - info.discovered_at),
            own=self._is_own(info.key),
            from_pending=from_pending,
        )

    def _store_pending(self, update: StreamServerUpdate, now: float) -> list[StreamEvent]:
        events: list[StreamEvent] = [ServerUpdateNoStream(stream_key=update.stream_key)]
        name = str(update.stream_key)
        self._pending.pop(name, None)
        self._pending[name] = _PendingCredentials(update=update, received_at=now)
        while len(self._pending) > PENDING_CREDENTIALS_LIMIT:
            oldest = next(iter(self._pending))
            dropped = self._pending.pop(oldest)
            events.append(PendingCredentialsDropped(stream_key=dropped.update.stream_key, reason="overflow"))
        return events

    def _apply_pending(self, key: StreamKey, now: float) -> list[StreamEvent]:
        pending = self._pending.pop(str(key), None)
        info = self._lookup(key)
        if pending is None or info is None:
            return []
        return [self._set_credentials(info, pending.update, now, from_pending=True)]

    def _expire_pending(self, now: float) -> list[StreamEvent]:
        expired = [p for p in self._pending.values() if now - p.received_at >= PENDING_CREDENTIALS_TTL]
        for pending in expired:
            del self._pending[str(pending.update.stream_key)]
        return [PendingCredentialsDropped(stream_key=p.update.stream_key, reason="expired") for p in expired]

    def _apply_stream_update(self, update: StreamUpdate) -> list[StreamEvent]:
        key = update.stream_key
        if not self._in_scope(key.guild_id):
            return []
        info = self._lookup(key)
        if info is None:
            return [UpdateUnknownStream(stream_key=key)]
        changes: dict[str, Any] = {}
        if update.viewer_ids is not None:
            changes["viewer_ids"] = update.viewer_ids
        if update.paused is not None:
            changes["paused"] = update.paused
        if update.region is not None:
            changes["region"] = update.region
        info = attrs.evolve(info, **changes)
        self._store(info, touch=False)
        return [
            StreamUpdated(
                stream_key=key, viewer_count=len(info.viewer_ids), paused=info.paused, own=self._is_own(key)
            )
        ]

    def _apply_stream_delete(self, delete: StreamDelete, now: float) -> list[StreamEvent]:
        key = delete.stream_key
        if not self._in_scope(key.guild_id):
            return []
        was_watched = self.watches.stop(key) is not None
        self._pending.pop(str(key), None)
        info = self._lookup(key)
        if info is None:
            return [
                DeleteUnknownStream(
                    stream_key=key,
                    reason=delete.reason,
                    unavailable=delete.unavailable,
                    was_watched=was_watched,
                )
            ]
        if self._is_own(key):
            self._own_stream = None
        else:
            del self._streams[str(key)]
            self._touched_owner = None
        return [
            StreamDeleted(
                stream_key=key,
                user_id=key.owner_id,
                reason=delete.reason,
                unavailable=delete.unavailable,
                age_ms=_ms(now - info.discovered_at),
                own=self._is_own(key),
                was_watched=was_watched,
                was_created=info.created,
            )
        ]

    # --- watching ------------------------------------------------------------------------------

    def request_watch(self, target: str | StreamKey, now: float) -> WatchRequest:
        """Start watching ``target`` (an owner user id or a key): returns the frames to send.

        For a user id, the known stream's key is used, else one is synthesized from the user's
        voice state (a watcher may ask before STREAM_CREATE, §2.7). ``synthesized`` is true when
        the key did not come from a STREAM_CREATE. Raises :class:`WatchError`
        ``target_not_in_voice`` when there is neither, ``own_stream`` for our own stream and
        ``out_of_scope`` for a stream outside the registry's guilds.
        """
        if isinstance(target, StreamKey):
            key = target
            known = self._lookup(key)
            synthesized = known is None or not known.created
        else:
            known = self.stream_for_user(target)
            if known is not None:
                key, synthesized = known.key, not known.created
            else:
                member = self._members.get(target)
                if member is None or member.channel_id is None:
                    raise WatchError("target_not_in_voice", f"user {target} has no stream and no voice state")
                key = StreamKey.for_voice_channel(member.guild_id, member.channel_id, target)
                synthesized = True
        if self._is_own(key):
            raise WatchError("own_stream", "cannot watch our own Go Live")
        if self._guild_ids is not None and key.guild_id not in self._guild_ids:
            raise WatchError("out_of_scope", f"{key} is outside this voice session's guilds")
        self.watches.request(key, now)
        event = WatchRequested(
            stream_key=key, user_id=key.owner_id, synthesized=synthesized, replaced_key=None
        )
        return WatchRequest(
            stream_key=key, synthesized=synthesized, frames=(stream_watch_frame(key),), event=event
        )

    def stop_watch(self, key: StreamKey | None = None) -> GatewayFrame | None:
        """op19 for ``key`` (default: the latest watch); ``None`` when there is nothing to stop.
        Other watches carry on (several run at once)."""
        if key is None:
            latest = self.watches.latest
            if latest is None:
                return None
            key = latest.key
        self.watches.stop(key)
        return stream_delete_frame(key)

    def watch_leg_state(self, key: StreamKey, *, connected: bool, healthy: bool, now: float) -> None:
        """The stream leg of ``key``'s watch: connected and healthy (drives the op21 policy)."""
        self.watches.set_leg_state(key, connected=connected, healthy=healthy, now=now)

    def keepalive_due(self, now: float) -> list[GatewayFrame]:
        """op21 frames due at ``now`` for every watch (per the registry's :class:`StreamPingPolicy`)."""
        return [stream_ping_frame(key) for key in self.watches.due(now)]

    def next_keepalive_at(self) -> float | None:
        return self.watches.next_at()

    # --- queries -------------------------------------------------------------------------------

    @property
    def watching_key(self) -> StreamKey | None:
        """The most recently requested watch (``watches.keys()`` lists them all)."""
        latest = self.watches.latest
        return None if latest is None else latest.key

    @property
    def watch_requested_at(self) -> float | None:
        latest = self.watches.latest
        return None if latest is None else latest.requested_at

    @property
    def own_stream(self) -> StreamInfo | None:
        """Our own Go Live (publish role), if any."""
        return self._own_stream

    @property
    def own_voice_state(self) -> VoiceState | None:
        return self._own_voice_state

    @property
    def preferred_owner_id(self) -> str | None:
        """The primary-ranking preference without a caller preference (see module docstring)."""
        watching = self.watching_key
        if watching is not None:
            return watching.owner_id
        return self._touched_owner

    def streams(self) -> tuple[StreamInfo, ...]:
        """Every known stream of other users (provisional ones included), oldest first."""
        return tuple(self._streams.values())

    def stream(self, key: StreamKey) -> StreamInfo | None:
        return self._lookup(key)

    def stream_for_user(self, user_id: str, guild_id: str | None = None) -> StreamInfo | None:
        for stream in self._streams.values():
            if stream.owner_id == user_id and (guild_id is None or stream.guild_id == guild_id):
                return stream
        return None

    def watched_stream(self) -> StreamInfo | None:
        key = self.watching_key
        return None if key is None else self._lookup(key)

    def has_credentials(self, target: str | StreamKey) -> bool:
        stream = self.stream(target) if isinstance(target, StreamKey) else self.stream_for_user(target)
        return stream is not None and stream.has_credentials

    def primary_stream(self, preferred_owner_id: str | None = None) -> StreamInfo | None:
        """The top-ranked stream (clanky's "primary" Go Live). The watched stream's owner beats
        ``preferred_owner_id``, which beats the most recently touched owner."""
        if not self._streams:
            return None
        watching = self.watching_key
        preferred = (
            watching.owner_id
            if watching is not None
            else (preferred_owner_id if preferred_owner_id is not None else self._touched_owner)
        )
        return min(self._streams.values(), key=lambda s: primary_order_key(s, preferred))

    def member(self, user_id: str) -> VoiceState | None:
        return self._members.get(user_id)

    def members(self) -> tuple[VoiceState, ...]:
        return tuple(self._members.values())

    def sharers(self) -> tuple[Sharer, ...]:
        """Users sharing video: Go Live (``self_stream`` or a known stream) and/or webcam."""
        out: dict[str, Sharer] = {}
        for user_id, vs in self._members.items():
            stream = self.stream_for_user(user_id)
            if vs.self_stream or vs.self_video or stream is not None:
                out[user_id] = Sharer(
                    user_id=user_id,
                    guild_id=vs.guild_id,
                    channel_id=vs.channel_id,
                    go_live=vs.self_stream or stream is not None,
                    webcam=vs.self_video,
                    stream=stream,
                )
        for stream in self._streams.values():
            if stream.owner_id not in out:
                out[stream.owner_id] = Sharer(
                    user_id=stream.owner_id,
                    guild_id=stream.guild_id,
                    channel_id=stream.channel_id,
                    go_live=True,
                    webcam=False,
                    stream=stream,
                )
        return tuple(sorted(out.values(), key=lambda s: s.user_id))

    def statistics(self) -> RegistryStatistics:
        return RegistryStatistics(
            dispatches_handled=self._handled,
            dispatches_ignored=self._ignored,
            out_of_scope=self._out_of_scope,
            malformed=self._malformed,
            streams=len(self._streams),
            pending_credentials=len(self._pending),
        )
