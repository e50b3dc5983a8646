"""Channel control: the guilds' voice channels with who is in them, and join / move / leave.

:class:`ChannelDirectory` learns channels and voice states from main-gateway dispatches (READY's
and GUILD_CREATE's ``channels``/``voice_states``, CHANNEL_*, VOICE_STATE_UPDATE) through
:func:`feed_channels`, a task of the runner's nursery.

:class:`VoiceChannels` (made by :func:`open_voice_channels`) owns the voice session: one
:func:`~clank.session.voice_session.open_voice_session` at a time, run as a task of its own
nursery. ``join`` to another channel (a *move*) leaves the current session — its roles stop,
so watches end with the reason ``left the channel`` — waits until the gateway confirms we left,
then opens a session in the new channel. Afterwards ``after_move`` (set by the runner) may start
watches again for users who are with us in the new channel. ``leave`` ends the session. A session
the server ends (we were moved or kicked elsewhere, 4014, ...) is recorded in
``connection_status()`` with its reason, and the agent can join again.

:class:`CurrentSession` is a stand-in for "the session we are in now": attribute access goes to
the current :class:`~clank.session.voice_session.VoiceSession`; with none, ``voice`` raises
:class:`~clank.errors.UsageError` (so ``in_voice()`` is false) and ``start_role`` refuses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final

import attrs
import trio

from clank.config import Settings
from clank.errors import ClankError, MalformedMessage, UsageError
from clank.io.gateway import Dispatch, GatewayClient
from clank.io.groups import leaves, report_others
from clank.logging import get_logger
from clank.protocol.streams import StreamRegistry
from clank.session.voice_session import VoiceSession, open_voice_session
from clank.wire.gateway_events import VoiceState

__all__ = [
    "CHANNEL_EVENTS",
    "ChannelDirectory",
    "CurrentSession",
    "VoiceChannels",
    "feed_channels",
    "open_voice_channels",
    "rewatch_after_move",
]

log = get_logger("clank.control.channels")

CHANNEL_EVENTS: Final = frozenset(
    {"READY", "GUILD_CREATE", "CHANNEL_CREATE", "CHANNEL_UPDATE", "CHANNEL_DELETE", "VOICE_STATE_UPDATE"}
)
VOICE_CHANNEL_TYPES: Final[Mapping[int, str]] = {2: "voice", 13: "stage"}
#: Seconds a move waits for the gateway to confirm we left the old channel.
LEAVE_CONFIRM_TIMEOUT: Final = 2.0
JOIN_BUDGET: Final = 15.0


@attrs.define
class _Channel:
    id: str
    guild_id: str
    name: str
    kind: str
    position: int


class ChannelDirectory:
    """Voice channels per guild and the voice states in them (best effort from dispatches)."""

    def __init__(self) -> None:
        self._guild_names: dict[str, str] = {}
        self._channels: dict[str, _Channel] = {}
        self._states: dict[tuple[str | None, str], VoiceState] = {}
        self.changed = trio.Event()

    def observe(self, name: str, data: object) -> None:
        if not isinstance(data, dict):
            return
        try:
            if name == "READY":
                for guild in data.get("guilds") or ():
                    self._guild(guild)
            elif name == "GUILD_CREATE":
                self._guild(data)
            elif name in ("CHANNEL_CREATE", "CHANNEL_UPDATE"):
                self._channel(data, data.get("guild_id"))
            elif name == "CHANNEL_DELETE" and isinstance(data.get("id"), str):
                self._channels.pop(data["id"], None)
            elif name == "VOICE_STATE_UPDATE":
                self._state(VoiceState.parse(data))
        except MalformedMessage as exc:
            log.warning("channel directory ignored a malformed dispatch", event=name, error=str(exc))
        self.changed.set()
        self.changed = trio.Event()

    def _guild(self, guild: object) -> None:
        if not isinstance(guild, dict) or not isinstance(guild.get("id"), str):
            return
        gid = guild["id"]
        props = guild.get("properties")
        named: dict[str, Any] = props if isinstance(props, dict) else guild
        if isinstance(named.get("name"), str):
            self._guild_names[gid] = named["name"]
        for channel in guild.get("channels") or ():
            self._channel(channel, gid)
        for state in guild.get("voice_states") or ():
            self._state(VoiceState.parse(state, guild_id=gid))

    def _channel(self, channel: object, guild_id: object) -> None:
        if not isinstance(channel, dict) or not isinstance(channel.get("id"), str):
            return
        kind = VOICE_CHANNEL_TYPES.get(channel.get("type"))  # type: ignore[arg-type]
        if kind is None or not isinstance(guild_id, str):
            return
        name, position = channel.get("name"), channel.get("position")
        self._channels[channel["id"]] = _Channel(
            channel["id"],
            guild_id,
            name if isinstance(name, str) else channel["id"],
            kind,
            position if isinstance(position, int) else 0,
        )

    def _state(self, state: VoiceState) -> None:
        key = (state.guild_id, state.user_id)
        if state.channel_id is None:
            self._states.pop(key, None)
        else:
            self._states[key] = state

    # ------------------------------------------------------------------ queries

    def channel(self, channel_id: str) -> _Channel | None:
        return self._channels.get(channel_id)

    def guild_of(self, channel_id: str) -> str | None:
        channel = self._channels.get(channel_id)
        return None if channel is None else channel.guild_id

    def channel_of(self, user_id: str, guild_id: str | None) -> str | None:
        state = self._states.get((guild_id, user_id))
        return None if state is None else state.channel_id

    def user_ids(self) -> set[str]:
        """Everyone with a voice state we know of (any channel)."""
        return {user_id for _, user_id in self._states}

    def members_of(self, channel_id: str) -> list[VoiceState]:
        return [s for s in self._states.values() if s.channel_id == channel_id]

    def listing(self, name_of: Callable[[str], str], ours: str | None = None) -> list[dict[str, Any]]:
        out = []
        for channel in sorted(self._channels.values(), key=lambda c: (c.guild_id, c.position, c.name)):
            out.append(
                {
                    "guildId": channel.guild_id,
                    "guildName": self._guild_names.get(channel.guild_id),
                    "channelId": channel.id,
                    "name": channel.name,
                    "type": channel.kind,
                    "connected": channel.id == ours,
                    "members": [
                        {
                            "userId": s.user_id,
                            "label": name_of(s.user_id),
                            "selfMute": s.self_mute,
                            "selfDeaf": s.self_deaf,
                            "selfStream": s.self_stream,
                            "selfVideo": s.self_video,
                        }
                        for s in self.members_of(channel.id)
                    ],
                }
            )
        return out


async def feed_channels(dispatches: trio.MemoryReceiveChannel[Dispatch], directory: ChannelDirectory) -> None:
    try:
        async for dispatch in dispatches:
            directory.observe(dispatch.name, dispatch.data)
    except trio.ClosedResourceError:
        return


AfterMove = Callable[[set[str]], Awaitable[None]]


class VoiceChannels:
    """See the module docstring. Implements :class:`clank.control.voice_api.ChannelControl`."""

    def __init__(
        self,
        gateway: GatewayClient,
        nursery: trio.Nursery,
        *,
        settings: Settings,
        registry: StreamRegistry | None,
        directory: ChannelDirectory,
        name_of: Callable[[str], str] = str,
    ) -> None:
        self._gateway = gateway
        self._nursery = nursery
        self._settings = settings
        self._registry = registry
        self.directory = directory
        self._name_of = name_of
        self._current: VoiceSession | None = None
        self._stop: trio.Event | None = None
        self._done: trio.Event | None = None
        self._lock = trio.Lock()
        self.user_id: str | None = None
        self.guild_id: str | None = None
        self.channel_id: str | None = None
        self.self_mute = settings.voice.self_mute
        self.self_deaf = settings.voice.self_deaf
        self.state = "disconnected"
        self.ended_reason: str | None = None
        self.joins = 0
        self.moves = 0
        self.after_move: AfterMove | None = None
        """Called after a move with the users we watched before it (the runner re-watches)."""
        self.watched_users: Callable[[], set[str]] | None = None

    @property
    def current(self) -> VoiceSession | None:
        return self._current

    # ------------------------------------------------------------------ ChannelControl

    def voice_channels(self) -> list[dict[str, Any]]:
        return self.directory.listing(self._name_of, self.channel_id if self._current is not None else None)

    def connection_status(self) -> dict[str, Any]:
        session = self._current
        return {
            "state": self.state,
            "guildId": self.guild_id,
            "channelId": self.channel_id if session is not None else None,
            "selfMute": self.self_mute,
            "selfDeaf": self.self_deaf,
            "sessionActive": session is not None and session.session_id is not None,
            "endedReason": self.ended_reason,
            "joins": self.joins,
            "moves": self.moves,
        }

    async def join(
        self,
        channel_id: str,
        *,
        guild_id: str | None = None,
        self_mute: bool = False,
        self_deaf: bool = False,
    ) -> dict[str, Any]:
        """Join (or move to) ``channel_id``; the seed-style ``{ok, reason, channelId, ...}``."""
        guild = guild_id or self.directory.guild_of(channel_id)
        channel = self.directory.channel(channel_id)
        if channel is None or (guild_id is not None and channel.guild_id != guild_id):
            return {"ok": False, "reason": "unknown_channel", "channelId": channel_id}
        async with self._lock:
            same = self._current is not None and self.channel_id == channel_id
            if same and (self_mute, self_deaf) == (self.self_mute, self.self_deaf):
                return {"ok": True, "reason": "already_joined", "channelId": channel_id, "guildId": guild}
            if same:
                # Only the flags change: op4 again with the same channel keeps the voice session.
                await self._gateway.update_voice_state(
                    guild or channel.guild_id, channel_id, self_mute=self_mute, self_deaf=self_deaf
                )
                self.self_mute, self.self_deaf = self_mute, self_deaf
                return {"ok": True, "reason": "flags_updated", "channelId": channel_id, "guildId": guild}
            moved = self.channel_id is not None
            watched = await self._leave_locked("moved to another channel") if self._current else set()
            try:
                await self._open(guild or channel.guild_id, channel_id, self_mute, self_deaf)
            except ClankError as exc:
                return {"ok": False, "reason": "join_failed", "channelId": channel_id, "detail": str(exc)}
        if moved:
            self.moves += 1
            if self.after_move is not None:
                await self.after_move(watched)
        return {
            "ok": True,
            "reason": "moved" if moved else "joined",
            "channelId": channel_id,
            "guildId": guild,
        }

    async def leave(self) -> dict[str, Any]:
        async with self._lock:
            if self._current is None:
                return {"ok": False, "reason": "not_in_voice"}
            await self._leave_locked("left by request")
            self.channel_id = None
            return {"ok": True, "reason": "left"}

    # ------------------------------------------------------------------ lifetime

    async def start(self, guild_id: str, channel_id: str) -> None:
        """The first join at startup: raises when it fails."""
        async with self._lock:
            await self._open(guild_id, channel_id, self.self_mute, self.self_deaf)

    async def _open(self, guild_id: str, channel_id: str, self_mute: bool, self_deaf: bool) -> None:
        settings = attrs.evolve(
            self._settings,
            voice=attrs.evolve(self._settings.voice, self_mute=self_mute, self_deaf=self_deaf),
        )
        self.state = "connecting"
        self.guild_id, self.channel_id = guild_id, channel_id
        self.self_mute, self.self_deaf = self_mute, self_deaf
        try:
            with trio.fail_after(JOIN_BUDGET):
                await self._nursery.start(self._run, guild_id, channel_id, settings)
        except trio.TooSlowError:
            self.state = "disconnected"
            raise UsageError(f"joining {channel_id} took longer than {JOIN_BUDGET} s") from None
        except ClankError as exc:
            self.state = "disconnected"
            self.ended_reason = str(exc)
            raise
        except BaseExceptionGroup as group:
            self.state = "disconnected"
            errors = leaves(group)
            if not errors or not all(isinstance(e, ClankError) for e in errors):
                raise  # a bug among them: loudly
            first = errors[0]
            report_others(errors, first, log.warning, channel_id=channel_id)
            self.ended_reason = str(first)
            raise UsageError(f"could not join {channel_id}: {first}") from group
        self.joins += 1
        self.ended_reason = None
        self.state = "connected"

    async def _run(
        self, guild_id: str, channel_id: str, settings: Settings, *, task_status: trio.TaskStatus[None]
    ) -> None:
        stop, done = trio.Event(), trio.Event()
        started = False
        try:
            async with open_voice_session(
                self._gateway,
                guild_id=guild_id,
                channel_id=channel_id,
                settings=settings,
                registry=self._registry,
            ) as session:
                self._current, self._stop, self._done = session, stop, done
                self.user_id = session.user_id
                started = True
                task_status.started()
                await stop.wait()
        except ClankError as exc:
            if not started:
                raise
            log.info("voice session ended", reason=str(exc), channel_id=channel_id)
            self.ended_reason = str(exc)
            self.state = "disconnected"
        finally:
            if self._current is not None and self._done is done:
                self._current = None
            done.set()

    async def _leave_locked(self, reason: str) -> set[str]:
        """End the current session; the users we watched (for ``after_move``)."""
        session, stop, done = self._current, self._stop, self._done
        if session is None or stop is None or done is None:
            return set()
        watched = set(self.watched_users()) if self.watched_users is not None else set()
        our_id, guild = session.user_id, self.guild_id
        self.state = "leaving"
        stop.set()
        with trio.move_on_after(LEAVE_CONFIRM_TIMEOUT + 1.0):
            await done.wait()
        # A new session must not mistake the gateway's "you left" for its own leave.
        with trio.move_on_after(LEAVE_CONFIRM_TIMEOUT):
            while self.directory.channel_of(our_id, guild) is not None:
                await self.directory.changed.wait()
        self.state = "disconnected"
        self.ended_reason = reason
        return watched

    async def aclose(self) -> None:
        async with self._lock:
            await self._leave_locked("shutting down")


async def rewatch_after_move(service: Any, channels: VoiceChannels, watched: set[str]) -> None:
    """After a move: watch again those we watched who are with us in the new channel and share."""
    here = {s.user_id for s in channels.directory.members_of(channels.channel_id or "")}
    for user_id in sorted(watched & here):
        result = await service.start_screen_watch(target=user_id)
        log.info("re-watch after move", target_user_id=user_id, ok=result.ok, reason=result.reason)


class CurrentSession:
    """Attribute access forwarded to the current :class:`VoiceSession` (see the module docstring)."""

    def __init__(self, channels: VoiceChannels, user_id: str, settings: Settings) -> None:
        self._channels = channels
        self.user_id = user_id
        self.settings = settings

    def __getattr__(self, name: str) -> Any:
        session = self._channels.current
        if session is not None:
            return getattr(session, name)
        if name in ("guild_id", "channel_id"):
            return getattr(self._channels, name)
        if name == "session_id":
            return None
        if name == "roles":
            return dict
        raise UsageError("not in a voice channel")


@asynccontextmanager
async def open_voice_channels(
    gateway: GatewayClient,
    *,
    settings: Settings,
    registry: StreamRegistry | None,
    directory: ChannelDirectory,
    name_of: Callable[[str], str] = str,
) -> AsyncIterator[VoiceChannels]:
    """Channel control with its own nursery; leaving the block leaves voice (bounded)."""
    async with trio.open_nursery() as nursery:
        channels = VoiceChannels(
            gateway, nursery, settings=settings, registry=registry, directory=directory, name_of=name_of
        )
        try:
            yield channels
        finally:
            with trio.move_on_after(LEAVE_CONFIRM_TIMEOUT + 2.0, shield=True):
                await channels.aclose()
            nursery.cancel_scope.cancel()
