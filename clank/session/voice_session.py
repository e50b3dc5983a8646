"""The voice session: a nursery for the time we are in a voice channel, owning one nursery per role.

    async with open_voice_session(gateway, guild_id=g, channel_id=c, settings=s) as session:
        await session.voice.wait_ready()
        session.voice.api.play_pcm(...)
        watch = await session.start_role("stream_watch:<key>", stream_watch_role, ...)

Lifetime (house-style §2)::

    voice session nursery
     ├─ dispatch reader        VOICE_STATE_UPDATE / VOICE_SERVER_UPDATE for us -> signals
     ├─ supervisor             joins, (re)starts roles, rejoins, ends the session
     ├─ role voice             child nursery (run_role boundary), see session.voice_role
     └─ role stream_watch:...  child nurseries started with start_role

Join: op4 with the channel, then our VOICE_STATE_UPDATE (session_id) and VOICE_SERVER_UPDATE
(token, endpoint) in either order; a null endpoint means "being reallocated": wait for the next.
Reconnect: the media connection resumes by itself; when it cannot (``SessionInvalidated`` and
other non-stop failures) the supervisor rejoins through the main gateway — op4 null, then op4
with the channel — with backoff. A stop (4014 disconnected, 4021, 4022, 1000) or our user leaving
the channel elsewhere ends the session: the block is cancelled and ``ConnectionClosed`` /
``SessionInvalidated`` leaves it. A change of our voice session_id tears down and rebuilds every
role (roles are restarted with the same arguments). Leaving the block sends op4 null and stops
the roles within ``LEAVE_TIMEOUT`` seconds (bounded, shielded).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Final, NoReturn, TypeVar

import attrs
import trio

from clank.config import Settings
from clank.errors import (
    ClankError,
    ConnectionClosed,
    HandshakeTimeout,
    MalformedMessage,
    SessionInvalidated,
    UsageError,
)
from clank.io.gateway import Dispatch, GatewayClient
from clank.io.groups import raise_single
from clank.io.media_leg_params import REAL_TRANSPORTS, MediaConnectionParams, MediaTransports
from clank.logging import bound, get_logger, register_secret
from clank.protocol.backoff import VOICE_REJOIN
from clank.protocol.streams import DISPATCH_PARSERS, StreamRegistry
from clank.session.roles import Role, RoleEvent, RoleEventBus, RoleFn, RoleHandle, RoleStatistics, run_role
from clank.session.voice_role import VoiceRole, voice_role
from clank.session.watches import Watches
from clank.wire.gateway_events import VoiceServerUpdate, VoiceState, dave_group_id_for_voice

if TYPE_CHECKING:
    from clank.session.stream_publish import PublishHandle

__all__ = [
    "JOIN_TIMEOUT",
    "LEAVE_TIMEOUT",
    "STOP_CLOSE_CODES",
    "VoiceCredentials",
    "VoiceSession",
    "VoiceSessionStatistics",
    "open_voice_session",
]

log = get_logger("clank.voice_session")

VOICE_ROLE: Final = "voice"
#: Seconds to get our VOICE_STATE_UPDATE + VOICE_SERVER_UPDATE after op4.
JOIN_TIMEOUT: Final = 10.0
#: Leaving (op4 null + stopping every role) is bounded by this many seconds.
LEAVE_TIMEOUT: Final = 2.0
#: Close codes after which we do not rejoin: the session ends.
STOP_CLOSE_CODES: Final = frozenset({1000, 4014, 4021, 4022})
#: Stop codes that can race a VOICE_SERVER_UPDATE for a moved server (discord.py waits for one).
MOVE_CLOSE_CODES: Final = frozenset({4014, 4022})
#: Seconds to wait after 4014/4022 for new voice credentials before the session ends.
SERVER_MOVE_WAIT: Final = 3.0
#: Rejoin backoff and give-up rule (the one formula of clank.protocol.backoff).
REJOIN: Final = VOICE_REJOIN
SIGNAL_BUFFER: Final = 16
DISPATCH_BUFFER: Final = 64
REGISTRY_BUFFER: Final = 256
_VOICE_EVENTS: Final = frozenset({"VOICE_STATE_UPDATE", "VOICE_SERVER_UPDATE"})


@attrs.frozen
class VoiceCredentials:
    session_id: str = attrs.field(repr=False)
    token: str = attrs.field(repr=False)
    endpoint: str


@attrs.frozen
class _NewCredentials:
    credentials: VoiceCredentials
    session_changed: bool


@attrs.frozen
class _Left:
    reason: str


@attrs.frozen
class _RoleStopped:
    handle: Role = attrs.field(eq=False)


_Signal = _NewCredentials | _Left | _RoleStopped


@attrs.frozen
class VoiceSessionStatistics:
    guild_id: str
    channel_id: str
    joins: int
    rejoins: int
    rebuilds: int
    role_events_dropped: int
    roles: tuple[RoleStatistics, ...]
    server_moves: int = 0
    """4014/4022 followed by new voice credentials within ``SERVER_MOVE_WAIT`` (reconnected)."""


#: How a role is started again when the session rebuilds its roles (its name, function and args bound).
_Relaunch = Callable[[], Awaitable[Role]]

ApiT = TypeVar("ApiT")


class VoiceSession:
    """Handle on a joined voice channel; made by :func:`open_voice_session`."""

    def __init__(
        self,
        gateway: GatewayClient,
        guild_id: str,
        channel_id: str,
        settings: Settings,
        registry: StreamRegistry | None,
        user_id: str,
        transports: MediaTransports = REAL_TRANSPORTS,
    ) -> None:
        self.gateway = gateway
        self.transports = transports
        """Where every leg of this session gets its sockets (tests: a fake network)."""
        self.guild_id = guild_id
        self.channel_id = channel_id
        self.settings = settings
        self.owns_registry = registry is None
        self.registry: StreamRegistry = (
            registry
            if registry is not None
            else StreamRegistry(user_id, guild_ids=[guild_id] if guild_id else None)
        )
        """The Go Live registry (the runner's, fed by it; else the session's own, fed here)."""
        self.watches = Watches(self.registry, gateway)
        """The watches of this session (clank.session.watches)."""
        self.publishing: PublishHandle | None = None
        """Our Go Live on this session, running or the last one that ended (clank.session.stream_publish)."""
        self.user_id = user_id
        self._bus = RoleEventBus()
        self._signal_send, self._signals = trio.open_memory_channel[_Signal](SIGNAL_BUFFER)
        self._credentials: VoiceCredentials | None = None
        self._session_id: str | None = None
        self._server: VoiceServerUpdate | None = None
        self._roles: dict[str, Role] = {}
        self._voice: RoleHandle[VoiceRole] | None = None
        self._specs: dict[str, _Relaunch] = {}
        self._nursery: trio.Nursery | None = None
        self._rejoining = False
        self._leaving = False
        self._joins = 0
        self._rejoins = 0
        self._moves = 0
        self._rebuilds = 0
        self._rng = random.Random()

    # ------------------------------------------------------------------ queries

    @property
    def session_id(self) -> str | None:
        """Our current voice session id (from VOICE_STATE_UPDATE)."""
        return self._session_id

    @property
    def events(self) -> trio.MemoryReceiveChannel[RoleEvent]:
        """Role state changes (bounded; a lagging reader loses new events, counted)."""
        return self._bus.receive

    @property
    def voice(self) -> RoleHandle[VoiceRole]:
        handle = self._voice
        if handle is None:
            raise UsageError("the voice role is not running")
        return handle

    def roles(self) -> dict[str, Role]:
        return dict(self._roles)

    def statistics(self) -> VoiceSessionStatistics:
        return VoiceSessionStatistics(
            guild_id=self.guild_id,
            channel_id=self.channel_id,
            joins=self._joins,
            rejoins=self._rejoins,
            rebuilds=self._rebuilds,
            role_events_dropped=self._bus.dropped,
            roles=tuple(h.statistics() for h in self._roles.values()),
            server_moves=self._moves,
        )

    # ------------------------------------------------------------------ roles

    async def start_role(self, name: str, role_fn: RoleFn[ApiT], *args: object) -> RoleHandle[ApiT]:
        """Start ``role_fn(handle, *args, task_status=...)`` as a child nursery of the session."""
        nursery = self._nursery
        if nursery is None or self._leaving:
            raise UsageError("the voice session is not running")
        current = self._roles.get(name)
        if current is not None and not current.stopped:
            raise UsageError(f"role {name!r} is already running")
        self._specs[name] = partial(self._launch, name, role_fn, args)
        return await self._launch(name, role_fn, args)

    async def stop_role(self, name: str, reason: str = "stopped") -> None:
        """Stop a role for good (it is not rebuilt)."""
        self._specs.pop(name, None)
        handle = self._roles.get(name)
        if handle is not None:
            await handle.stop(reason)

    async def _launch(self, name: str, role_fn: RoleFn[ApiT], args: tuple[object, ...]) -> RoleHandle[ApiT]:
        nursery = self._nursery
        assert nursery is not None
        handle: RoleHandle[ApiT] = RoleHandle(name, self._bus)
        self._roles[name] = handle
        await nursery.start(run_role, handle, role_fn, *args)
        nursery.start_soon(self._watch_role, handle)
        return handle

    async def _watch_role(self, handle: Role) -> None:
        await handle.wait_stopped()
        if not self._leaving:
            await self._signal_send.send(_RoleStopped(handle))

    def _voice_params(self, credentials: VoiceCredentials) -> MediaConnectionParams:
        return MediaConnectionParams(
            role="voice",
            endpoint=credentials.endpoint,
            server_id=self.guild_id,
            channel_id=self.channel_id,
            user_id=self.user_id,
            session_id=credentials.session_id,
            token=credentials.token,
            dave_group_id=dave_group_id_for_voice(self.channel_id),
            settings=self.settings,
            transports=self.transports,
        )

    async def _start_voice(self, credentials: VoiceCredentials) -> None:
        old = self._roles.get(VOICE_ROLE)
        if old is not None:
            await old.stop("voice server changed")
        self._credentials = credentials
        self._voice = await self._launch(VOICE_ROLE, voice_role, (self._voice_params(credentials),))

    # ------------------------------------------------------------------ dispatches

    async def _read_dispatches(self, dispatches: trio.MemoryReceiveChannel[Dispatch]) -> None:
        async for dispatch in dispatches:
            try:
                signal = self._on_dispatch(dispatch)
            except MalformedMessage as exc:
                log.warning("voice dispatch malformed", event=dispatch.name, error=str(exc))
                continue
            if signal is not None:
                await self._signal_send.send(signal)

    def _on_dispatch(self, dispatch: Dispatch) -> _Signal | None:
        if dispatch.name == "VOICE_STATE_UPDATE":
            state = VoiceState.parse(dispatch.data)
            if state.user_id != self.user_id or (state.guild_id or None) != (self.guild_id or None):
                return None
            if state.channel_id != self.channel_id:
                if self._rejoining or self._leaving:
                    return None
                where = "left voice" if state.channel_id is None else "moved to another channel"
                return _Left(where)
            if not state.session_id or state.session_id == self._session_id:
                return None
            changed = self._session_id is not None
            self._session_id = state.session_id
            return self._complete(session_changed=changed)
        server = VoiceServerUpdate.parse(dispatch.data)
        if (server.guild_id or None) != (self.guild_id or None):
            return None
        register_secret(server.token)
        if server.endpoint is None:
            log.info("voice server reallocating; waiting for the next update")
            self._server = None
            return None
        self._server = server
        return self._complete(session_changed=False)

    def _complete(self, *, session_changed: bool) -> _Signal | None:
        server, session_id = self._server, self._session_id
        if server is None or server.endpoint is None or session_id is None:
            return None
        credentials = VoiceCredentials(session_id, server.token, server.endpoint)
        if credentials == self._credentials and not session_changed:
            return None
        return _NewCredentials(credentials, session_changed)

    # ------------------------------------------------------------------ supervisor

    async def _supervise(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        await self._join()
        first = await self._next_credentials()
        await self._start_voice(first)
        task_status.started()
        failures = 0
        while True:
            signal = await self._signals.receive()
            if isinstance(signal, _Left):
                log.info("voice session ended", reason=signal.reason)
                raise SessionInvalidated(f"voice session ended: {signal.reason}")
            if isinstance(signal, _NewCredentials):
                self._rejoining = False
                if signal.session_changed:
                    await self._rebuild_all(signal.credentials)
                else:
                    await self._start_voice(signal.credentials)
                continue
            handle = signal.handle
            if handle is not self._roles.get(handle.name):
                continue  # a role we replaced on purpose
            if handle.name != VOICE_ROLE:
                continue  # other roles end on their own; the session carries on
            error = handle.error
            if error is None:
                continue  # stopped on purpose
            code = error.code if isinstance(error, ConnectionClosed) else None
            if code in MOVE_CLOSE_CODES:
                moved = await self._wait_for_move()
                if moved is not None:
                    log.info("voice server moved; reconnecting", close_code=code)
                    self._moves += 1
                    if moved.session_changed:
                        await self._rebuild_all(moved.credentials)
                    else:
                        await self._start_voice(moved.credentials)
                    continue
            if code in STOP_CLOSE_CODES:
                log.info("voice session ended by the server", close_code=code)
                raise error if isinstance(error, ClankError) else ConnectionClosed(code, "stopped")
            failures = 1 if handle.was_ready else failures + 1
            if REJOIN.gives_up(failures):
                raise (
                    error if isinstance(error, ClankError) else SessionInvalidated("voice role keeps failing")
                )
            delay = REJOIN.backoff.delay(failures, self._rng)
            log.info(
                "voice rejoining through the gateway",
                attempt=failures,
                delay=round(delay, 3),
                error=str(error),
            )
            await trio.sleep(delay)
            await self._rejoin()

    async def _wait_for_move(self) -> _NewCredentials | None:
        """After 4014/4022: new credentials within ``SERVER_MOVE_WAIT`` (the server moved), else None."""
        with trio.move_on_after(SERVER_MOVE_WAIT):
            while True:
                signal = await self._signals.receive()
                if isinstance(signal, _NewCredentials):
                    return signal
                if isinstance(signal, _Left):
                    raise SessionInvalidated(f"voice session ended: {signal.reason}")
        return None

    async def _join(self) -> None:
        self._joins += 1
        voice = self.settings.voice
        await self.gateway.update_voice_state(
            self.guild_id, self.channel_id, self_mute=voice.self_mute, self_deaf=voice.self_deaf
        )

    async def _rejoin(self) -> None:
        """op4 null then op4 with the channel: a fresh voice session and server (discord.py does the same)."""
        self._rejoins += 1
        self._rejoining = True
        self._session_id = None
        self._server = None
        self._credentials = None
        await self.gateway.update_voice_state(self.guild_id, None)
        await self._join()

    async def _next_credentials(self) -> VoiceCredentials:
        with trio.move_on_after(JOIN_TIMEOUT) as scope:
            while True:
                signal = await self._signals.receive()
                if isinstance(signal, _NewCredentials):
                    return signal.credentials
                if isinstance(signal, _Left):
                    raise SessionInvalidated(f"could not join voice: {signal.reason}")
        assert scope.cancelled_caught
        raise HandshakeTimeout(f"no voice server for channel {self.channel_id} within {JOIN_TIMEOUT} s")

    async def _rebuild_all(self, credentials: VoiceCredentials) -> None:
        """Our voice session_id changed: every role is torn down and started again."""
        self._rebuilds += 1
        log.info("voice session changed; rebuilding roles", roles=sorted(self._roles))
        for handle in list(self._roles.values()):
            await handle.stop("voice session changed")
        await self._start_voice(credentials)
        for relaunch in list(self._specs.values()):
            await relaunch()

    async def _leave(self) -> None:
        self._leaving = True
        with trio.move_on_after(LEAVE_TIMEOUT, shield=True):
            try:
                await self.gateway.update_voice_state(self.guild_id, None)
            except ClankError as exc:  # the gateway is gone: nothing to tell it
                log.warning("could not send the voice leave", error=str(exc))
            for handle in list(self._roles.values()):
                handle.stop_nowait("left the channel")
            for handle in list(self._roles.values()):
                await handle.wait_stopped()


async def _feed_registry(dispatches: trio.MemoryReceiveChannel[Dispatch], registry: StreamRegistry) -> None:
    async for dispatch in dispatches:
        registry.handle_dispatch(dispatch.name, dispatch.data, trio.current_time())


@asynccontextmanager
async def open_voice_session(
    gateway: GatewayClient,
    *,
    guild_id: str,
    channel_id: str,
    settings: Settings,
    registry: StreamRegistry | None = None,
    transports: MediaTransports = REAL_TRANSPORTS,
) -> AsyncIterator[VoiceSession]:
    """Join ``channel_id`` and keep the voice role alive until the block ends (then leave).

    ``transports``: the sockets of every media leg (tests pass ``FakeNet.media_transports()``).
    ``registry``: a Go Live registry its owner feeds (the runner's, fed from before READY); without
    one the session makes its own and feeds it.
    """
    ready = await gateway.wait_ready()
    session = VoiceSession(gateway, guild_id, channel_id, settings, registry, ready.user_id, transports)
    try:
        with (
            bound(guild_id=guild_id, channel_id=channel_id),
            gateway.subscribe(DISPATCH_BUFFER, events=_VOICE_EVENTS) as dispatches,
            contextlib.ExitStack() as stack,
        ):
            stream_dispatches = None
            if session.owns_registry:
                stream_dispatches = stack.enter_context(
                    gateway.subscribe(REGISTRY_BUFFER, events=frozenset(DISPATCH_PARSERS))
                )
            async with trio.open_nursery() as nursery:
                session._nursery = nursery
                nursery.start_soon(session._read_dispatches, dispatches)
                await nursery.start(session.watches.run)
                if stream_dispatches is not None:
                    nursery.start_soon(_feed_registry, stream_dispatches, session.registry)
                await nursery.start(session._supervise)
                try:
                    yield session
                finally:
                    await session._leave()
                    nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise_single(group)
    finally:
        session._bus.close()
