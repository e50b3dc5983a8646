"""An in-memory network for tests (like trio's DTLS ``FakeNet``): websockets and datagrams, no sockets.

    async with open_fake_net() as net:
        async with open_media_server(..., MediaServerConfig(net=net)) as server:   # listens on net
            params = MediaConnectionParams(..., transports=net.media_transports())
            async with open_media_connection(params) as conn:                      # dials on net
                net.set_link(conn.udp_local_address, server.udp_address, LossyLink(seed, loss=0.1))
                net.cut_websockets(server.endpoint)                                 # a drop, no close frame

Websockets are real trio-websocket connections over :func:`trio.testing.memory_stream_pair`, so
framing, close codes and the close handshake behave as over TCP. Datagram endpoints are
:class:`~clank.io.lossy.MemoryDatagramEndpoint` values bound to addresses of this network; a
datagram goes to whatever endpoint holds the destination address (else it is lost, as UDP), through
a seeded :class:`~clank.io.lossy.LossyLink` per direction when one is set. Everything runs on trio's
clock, so tests drive hours of heartbeats and backoff with ``autojump_clock`` deterministically.

The method names and signatures mirror the real ones (``open_websocket`` as
:func:`clank.io.websocket.open_websocket`, ``open_udp_endpoint`` as
:func:`clank.io.udp.open_udp_endpoint`, ``serve_websocket`` as ``trio_websocket.serve_websocket``),
so a driver takes either.
"""

from __future__ import annotations

import itertools
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, NoReturn, cast

import attrs
import trio
import trio.testing
import trio_websocket

from clank.errors import TransportError, UsageError
from clank.io.lossy import LossyLink, LossySender, MemoryDatagramEndpoint, start_lossy_sender
from clank.io.media_leg_params import MediaTransports
from clank.io.udp import DEFAULT_RCVBUF, Address
from clank.io.websocket import MAX_MESSAGE_SIZE, MESSAGE_QUEUE_SIZE, WebSocket

__all__ = ["FakeNet", "FakeWebSocketServer", "open_fake_net"]

WebSocketHandler = Callable[[trio_websocket.WebSocketRequest], Awaitable[None]]


@attrs.frozen
class FakeWebSocketServer:
    """What ``serve_websocket`` reports when listening (``.port``, like trio-websocket's server)."""

    host: str
    port: int


@attrs.define
class _Listener:
    handler: WebSocketHandler
    nursery: trio.Nursery
    streams: list[trio.testing.MemoryReceiveStream | trio.testing.MemorySendStream] = attrs.Factory(list)


class FakeNet:
    """See the module docstring. Create with :func:`open_fake_net`."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._ports = itertools.count(30000)
        self._listeners: dict[Address, _Listener] = {}
        self._endpoints: dict[Address, MemoryDatagramEndpoint] = {}
        self._links: dict[tuple[Address, Address], LossySender] = {}
        self._refused: set[Address] = set()
        self.lost_datagrams = 0
        self.refused_websockets = 0

    # ------------------------------------------------------------------ websockets

    async def serve_websocket(
        self,
        handler: WebSocketHandler,
        host: str,
        port: int,
        ssl_context: object = None,
        *,
        task_status: trio.TaskStatus[FakeWebSocketServer] = trio.TASK_STATUS_IGNORED,
    ) -> NoReturn:
        """Listen on ``host:port`` (0: a free port) until cancelled; handlers run in this task."""
        if ssl_context is not None:
            raise UsageError("the fake network carries plain websockets only")
        address = (host, port or next(self._ports))
        if address in self._listeners:
            raise TransportError(f"address {address[0]}:{address[1]} already in use")
        try:
            async with trio.open_nursery() as nursery:
                self._listeners[address] = _Listener(handler, nursery)
                task_status.started(FakeWebSocketServer(*address))
                await trio.sleep_forever()
        finally:
            del self._listeners[address]

    @asynccontextmanager
    async def open_websocket(
        self,
        url: str,
        *,
        max_message_size: int = MAX_MESSAGE_SIZE,
        message_queue_size: int = MESSAGE_QUEUE_SIZE,
    ) -> AsyncIterator[WebSocket]:
        """Dial ``ws://host:port/...`` on this network (``TransportError`` when nobody listens)."""
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "ws" or parsed.hostname is None or parsed.port is None:
            raise TransportError(f"could not connect to {url}: the fake network needs ws://host:port")
        address = (parsed.hostname, parsed.port)
        listener = None if address in self._refused else self._listeners.get(address)
        if listener is None:
            self.refused_websockets += 1
            raise TransportError(f"could not connect to {url}: connection refused")
        client_stream, server_stream = trio.testing.memory_stream_pair()
        listener.streams += [server_stream.send_stream, server_stream.receive_stream]
        listener.nursery.start_soon(self._accept, listener, server_stream)
        resource = parsed.path or "/"
        if parsed.query:
            resource += "?" + parsed.query
        async with trio.open_nursery() as nursery:
            connection = await trio_websocket.wrap_client_stream(
                nursery,
                cast(Any, client_stream),
                parsed.hostname,
                resource,
                max_message_size=max_message_size,
                message_queue_size=message_queue_size,
            )
            ws = WebSocket(connection)
            try:
                yield ws
            finally:
                await ws.aclose()
                nursery.cancel_scope.cancel()

    async def _accept(self, listener: _Listener, stream: trio.abc.Stream) -> None:
        try:
            request = await trio_websocket.wrap_server_stream(listener.nursery, stream)
            await listener.handler(request)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio_websocket.ConnectionClosed):
            pass  # the client went away (or the link was cut) before or during the handshake
        finally:
            await trio.aclose_forcefully(stream)

    def cut_websockets(self, endpoint: str) -> int:
        """Drop every websocket to ``host:port`` without a close frame (a network drop); how many."""
        listener = self._listeners.get(_address(endpoint))
        if listener is None:
            return 0
        streams, listener.streams = listener.streams, []
        for stream in streams:
            stream.close()
        return len(streams) // 2

    def refuse(self, endpoint: str, on: bool = True) -> None:
        """New websockets to ``host:port`` are refused (the host is down) until ``on=False``."""
        address = _address(endpoint)
        if on:
            self._refused.add(address)
        else:
            self._refused.discard(address)

    # ------------------------------------------------------------------ datagrams

    @asynccontextmanager
    async def open_udp_endpoint(
        self,
        remote: Address | None = None,
        *,
        local_host: str = "127.0.0.1",
        local_port: int = 0,
        rcvbuf: int = DEFAULT_RCVBUF,
    ) -> AsyncIterator[MemoryDatagramEndpoint]:
        """A datagram endpoint bound on this network (``rcvbuf`` is accepted and ignored)."""
        if local_host == "0.0.0.0":
            local_host = "127.0.0.1"
        address = (local_host, local_port or next(self._ports))
        if address in self._endpoints:
            raise TransportError(f"cannot open UDP socket: {address[0]}:{address[1]} in use")
        endpoint = MemoryDatagramEndpoint(address, remote, route=self._route)
        self._endpoints[address] = endpoint
        try:
            yield endpoint
        finally:
            del self._endpoints[address]

    def set_link(self, source: Address, destination: Address, link: LossyLink | None) -> None:
        """Impair datagrams from ``source`` to ``destination`` (None: a perfect link again)."""
        old = self._links.pop((source, destination), None)
        if old is not None:
            old.close()
        if link is not None:
            self._links[(source, destination)] = start_lossy_sender(
                self._nursery, link, lambda data: self._arrive(source, destination, data)
            )

    def _route(self, source: Address, destination: Address, data: bytes) -> None:
        sender = self._links.get((source, destination))
        if sender is not None:
            sender.send_nowait(data)
        else:
            self._arrive(source, destination, data)

    def _arrive(self, source: Address, destination: Address, data: bytes) -> None:
        endpoint = self._endpoints.get(destination)
        if endpoint is None:
            self.lost_datagrams += 1
            return
        endpoint.accept(data, source)

    # ------------------------------------------------------------------ for drivers

    def media_transports(self) -> MediaTransports:
        """:class:`~clank.io.media_connection.MediaTransports` dialing on this network."""

        def open_datagram(
            remote: Address, rcvbuf: int
        ) -> AbstractAsyncContextManager[MemoryDatagramEndpoint]:
            return self.open_udp_endpoint(remote, rcvbuf=rcvbuf)

        return MediaTransports(open_websocket=self.open_websocket, open_datagram=open_datagram)


def _address(endpoint: str) -> Address:
    host, _, port = endpoint.rpartition(":")
    return host, int(port)


@asynccontextmanager
async def open_fake_net() -> AsyncIterator[FakeNet]:
    """A fresh network; its delay lines run in this block's nursery."""
    async with trio.open_nursery() as nursery:
        net = FakeNet(nursery)
        try:
            yield net
        finally:
            nursery.cancel_scope.cancel()
