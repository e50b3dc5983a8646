"""The voice role's Opus encode on a long-lived worker thread (``io/worker_thread.py``).

The send loop mixes each 20 ms frame ``SEND_LEAD_S`` (20 ms) before its slot and ``submit``s it
here; the thread encodes it (libopus through PyAV, ~0.5-0.8 ms a frame, the largest part of the
loop's step) and a delivery task hands each packet back in trio, where it is DAVE-encrypted,
sealed and given to the timed sender for its slot. Frames that are already Opus (the silence
frames after speech) take the same queue, so packets leave in the order they were submitted.

The thread runs at the trio thread's priority (not niced like the video workers): a frame is
due 20 ms after it is submitted. On an overloaded machine a hand-off can take longer than the
inline encode it saves; :class:`EncodePath` then encodes inline for a while.
Drop policy: at most ``AUDIO_ENCODE_QUEUE`` frames (100 ms)
wait; a frame submitted beyond that is dropped and counted (``dropped``), as its slot would have
passed before the thread reached it.
"""

from __future__ import annotations

import collections
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final

import attrs

from clank.io.worker_thread import WorkerThread, nearest_percentile
from clank.media.audio import OpusEncoder, Pcm

__all__ = [
    "AUDIO_ENCODE_QUEUE",
    "HANDOFF_BUDGET_S",
    "INLINE_HOLD_S",
    "AudioEncodeStatistics",
    "AudioEncodeWorker",
    "EncodePath",
    "EncodedAudio",
    "open_audio_encode_worker",
]

AUDIO_ENCODE_QUEUE: Final = 5
LATENCY_WINDOW: Final = 500
#: A hand-off (submit -> packet back in trio) slower than this means the machine is overloaded:
#: the three scheduling events of a hand-off now cost more than one inline encode (half the lead).
HANDOFF_BUDGET_S: Final = 0.010
#: How long the encode then stays inline on the trio thread before the thread is tried again.
INLINE_HOLD_S: Final = 10.0


class EncodePath:
    """Chooses where the next frame is encoded: the thread, or inline after a slow hand-off.

    Sans-io (times passed in). On a loaded machine (load 6 on 2 cores) the thread's hand-off
    (trio submits, the thread is scheduled, trio is woken) once took 85 ms at p99 where the
    inline encode had 1-5 ms; so a hand-off over ``HANDOFF_BUDGET_S`` switches to inline for
    ``INLINE_HOLD_S``. The switch waits until nothing is in flight, so packets keep their order
    and the encoder is never used by both sides at once.
    """

    def __init__(self) -> None:
        self._in_flight: collections.deque[float] = collections.deque()  # submit times, in order
        self._inline_until = -float("inf")
        self.fallbacks = 0

    def use_thread(self, now: float) -> bool:
        return bool(self._in_flight) or now >= self._inline_until

    def submitted(self, now: float) -> None:
        self._in_flight.append(now)

    def not_taken(self) -> None:
        """The last submit was refused (queue full): it is not in flight."""
        self._in_flight.pop()

    def delivered(self, now: float) -> None:
        took = now - self._in_flight.popleft()
        if took > HANDOFF_BUDGET_S and now >= self._inline_until:
            self._inline_until = now + INLINE_HOLD_S
            self.fallbacks += 1


@attrs.frozen
class EncodedAudio:
    slot: float
    """The trio time the packet is due on the wire."""
    opus: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    voice: bool
    """True for encoded speech/music (DAVE-encrypted before sending); False for frames that
    came already encoded (silence)."""


@attrs.frozen
class AudioEncodeStatistics:
    submitted: int
    dropped: int
    encoded: int
    held_back: int  # frames libopus returned no packet for
    encode_p50_ms: float | None
    encode_p99_ms: float | None
    worker_cpu_seconds: float


@attrs.frozen
class _Job:
    slot: float
    frame: Pcm | bytes = attrs.field(repr=False)  # bytes: already Opus (silence)


class AudioEncodeWorker(WorkerThread[_Job, EncodedAudio]):
    """One voice role's Opus encoder on its own thread. Create with :func:`open_audio_encode_worker`."""

    def __init__(self, encoder: OpusEncoder, queue_size: int) -> None:
        super().__init__()
        self._encoder = encoder
        self._queue_size = max(1, queue_size)
        self._out: collections.deque[EncodedAudio] = collections.deque()
        self._submitted = 0
        self._dropped = 0
        self._encoded = 0
        self._held_back = 0
        self._durations: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)

    def submit(self, slot: float, frame: Pcm | bytes) -> bool:
        """Queue one 20 ms frame for ``slot``: PCM to encode, or bytes already Opus (silence),
        which wait behind the frames before them. False (counted) when the queue is full."""
        job = _Job(slot, frame)
        self._submitted += 1
        if self._closing or self._queue.qsize() >= self._queue_size:
            self._dropped += 1
            return False
        if self._inline:
            self._process(job)
        else:
            self._queue.put(job)
        return True

    def statistics(self) -> AudioEncodeStatistics:
        with self._lock:
            durations = sorted(self._durations)
            encoded, held_back = self._encoded, self._held_back
        return AudioEncodeStatistics(
            submitted=self._submitted,
            dropped=self._dropped,
            encoded=encoded,
            held_back=held_back,
            encode_p50_ms=nearest_percentile(durations, 0.5) * 1000 if durations else None,
            encode_p99_ms=nearest_percentile(durations, 0.99) * 1000 if durations else None,
            worker_cpu_seconds=self._cpu_seconds,
        )

    def _take(self) -> list[EncodedAudio]:
        with self._lock:
            items = list(self._out)
            self._out.clear()
        return items

    def _process(self, job: _Job) -> None:
        if isinstance(job.frame, bytes):
            item = EncodedAudio(job.slot, job.frame, voice=False)
            elapsed = None
        else:
            started = time.perf_counter()
            opus = self._encoder.encode(job.frame)
            elapsed = time.perf_counter() - started
            # Held back (None): an empty packet still comes back, so trio sees every frame return.
            item = EncodedAudio(job.slot, opus or b"", voice=True)
        with self._lock:
            if elapsed is not None:
                self._durations.append(elapsed)
                self._encoded += 1
                self._held_back += not item.opus
            self._out.append(item)
        self._wake_trio_soon()


@asynccontextmanager
async def open_audio_encode_worker(
    encoder: OpusEncoder,
    *,
    on_output: Callable[[EncodedAudio], None],
    queue_size: int = AUDIO_ENCODE_QUEUE,
) -> AsyncIterator[AudioEncodeWorker]:
    """Run an Opus encode thread; ``on_output`` is called in trio per packet, in submit order."""
    worker = AudioEncodeWorker(encoder, queue_size)
    async with worker._running(on_output, "clank encode opus"):
        yield worker
