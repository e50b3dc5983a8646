"""Trio driver for the main Discord gateway: one socket at a time, forever reconnecting.

All decisions (identify vs resume, heartbeats, zombie detection, close codes, backoff) live in
the sans-io :class:`clank.protocol.gateway.GatewayCore`; this module moves bytes and time::

    open_gateway_client()  (nursery, lifetime = the context)
     └─ run loop           Connect -> sleep(delay) -> open websocket -> serve -> next plan
         └─ per connection nursery: reader (this task) + timer (heartbeats, deadlines)

Dispatches fan out to subscribers with ``send_nowait``: the reader never waits for a slow
consumer; a full subscriber loses the dispatch and its drop counter grows.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any

import attrs
import trio

from clank.errors import ClankError, ConnectionClosed, MalformedMessage, TransportError, UsageError
from clank.io.groups import raise_single
from clank.io.websocket import WebSocket, open_websocket
from clank.logging import bound, get_logger, register_secret
from clank.protocol.backoff import BackoffPolicy
from clank.protocol.gateway import GatewayCore
from clank.protocol.gateway_events import (
    Close,
    Connect,
    Dispatch,
    Event,
    Ready,
    ReadyInfo,
    Resumed,
    SendFrame,
    Stop,
)
from clank.protocol.gateway_policy import (
    DEFAULT_CAPABILITIES,
    DEFAULT_MAX_INITIAL_ATTEMPTS,
    DEFAULT_PRESENCE,
    DEFAULT_PROPERTIES,
    Phase,
)

__all__ = [
    "DEFAULT_SUBSCRIBER_BUFFER",
    "Dispatch",
    "GatewayClient",
    "GatewayStatistics",
    "ReadyInfo",
    "open_gateway_client",
]

#: Dispatches a subscriber may have queued before new ones are dropped (and counted).
DEFAULT_SUBSCRIBER_BUFFER = 256

log = get_logger("clank.gateway")


@attrs.frozen
class GatewayStatistics:
    state: Phase
    connects: int  # sockets opened
    reconnects: int  # connection plans after the first
    identifies: int
    resumes: int  # RESUMED received
    heartbeats_sent: int
    heartbeat_acks: int
    zombies: int
    last_latency: float | None  # seconds between our last heartbeat and its ACK
    dispatches: int
    malformed: int  # frames we could not parse (each one cost a reconnect)
    dropped_dispatches: int  # over all subscribers, past and present
    subscriber_drops: tuple[int, ...]  # per live subscriber, in subscription order


@attrs.define(eq=False)
class _Subscriber:
    send: trio.MemorySendChannel[Dispatch]
    events: frozenset[str] | None
    dropped: int = 0


class GatewayClient:
    """Handle on a running gateway connection; made by :func:`open_gateway_client`."""

    def __init__(
        self,
        core: GatewayCore,
        subscriber_buffer: int,
        connect: Callable[[str], AbstractAsyncContextManager[WebSocket]] = open_websocket,
    ) -> None:
        self._core = core
        self._connect = connect
        self._subscriber_buffer = subscriber_buffer
        self._subscribers: list[_Subscriber] = []
        self._ws: WebSocket | None = None  # set while the session is usable (READY/RESUMED)
        self._connected = trio.Event()  # replaced on every disconnect
        self._lost = trio.Event()  # set when the usable socket goes away; replaced on use
        self._wake_timer = trio.Event()  # replaced on every poke
        self._stop_error: ClankError | None = None
        self._closed = False
        self._reconnects = 0
        self._resumed = 0
        self._malformed = 0
        self._dropped = 0

    # ----------------------------------------------------------------- public API

    async def wait_ready(self) -> ReadyInfo:
        """Wait until the session is usable (READY or RESUMED); raise why it never will be."""
        while True:
            self._raise_if_stopped()
            info = self._core.ready_info
            if self._ws is not None and info is not None:
                return info
            await self._connected.wait()

    @contextlib.contextmanager
    def subscribe(
        self, buffer: int | None = None, *, events: Iterable[str] | None = None
    ) -> Iterator[trio.MemoryReceiveChannel[Dispatch]]:
        """Receive dispatches (optionally only those named in ``events``) while in the block.

        The channel holds ``buffer`` dispatches; when it is full new ones are dropped and
        counted (``statistics().subscriber_drops``). It ends when the client stops.
        """
        size = self._subscriber_buffer if buffer is None else buffer
        if size < 1:
            raise UsageError(f"subscriber buffer must be >= 1, got {size}")
        send, receive = trio.open_memory_channel[Dispatch](size)
        subscriber = _Subscriber(send=send, events=frozenset(events) if events is not None else None)
        if self._closed:
            send.close()
        else:
            self._subscribers.append(subscriber)
        try:
            with receive:
                yield receive
        finally:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)
            self._dropped += subscriber.dropped
            send.close()

    async def update_voice_state(
        self,
        guild_id: str | None,
        channel_id: str | None,
        *,
        self_mute: bool = False,
        self_deaf: bool = False,
        self_video: bool = False,
    ) -> None:
        """op4: join or move to ``channel_id``; ``None`` leaves voice."""
        frame = self._core.voice_state_update(
            guild_id, channel_id, self_mute=self_mute, self_deaf=self_deaf, self_video=self_video
        )
        await self._send_control(frame)

    async def stream_create(self, guild_id: str | None, channel_id: str) -> None:
        await self._send_control(self._core.stream_create(guild_id, channel_id))

    async def stream_delete(self, stream_key: str) -> None:
        await self._send_control(self._core.stream_delete(stream_key))

    async def stream_watch(self, stream_key: str) -> None:
        await self._send_control(self._core.stream_watch(stream_key))

    async def stream_ping(self, stream_key: str) -> None:
        await self._send_control(self._core.stream_ping(stream_key))

    async def stream_set_paused(self, stream_key: str, paused: bool) -> None:
        await self._send_control(self._core.stream_set_paused(stream_key, paused))

    def statistics(self) -> GatewayStatistics:
        core = self._core.statistics()
        live = tuple(s.dropped for s in self._subscribers)
        return GatewayStatistics(
            state=core.phase,
            connects=core.connects,
            reconnects=self._reconnects,
            identifies=core.identifies,
            resumes=self._resumed,
            heartbeats_sent=core.heartbeats_sent,
            heartbeat_acks=core.heartbeat_acks,
            zombies=core.zombies,
            last_latency=core.last_latency,
            dispatches=core.dispatches,
            malformed=self._malformed,
            dropped_dispatches=self._dropped + sum(live),
            subscriber_drops=live,
        )

    # ----------------------------------------------------------------- sending

    async def _send_control(self, frame: SendFrame) -> None:
        """Control frames block until a usable session exists, and survive reconnects."""
        while True:
            self._raise_if_stopped()
            ws, lost = self._ws, self._lost
            if ws is None:
                await self._connected.wait()
                continue
            try:
                await ws.send(frame.text)
            except ConnectionClosed:
                # The socket died under us; the run loop reconnects. Try again on the next one.
                await lost.wait()
                continue
            return

    def _raise_if_stopped(self) -> None:
        if self._stop_error is not None:
            raise self._stop_error
        if self._closed:
            raise UsageError("the gateway client is closed")

    # ----------------------------------------------------------------- run loop

    async def _run(self) -> None:
        with bound(role="gateway"):
            plan: Connect | Stop = self._core.start()
            first = True
            while True:
                if isinstance(plan, Stop):
                    self._stop(plan.error)
                    raise plan.error
                if not first:
                    self._reconnects += 1
                    log.info(
                        "gateway reconnecting",
                        reason=plan.reason,
                        resume=plan.resume,
                        delay=round(plan.delay, 3),
                        attempt=plan.attempt,
                    )
                if plan.delay > 0:
                    await trio.sleep(plan.delay)
                first = False
                plan = await self._connect_and_serve(plan)

    async def _connect_and_serve(self, plan: Connect) -> Connect | Stop:
        next_plan: Connect | Stop | None = None
        log.info("gateway connecting", url=plan.url, attempt=plan.attempt, resume=plan.resume)
        try:
            async with self._connect(plan.url) as ws:
                log.info("gateway connected", url=plan.url, resume=plan.resume)
                next_plan = await self._serve(ws)
        except TransportError as exc:
            if next_plan is None:
                log.warning("gateway connect failed", url=plan.url, error=str(exc))
                next_plan = self._core.connect_failed(str(exc), trio.current_time())
        return next_plan

    async def _serve(self, ws: WebSocket) -> Connect | Stop:
        self._core.connection_made(trio.current_time())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._timer, ws)
            code = await self._read(ws)
            nursery.cancel_scope.cancel()
        self._disconnected()
        plan = self._core.connection_closed(code, trio.current_time())
        log.info("gateway disconnected", code=code, next="stop" if isinstance(plan, Stop) else plan.reason)
        return plan

    async def _read(self, ws: WebSocket) -> int | None:
        """Feed every frame to the core until the socket closes; return the close code."""
        while True:
            try:
                message = await ws.receive()
            except ConnectionClosed as exc:
                return exc.code
            now = trio.current_time()
            try:
                if isinstance(message, str):
                    events = self._core.receive_text(message, now)
                else:
                    events = self._core.receive_bytes(message, now)
            except MalformedMessage as exc:
                self._malformed += 1
                log.warning("gateway frame malformed", error=str(exc))
                events = self._core.abort(str(exc), now)
            self._poke_timer()
            await self._handle(ws, events)

    async def _timer(self, ws: WebSocket) -> None:
        """Call ``tick`` at the core's deadlines; the reader pokes us when they may move."""
        while True:
            wake = self._wake_timer
            deadline = self._core.next_deadline()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await wake.wait()
            await self._handle(ws, self._core.tick(trio.current_time()))

    def _poke_timer(self) -> None:
        self._wake_timer.set()
        self._wake_timer = trio.Event()

    async def _handle(self, ws: WebSocket, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, SendFrame):
                try:
                    await ws.send(event.text)
                except ConnectionClosed:
                    return  # the reader sees the close on its next receive
            elif isinstance(event, Dispatch):
                self._fan_out(event)
            elif isinstance(event, Ready):
                log.info(
                    "gateway ready",
                    user_id=event.info.user_id,
                    guilds=len(event.info.guilds),
                )
                self._became_usable(ws)
            elif isinstance(event, Resumed):
                self._resumed += 1
                log.info("gateway resumed", replayed=event.replayed)
                self._became_usable(ws)
            elif isinstance(event, Close):
                log.info("gateway closing", code=event.code, reason=event.reason)
                await ws.aclose(event.code, event.reason)
                return

    def _fan_out(self, dispatch: Dispatch) -> None:
        for subscriber in self._subscribers:
            if subscriber.events is not None and dispatch.name not in subscriber.events:
                continue
            try:
                subscriber.send.send_nowait(dispatch)
            except trio.WouldBlock:
                subscriber.dropped += 1
                if subscriber.dropped == 1 or subscriber.dropped % 1000 == 0:
                    log.warning("gateway subscriber slow; dropping", dropped=subscriber.dropped)
            except trio.BrokenResourceError:
                pass  # its receiver is gone; the subscribe() block removes it on exit

    def _became_usable(self, ws: WebSocket) -> None:
        if self._ws is not ws:
            self._lost = trio.Event()
        self._ws = ws
        self._connected.set()

    def _disconnected(self) -> None:
        self._ws = None
        self._lost.set()
        if self._connected.is_set():
            self._connected = trio.Event()

    def _stop(self, error: ClankError) -> None:
        log.error("gateway stopped", error=str(error))
        self._stop_error = error
        self._ws = None
        self._lost.set()
        self._connected.set()  # wake waiters so they raise
        self._close_subscribers()

    def _close_subscribers(self) -> None:
        self._closed = True
        for subscriber in self._subscribers:
            subscriber.send.close()


@contextlib.asynccontextmanager
async def open_gateway_client(
    *,
    url: str,
    token: str,
    properties: Mapping[str, Any] = DEFAULT_PROPERTIES,
    capabilities: int = DEFAULT_CAPABILITIES,
    presence: Mapping[str, Any] | None = DEFAULT_PRESENCE,
    compress: bool = False,
    rng: random.Random | None = None,
    subscriber_buffer: int = DEFAULT_SUBSCRIBER_BUFFER,
    max_initial_attempts: int = DEFAULT_MAX_INITIAL_ATTEMPTS,
    backoff: BackoffPolicy = BackoffPolicy(),  # noqa: B008 - frozen value, safe as default
    connect: Callable[[str], AbstractAsyncContextManager[WebSocket]] = open_websocket,
) -> AsyncIterator[GatewayClient]:
    """Connect to the main gateway as a user and keep the session alive until the block ends.

    Raises ``AuthenticationFailed`` (close 4004), ``TransportError`` (unreachable after
    ``max_initial_attempts`` connects, before the first READY) or ``ConnectionClosed`` (a
    close code we cannot recover from) out of the block; ``wait_ready()`` raises the same.
    ``connect`` opens the websocket (tests pass :meth:`clank.io.fakenet.FakeNet.open_websocket`).
    """
    register_secret(token)  # defence in depth: the token is never passed to a logger anyway
    core = GatewayCore(
        url=url,
        token=token,
        rng=rng if rng is not None else random.Random(),
        properties=properties,
        capabilities=capabilities,
        presence=presence,
        compress=compress,
        backoff=backoff,
        max_initial_attempts=max_initial_attempts,
    )
    client = GatewayClient(core, subscriber_buffer, connect)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client._run)
            try:
                yield client
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise_single(group)
    finally:
        client._close_subscribers()
