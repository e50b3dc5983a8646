"""The trio side of video encoding for a Go Live publish: one long-lived worker thread per publish.

Like the decode worker (``io/decode_worker.py``), on the same ``io/worker_thread.py``: the
frame clock ``submit``s pictures into a bounded ``queue.SimpleQueue`` (~0.1 µs, never blocks),
the thread converts (PyAV ``reformat`` when the picture is not already yuv420p at the stream
size) and encodes with libx264 (constrained baseline, zerolatency, no B-frames, SPS/PPS before
every IDR, VBV-capped bitrate: ``clank.media.encoder.VideoEncoder``), and every access unit
crosses back to trio through a small deque plus ``TrioToken.run_sync_soon``; a delivery task
calls ``on_output`` in trio. Access units are never dropped on the way back (P frames reference
each other); when the input queue is full the new picture is dropped (counted) — the encoder
never sees it, which costs nothing but smoothness.
"""

from __future__ import annotations

import collections
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final

import attrs
import av

from clank.io.offload import BACKGROUND_NICE
from clank.io.worker_thread import WorkerThread, nearest_percentile
from clank.media.encoder import VideoEncoder

__all__ = [
    "ENCODE_QUEUE_SIZE",
    "EncodeWorker",
    "EncodeWorkerStatistics",
    "EncodedAccessUnit",
    "open_encode_worker",
]

ENCODE_QUEUE_SIZE: Final = 3
LATENCY_WINDOW: Final = 512
# Niceness of the encode thread (Linux, per thread), as the decode threads': a 30 fps encode has
# 33 ms per frame, while the trio thread's receive and timers are late by any wait for a core.
ENCODE_THREAD_NICE: Final = BACKGROUND_NICE


@attrs.frozen
class EncodedAccessUnit:
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    keyframe: bool
    capture_time: float
    encode_seconds: float
    source: av.VideoFrame | None = attrs.field(default=None, repr=False, eq=False)
    """The picture it was encoded from (previews, and PSNR checks in tests)."""


@attrs.frozen
class EncodeWorkerStatistics:
    submitted: int
    dropped: int
    encoded: int
    keyframes: int
    encode_p50_ms: float | None
    encode_p99_ms: float | None
    worker_cpu_seconds: float
    queue_depth: int


@attrs.frozen
class _Job:
    frame: av.VideoFrame = attrs.field(repr=False)
    capture_time: float
    keyframe: bool


class EncodeWorker(WorkerThread[_Job, EncodedAccessUnit]):
    """Encode one publish off the trio thread. Create with :func:`open_encode_worker`."""

    def __init__(self, encoder: VideoEncoder, queue_size: int) -> None:
        super().__init__()
        self._encoder = encoder
        self._queue_size = max(1, queue_size)
        self._out: collections.deque[EncodedAccessUnit] = collections.deque()
        self._submitted = 0
        self._dropped = 0
        self._encoded = 0
        self._keyframes = 0
        self._durations: collections.deque[float] = collections.deque(maxlen=LATENCY_WINDOW)

    @property
    def width(self) -> int:
        return self._encoder.width

    @property
    def height(self) -> int:
        return self._encoder.height

    def submit(self, frame: av.VideoFrame, capture_time: float, *, keyframe: bool = False) -> bool:
        """Queue one picture without blocking; False (counted) when the queue is full."""
        self._submitted += 1
        if self._closing or self._queue.qsize() >= self._queue_size:
            self._dropped += 1
            return False
        if self._inline:
            self._process(_Job(frame, capture_time, keyframe))
            return True
        self._queue.put(_Job(frame, capture_time, keyframe))
        return True

    def statistics(self) -> EncodeWorkerStatistics:
        with self._lock:
            durations = sorted(self._durations)
        return EncodeWorkerStatistics(
            submitted=self._submitted,
            dropped=self._dropped,
            encoded=self._encoded,
            keyframes=self._keyframes,
            encode_p50_ms=nearest_percentile(durations, 0.5) * 1000 if durations else None,
            encode_p99_ms=nearest_percentile(durations, 0.99) * 1000 if durations else None,
            worker_cpu_seconds=self._cpu_seconds,
            queue_depth=self._queue.qsize(),
        )

    def _take(self) -> list[EncodedAccessUnit]:
        with self._lock:
            items = list(self._out)
            self._out.clear()
        return items

    def _process(self, job: _Job) -> None:
        started = time.perf_counter()
        if job.keyframe:
            self._encoder.force_keyframe()
        packets = self._encoder.encode(job.frame)
        elapsed = time.perf_counter() - started
        units = [EncodedAccessUnit(p.data, p.keyframe, job.capture_time, elapsed, job.frame) for p in packets]
        with self._lock:
            self._durations.append(elapsed)
            self._encoded += len(units)
            self._keyframes += sum(1 for u in units if u.keyframe)
            self._out.extend(units)
        if units:
            self._wake_trio_soon()


@asynccontextmanager
async def open_encode_worker(
    encoder: VideoEncoder,
    *,
    on_output: Callable[[EncodedAccessUnit], None],
    queue_size: int = ENCODE_QUEUE_SIZE,
) -> AsyncIterator[EncodeWorker]:
    """Run an encode thread for ``encoder``; ``on_output`` is called in trio per access unit."""
    worker = EncodeWorker(encoder, queue_size)
    async with worker._running(on_output, "clank encode h264", nice=ENCODE_THREAD_NICE):
        yield worker
