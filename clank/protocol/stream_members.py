"""Who is in voice and who shares video, from voice states (sans-io; part of the stream registry).

:class:`VoiceMembers` follows ``VOICE_STATE_UPDATE`` and the voice-state lists of
``GUILD_CREATE`` / ``READY(_SUPPLEMENTAL)`` for :class:`clank.protocol.streams.StreamRegistry`:
``self_stream: true`` seeds a provisional stream in the registry's :class:`StreamTable`,
``self_stream: false`` or leaving voice ends the user's streams, ``self_video`` is webcam
sharing, and our own voice state is tracked apart (it never seeds a watchable stream). A
complete guild voice-state list is authoritative (users missing from it have left voice).
"""

from __future__ import annotations

from collections.abc import Callable

from clank.protocol.stream_events import (
    SCAN_SOURCES,
    SOURCE_LABELS,
    ExistingStreamerDetected,
    GoLiveBootstrapSeeded,
    GuildCreateScanComplete,
    ReadySupplementalScanComplete,
    Sharer,
    Source,
    StreamEvent,
    StreamInfo,
    UserGoLive,
    UserGoLiveEnded,
    WebcamStarted,
    WebcamStopped,
)
from clank.protocol.stream_table import StreamTable
from clank.wire.gateway_events import GuildVoiceStates, StreamKey, VoiceState

__all__ = ["VoiceMembers"]


class VoiceMembers:
    """Voice states of the registry's guilds; ``in_scope`` filters (and counts) other guilds."""

    def __init__(self, table: StreamTable, in_scope: Callable[[str | None], bool]) -> None:
        self._table = table
        self._in_scope = in_scope
        self._members: dict[str, VoiceState] = {}
        self.own_voice_state: VoiceState | None = None

    # --- input --------------------------------------------------------------------------

    def apply(self, vs: VoiceState, now: float, source: Source) -> list[StreamEvent]:
        if not self._in_scope(vs.guild_id):
            return []
        if vs.user_id == self._table.user_id:
            return self._apply_own(vs)
        user = vs.user_id
        previous = self._members.get(user)
        was_streaming = previous is not None and previous.self_stream
        events: list[StreamEvent] = []
        if vs.channel_id is None:
            self._members.pop(user, None)
            events += self._table.end_user_streams(user, "left_voice", announce=vs if was_streaming else None)
            if previous is not None and previous.self_video:
                events.append(WebcamStopped(user_id=user, guild_id=vs.guild_id, channel_id=None))
            return events
        self._members[user] = vs
        if vs.self_video and not (previous is not None and previous.self_video):
            events.append(WebcamStarted(user_id=user, guild_id=vs.guild_id, channel_id=vs.channel_id))
        elif previous is not None and previous.self_video and not vs.self_video:
            events.append(WebcamStopped(user_id=user, guild_id=vs.guild_id, channel_id=vs.channel_id))
        if not vs.self_stream:
            events += self._table.end_user_streams(
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
        events += self._table.end_user_streams(user, "channel_changed", keep=key)
        if self._table.lookup(key) is None:
            self._table.store(StreamInfo(key=key, discovered_at=now, source=source))
            events.append(
                GoLiveBootstrapSeeded(
                    stream_key=key,
                    user_id=user,
                    guild_id=vs.guild_id,
                    channel_id=vs.channel_id,
                    source=SOURCE_LABELS[source],
                )
            )
            events += self._table.apply_pending(key, now)
        self._table.touched_owner = user
        return events

    def _apply_own(self, vs: VoiceState) -> list[StreamEvent]:
        """Our own state: tracked, never a watchable stream. Only a true -> false transition (or
        leaving voice) ends our own stream, because our STREAM_CREATE precedes our
        ``self_stream: true`` (Appendix C.2)."""
        previous = self.own_voice_state
        was_streaming = previous is not None and previous.self_stream
        self.own_voice_state = vs if vs.channel_id is not None else None
        events: list[StreamEvent] = []
        if vs.self_stream and vs.channel_id is not None and not was_streaming:
            events.append(
                UserGoLive(user_id=vs.user_id, guild_id=vs.guild_id, channel_id=vs.channel_id, own=True)
            )
        left = vs.channel_id is None
        if left or (was_streaming and not vs.self_stream):
            own = self._table.own
            if own is not None or was_streaming:
                self._table.forget_own()
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

    def apply_scan(self, guild: GuildVoiceStates, now: float, source: Source) -> list[StreamEvent]:
        if not self._in_scope(guild.guild_id):
            return []
        events: list[StreamEvent] = []
        for vs in guild.voice_states:
            events += self.apply(vs, now, source)
        if guild.complete:
            # The list is the whole guild: anyone we still think is in voice there has left.
            present = {vs.user_id for vs in guild.voice_states}
            for user_id, member in list(self._members.items()):
                if member.guild_id == guild.guild_id and user_id not in present:
                    gone = VoiceState(guild_id=guild.guild_id, channel_id=None, user_id=user_id)
                    events += self.apply(gone, now, "voice_state")
        streamers = tuple(
            vs.user_id
            for vs in guild.voice_states
            if vs.self_stream and vs.channel_id is not None and vs.user_id != self._table.user_id
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

    # --- queries -------------------------------------------------------------------------------

    def member(self, user_id: str) -> VoiceState | None:
        return self._members.get(user_id)

    def members(self) -> tuple[VoiceState, ...]:
        return tuple(self._members.values())

    def sharers(self) -> tuple[Sharer, ...]:
        """Users sharing video: Go Live (``self_stream`` or a known stream) and/or webcam."""
        out: dict[str, Sharer] = {}
        for user_id, vs in self._members.items():
            stream = self._table.for_user(user_id)
            if vs.self_stream or vs.self_video or stream is not None:
                out[user_id] = Sharer(
                    user_id=user_id,
                    guild_id=vs.guild_id,
                    channel_id=vs.channel_id,
                    go_live=vs.self_stream or stream is not None,
                    webcam=vs.self_video,
                    stream=stream,
                )
        for stream in self._table.streams():
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
