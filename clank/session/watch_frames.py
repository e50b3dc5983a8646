"""Decoded watch frames and the two ways they leave a watch: a latest-frame store and a channel.

Lives in ``session`` because the watch roles (``stream_watch``, webcam watch on ``voice``) produce
these values and ``session`` may not import ``watch``; ``clank.watch.frames`` is their public home
for the agent surface and the dashboard (it re-exports everything here).

* :class:`ScreenFrame`: one emitted picture (JPEG + where it came from + change metrics).
* :class:`LatestFrameStore`: per watch, the newest frame and ``wait_frame()`` for the next one;
  closing it (the watch ended) wakes waiters with ``WatchError(reason)``.
* :class:`FrameChannel`: a bounded, latest-wins, many-producers one-consumer channel to the
  screen-watch pipeline. ``send_nowait`` never blocks: when the buffer is full the *oldest* frame
  is dropped and counted (decoded frames are latest-wins, house style §3.9).
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from typing import Final, Literal

import attrs
import trio

from clank.errors import UsageError, WatchError

StreamType = Literal["screen", "camera"]
FRAME_CHANNEL_SIZE: Final = 4
"""Frames buffered for the screen-watch pipeline across all watches (at 2 fps per watch, a slow
consumer sees the newest few instead of a growing backlog)."""


@attrs.frozen
class ScreenFrame:
    """One decoded picture of a watched stream (or webcam), as JPEG, with change metrics.

    ``change_score``: share of the 64x36 luma grid whose cells moved by more than 10 grey levels
    since the previous emitted frame of the same stream (0..1); ``change_ema``: EMA of it with
    alpha 0.35; ``scene_cut``: ``change_score >= 0.40`` (``clank.media.metrics``).
    """

    jpeg: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    width: int
    height: int
    rtp_timestamp: int
    user_id: str
    ssrc: int
    codec: str
    stream_type: StreamType
    change_score: float
    change_ema: float
    scene_cut: bool
    wall_time: float  # trio.current_time() when the JPEG became available
    sequence: int  # 1, 2, ... per watch
    source_width: int = 0
    source_height: int = 0
    keyframe: bool = False
    decode_delay: float = 0.0  # seconds from handing the access unit to the decoder to the JPEG
    change_mean_abs_diff: float = 0.0  # mean absolute luma-grid difference / 255 (0..1)
    concealed: bool = False  # decoded without a keyframe since a join or loss (references missing)


@attrs.frozen
class FrameStoreStatistics:
    published: int
    waiters: int
    closed: bool
    close_reason: str | None


class LatestFrameStore:
    """The newest frame of one watch; ``wait_frame`` parks until a newer one exists."""

    def __init__(self) -> None:
        self._latest: ScreenFrame | None = None
        self._changed = trio.Event()
        self._published = 0
        self._waiters = 0
        self._closed: WatchError | None = None

    @property
    def latest(self) -> ScreenFrame | None:
        return self._latest

    @property
    def closed(self) -> bool:
        return self._closed is not None

    def publish(self, frame: ScreenFrame) -> None:
        if self._closed is not None:
            raise UsageError("publish() on a closed frame store")
        self._latest = frame
        self._published += 1
        self._changed.set()
        self._changed = trio.Event()

    def close(self, reason: str, detail: str = "") -> None:
        """The watch ended: waiters (present and future) get ``WatchError(reason)``; idempotent."""
        if self._closed is None:
            self._closed = WatchError(reason, detail)
            self._changed.set()

    def reopen(self) -> None:
        """The watch restarted (voice session rebuilt): accept frames again; sequences continue."""
        self._closed = None

    async def wait_frame(self, after_sequence: int | None = None) -> ScreenFrame:
        """The latest frame whose ``sequence`` is greater than ``after_sequence`` (any frame if None).

        Raises ``WatchError`` once the watch has ended and no such frame exists.
        """
        self._waiters += 1
        try:
            while True:
                latest = self._latest
                if latest is not None and (after_sequence is None or latest.sequence > after_sequence):
                    return latest
                if self._closed is not None:
                    raise WatchError(self._closed.reason, self._closed.detail)
                await self._changed.wait()
        finally:
            self._waiters -= 1

    def statistics(self) -> FrameStoreStatistics:
        return FrameStoreStatistics(
            published=self._published,
            waiters=self._waiters,
            closed=self._closed is not None,
            close_reason=None if self._closed is None else self._closed.reason,
        )


@attrs.frozen
class FrameChannelStatistics:
    sent: int
    received: int
    dropped: int
    buffered: int
    capacity: int
    closed: bool


class FrameChannel:
    """Bounded latest-wins channel of ``ScreenFrame`` (see the module docstring)."""

    def __init__(self, capacity: int = FRAME_CHANNEL_SIZE) -> None:
        if capacity < 1:
            raise UsageError("FrameChannel capacity must be >= 1")
        self._capacity = capacity
        self._buffer: collections.deque[ScreenFrame] = collections.deque()
        self._readable = trio.Event()
        self._closed = False
        self._sent = 0
        self._received = 0
        self._dropped = 0

    def send_nowait(self, frame: ScreenFrame) -> None:
        """Queue ``frame``; drops (and counts) the oldest one when full. Never blocks."""
        if self._closed:
            raise trio.ClosedResourceError("frame channel is closed")
        if len(self._buffer) >= self._capacity:
            self._buffer.popleft()
            self._dropped += 1
        self._buffer.append(frame)
        self._sent += 1
        self._readable.set()

    def receive_nowait(self) -> ScreenFrame:
        if not self._buffer:
            if self._closed:
                raise trio.EndOfChannel
            raise trio.WouldBlock
        self._received += 1
        return self._buffer.popleft()

    async def receive(self) -> ScreenFrame:
        while True:
            try:
                frame = self.receive_nowait()
            except trio.WouldBlock:
                self._readable = trio.Event()
                await self._readable.wait()
                continue
            await trio.lowlevel.checkpoint()
            return frame

    def close(self) -> None:
        """No more frames will be sent; the consumer drains what is buffered, then EndOfChannel."""
        self._closed = True
        self._readable.set()

    def __aiter__(self) -> AsyncIterator[ScreenFrame]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[ScreenFrame]:
        while True:
            try:
                yield await self.receive()
            except trio.EndOfChannel:
                return

    def statistics(self) -> FrameChannelStatistics:
        return FrameChannelStatistics(
            sent=self._sent,
            received=self._received,
            dropped=self._dropped,
            buffered=len(self._buffer),
            capacity=self._capacity,
            closed=self._closed,
        )
