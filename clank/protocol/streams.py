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
from typing import Final

import attrs

from clank.errors import MalformedMessage, WatchError
from clank.protocol.stream_events import (
    DeleteUnknownStream,
    InvalidStreamKey,
    MalformedDispatch,
    RegistryStatistics,
    Sharer,
    StreamCreated,
    StreamDeleted,
    StreamEvent,
    StreamInfo,
    StreamReallocating,
    StreamUpdated,
    UpdateUnknownStream,
    WatchRequest,
    WatchRequested,
)
from clank.protocol.stream_members import VoiceMembers
from clank.protocol.stream_table import StreamTable, elapsed_ms
from clank.protocol.stream_watches import STREAM_PING, StreamPingPolicy, StreamWatches
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
    stream_delete_frame,
    stream_ping_frame,
    stream_watch_frame,
)

__all__ = ["DISPATCH_PARSERS", "StreamRegistry"]

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
        self._table = StreamTable(user_id)
        self._members = VoiceMembers(self._table, self._in_scope)
        self.watches = StreamWatches(ping_policy)
        """Watch bookkeeping per stream key (op20 sent, op21 schedule, leg state)."""
        self._listeners: list[Callable[[Sequence[StreamEvent]], None]] = []
        self._go_live: tuple[StreamKey, float, int] | None = None  # key, when, serial
        """Our own Go Live: its key and when op18 was sent (until op19 or its STREAM_DELETE)."""
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
        events: list[StreamEvent] = self._table.expire_pending(now)
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
                return self._members.apply(payload, now, "voice_state")
            case StreamCreate():
                return self._apply_stream_create(payload, now)
            case StreamServerUpdate():
                return self._apply_server_update(payload, now)
            case StreamUpdate():
                return self._apply_stream_update(payload)
            case StreamDelete():
                return self._apply_stream_delete(payload, now)
            case GuildVoiceStates():
                return self._members.apply_scan(payload, now, "guild_create")
            case ReadySupplemental():
                events: list[StreamEvent] = []
                for guild in payload.guilds:
                    events += self._members.apply_scan(guild, now, "ready_supplemental")
                return events
        raise AssertionError(f"no handler for {type(payload).__name__}")  # DISPATCH_PARSERS drift

    def _in_scope(self, guild_id: str | None) -> bool:
        if self._guild_ids is None or guild_id in self._guild_ids:
            return True
        self._out_of_scope += 1
        return False

    # --- streams -------------------------------------------------------------------------------

    def _apply_stream_create(self, sc: StreamCreate, now: float) -> list[StreamEvent]:
        key = sc.stream_key
        if not self._in_scope(key.guild_id):
            return []
        events: list[StreamEvent] = []
        own = self._table.is_own(key)
        if not own:
            events += self._table.end_user_streams(key.owner_id, "replaced_by_stream_create", keep=key)
        previous = self._table.lookup(key)
        base = previous or StreamInfo(key=key, discovered_at=now, source="stream_create")
        if base.rtc_server_id is not None and base.rtc_server_id != sc.rtc_server_id:
            # A different stream server: the old credentials belong to it.
            base = attrs.evolve(base, endpoint=None, token=None, credentials_received_at=None)
        info = attrs.evolve(
            base,
            created_at=now,
            rtc_server_id=sc.rtc_server_id,
            rtc_channel_id=sc.rtc_channel_id,
            region=sc.region,
            viewer_ids=sc.viewer_ids,
            paused=sc.paused,
        )
        self._table.store(info)
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
        events += self._table.apply_pending(key, now)
        return events

    def _apply_server_update(self, update: StreamServerUpdate, now: float) -> list[StreamEvent]:
        key = update.stream_key
        if not self._in_scope(key.guild_id):
            return []
        info = self._table.lookup(key)
        own = self._table.is_own(key)
        if update.endpoint is None:
            known = self._table.clear_credentials(key)
            return [StreamReallocating(stream_key=key, known=known, own=own)]
        if info is None:
            return self._table.keep_pending(update, now)
        return [self._table.set_credentials(info, update, now, from_pending=False)]

    def _apply_stream_update(self, update: StreamUpdate) -> list[StreamEvent]:
        key = update.stream_key
        if not self._in_scope(key.guild_id):
            return []
        info = self._table.lookup(key)
        if info is None:
            return [UpdateUnknownStream(stream_key=key)]
        info = attrs.evolve(
            info,
            viewer_ids=info.viewer_ids if update.viewer_ids is None else update.viewer_ids,
            paused=info.paused if update.paused is None else update.paused,
            region=info.region if update.region is None else update.region,
        )
        self._table.store(info, touch=False)
        return [
            StreamUpdated(
                stream_key=key,
                viewer_count=len(info.viewer_ids),
                paused=info.paused,
                own=self._table.is_own(key),
            )
        ]

    def _apply_stream_delete(self, delete: StreamDelete, now: float) -> list[StreamEvent]:
        key = delete.stream_key
        if not self._in_scope(key.guild_id):
            return []
        was_watched = self.watches.stop(key) is not None
        if self._go_live is not None and self._go_live[0] == key:
            self._go_live = None
        self._table.drop_pending(key)
        info = self._table.lookup(key)
        if info is None:
            return [
                DeleteUnknownStream(
                    stream_key=key,
                    reason=delete.reason,
                    unavailable=delete.unavailable,
                    was_watched=was_watched,
                )
            ]
        self._table.remove(key)
        return [
            StreamDeleted(
                stream_key=key,
                user_id=key.owner_id,
                reason=delete.reason,
                unavailable=delete.unavailable,
                age_ms=elapsed_ms(info.discovered_at, now),
                own=self._table.is_own(key),
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
            known = self._table.lookup(key)
            synthesized = known is None or not known.created
        else:
            known = self.stream_for_user(target)
            if known is not None:
                key, synthesized = known.key, not known.created
            else:
                member = self._members.member(target)
                if member is None or member.channel_id is None:
                    raise WatchError("target_not_in_voice", f"user {target} has no stream and no voice state")
                key = StreamKey.for_voice_channel(member.guild_id, member.channel_id, target)
                synthesized = True
        if self._table.is_own(key):
            raise WatchError("own_stream", "cannot watch our own Go Live")
        if self._guild_ids is not None and key.guild_id not in self._guild_ids:
            raise WatchError("out_of_scope", f"{key} is outside this voice session's guilds")
        self.watches.request(key, now, self._table.next_serial())
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

    # --- credentials of a requested stream (watch or our own Go Live) ---------------------------

    def request_go_live(self, guild_id: str | None, channel_id: str, now: float) -> StreamKey:
        """Our op18 for ``channel_id`` goes out at ``now``: the key of our stream (its credentials
        are then :meth:`fresh_credentials` only once a STREAM_SERVER_UPDATE answers this op18)."""
        key = StreamKey.for_voice_channel(guild_id, channel_id, self.user_id)
        self._go_live = (key, now, self._table.next_serial())
        return key

    def stop_go_live(self, key: StreamKey) -> GatewayFrame | None:
        """op19 for our stream ``key``; ``None`` when it is not live (never requested, or deleted)."""
        if self._go_live is None or self._go_live[0] != key:
            return None
        self._go_live = None
        return stream_delete_frame(key)

    def credentials_requested_at(self, key: StreamKey) -> float | None:
        """When op20 (a watch) or op18 (our Go Live) asked for ``key``'s credentials, if it did."""
        if self._go_live is not None and self._go_live[0] == key:
            return self._go_live[1]
        book = self.watches.book(key)
        return None if book is None else book.requested_at

    def fresh_credentials(self, key: StreamKey) -> StreamInfo | None:
        """``key``'s stream once it has full credentials from a STREAM_SERVER_UPDATE that answers
        our request (cached credentials that look complete may be stale after a re-request).
        "Answers" is by order, not time: a stale update at the request's own instant is stale."""
        requested = self._requested_serial(key)
        info = self._table.lookup(key)
        if requested is None or info is None or not info.has_credentials:
            return None
        return info if info.credentials_serial > requested else None

    def _requested_serial(self, key: StreamKey) -> int | None:
        if self._go_live is not None and self._go_live[0] == key:
            return self._go_live[2]
        book = self.watches.book(key)
        return None if book is None else book.requested_serial

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
        return self._table.own

    @property
    def own_voice_state(self) -> VoiceState | None:
        return self._members.own_voice_state

    @property
    def preferred_owner_id(self) -> str | None:
        """The primary-ranking preference without a caller preference (see module docstring)."""
        watching = self.watching_key
        if watching is not None:
            return watching.owner_id
        return self._table.touched_owner

    def streams(self) -> tuple[StreamInfo, ...]:
        """Every known stream of other users (provisional ones included), oldest first."""
        return self._table.streams()

    def stream(self, key: StreamKey) -> StreamInfo | None:
        return self._table.lookup(key)

    def stream_for_user(self, user_id: str, guild_id: str | None = None) -> StreamInfo | None:
        return self._table.for_user(user_id, guild_id)

    def watched_stream(self) -> StreamInfo | None:
        key = self.watching_key
        return None if key is None else self._table.lookup(key)

    def has_credentials(self, target: str | StreamKey) -> bool:
        stream = self.stream(target) if isinstance(target, StreamKey) else self.stream_for_user(target)
        return stream is not None and stream.has_credentials

    def primary_stream(self, preferred_owner_id: str | None = None) -> StreamInfo | None:
        """The top-ranked stream (clanky's "primary" Go Live). The watched stream's owner beats
        ``preferred_owner_id``, which beats the most recently touched owner."""
        watching = self.watching_key
        preferred = (
            watching.owner_id
            if watching is not None
            else (preferred_owner_id if preferred_owner_id is not None else self._table.touched_owner)
        )
        return self._table.primary(preferred)

    def member(self, user_id: str) -> VoiceState | None:
        return self._members.member(user_id)

    def members(self) -> tuple[VoiceState, ...]:
        return self._members.members()

    def sharers(self) -> tuple[Sharer, ...]:
        """Users sharing video: Go Live (``self_stream`` or a known stream) and/or webcam."""
        return self._members.sharers()

    def statistics(self) -> RegistryStatistics:
        return RegistryStatistics(
            dispatches_handled=self._handled,
            dispatches_ignored=self._ignored,
            out_of_scope=self._out_of_scope,
            malformed=self._malformed,
            streams=len(self._table.streams()),
            pending_credentials=self._table.pending_count,
        )
