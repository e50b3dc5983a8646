"""Seeded network impairment for tests and the sandbox: loss, duplication, delay, reordering.

:class:`LossyLink` is pure (no clock, no I/O): for each packet it decides the list of delays
after which copies are delivered — ``()`` means dropped, two entries mean duplicated, a larger
delay than its neighbours means reordered. Same seed, same decisions.

:func:`open_lossy_sender` applies those decisions in trio time (works under ``autojump_clock``),
and :func:`open_memory_datagram_pair` builds two in-memory endpoints with the same surface as
:class:`clank.io.udp.UdpEndpoint` (``send``/``send_nowait``/``receive``/``drain_loop``/
``statistics``), optionally impaired in either direction.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import NoReturn

import attrs
import trio

from clank.errors import UsageError
from clank.io.udp import MAX_DRAIN_BATCH, Address, DatagramHandler, UdpStatistics

# Packets waiting in a delay line; beyond this, new packets are dropped (and counted).
MAX_IN_FLIGHT = 4096
# Datagrams queued at an in-memory endpoint before it drops (like a kernel receive buffer).
MEMORY_INBOX_SIZE = 4096


@attrs.frozen
class LinkStatistics:
    decided: int
    dropped: int
    duplicated: int
    reordered: int


class LossyLink:
    """Per-packet fate decisions from a seeded RNG. Probabilities are in [0, 1]; times in seconds.

    - ``loss``: the packet is dropped.
    - ``dup``: a second copy is delivered (after the same delay plus up to ``jitter``).
    - ``reorder``: the packet is held back an extra ``reorder_delay`` so later ones overtake it.
    - ``delay`` + uniform ``[0, jitter)``: base one-way delay of every copy.
    """

    def __init__(
        self,
        seed: int,
        *,
        loss: float = 0.0,
        dup: float = 0.0,
        reorder: float = 0.0,
        delay: float = 0.0,
        jitter: float = 0.0,
        reorder_delay: float = 0.02,
    ) -> None:
        for name, p in (("loss", loss), ("dup", dup), ("reorder", reorder)):
            if not 0.0 <= p <= 1.0:
                raise UsageError(f"LossyLink {name} must be within [0, 1], got {p}")
        if delay < 0 or jitter < 0 or reorder_delay < 0:
            raise UsageError("LossyLink delays must be non-negative")
        self._rng = random.Random(seed)
        self.loss, self.dup, self.reorder = loss, dup, reorder
        self.delay, self.jitter, self.reorder_delay = delay, jitter, reorder_delay
        self._decided = self._dropped = self._duplicated = self._reordered = 0

    def __repr__(self) -> str:
        return (
            f"LossyLink(loss={self.loss}, dup={self.dup}, reorder={self.reorder}, "
            f"delay={self.delay}, jitter={self.jitter})"
        )

    def _one_delay(self) -> float:
        rng = self._rng
        extra = rng.random() * self.jitter if self.jitter else 0.0
        return self.delay + extra

    def fate(self) -> tuple[float, ...]:
        """Delays (seconds from now) of the copies to deliver; empty means dropped."""
        rng = self._rng
        self._decided += 1
        if self.loss and rng.random() < self.loss:
            self._dropped += 1
            return ()
        first = self._one_delay()
        if self.reorder and rng.random() < self.reorder:
            self._reordered += 1
            first += self.reorder_delay
        if self.dup and rng.random() < self.dup:
            self._duplicated += 1
            return (first, first + self._one_delay() - self.delay)
        return (first,)

    def statistics(self) -> LinkStatistics:
        return LinkStatistics(self._decided, self._dropped, self._duplicated, self._reordered)


class LossySender:
    """Feeds packets through a :class:`LossyLink` into ``deliver``. Use :func:`open_lossy_sender`."""

    def __init__(self, link: LossyLink, deliver: Callable[[bytes], None]) -> None:
        self.link = link
        self._deliver = deliver
        self._scope = trio.CancelScope()
        self._heap: list[tuple[float, int, bytes]] = []
        self._order = itertools.count()
        self._lot = trio.lowlevel.ParkingLot()
        self.overflow_dropped = 0

    def send_nowait(self, data: bytes) -> None:
        """Decide this packet's fate; zero-delay copies are delivered right away, inline."""
        now: float | None = None
        for delay in self.link.fate():
            if delay <= 0:
                self._deliver(data)
                continue
            if len(self._heap) >= MAX_IN_FLIGHT:
                self.overflow_dropped += 1
                continue
            if now is None:
                now = trio.current_time()
            wake = not self._heap or now + delay < self._heap[0][0]
            heapq.heappush(self._heap, (now + delay, next(self._order), data))
            if wake:
                self._lot.unpark_all()

    def close(self) -> None:
        """Stop delivering (packets still in the delay line are lost)."""
        self._scope.cancel()
        self._heap.clear()

    async def _run(self) -> None:
        with self._scope:
            await self._deliver_forever()

    async def _deliver_forever(self) -> NoReturn:
        heap = self._heap
        while True:
            if not heap:
                await self._lot.park()
                continue
            with trio.move_on_at(heap[0][0]):
                await self._lot.park()  # woken early when an earlier packet is queued
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                self._deliver(heapq.heappop(heap)[2])


@asynccontextmanager
async def open_lossy_sender(link: LossyLink, deliver: Callable[[bytes], None]) -> AsyncIterator[LossySender]:
    """A :class:`LossySender` whose delayed copies are delivered by a background task."""
    sender = LossySender(link, deliver)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender._run)
        try:
            yield sender
        finally:
            nursery.cancel_scope.cancel()


def start_lossy_sender(
    nursery: trio.Nursery, link: LossyLink, deliver: Callable[[bytes], None]
) -> LossySender:
    """A :class:`LossySender` whose delay line runs in ``nursery`` until :meth:`LossySender.close`."""
    sender = LossySender(link, deliver)
    nursery.start_soon(sender._run)
    return sender


Route = Callable[[Address, Address, bytes], None]
"""``(source, destination, data)``: how a networked endpoint's datagrams leave it."""


class MemoryDatagramEndpoint:
    """One side of :func:`open_memory_datagram_pair`, or an endpoint of :class:`clank.io.fakenet.FakeNet`
    (``route`` given: any destination); mirrors ``UdpEndpoint``'s surface."""

    def __init__(self, local: Address, remote: Address | None, *, route: Route | None = None) -> None:
        self._local = local
        self._remote = remote
        self._route = route
        self._inbox_send, self._inbox = trio.open_memory_channel[tuple[bytes, Address]](MEMORY_INBOX_SIZE)
        self._outgoing: Callable[[bytes], None] = self._unwired
        self._packets_received = self._bytes_received = self._drain_batches = 0
        self._packets_sent = self._bytes_sent = self._send_dropped = self.inbox_dropped = 0

    @staticmethod
    def _unwired(data: bytes) -> None:
        raise UsageError("memory endpoint used outside open_memory_datagram_pair")

    def accept(self, data: bytes, source: Address) -> None:
        """A datagram arrives from ``source`` (dropped, counted, when the inbox is full)."""
        self._accept(data, source)

    def _accept(self, data: bytes, source: Address) -> None:
        try:
            self._inbox_send.send_nowait((data, source))
        except trio.WouldBlock:
            self.inbox_dropped += 1

    @property
    def local_address(self) -> Address:
        return self._local

    @property
    def remote_address(self) -> Address | None:
        return self._remote

    def statistics(self) -> UdpStatistics:
        return UdpStatistics(
            packets_received=self._packets_received,
            bytes_received=self._bytes_received,
            drain_batches=self._drain_batches,
            receive_errors=0,
            packets_sent=self._packets_sent,
            bytes_sent=self._bytes_sent,
            send_dropped=self._send_dropped + self.inbox_dropped,
            rcvbuf=MEMORY_INBOX_SIZE,
        )

    def send_nowait(self, data: bytes, address: Address | None = None) -> bool:
        if self._route is not None:
            destination = address or self._remote
            if destination is None:
                self._send_dropped += 1
                return False
            self._packets_sent += 1
            self._bytes_sent += len(data)
            self._route(self._local, destination, bytes(data))
            return True
        if address is not None and address != self._remote:
            self._send_dropped += 1  # nobody listens there
            return False
        self._packets_sent += 1
        self._bytes_sent += len(data)
        self._outgoing(bytes(data))
        return True

    async def send(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        self.send_nowait(data)

    async def sendto(self, data: bytes, address: Address | None) -> None:
        await trio.lowlevel.checkpoint()
        self.send_nowait(data, address)

    async def receive(self) -> tuple[bytes, Address]:
        item = await self._inbox.receive()
        self._packets_received += 1
        self._bytes_received += len(item[0])
        return item

    async def drain_loop(self, handler: DatagramHandler) -> NoReturn:
        while True:
            batch = [await self._inbox.receive()]
            while len(batch) < MAX_DRAIN_BATCH:
                try:
                    batch.append(self._inbox.receive_nowait())
                except trio.WouldBlock:
                    break
            self._drain_batches += 1
            for data, source in batch:
                self._packets_received += 1
                self._bytes_received += len(data)
                handler(data, source)


@asynccontextmanager
async def open_memory_datagram_pair(
    a_to_b: LossyLink | None = None, b_to_a: LossyLink | None = None
) -> AsyncIterator[tuple[MemoryDatagramEndpoint, MemoryDatagramEndpoint]]:
    """Two connected in-memory datagram endpoints, each direction optionally impaired."""
    address_a: Address = ("127.0.0.1", 40001)
    address_b: Address = ("127.0.0.1", 40002)
    a = MemoryDatagramEndpoint(address_a, address_b)
    b = MemoryDatagramEndpoint(address_b, address_a)
    async with (
        open_lossy_sender(a_to_b or LossyLink(0), lambda data: b._accept(data, address_a)) as forward,
        open_lossy_sender(b_to_a or LossyLink(0), lambda data: a._accept(data, address_b)) as backward,
    ):
        a._outgoing = forward.send_nowait
        b._outgoing = backward.send_nowait
        yield a, b
