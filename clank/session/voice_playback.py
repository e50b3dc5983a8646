"""Speech and music playback of the voice role, over its :class:`~clank.media.mixer.Mixer`.

**Speech** (the agent's TTS) is a queue of utterances, each a :class:`SpeechStream` the caller
pushes PCM into (s16le, 8-48 kHz, mono or stereo) as it is synthesized; the head of the queue
plays on the mixer track ``speech`` (priority: it ducks music), the next one follows without a
gap. Playback states, as the seed's engine reports them:

    idle ──push──► buffered ──first frame sent──► playing ──drained / stop──► idle

``stop()`` clears the queue and removes the track at once: the next 20 ms frame is silent.

**Music** lives in :mod:`clank.session.voice_music`.

Events (``playback_state``, ``buffer_depth``, ``music_state``, ``music_gain_reached``,
``music_error``) go to every subscriber of :class:`PlaybackEvents` (bounded; a lagging reader
loses new events, counted). The voice role's send loop calls ``before_mix``/``after_mix`` once
per 20 ms; everything here runs on the trio thread.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
from collections.abc import Callable, Iterator
from typing import Any, Final, Literal

import attrs
import trio

from clank.errors import InvalidArgument, UsageError
from clank.io.offload import run_cpu
from clank.logging import get_logger
from clank.media.audio import SAMPLE_RATE, Pcm, PcmSource, iter_file_pcm, probe_audio
from clank.media.mixer import Mixer

__all__ = [
    "MAX_SPEECH_RATE",
    "MIN_SPEECH_RATE",
    "SPEECH_TRACK",
    "PlaybackEvent",
    "PlaybackEvents",
    "SpeechPlayer",
    "SpeechStream",
]

log = get_logger("clank.voice.playback")

SPEECH_TRACK: Final = "speech"
MUSIC_PREFIX: Final = "music:"
MIN_SPEECH_RATE: Final = 8_000
MAX_SPEECH_RATE: Final = 48_000
#: A speech stream holds at most this much unplayed audio; ``wait_writable`` blocks above it.
SPEECH_HIGH_WATER_S: Final = 10.0
SPEECH_MAX_BUFFER_S: Final = 120.0
FILE_POLL_S: Final = 0.05
EVENT_BUFFER: Final = 256
BUFFER_DEPTH_INTERVAL_S: Final = 0.1

SpeechState = Literal["idle", "buffered", "playing"]


@attrs.frozen
class PlaybackEvent:
    """One playback event; ``to_json()`` is what the WebSockets send."""

    type: str
    data: dict[str, Any] = attrs.field(factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, **self.data}


class PlaybackEvents:
    """Fan-out of playback events to bounded subscriber channels (full: the event is dropped)."""

    def __init__(self) -> None:
        self._subscribers: list[trio.MemorySendChannel[PlaybackEvent]] = []
        self.dropped = 0

    def publish(self, type: str, **data: Any) -> None:
        event = PlaybackEvent(type, data)
        for send in list(self._subscribers):
            try:
                send.send_nowait(event)
            except trio.WouldBlock:
                self.dropped += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.remove(send)

    @contextlib.contextmanager
    def subscribe(self, buffer: int = EVENT_BUFFER) -> Iterator[trio.MemoryReceiveChannel[PlaybackEvent]]:
        send, receive = trio.open_memory_channel[PlaybackEvent](buffer)
        self._subscribers.append(send)
        try:
            with receive:
                yield receive
        finally:
            if send in self._subscribers:
                self._subscribers.remove(send)
            send.close()


def check_pcm_format(rate: int, channels: int) -> None:
    """Raise :class:`~clank.errors.InvalidArgument` naming the field (``sampleRate``/``channels``)."""
    if not isinstance(rate, int) or not MIN_SPEECH_RATE <= rate <= MAX_SPEECH_RATE:
        raise InvalidArgument("sampleRate", f"must be an integer {MIN_SPEECH_RATE}..{MAX_SPEECH_RATE}")
    if channels not in (1, 2):
        raise InvalidArgument("channels", "must be 1 (mono) or 2 (stereo)")


class SpeechStream:
    """One utterance: push s16le PCM as it is synthesized, then ``end()``."""

    def __init__(self, player: SpeechPlayer, rate: int, channels: int, number: int) -> None:
        check_pcm_format(rate, channels)
        self._player = player
        self.rate = rate
        self.channels = channels
        self.number = number
        self.source = PcmSource(rate, channels, max_buffer_s=SPEECH_MAX_BUFFER_S)
        self._remainder = b""
        self.bytes_in = 0
        self.cancelled = False

    @property
    def frame_bytes(self) -> int:
        return 2 * self.channels

    def push(self, pcm: bytes | Pcm) -> None:
        """Queue more PCM (bytes may split a sample: the rest waits for the next chunk)."""
        if self.cancelled:
            return
        if isinstance(pcm, bytes | bytearray | memoryview):
            data = self._remainder + bytes(pcm)
            self.bytes_in += len(pcm)
            usable = len(data) - len(data) % self.frame_bytes
            self._remainder = data[usable:]
            if not usable:
                return
            self.source.push(data[:usable])
        else:
            self.source.push(pcm)
        self._player._pushed(self)

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete sample frame still waiting (non-zero at the end: odd-length input)."""
        return len(self._remainder)

    def end(self) -> None:
        if not self.source.ended:
            self.source.end()
        self._player._pushed(self)

    async def wait_writable(self) -> None:
        """Back-pressure for producers faster than real time: wait while over the high-water mark."""
        while not self.cancelled and self.source.buffered_s > SPEECH_HIGH_WATER_S:  # noqa: ASYNC110
            await trio.sleep(FILE_POLL_S)

    @property
    def buffered_s(self) -> float:
        return self.source.buffered_s


class SpeechPlayer:
    """The queue of utterances on the ``speech`` track; see the module docstring."""

    def __init__(self, mixer: Mixer, events: PlaybackEvents, wake: Callable[[], None]) -> None:
        self._mixer = mixer
        self._events = events
        self._wake = wake
        self._queue: collections.deque[SpeechStream] = collections.deque()
        self._current: SpeechStream | None = None
        self._nursery: trio.Nursery | None = None
        self._numbers = itertools.count(1)
        self.state: SpeechState = "idle"
        self._last_depth = -1.0
        self.utterances = 0
        self.stops = 0

    def open_stream(self, rate: int = 24_000, channels: int = 1) -> SpeechStream:
        stream = SpeechStream(self, rate, channels, next(self._numbers))
        self._queue.append(stream)
        self.utterances += 1
        return stream

    def bind(self, nursery: trio.Nursery | None) -> None:
        self._nursery = nursery

    async def play_file(self, source: str) -> dict[str, Any]:
        """Speak a whole file/URL (anything PyAV decodes); ``{ok, reason, utterance, durationS}``."""
        if self._nursery is None:
            raise UsageError("the voice role is not running")
        try:
            duration = await run_cpu(probe_audio, source, abandon_on_cancel=True)
        except UsageError as exc:
            return {"ok": False, "reason": "source_failed", "detail": str(exc)}
        stream = self.open_stream(SAMPLE_RATE, 2)
        self._nursery.start_soon(self._feed, source, stream)
        return {"ok": True, "reason": "playing", "utterance": stream.number, "durationS": duration}

    async def _feed(self, source: str, stream: SpeechStream) -> None:
        chunks = iter_file_pcm(source)
        try:
            while not stream.cancelled:
                try:
                    chunk = await run_cpu(next, chunks, None, abandon_on_cancel=True)
                except UsageError as exc:
                    log.warning("speech source failed", error=str(exc))
                    break
                if chunk is None:
                    break
                stream.push(chunk)
                await stream.wait_writable()
        finally:
            stream.end()
            with trio.move_on_after(1.0, shield=True):
                await run_cpu(chunks.close, abandon_on_cancel=True)

    def cancel(self, stream: SpeechStream) -> None:
        """Drop one utterance (queued or playing) and nothing else."""
        stream.cancelled = True
        if stream in self._queue:
            self._queue.remove(stream)
        elif stream is self._current:
            self._current = None
            self._mixer.stop(SPEECH_TRACK, fade_s=0)
            self._advance()
        if self._current is None and not self._queue:
            self._set_state("idle", "cancelled")

    def stop(self) -> None:
        """Silence speech now: the queue is dropped and the next frame has no speech."""
        for stream in self._queue:
            stream.cancelled = True
        self._queue.clear()
        if self._current is not None:
            self._current.cancelled = True
        self._current = None
        self._mixer.stop(SPEECH_TRACK, fade_s=0)
        self.stops += 1
        self._set_state("idle", "stopped")

    @property
    def buffered_samples(self) -> int:
        streams = list(self._queue) + ([self._current] if self._current is not None else [])
        return round(sum(s.source.buffered_s for s in streams) * SAMPLE_RATE)

    def _pushed(self, stream: SpeechStream) -> None:
        if self.state == "idle" and stream.source.buffered_s > 0:
            self._set_state("buffered", "pcm_enqueued")
        self._advance()
        self._wake()
        now = trio.current_time()
        if now - self._last_depth >= BUFFER_DEPTH_INTERVAL_S:
            self._last_depth = now
            self._publish_depth()

    def _publish_depth(self) -> None:
        self._events.publish(
            "buffer_depth", ttsSamples=self.buffered_samples, musicSamples=self._music_samples()
        )

    def _music_samples(self) -> int:
        return round(
            sum(t.buffered_s for t in self._mixer.statistics().tracks if t.name.startswith(MUSIC_PREFIX))
            * SAMPLE_RATE
        )

    def _set_state(self, state: SpeechState, reason: str) -> None:
        if state != self.state:
            self.state = state
            self._events.publish("playback_state", status=state, reason=reason)
            self._publish_depth()

    def _advance(self) -> None:
        current = self._current
        if current is not None and (current.source.finished or not self._mixer.has(SPEECH_TRACK)):
            self._current = current = None
        if current is None and self._queue:
            head = self._queue[0]
            if head.source.buffered_s > 0 or head.source.ended:
                self._current = self._queue.popleft()
                self._mixer.play(SPEECH_TRACK, self._current.source, priority=True)

    def before_mix(self) -> None:
        self._advance()

    def after_mix(self) -> None:
        current = self._current
        if current is not None and current.source.played_s > 0 and self.state != "playing":
            self._set_state("playing", "first_frame_sent")
        self._advance()
        if self._current is None and not self._queue and self.state != "idle":
            self._set_state("idle", "drained")

    def status(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "bufferedSamples": self.buffered_samples,
            "bufferedMs": round(self.buffered_samples / SAMPLE_RATE * 1000),
            "queued": len(self._queue),
            "utterances": self.utterances,
            "underruns": 0 if self._current is None else self._current.source.underruns,
        }
