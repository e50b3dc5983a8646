"""The trio UDP driver for media sockets: one non-blocking socket, drained inline.

Receiving follows performance-notes.md: wait until the socket is readable, then drain it with
non-blocking ``recv`` calls until it would block, handing every datagram to a *synchronous*
handler inline (decrypt + parse + depacketize run right there). No channel hop per packet:
only whole frames cross task boundaries. ``SO_RCVBUF`` defaults to 2 MiB so keyframe bursts
from several streams are not dropped by the kernel.

Send paths: :meth:`UdpEndpoint.send_nowait` never blocks (a full send buffer or an ICMP error
drops and counts the packet — the media policy); :meth:`UdpEndpoint.send` waits for buffer space.

Library errors are translated here: ``OSError`` from setup or sending becomes ``TransportError``.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import NoReturn, Protocol

import attrs
import trio

from clank.errors import MalformedPacket, TransportError
from clank.wire.ip_discovery import DiscoveryResponse, build_request
from clank.wire.rtp import PacketKind, classify

Address = tuple[str, int]
DatagramHandler = Callable[[bytes, Address], None]

DEFAULT_RCVBUF = 2 * 1024 * 1024
# Largest datagram we accept; a smaller buffer would silently truncate (UDP recv does not report it).
MAX_DATAGRAM = 65536
# Fairness: one drain hands datagrams to the handler for at most DRAIN_BUDGET seconds of the
# trio thread, then goes back to the scheduler so the audio pacer and heartbeats run. A count
# alone is not a budget: a 1080p keyframe burst (DAVE + depacketize inline) is 4-8 ms of work in
# 256 packets (performance notes). The clock is read every DRAIN_CLOCK_EVERY datagrams
# (perf_counter ~0.05 µs; a datagram costs 5-30 µs to handle). MAX_DRAIN_BATCH still caps a
# drain of trivial datagrams.
DRAIN_BUDGET = 0.0005
DRAIN_CLOCK_EVERY = 4
MAX_DRAIN_BATCH = 256
# IP discovery resends its request this often until the caller's deadline (a lost datagram
# should not cost the whole 5 s handshake budget).
DISCOVERY_RETRY_INTERVAL = 1.0


@attrs.frozen
class UdpStatistics:
    packets_received: int
    bytes_received: int
    drain_batches: int
    receive_errors: int
    packets_sent: int
    bytes_sent: int
    send_dropped: int
    rcvbuf: int  # what the kernel granted (Linux reports double the requested value)
    budget_yields: int = 0  # drains cut short by DRAIN_BUDGET (datagrams were still queued)


class DatagramEndpoint(Protocol):
    """What media code needs of an endpoint: :class:`UdpEndpoint` and the in-memory ones
    (:class:`clank.io.lossy.MemoryDatagramEndpoint`, the fake network's) both fit."""

    @property
    def local_address(self) -> Address: ...
    def statistics(self) -> UdpStatistics: ...
    def send_nowait(self, data: bytes, address: Address | None = None) -> bool: ...
    async def send(self, data: bytes) -> None: ...
    async def receive(self) -> tuple[bytes, Address]: ...
    async def drain_loop(self, handler: DatagramHandler) -> NoReturn: ...


class UdpEndpoint:
    """A bound (and, with a remote, connected) non-blocking UDP socket. Use :func:`open_udp_endpoint`."""

    def __init__(self, sock: socket.socket, remote: Address | None) -> None:
        self._sock = sock
        self._remote = remote
        self._packets_received = 0
        self._bytes_received = 0
        self._drain_batches = 0
        self._budget_yields = 0
        self._receive_errors = 0
        self._packets_sent = 0
        self._bytes_sent = 0
        self._send_dropped = 0

    @property
    def local_address(self) -> Address:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    @property
    def remote_address(self) -> Address | None:
        return self._remote

    def statistics(self) -> UdpStatistics:
        return UdpStatistics(
            packets_received=self._packets_received,
            bytes_received=self._bytes_received,
            drain_batches=self._drain_batches,
            receive_errors=self._receive_errors,
            packets_sent=self._packets_sent,
            bytes_sent=self._bytes_sent,
            send_dropped=self._send_dropped,
            rcvbuf=self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            budget_yields=self._budget_yields,
        )

    # -- sending --------------------------------------------------------------------------

    def send_nowait(self, data: bytes, address: Address | None = None) -> bool:
        """Send without blocking; False (and counted) if the kernel buffer is full or ICMP refused."""
        try:
            if address is None:
                self._sock.send(data)
            else:
                self._sock.sendto(data, address)
        except (BlockingIOError, ConnectionRefusedError):
            self._send_dropped += 1
            return False
        except OSError as exc:
            raise TransportError(f"UDP send failed: {exc}") from exc
        self._packets_sent += 1
        self._bytes_sent += len(data)
        return True

    def thread_socket(self) -> socket.socket | None:
        """A duplicate of the connected socket for a sending thread (``io/timed_sender.py``),
        which owns and closes it: the same kernel socket under another descriptor, so closing
        this endpoint can never leave the thread sending on a reused descriptor. None when
        unconnected (the thread has no address to send to)."""
        return None if self._remote is None else self._sock.dup()

    def count_sent(self, nbytes: int, ok: bool) -> None:
        """Count a datagram another thread sent on :meth:`thread_socket` (reported in trio)."""
        if ok:
            self._packets_sent += 1
            self._bytes_sent += nbytes
        else:
            self._send_dropped += 1

    async def send(self, data: bytes) -> None:
        """Send to the connected remote, waiting for buffer space if needed."""
        await self.sendto(data, None)

    async def sendto(self, data: bytes, address: Address | None) -> None:
        """Send to ``address`` (or the connected remote when None), waiting for buffer space."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                if address is None:
                    self._sock.send(data)
                else:
                    self._sock.sendto(data, address)
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._sock)
                continue
            except ConnectionRefusedError:
                self._send_dropped += 1  # an earlier ICMP error surfaced here; UDP carries on
                break
            except OSError as exc:
                raise TransportError(f"UDP send failed: {exc}") from exc
            self._packets_sent += 1
            self._bytes_sent += len(data)
            break
        await trio.lowlevel.cancel_shielded_checkpoint()

    # -- receiving ------------------------------------------------------------------------

    async def receive(self) -> tuple[bytes, Address]:
        """One datagram (for handshakes such as IP discovery; media uses :meth:`drain_loop`)."""
        sock = self._sock
        while True:
            try:
                data, address = sock.recvfrom(MAX_DATAGRAM)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(sock)
                continue
            except ConnectionRefusedError:
                self._receive_errors += 1
                await trio.lowlevel.checkpoint()
                continue
            self._packets_received += 1
            self._bytes_received += len(data)
            await trio.lowlevel.checkpoint()
            return data, (str(address[0]), int(address[1]))

    async def drain_loop(self, handler: DatagramHandler) -> NoReturn:
        """Forever: wait readable, then hand every queued datagram to ``handler`` inline.

        ``handler`` is synchronous and must not raise for bad input (count and drop instead);
        an exception from it propagates and ends the loop, as a bug should. A connected endpoint
        reads with ``recv`` (the kernel only delivers the remote's datagrams) and hands the
        remote address on: 0.6 µs per datagram less than ``recvfrom``'s address tuple.
        """
        sock = self._sock
        recvfrom = sock.recvfrom
        recv = sock.recv
        remote = self._remote
        wait_readable = trio.lowlevel.wait_readable
        clock = time.perf_counter
        while True:
            await wait_readable(sock)
            packets = 0
            nbytes = 0
            deadline = clock() + DRAIN_BUDGET
            try:
                while packets < MAX_DRAIN_BATCH:
                    if packets % DRAIN_CLOCK_EVERY == DRAIN_CLOCK_EVERY - 1 and clock() >= deadline:
                        self._budget_yields += 1
                        break
                    try:
                        if remote is not None:
                            data, address = recv(MAX_DATAGRAM), remote
                        else:
                            data, address = recvfrom(MAX_DATAGRAM)
                    except BlockingIOError:
                        break
                    except ConnectionRefusedError:
                        self._receive_errors += 1  # ICMP port unreachable from an earlier send
                        continue
                    packets += 1
                    nbytes += len(data)
                    handler(data, address)
            finally:
                self._packets_received += packets
                self._bytes_received += nbytes
                self._drain_batches += 1


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@asynccontextmanager
async def open_udp_endpoint(
    remote: Address | None = None,
    *,
    local_host: str = "127.0.0.1",
    local_port: int = 0,
    rcvbuf: int = DEFAULT_RCVBUF,
) -> AsyncIterator[UdpEndpoint]:
    """A non-blocking IPv4 UDP socket bound to ``local_host:local_port``, connected to ``remote``.

    Closing wakes any task blocked on it (``trio.ClosedResourceError``).
    """
    if remote is not None and not _is_ip_literal(remote[0]):
        try:
            infos = await trio.socket.getaddrinfo(
                remote[0], remote[1], family=socket.AF_INET, type=socket.SOCK_DGRAM
            )
        except OSError as exc:
            raise TransportError(f"cannot resolve {remote[0]!r}: {exc}") from exc
        if not infos:
            raise TransportError(f"cannot resolve {remote[0]!r}")
        host = str(infos[0][4][0])
        remote = (host, remote[1])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((local_host, local_port))
        if remote is not None:
            sock.connect(remote)
    except OSError as exc:
        sock.close()
        raise TransportError(f"cannot open UDP socket: {exc}") from exc
    try:
        yield UdpEndpoint(sock, remote)
    finally:
        trio.lowlevel.notify_closing(sock)
        sock.close()


async def discover_ip(endpoint: DatagramEndpoint, ssrc: int) -> Address:
    """Voice IP discovery on a connected endpoint: our public ``(ip, port)`` as the server saw it.

    Resends the request every ``DISCOVERY_RETRY_INTERVAL``; bound it with the caller's
    ``fail_after`` (clankvox uses 5 s). Other datagrams arriving meanwhile are discarded.
    """
    request = build_request(ssrc)
    while True:
        await endpoint.send(request)
        with trio.move_on_after(DISCOVERY_RETRY_INTERVAL):
            while True:
                data, _address = await endpoint.receive()
                if classify(data) is not PacketKind.IP_DISCOVERY_RESPONSE:
                    continue
                try:
                    response = DiscoveryResponse.parse(data)
                except MalformedPacket:
                    continue
                return response.ip, response.port
