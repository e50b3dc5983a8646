"""Watch bookkeeping per Go Live stream key (sans-io), owned by the stream registry.

One :class:`WatchBook` per watched stream: when op20 was sent, the op21 schedule, whether the
stream leg is connected and healthy. Several watches run at once. The op21 schedule is a policy
value, :data:`STREAM_PING`::

    StreamPingPolicy(interval=60.0, only_when_failing=False)   # op21 every 60 s while watching
    StreamPingPolicy(interval=60.0, only_when_failing=True)    # op21 only as a health check while
                                                              # the watch's stream leg is failing

The stream_watch role reports its leg with :meth:`StreamWatches.set_leg_state`; with
``only_when_failing`` the first op21 is due as soon as the leg fails, then every ``interval``.
"""

from __future__ import annotations

from typing import Final

import attrs

from clank.wire.gateway_events import StreamKey

__all__ = ["STREAM_PING", "STREAM_PING_INTERVAL", "StreamPingPolicy", "StreamWatches", "WatchBook"]

STREAM_PING_INTERVAL: Final = 60.0
"""Seconds between op21 stream pings (clankvox)."""


@attrs.frozen
class StreamPingPolicy:
    interval: float = STREAM_PING_INTERVAL
    only_when_failing: bool = False
    """True: op21 is a health check, sent only while the watch's stream leg is failing."""


STREAM_PING: Final = StreamPingPolicy(only_when_failing=True)
"""The op21 schedule every registry uses unless told otherwise: a health check while the stream
leg fails (issue 15; ``StreamPingPolicy()`` would ping every 60 s while watching)."""


@attrs.define
class WatchBook:
    """One watched stream (read it; the registry updates it)."""

    key: StreamKey
    requested_at: float
    last_ping_at: float
    requested_serial: int = 0  # StreamTable.next_serial() when op20 went out
    pings_sent: int = 0
    leg_healthy: bool = True
    connected: bool = False


class StreamWatches:
    """The watched streams of one voice session, by key, in request order."""

    def __init__(self, policy: StreamPingPolicy = STREAM_PING) -> None:
        self.policy = policy
        self._books: dict[str, WatchBook] = {}

    def request(self, key: StreamKey, now: float, serial: int = 0) -> WatchBook:
        """op20 sent for ``key`` (again: the schedule restarts)."""
        self._books.pop(str(key), None)
        book = WatchBook(key, requested_at=now, last_ping_at=now, requested_serial=serial)
        self._books[str(key)] = book
        return book

    def stop(self, key: StreamKey) -> WatchBook | None:
        """The watch of ``key`` ended (op19 sent or STREAM_DELETE); its book, if it was watched."""
        return self._books.pop(str(key), None)

    def book(self, key: StreamKey) -> WatchBook | None:
        return self._books.get(str(key))

    def watched_keys(self) -> tuple[StreamKey, ...]:
        return tuple(b.key for b in self._books.values())

    @property
    def latest(self) -> WatchBook | None:
        """The most recently requested watch."""
        return next(reversed(self._books.values()), None)

    def set_leg_state(self, key: StreamKey, *, connected: bool, healthy: bool, now: float) -> None:
        book = self._books.get(str(key))
        if book is None:
            return
        if self.policy.only_when_failing and book.leg_healthy and not healthy:
            book.last_ping_at = now - self.policy.interval  # a health check right away
        book.connected, book.leg_healthy = connected, healthy

    def _due_at(self, book: WatchBook) -> float | None:
        if self.policy.only_when_failing and book.leg_healthy:
            return None
        return book.last_ping_at + self.policy.interval

    def due(self, now: float) -> list[StreamKey]:
        """Keys whose op21 is due at ``now`` (each counted as sent)."""
        out: list[StreamKey] = []
        for book in self._books.values():
            at = self._due_at(book)
            if at is not None and now >= at:
                book.last_ping_at = now
                book.pings_sent += 1
                out.append(book.key)
        return out

    def next_at(self) -> float | None:
        times = [t for t in (self._due_at(b) for b in self._books.values()) if t is not None]
        return min(times, default=None)
