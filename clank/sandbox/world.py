"""The sandbox world: guilds, users, voice states, streams, messages — and the actions that change them.

Every action produces the dispatch sequence a real Discord would (discord-protocol.md §8.1 and
Appendix C) through the :class:`~clank.sandbox.hub.DispatchHub`; the hub only appends to
bounded per-session buffers, so an action never waits for a client. Actions may await the
:class:`~clank.sandbox.media.MediaBackend` (which allocates voice/stream endpoints), and are
serialized by one lock so two actions never interleave half-way.

Who receives what:

* VOICE_STATE_UPDATE, MESSAGE_CREATE: every session of every guild member (the actor included);
* VOICE_SERVER_UPDATE, STREAM_CREATE, STREAM_SERVER_UPDATE: only the asking gateway session
  (or, for an action driven from a test/scenario, every session of that user);
* STREAM_UPDATE, STREAM_DELETE: the stream's owner and viewers.
"""

from __future__ import annotations

import collections
import datetime
from collections.abc import Iterable

import attrs
import trio

from clank.errors import SandboxError
from clank.logging import get_logger, register_secret
from clank.sandbox import payloads
from clank.sandbox.hub import DispatchHub
from clank.sandbox.ids import IdFactory
from clank.sandbox.media import MediaBackend
from clank.sandbox.model import (
    Channel,
    ChannelType,
    Guild,
    Message,
    Stream,
    StreamDeleteReason,
    StreamKey,
    User,
    UserKind,
    VoiceState,
    guild_stream_key,
)
from clank.sandbox.passive_updates import dispatch_voice_state

log = get_logger("clank.sandbox.world")

MESSAGES_PER_CHANNEL = 500
MAX_STREAM_VIEWERS = 50  # Discord's limit for guild voice channels; more => STREAM_DELETE stream_full


@attrs.frozen
class WorldLayout:
    """What a fresh world contains. Names only; ids and tokens come from the seed."""

    guild_name: str = "clank sandbox"
    our_name: str = "selfbot"
    bot_name: str = "clankbot"
    simulated: tuple[str, ...] = ("alice", "bob", "carol")
    text_channels: tuple[str, ...] = ("general",)
    voice_channels: tuple[str, ...] = ("General", "Lounge")


class World:
    """State of the local Discord. Queries are plain methods; actions are ``async``."""

    def __init__(
        self, hub: DispatchHub, media: MediaBackend, ids: IdFactory, layout: WorldLayout | None = None
    ) -> None:
        self.hub = hub
        self.media = media
        self._ids = ids
        self._lock = trio.Lock()
        layout = layout or WorldLayout()
        self._users: dict[str, User] = {}
        self.our_user = self._add_user(layout.our_name, UserKind.OURS)
        self.bot_user = self._add_user(layout.bot_name, UserKind.BOT)
        for name in layout.simulated:
            self._add_user(name, UserKind.SIMULATED)
        guild_id = ids.snowflake()
        self._channels: dict[str, Channel] = {}
        position = 0
        for kind, names in (
            (ChannelType.GUILD_TEXT, layout.text_channels),
            (ChannelType.GUILD_VOICE, layout.voice_channels),
        ):
            for name in names:
                channel = Channel(ids.snowflake(), guild_id, name, kind, position)
                self._channels[channel.id] = channel
                position += 1
        self._guilds: dict[str, Guild] = {
            guild_id: Guild(
                id=guild_id,
                name=layout.guild_name,
                owner_id=self.our_user.id,
                channel_ids=tuple(self._channels),
                member_ids=tuple(self._users),
            )
        }
        self._voice: dict[str, VoiceState] = {}
        self._streams: dict[str, Stream] = {}
        self._messages: dict[str, collections.deque[Message]] = {
            cid: collections.deque(maxlen=MESSAGES_PER_CHANNEL) for cid in self._channels
        }

    def _add_user(self, name: str, kind: UserKind) -> User:
        token = self._ids.token("bot-" if kind is UserKind.BOT else "")
        register_secret(token)
        user = User(id=self._ids.snowflake(), name=name, kind=kind, token=token)
        self._users[user.id] = user
        return user

    # --- queries --------------------------------------------------------------------------
    @property
    def users(self) -> dict[str, User]:
        return dict(self._users)

    @property
    def guilds(self) -> dict[str, Guild]:
        return dict(self._guilds)

    @property
    def channels(self) -> dict[str, Channel]:
        return dict(self._channels)

    @property
    def streams(self) -> dict[str, Stream]:
        return dict(self._streams)

    @property
    def default_guild(self) -> Guild:
        return next(iter(self._guilds.values()))

    def set_large(self, guild_id: str, large: bool = True) -> None:
        """Make the guild "large": sessions announcing bit 14 then get PASSIVE_UPDATE_V2."""
        self._guilds[guild_id] = attrs.evolve(self._guilds[guild_id], large=large)

    def user(self, user_id: str) -> User:
        try:
            return self._users[user_id]
        except KeyError:
            raise SandboxError(f"unknown user {user_id}") from None

    def user_by_name(self, name: str) -> User:
        for user in self._users.values():
            if user.name == name:
                return user
        raise SandboxError(f"unknown user name {name!r}")

    def user_by_token(self, token: object) -> User | None:
        if not isinstance(token, str) or not token:
            return None
        for user in self._users.values():
            if user.token == token:
                return user
        return None

    def channel(self, channel_id: str) -> Channel | None:
        return self._channels.get(channel_id)

    def channels_of(self, guild_id: str) -> list[Channel]:
        guild = self._guilds[guild_id]
        return [self._channels[c] for c in guild.channel_ids]

    def guilds_of(self, user_id: str) -> list[Guild]:
        return [g for g in self._guilds.values() if user_id in g.member_ids]

    def voice_channel_ids(self, guild_id: str) -> list[str]:
        return [c.id for c in self.channels_of(guild_id) if c.type is ChannelType.GUILD_VOICE]

    def text_channel_ids(self, guild_id: str) -> list[str]:
        return [c.id for c in self.channels_of(guild_id) if c.type is ChannelType.GUILD_TEXT]

    def voice_state(self, user_id: str) -> VoiceState | None:
        return self._voice.get(user_id)

    def voice_states(self, guild_id: str | None = None) -> list[VoiceState]:
        return [s for s in self._voice.values() if guild_id is None or s.guild_id == guild_id]

    def stream(self, stream_key: str) -> Stream | None:
        return self._streams.get(stream_key)

    def stream_of(self, owner_id: str) -> Stream | None:
        for stream in self._streams.values():
            if stream.owner_id == owner_id:
                return stream
        return None

    def messages(self, channel_id: str, limit: int = 50) -> list[Message]:
        """Newest first, like ``GET /channels/{id}/messages``."""
        return list(reversed(self._messages.get(channel_id, ())))[:limit]

    def guild_create(self, guild_id: str) -> dict[str, object]:
        guild = self._guilds[guild_id]
        return payloads.guild_create_json(
            guild,
            self.channels_of(guild_id),
            [self._users[u] for u in guild.member_ids],
            self.voice_states(guild_id),
        )

    # --- actions --------------------------------------------------------------------------
    async def join_voice(
        self,
        user_id: str,
        channel_id: str,
        *,
        self_mute: bool = False,
        self_deaf: bool = False,
        self_video: bool = False,
        via_session: str | None = None,
        new_session: bool = False,
    ) -> VoiceState:
        """Join or move to a voice channel (op4 with a channel). Same channel: only flags change,
        unless ``new_session`` (tests: Discord hands out a new voice session id in place)."""
        async with self._lock:
            user = self.user(user_id)
            channel = self._channels.get(channel_id)
            if channel is None or channel.type is not ChannelType.GUILD_VOICE:
                raise SandboxError(f"{channel_id} is not a voice channel")
            guild = self._guilds[channel.guild_id]
            if user_id not in guild.member_ids:
                raise SandboxError(f"user {user_id} is not in guild {guild.id}")
            current = self._voice.get(user_id)
            if current is not None and current.channel_id == channel_id and not new_session:
                state = attrs.evolve(current, self_mute=self_mute, self_deaf=self_deaf, self_video=self_video)
                self._voice[user_id] = state
                self._dispatch_voice_state(state)
                await self.media.voice_state_changed(state)
                return state
            if current is not None:
                await self._end_presence(user_id, current)
            session_id = self._ids.hex_id()
            state = VoiceState(
                guild_id=guild.id,
                channel_id=channel_id,
                user_id=user_id,
                session_id=session_id,
                gateway_session_id=via_session,
                self_mute=self_mute,
                self_deaf=self_deaf,
                self_video=self_video,
            )
            self._voice[user_id] = state
            endpoint, token = await self.media.allocate_voice(guild.id, channel_id, user_id, session_id)
            register_secret(token)
            self._dispatch_voice_state(state)
            self.hub.dispatch(
                "VOICE_SERVER_UPDATE",
                {"token": token, "guild_id": guild.id, "endpoint": endpoint},
                **self._reply_targets(user_id, via_session),
            )
            log.info("voice joined", user_id=user_id, user=user.name, channel_id=channel_id)
            return state

    async def leave_voice(self, user_id: str, *, via_session: str | None = None) -> None:
        """Leave voice (op4 with ``channel_id: null``); ends the user's stream and watches."""
        async with self._lock:
            user = self.user(user_id)
            current = self._voice.get(user_id)
            if current is None:
                # Not in voice: the caller still learns its (null) state.
                guild = self.default_guild
                self.hub.dispatch(
                    "VOICE_STATE_UPDATE",
                    payloads.left_voice_state_json(guild.id, user, ""),
                    **self._reply_targets(user_id, via_session),
                )
                return
            await self._end_presence(user_id, current)
            left = payloads.left_voice_state_json(current.guild_id, user, current.session_id)
            dispatch_voice_state(self.hub, self._guilds[current.guild_id], user_id, left)
            log.info("voice left", user_id=user_id, user=user.name, channel_id=current.channel_id)

    async def set_webcam(self, user_id: str, on: bool) -> VoiceState:
        async with self._lock:
            return await self._update_flags(user_id, self_video=on)

    async def set_speaking(self, user_id: str, speaking: bool) -> None:
        """Only the media servers care (speaking is a voice-gateway matter)."""
        async with self._lock:
            if user_id not in self._voice:
                raise SandboxError(f"user {user_id} is not in voice")
            await self.media.speaking_changed(user_id, speaking)

    async def go_live(self, user_id: str, *, via_session: str | None = None) -> Stream:
        """Start the user's Go Live in its current voice channel (op18)."""
        async with self._lock:
            state = self._voice.get(user_id)
            if state is None:
                raise SandboxError(f"user {user_id} must be in voice to go live")
            return await self._create_stream(state, via_session)

    async def request_stream(
        self, user_id: str, guild_id: object, channel_id: object, *, via_session: str | None = None
    ) -> Stream | None:
        """op18: go live if the caller is in that channel, else STREAM_DELETE ``unauthorized``."""
        async with self._lock:
            state = self._voice.get(user_id)
            if state is None or state.guild_id != guild_id or state.channel_id != channel_id:
                key = guild_stream_key(str(guild_id), str(channel_id), user_id)
                self.hub.dispatch(
                    "STREAM_DELETE",
                    {"stream_key": key, "reason": str(StreamDeleteReason.UNAUTHORIZED), "unavailable": False},
                    **self._reply_targets(user_id, via_session),
                )
                return None
            return await self._create_stream(state, via_session)

    async def stop_stream(
        self, user_id: str, reason: StreamDeleteReason = StreamDeleteReason.STREAM_ENDED
    ) -> None:
        """End the user's stream (the simulated streamer stops; owner op19 uses ``user_requested``)."""
        async with self._lock:
            stream = self.stream_of(user_id)
            if stream is None:
                raise SandboxError(f"user {user_id} is not streaming")
            await self._end_stream(stream, reason)

    async def watch_stream(self, user_id: str, stream_key: object, *, via_session: str | None = None) -> bool:
        """op20: STREAM_CREATE + STREAM_SERVER_UPDATE, or STREAM_DELETE with the refusal reason."""
        async with self._lock:
            targets = self._reply_targets(user_id, via_session)
            key = StreamKey.parse(stream_key)
            stream = self._streams.get(key.serialize()) if key is not None else None
            state = self._voice.get(user_id)
            reason: StreamDeleteReason | None = None
            if key is None:
                reason = StreamDeleteReason.PARSE_FAILED
            elif stream is None:
                reason = StreamDeleteReason.STREAM_ENDED
            elif state is None or state.channel_id != stream.channel_id:
                reason = StreamDeleteReason.UNAUTHORIZED
            elif user_id not in stream.viewer_ids and len(stream.viewer_ids) >= MAX_STREAM_VIEWERS:
                reason = StreamDeleteReason.STREAM_FULL
            if reason is not None or stream is None or state is None:
                self.hub.dispatch(
                    "STREAM_DELETE",
                    {"stream_key": str(stream_key), "reason": str(reason), "unavailable": False},
                    **targets,
                )
                log.info("watch refused", user_id=user_id, reason=str(reason))
                return False
            if user_id not in stream.viewer_ids:
                stream.viewer_ids.append(user_id)
            endpoint, token = await self.media.allocate_stream(
                stream.key, user_id, state.session_id, stream.rtc_server_id
            )
            register_secret(token)
            self.hub.dispatch("STREAM_CREATE", payloads.stream_json(stream), **targets)
            self.hub.dispatch(
                "STREAM_SERVER_UPDATE",
                {"stream_key": stream.key, "guild_id": None, "endpoint": endpoint, "token": token},
                **targets,
            )
            self.hub.dispatch("STREAM_UPDATE", payloads.stream_json(stream), users=[stream.owner_id])
            log.info("watch started", user_id=user_id, stream_key=stream.key)
            return True

    async def delete_stream(
        self, user_id: str, stream_key: object, *, via_session: str | None = None
    ) -> None:
        """op19: the owner ends its stream; a viewer stops watching. Anything else is ignored."""
        async with self._lock:
            stream = self._streams.get(stream_key) if isinstance(stream_key, str) else None
            if stream is None:
                return
            if stream.owner_id == user_id:
                await self._end_stream(stream, StreamDeleteReason.USER_REQUESTED)
            elif user_id in stream.viewer_ids:
                await self._remove_viewer(stream, user_id, StreamDeleteReason.USER_REQUESTED, via_session)

    async def set_stream_paused(self, user_id: str, stream_key: object, paused: bool) -> None:
        """op22 from the owner: STREAM_UPDATE (with ``paused``) to owner and viewers."""
        async with self._lock:
            stream = self._streams.get(stream_key) if isinstance(stream_key, str) else None
            if stream is None or stream.owner_id != user_id:
                return
            stream.paused = paused
            self.hub.dispatch(
                "STREAM_UPDATE", payloads.stream_json(stream), users=[stream.owner_id, *stream.viewer_ids]
            )

    async def post_message(self, channel_id: str, author_id: str, content: str) -> Message:
        async with self._lock:
            channel = self._channels.get(channel_id)
            if channel is None:
                raise SandboxError(f"unknown channel {channel_id}")
            author = self.user(author_id)
            message = Message(
                id=self._ids.snowflake(),
                channel_id=channel_id,
                guild_id=channel.guild_id,
                author_id=author_id,
                content=content,
                timestamp=datetime.datetime.now(datetime.UTC).isoformat(),
            )
            self._messages[channel_id].append(message)
            self.hub.dispatch(
                "MESSAGE_CREATE",
                payloads.message_json(message, author),
                users=self._guilds[channel.guild_id].member_ids,
            )
            return message

    # --- internals (lock held) ------------------------------------------------------------
    def _reply_targets(self, user_id: str, via_session: str | None) -> dict[str, Iterable[str]]:
        """The asking session only, or every session of the user for test/scenario actions."""
        if via_session is not None:
            return {"session_ids": [via_session]}
        return {"users": [user_id]}

    def _dispatch_voice_state(self, state: VoiceState) -> None:
        body = payloads.voice_state_json(state, member=self._users[state.user_id])
        dispatch_voice_state(self.hub, self._guilds[state.guild_id], state.user_id, body)

    async def _update_flags(
        self, user_id: str, *, self_video: bool | None = None, self_stream: bool | None = None
    ) -> VoiceState:
        current = self._voice.get(user_id)
        if current is None:
            raise SandboxError(f"user {user_id} is not in voice")
        state = attrs.evolve(
            current,
            self_video=current.self_video if self_video is None else self_video,
            self_stream=current.self_stream if self_stream is None else self_stream,
        )
        self._voice[user_id] = state
        self._dispatch_voice_state(state)
        await self.media.voice_state_changed(state)
        return state

    async def _end_presence(self, user_id: str, state: VoiceState) -> None:
        """Before leaving or moving: end own stream, stop watching, drop the voice state."""
        own = self.stream_of(user_id)
        if own is not None:
            await self._end_stream(own, StreamDeleteReason.STREAM_ENDED, announce_flag=False)
        for stream in list(self._streams.values()):
            if user_id in stream.viewer_ids:
                await self._remove_viewer(stream, user_id, StreamDeleteReason.STREAM_ENDED, None)
        del self._voice[user_id]
        await self.media.voice_left(user_id)

    async def _create_stream(self, state: VoiceState, via_session: str | None) -> Stream:
        key = guild_stream_key(state.guild_id, state.channel_id, state.user_id)
        stream = self._streams.get(key)
        if stream is None:
            stream = Stream(
                key=key,
                guild_id=state.guild_id,
                channel_id=state.channel_id,
                owner_id=state.user_id,
                rtc_server_id=self._ids.snowflake(),
            )
            self._streams[key] = stream
        endpoint, token = await self.media.allocate_stream(
            key, state.user_id, state.session_id, stream.rtc_server_id
        )
        register_secret(token)
        targets = self._reply_targets(state.user_id, via_session)
        self.hub.dispatch("STREAM_CREATE", payloads.stream_json(stream), **targets)
        self.hub.dispatch(
            "STREAM_SERVER_UPDATE",
            {"stream_key": key, "guild_id": None, "endpoint": endpoint, "token": token},
            **targets,
        )
        if not state.self_stream:
            await self._update_flags(state.user_id, self_stream=True)
        log.info("stream started", user_id=state.user_id, stream_key=key)
        return stream

    async def _end_stream(
        self, stream: Stream, reason: StreamDeleteReason, *, announce_flag: bool = True
    ) -> None:
        del self._streams[stream.key]
        self.hub.dispatch(
            "STREAM_DELETE",
            {"stream_key": stream.key, "reason": str(reason), "unavailable": False},
            users=[stream.owner_id, *stream.viewer_ids],
        )
        if announce_flag and stream.owner_id in self._voice:
            await self._update_flags(stream.owner_id, self_stream=False)
        elif stream.owner_id in self._voice:
            # Leaving/moving: the flag goes with the voice state; keep our copy consistent.
            self._voice[stream.owner_id] = attrs.evolve(self._voice[stream.owner_id], self_stream=False)
        await self.media.stream_ended(stream.key)
        log.info("stream ended", user_id=stream.owner_id, stream_key=stream.key, reason=str(reason))

    async def _remove_viewer(
        self, stream: Stream, user_id: str, reason: StreamDeleteReason, via_session: str | None
    ) -> None:
        stream.viewer_ids.remove(user_id)
        self.hub.dispatch(
            "STREAM_DELETE",
            {"stream_key": stream.key, "reason": str(reason), "unavailable": False},
            **self._reply_targets(user_id, via_session),
        )
        self.hub.dispatch("STREAM_UPDATE", payloads.stream_json(stream), users=[stream.owner_id])
        await self.media.viewer_left(stream.key, user_id)
