"""Listeners: decoded audio of one user, several or everyone, with speaking events.

:class:`PacketDecoder` is the decode step both audio legs share (the voice role's and a stream
watch's :mod:`~clank.session.stream_audio`): Opus per SSRC, with packet-loss concealment.
:class:`AudioSubscribers` are the voice role's plain channel feeds (``subscribe_audio``).

A :class:`Listener` is what :meth:`VoiceRole.open_listener` yields: an async iterator of
:class:`~clank.session.voice_role.UserAudio` (20 ms at the listener's rate/channels, with the user
id and ``source``: ``"voice"`` or ``"stream:<user id>"``) and :class:`SpeakingEvent`
(``speaking_started`` before a user's first audio, ``speaking_stopped`` once no audio came from
them for ``silence_s``; seed default 700 ms).

Back-pressure: each listener has a bounded queue of ``buffer`` audio items. When it is full the
*oldest* audio item is dropped (counted in ``dropped``): a slow consumer loses old audio and
keeps up with the present, and never stalls the voice role, which offers items synchronously
from its UDP receive path. Speaking events are never dropped for audio (they have their own
cap, :data:`MAX_PENDING_EVENTS`, beyond which the oldest events go, counted too).
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Iterator
from typing import Any, Final, Literal

import attrs
import trio

from clank.errors import InvalidArgument, MalformedPacket, UsageError
from clank.media.audio import CHANNELS, SAMPLE_RATE, OpusDecoder, Pcm, PcmConverter
from clank.protocol.audio_receive import AudioPacket

__all__ = [
    "DEFAULT_LISTEN_BUFFER",
    "DEFAULT_SILENCE_S",
    "AudioSubscribers",
    "ListenItem",
    "Listener",
    "ListenerSet",
    "PacketDecoder",
    "SpeakingEvent",
    "UserAudio",
]

DEFAULT_SILENCE_S: Final = 0.7
DEFAULT_LISTEN_BUFFER: Final = 50  # 1 s of 20 ms frames
MAX_LISTEN_BUFFER: Final = 3000  # 60 s
MAX_PENDING_EVENTS: Final = 256
#: Listeners' speaking_stopped deadlines are checked this often (silence accuracy).
LISTEN_TIMER_S: Final = 0.02


@attrs.frozen
class UserAudio:
    """20 ms of a remote user's audio at the subscriber's rate/channels."""

    user_id: str
    ssrc: int
    pcm: Pcm = attrs.field(eq=False, repr=lambda a: f"<{a.shape}>")
    rate: int
    channels: int
    concealed: bool = False
    """True for packet-loss concealment output (the packet was lost)."""
    source: str = "voice"
    """``voice`` (the voice channel) or ``stream:<user id>`` (Go Live stream audio)."""


@attrs.frozen
class SpeakingEvent:
    type: Literal["speaking_started", "speaking_stopped"]
    user_id: str
    source: str = "voice"
    reason: str | None = None


ListenItem = UserAudio | SpeakingEvent


class PacketDecoder:
    """One leg's Opus decoders, one per SSRC: an :class:`AudioPacket` -> its 48 kHz stereo frames.

    ``frames`` returns ``(pcm, concealed)`` pairs: concealment for the ``lost_before`` packets,
    then the packet itself (left out, counted in ``errors``, when it does not decode). A
    ``discontinuity`` (the sender restarted) resets that SSRC's decoder first.
    """

    def __init__(self) -> None:
        self._decoders: dict[int, OpusDecoder] = {}
        self.decoded = 0  # packets handed to a decoder
        self.concealed = 0  # frames made up for lost packets
        self.errors = 0  # packets that did not decode

    def frames(self, packet: AudioPacket) -> list[tuple[Pcm, bool]]:
        decoder = self._decoders.get(packet.ssrc)
        if decoder is None:
            decoder = self._decoders[packet.ssrc] = OpusDecoder()
        if packet.discontinuity:
            decoder.reset()
        frames: list[tuple[Pcm, bool]] = [(pcm, True) for pcm in decoder.conceal(packet.lost_before)]
        try:
            frames.append((decoder.decode(packet.opus), False))
        except MalformedPacket:
            self.errors += 1
        self.decoded += 1
        self.concealed += packet.lost_before
        return frames

    def forget(self, ssrc: int) -> None:
        """Drop that SSRC's decoder (its user left)."""
        self._decoders.pop(ssrc, None)


def check_listen_format(rate: int, channels: int, silence_s: float, buffer: int) -> None:
    if not isinstance(rate, int) or not 8_000 <= rate <= 48_000:
        raise InvalidArgument("sampleRate", "must be an integer 8000..48000")
    if channels not in (1, 2):
        raise InvalidArgument("channels", "must be 1 (mono) or 2 (stereo)")
    if not 0.02 <= silence_s <= 10.0:
        raise InvalidArgument("silenceMs", "must be 20..10000")
    if not 1 <= buffer <= MAX_LISTEN_BUFFER:
        raise InvalidArgument("buffer", f"must be 1..{MAX_LISTEN_BUFFER} frames")


class Listener:
    """See the module docstring. Made by the voice role; iterate it with ``async for``."""

    def __init__(
        self,
        users: frozenset[str] | None,
        *,
        rate: int = 48_000,
        channels: int = 2,
        silence_s: float = DEFAULT_SILENCE_S,
        buffer: int = DEFAULT_LISTEN_BUFFER,
        sources: frozenset[str] | None = None,
    ) -> None:
        check_listen_format(rate, channels, silence_s, buffer)
        self.users = users
        self.sources = sources
        """Stream sources (``stream:<user>``) wanted besides voice; None: voice only."""
        self.rate = rate
        self.channels = channels
        self.silence_s = silence_s
        self.buffer = buffer
        self._audio: collections.deque[UserAudio] = collections.deque()
        self._items: collections.deque[ListenItem] = collections.deque()
        self._audio_queued = 0
        self._wake = trio.Event()
        self._last_audio: dict[tuple[str, str], float] = {}
        self.closed = False
        self.delivered = 0
        self.dropped = 0
        self.events_dropped = 0

    def wants(self, user_id: str, source: str = "voice") -> bool:
        if self.closed:
            return False
        if source != "voice":
            return self.sources is not None and source in self.sources
        return self.users is None or user_id in self.users

    @property
    def speaking(self) -> frozenset[tuple[str, str]]:
        """``(user id, source)`` pairs currently speaking for this listener."""
        return frozenset(self._last_audio)

    # ------------------------------------------------------------------ producer side (sync)

    def offer_audio(self, item: UserAudio, now: float) -> None:
        key = (item.user_id, item.source)
        if key not in self._last_audio:
            self._event(SpeakingEvent("speaking_started", item.user_id, item.source))
        self._last_audio[key] = now
        if self._audio_queued >= self.buffer:
            self._drop_oldest_audio()
        self._items.append(item)
        self._audio_queued += 1
        self._wake.set()

    def offer_stopped(self, user_id: str, source: str, reason: str) -> None:
        if self._last_audio.pop((user_id, source), None) is not None:
            self._event(SpeakingEvent("speaking_stopped", user_id, source, reason))

    def tick(self, now: float) -> None:
        """Users silent for ``silence_s``: ``speaking_stopped``."""
        for (user_id, source), last in list(self._last_audio.items()):
            if now - last >= self.silence_s:
                del self._last_audio[(user_id, source)]
                self._event(SpeakingEvent("speaking_stopped", user_id, source, "silence"))

    def _event(self, event: SpeakingEvent) -> None:
        events = len(self._items) - self._audio_queued
        if events >= MAX_PENDING_EVENTS:
            for index, queued in enumerate(self._items):
                if isinstance(queued, SpeakingEvent):
                    del self._items[index]
                    self.events_dropped += 1
                    break
        self._items.append(event)
        self._wake.set()

    def _drop_oldest_audio(self) -> None:
        for index, queued in enumerate(self._items):
            if isinstance(queued, UserAudio):
                del self._items[index]
                self._audio_queued -= 1
                self.dropped += 1
                return

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    # ------------------------------------------------------------------ consumer side

    def receive_nowait(self) -> ListenItem:
        if not self._items:
            raise trio.WouldBlock
        item = self._items.popleft()
        if isinstance(item, UserAudio):
            self._audio_queued -= 1
        self.delivered += 1
        return item

    async def receive(self) -> ListenItem:
        """The next item; raises ``trio.EndOfChannel`` once the listener is closed and drained."""
        while True:
            try:
                return self.receive_nowait()
            except trio.WouldBlock:
                if self.closed:
                    raise trio.EndOfChannel from None
                self._wake = trio.Event()
                await self._wake.wait()

    def __aiter__(self) -> Listener:
        return self

    async def __anext__(self) -> ListenItem:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    @property
    def queued(self) -> int:
        return len(self._items)

    def statistics(self) -> dict[str, int | float | None]:
        return {
            "delivered": self.delivered,
            "dropped": self.dropped,
            "eventsDropped": self.events_dropped,
            "queued": self.queued,
            "rate": self.rate,
            "channels": self.channels,
            "silenceMs": round(self.silence_s * 1000),
        }


class ListenerSet:
    """The voice role's listeners: who wants what, PCM conversion per format, the silence timer.

    Decoded 48 kHz stereo frames come from the voice leg (the role's receive path) or another leg
    (Go Live stream audio, :mod:`clank.session.stream_audio`); each is converted once per
    (rate, channels) asked for and offered to every listener that wants it. ``stream_audio``
    lists the running watches' audio sides for status.
    """

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._converters: dict[tuple[str, str, tuple[int, int]], PcmConverter] = {}
        self._changed = trio.Event()
        self.stream_audio: dict[str, Any] = {}
        self.dropped = 0

    @contextlib.contextmanager
    def attach(self, listener: Listener) -> Iterator[Listener]:
        """Offer audio to ``listener`` while in the block; closed (its iterator ends) on the way out."""
        self._listeners.append(listener)
        self._changed.set()
        try:
            yield listener
        finally:
            listener.close()
            self._listeners.remove(listener)
            self.dropped += listener.dropped

    def all(self) -> list[Listener]:
        return list(self._listeners)

    def of(self, user_id: str, source: str) -> list[Listener]:
        """Listeners that want ``user_id`` on ``source`` (``voice`` or ``stream:<user id>``)."""
        return [x for x in self._listeners if x.wants(user_id, source)]

    def deliver(
        self, user_id: str, ssrc: int, frames: list[tuple[Pcm, bool]], listeners: list[Listener], source: str
    ) -> None:
        """``(pcm, concealed)`` 48 kHz stereo frames of ``user_id`` to ``listeners``."""
        now = trio.current_time()
        converted: dict[tuple[int, int], list[Pcm]] = {}
        for listener in listeners:
            fmt = (listener.rate, listener.channels)
            pcms = converted.get(fmt)
            if pcms is None:
                converter = self._converters.get((user_id, source, fmt))
                if converter is None:
                    converter = PcmConverter(SAMPLE_RATE, CHANNELS, fmt[0], fmt[1])
                    self._converters[(user_id, source, fmt)] = converter
                pcms = converted[fmt] = [converter.convert(pcm) for pcm, _ in frames]
            for pcm, (_, concealed) in zip(pcms, frames, strict=True):
                listener.offer_audio(UserAudio(user_id, ssrc, pcm, fmt[0], fmt[1], concealed, source), now)

    def stopped(self, user_id: str, source: str, reason: str) -> None:
        """The user left that source (disconnected): ``speaking_stopped`` now, not after the silence."""
        if reason != "disconnected":
            return
        for listener in self._listeners:
            listener.offer_stopped(user_id, source, reason)

    def register_stream_audio(self, audio: Any) -> Callable[[], None]:
        """Show a watch's stream audio in status while it runs; returns the function that removes it."""
        target: str = audio.target_user_id
        self.stream_audio[target] = audio

        def remove() -> None:
            if self.stream_audio.get(target) is audio:
                del self.stream_audio[target]

        return remove

    def end(self, reason: str) -> None:
        """Close every listener (the role is going away); their iterators end."""
        for listener in self._listeners:
            for user_id, source in listener.speaking:
                listener.offer_stopped(user_id, source, reason)
            listener.close()

    async def run_timer(self) -> None:
        """``speaking_stopped`` after each listener's silence (checked every 20 ms while any listens)."""
        while True:
            if not self._listeners:
                self._changed = trio.Event()
                await self._changed.wait()
            await trio.sleep(LISTEN_TIMER_S)
            now = trio.current_time()
            for listener in self._listeners:
                listener.tick(now)


@attrs.define(eq=False)
class _Subscriber:
    user_id: str | None
    rate: int
    channels: int
    send: trio.MemorySendChannel[UserAudio]
    converters: dict[str, PcmConverter] = attrs.field(factory=dict)
    dropped: int = 0


class AudioSubscribers:
    """The voice role's plain audio feeds (:meth:`VoiceRole.subscribe_audio`), beside listeners.

    Each subscriber has a bounded trio channel of :class:`UserAudio` at its own rate/channels
    (one converter per user); a full (or closed) channel drops the frame, counted.
    """

    def __init__(self) -> None:
        self._subscribers: list[_Subscriber] = []
        self._ended_drops = 0

    @property
    def dropped(self) -> int:
        return self._ended_drops + sum(s.dropped for s in self._subscribers)

    @contextlib.contextmanager
    def subscribe(
        self, user_id: str | None, rate: int, channels: int, buffer: int
    ) -> Iterator[trio.MemoryReceiveChannel[UserAudio]]:
        if buffer < 1:
            raise UsageError("audio subscriber buffer must be >= 1")
        send, receive = trio.open_memory_channel[UserAudio](buffer)
        subscriber = _Subscriber(user_id, rate, channels, send)
        self._subscribers.append(subscriber)
        try:
            with receive:
                yield receive
        finally:
            self._subscribers.remove(subscriber)
            self._ended_drops += subscriber.dropped
            send.close()

    def of(self, user_id: str) -> list[_Subscriber]:
        """The subscribers that want ``user_id``."""
        return [s for s in self._subscribers if s.user_id is None or s.user_id == user_id]

    def deliver(
        self, subscribers: list[_Subscriber], user_id: str, ssrc: int, frames: list[tuple[Pcm, bool]]
    ) -> None:
        """``(pcm, concealed)`` 48 kHz stereo frames of ``user_id`` to ``subscribers``."""
        for subscriber in subscribers:
            converter = subscriber.converters.get(user_id)
            if converter is None:
                converter = PcmConverter(SAMPLE_RATE, CHANNELS, subscriber.rate, subscriber.channels)
                subscriber.converters[user_id] = converter
            for pcm, concealed in frames:
                item = UserAudio(
                    user_id, ssrc, converter.convert(pcm), subscriber.rate, subscriber.channels, concealed
                )
                try:
                    subscriber.send.send_nowait(item)
                except trio.WouldBlock:
                    subscriber.dropped += 1
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    subscriber.dropped += 1
