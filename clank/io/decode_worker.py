"""The trio side of video decoding: one long-lived worker thread per watched stream.

Why a thread of our own: decoding is ~85% of the cost of watching, PyAV releases the GIL while
decoding, and ``trio.to_thread.run_sync`` costs ~140 µs per call against ~0.1 µs for a
``queue.SimpleQueue`` put (performance notes). So the receive task ``submit``s whole access
units into a bounded queue and returns at once; the thread decodes every one of them (P frames
need their references), and only when a picture is due (``max_fps``, in RTP time) scales it,
encodes a JPEG from its planes and computes change metrics. Only those emitted pictures cross
back into trio: the thread puts them in a latest-wins slot and wakes a delivery task with
``TrioToken.run_sync_soon`` (never blocking the thread on trio); the delivery task calls
``on_output`` in trio context, so its exceptions propagate normally.

Drop policy (queue of ``queue_size`` access units): when the queue is full,

* an incoming *keyframe* flushes the queued access units (it supersedes them: nothing after
  it references them) and is queued; the flushed ones count as dropped;
* any other incoming access unit is dropped and counted, and ``keyframe_wanted`` turns on,
  because the following P frames now miss a reference. We keep feeding them (the decoder
  conceals; a sender may never send the keyframe we ask for) and clear the flag at the next
  decoded keyframe.

When a picture is due while more access units are already queued, emission waits for the
queue to drain (for at most one more output interval) so that the JPEG shows the newest
picture rather than a stale one.

``synchronous=True`` decodes inline in ``submit`` (no thread): deterministic, for tests under
``autojump_clock``; it is implied under any virtual clock (:mod:`clank.io.offload`).
"""

from __future__ import annotations

import collections
import math
import os
import queue
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs
import trio

from clank.errors import UsageError
from clank.io.offload import BACKGROUND_NICE
from clank.io.worker_thread import CpuSlots, WorkerThread
from clank.media.decoder import DecodedFrame, VideoCodec, VideoDecoder, access_unit_is_keyframe
from clank.media.jpeg import DEFAULT_JPEG_QUALITY, FrameScaler, JpegImage
from clank.media.metrics import ChangeSample, ChangeTracker

DECODE_QUEUE_SIZE = 8  # access units, ~270 ms at 30 fps: enough to ride out a keyframe burst
DEFAULT_MAX_FPS = 2.0
DEFAULT_MAX_PIXELS = 1280 * 720
RTP_VIDEO_CLOCK_RATE = 90_000  # H264 and VP8 both use a 90 kHz RTP clock
LATENCY_WINDOW = 512  # emitted pictures kept for the delay percentiles
RATE_WINDOW = 2.0  # seconds over which fps in/out are measured, ending at the statistics call
_MIN_SPAN = 0.5  # smallest divisor of a rate while the first window fills

# Niceness of decode threads (Linux, per thread): when decoders saturate the cores, the trio
# thread (receive, audio pacing, heartbeats) still gets the CPU first. 5 = ~3x less CPU weight.
DECODE_THREAD_NICE = BACKGROUND_NICE


def _usable_cpus() -> int:
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


# At most one decode job per usable CPU runs at once, process-wide: every stream keeps its own
# thread (its decoder state, queue and drop policy), and waits for a slot, first come first
# served. With one runnable thread per stream, 16-32 watched streams starved the trio thread:
# the scheduler shares a CPU among its runnable threads by weight, so the receive loop (nice 0)
# waited for a CPU about as long as it ran, and the watches fell behind their live schedule
# (bench_watch prints the trio thread's share). One slot per CPU is all the decoders can use.
# The price: against other busy processes, the decoders now weigh as one thread per CPU, not
# one per stream (docs/performance.md has the measured effect both ways).
DECODE_SLOTS = CpuSlots(_usable_cpus())

_TIMESTAMP_MODULUS = 1 << 32


@attrs.frozen
class DecodedImage:
    """One emitted picture: the JPEG, how much changed, and where it came from."""

    jpeg: JpegImage
    change: ChangeSample
    timestamp: int  # RTP timestamp of the access unit
    source_width: int
    source_height: int
    keyframe: bool
    decode_delay: float  # seconds from submit() of its access unit to the JPEG being ready
    sequence: int  # 1 for the first emitted picture, +1 per emitted picture
    concealed: bool = False  # decoded with references missing (no keyframe since a join or loss)


@attrs.frozen
class DecodeWorkerStatistics:
    submitted: int
    dropped: int  # access units never decoded (queue full, or flushed by a keyframe)
    decoded_frames: int
    emitted: int
    superseded: int  # emitted pictures replaced in the latest-wins slot before trio took them
    decode_errors: int
    decoder_resets: int
    width: int
    height: int
    fps_in: float
    fps_out: float
    delay_p50: float | None
    delay_p99: float | None
    queue_depth: int
    keyframe_wanted: bool
    worker_cpu_seconds: float
    last_output_age: float | None = None  # seconds since the newest picture reached trio (None: none yet)


@attrs.frozen
class _Submitted:
    access_unit: bytes = attrs.field(repr=False)
    timestamp: int
    enqueued_at: float
    conceal: bool = False


class _RateMeter:
    """Events per second over the ``RATE_WINDOW`` seconds ending *now* (trio clock).

    A stream that stops reads 0 once its last event leaves the window (it does not keep its old
    rate), and a burst counts as what it is: events in the window / the window, never the
    inverse of the gaps inside the burst. Before a full window has passed since the first event
    the divisor is the time elapsed since it (at least ``_MIN_SPAN``). Resolution: 1 / window.
    """

    def __init__(self) -> None:
        self._times: collections.deque[float] = collections.deque()
        self._first: float | None = None

    def tick(self, now: float) -> None:
        if self._first is None:
            self._first = now
        self._times.append(now)
        self._expire(now)

    def _expire(self, now: float) -> None:
        times = self._times
        while times and now - times[0] >= RATE_WINDOW:
            times.popleft()

    def rate(self, now: float) -> float:
        self._expire(now)
        if self._first is None or not self._times:
            return 0.0
        span = min(RATE_WINDOW, max(_MIN_SPAN, now - self._first))
        return len(self._times) / span


def _percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, math.ceil(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


class DecodeWorker(WorkerThread[_Submitted, DecodedImage]):
    """Decode one stream off the trio thread. Create with ``open_decode_worker``."""

    _cpu_slots = DECODE_SLOTS

    def __init__(
        self,
        codec: VideoCodec,
        *,
        max_fps: float,
        max_pixels: int | None,
        jpeg_quality: int,
        queue_size: int,
        synchronous: bool,
    ) -> None:
        if max_fps <= 0:
            raise UsageError(f"max_fps must be positive, got {max_fps}")
        if queue_size < 1:
            raise UsageError(f"queue_size must be at least 1, got {queue_size}")
        super().__init__()
        self.codec: VideoCodec = codec
        self._decoder = VideoDecoder(codec)
        self._tracker = ChangeTracker()
        self._scaler = FrameScaler()  # persistent single-threaded swscale context (thread side)
        self._max_pixels = max_pixels
        self._jpeg_quality = jpeg_quality
        self._interval_ticks = max(1, round(RTP_VIDEO_CLOCK_RATE / max_fps))
        self._queue_size = queue_size
        self._synchronous = synchronous or self._inline
        # Trio-side state (``_lock`` guards the slot and the delays).
        self._submitted = 0
        self._dropped = 0
        self._in_meter = _RateMeter()
        self._out_meter = _RateMeter()  # pictures handed to on_output (trio side)
        self._last_output_at: float | None = None
        # Thread-side state (read by statistics(): plain ints and bools).
        self._pending: DecodedImage | None = None
        self._superseded = 0
        self._emitted = 0
        self._decoded = 0
        self._chain_broken = False
        self._last_emitted_ts: int | None = None
        self._candidate: tuple[DecodedFrame, float] | None = None
        self._candidate_due_ts = 0
        self._delays: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)

    # ---- trio side ---------------------------------------------------------------------

    @property
    def keyframe_wanted(self) -> bool:
        """True when the sender should be asked for a keyframe (PLI/FIR); rate-limit the asks."""
        return self._chain_broken or self._decoder.needs_keyframe

    @property
    def decoded_frames(self) -> int:
        """Pictures decoded so far: the counter alone, without building a statistics snapshot."""
        return self._decoded

    def submit(
        self, access_unit: bytes, timestamp: int, *, keyframe: bool | None = None, conceal: bool = False
    ) -> bool:
        """Hand over one access unit without blocking. False if it was dropped (counted).

        ``keyframe`` is detected from the bytes when not given. ``conceal``: decode it into a
        picture even though references are missing (``VideoDecoder.decode(show_all=True)``).
        """
        if self._closing:
            raise UsageError("submit() on a closed decode worker")
        now = time.perf_counter()
        self._submitted += 1
        self._in_meter.tick(trio.current_time())
        item = _Submitted(access_unit=access_unit, timestamp=timestamp, enqueued_at=now, conceal=conceal)
        if self._synchronous:
            self._process(item)
            return True
        if self._queue.qsize() >= self._queue_size:
            if keyframe is None:
                keyframe = access_unit_is_keyframe(self.codec, access_unit)
            if not keyframe:
                self._dropped += 1
                self._chain_broken = True
                return False
            self._flush_queue()
        self._queue.put(item)
        return True

    def _flush_queue(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return
            self._dropped += 1

    def statistics(self) -> DecodeWorkerStatistics:
        decoder = self._decoder.statistics()
        with self._lock:
            delays = sorted(self._delays)
        now = trio.current_time()
        last = self._last_output_at
        return DecodeWorkerStatistics(
            submitted=self._submitted,
            dropped=self._dropped,
            decoded_frames=self._decoded,
            emitted=self._emitted,
            superseded=self._superseded,
            decode_errors=decoder.errors,
            decoder_resets=decoder.resets,
            width=decoder.width,
            height=decoder.height,
            fps_in=self._in_meter.rate(now),
            fps_out=self._out_meter.rate(now),
            delay_p50=_percentile(delays, 0.50) if delays else None,
            delay_p99=_percentile(delays, 0.99) if delays else None,
            queue_depth=self._queue.qsize(),
            keyframe_wanted=self.keyframe_wanted,
            worker_cpu_seconds=self._cpu_seconds,
            last_output_age=None if last is None else max(0.0, now - last),
        )

    def _take(self) -> list[DecodedImage]:
        with self._lock:
            image, self._pending = self._pending, None
        if image is None:
            return []
        now = trio.current_time()
        self._out_meter.tick(now)
        self._last_output_at = now
        return [image]

    # ---- thread side -------------------------------------------------------------------

    def _process(self, item: _Submitted) -> None:
        for frame in self._decoder.decode(item.access_unit, item.timestamp, show_all=item.conceal):
            self._decoded += 1
            if frame.keyframe:
                self._chain_broken = False
            if self._candidate is not None:
                self._candidate = (frame, item.enqueued_at)  # a newer picture of the same due slot
            elif self._is_due(frame.timestamp):
                self._candidate = (frame, item.enqueued_at)
                self._candidate_due_ts = frame.timestamp
        if self._candidate is not None and self._should_emit_now(self._candidate[0].timestamp):
            frame, enqueued_at = self._candidate
            self._candidate = None
            self._emit(frame, enqueued_at)

    def _is_due(self, timestamp: int) -> bool:
        if self._last_emitted_ts is None:
            return True
        delta = (timestamp - self._last_emitted_ts) % _TIMESTAMP_MODULUS
        # A delta in the upper half means the timestamp went backwards (a restarted sender).
        return delta >= self._interval_ticks or delta >= _TIMESTAMP_MODULUS // 2

    def _should_emit_now(self, timestamp: int) -> bool:
        if self._synchronous or self._queue.empty():
            return True
        waited = (timestamp - self._candidate_due_ts) % _TIMESTAMP_MODULUS
        return waited >= self._interval_ticks

    def _emit(self, frame: DecodedFrame, enqueued_at: float) -> None:
        scaled = self._scaler.scale(frame.image, max_pixels=self._max_pixels)
        jpeg = self._scaler.encode(scaled, max_pixels=self._max_pixels, quality=self._jpeg_quality)
        change = self._tracker.update(scaled)
        now = time.perf_counter()
        self._last_emitted_ts = frame.timestamp
        self._emitted += 1
        image = DecodedImage(
            jpeg=jpeg,
            change=change,
            timestamp=frame.timestamp,
            source_width=frame.width,
            source_height=frame.height,
            keyframe=frame.keyframe,
            decode_delay=now - enqueued_at,
            sequence=self._emitted,
            concealed=frame.concealed or (self._chain_broken and not frame.keyframe),
        )
        with self._lock:
            if self._pending is not None:
                self._superseded += 1
            self._pending = image
            self._delays.append(image.decode_delay)
        if self._synchronous:
            self._wake.set()
        else:
            self._wake_trio_soon()


@asynccontextmanager
async def open_decode_worker(
    codec: VideoCodec,
    *,
    on_output: Callable[[DecodedImage], None],
    max_fps: float = DEFAULT_MAX_FPS,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    jpeg_quality: int = DEFAULT_JPEG_QUALITY,
    queue_size: int = DECODE_QUEUE_SIZE,
    synchronous: bool = False,
) -> AsyncIterator[DecodeWorker]:
    """Run a decode worker for one stream; ``on_output`` is called in trio for each picture.

    On exit the thread finishes the access unit it is decoding and stops (bounded wait of
    ``THREAD_STOP_TIMEOUT``); access units still queued are discarded.
    """
    worker = DecodeWorker(
        codec,
        max_fps=max_fps,
        max_pixels=max_pixels,
        jpeg_quality=jpeg_quality,
        queue_size=queue_size,
        synchronous=synchronous,
    )
    thread = None if worker._synchronous else f"clank decode {codec}"
    async with worker._running(on_output, thread, nice=DECODE_THREAD_NICE):
        yield worker
