"""The voice send loop's Opus encoder on a long-lived worker thread.

One 20 ms frame costs libopus 0.4-0.7 ms of CPU; on the trio thread that was the largest single
cost of a running clank (bench/profile_demo.py: ~35 ms of CPU per second, every step of the send
loop longer than 0.5 ms), and every such step delays whatever else is due then (the UDP drains,
the publish pacer, other timers). PyAV releases the GIL inside ``avcodec_send_frame`` /
``avcodec_receive_packet``, so the encode itself runs beside the trio thread.

:meth:`OpusEncodeWorker.encode` hands the frame to the thread and waits for its packet (the
send loop is sequential: one frame in flight). Frames are numbered, so a result that arrives
after its waiter was cancelled is dropped rather than taken for the next frame's. Under a clock
other than trio's system clock (``autojump_clock`` in tests) no thread runs and ``encode`` is
the inline call: a mock clock would jump ahead while the loop waits on a thread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from clank.io.worker_thread import WorkerThread
from clank.media.audio import OpusEncoder, Pcm

__all__ = ["OpusEncodeWorker", "open_opus_encode_worker"]

_Job = tuple[int, Pcm]
_Result = tuple[int, bytes | None]


class OpusEncodeWorker(WorkerThread[_Job, _Result]):
    """See the module docstring. Create with :func:`open_opus_encode_worker`."""

    def __init__(self, encoder: OpusEncoder) -> None:
        super().__init__()
        self._encoder = encoder
        self._results: list[_Result] = []  # guarded by _lock
        self._threaded = False
        self._sequence = 0
        self._waiting: tuple[int, trio.Event] | None = None
        self._result: bytes | None = None
        self.threaded_frames = 0
        """Frames encoded on the thread (the rest ran inline: mock clock)."""

    @property
    def threaded(self) -> bool:
        return self._threaded

    @property
    def cpu_seconds(self) -> float:
        """Thread CPU time spent encoding."""
        return self._cpu_seconds

    async def encode(self, pcm: Pcm) -> bytes | None:
        """The Opus packet of one ``(960, 2)`` frame (None if libopus held it back)."""
        if not self._threaded:
            return self._encoder.encode(pcm)
        self._sequence += 1
        ready = trio.Event()
        self._waiting = (self._sequence, ready)
        self._queue.put((self._sequence, pcm))
        try:
            await ready.wait()
        finally:
            self._waiting = None
        self.threaded_frames += 1
        result, self._result = self._result, None
        return result

    # ---- thread side -----------------------------------------------------------------------

    def _process(self, job: _Job) -> None:
        sequence, pcm = job
        packet = self._encoder.encode(pcm)
        with self._lock:
            self._results.append((sequence, packet))
        self._wake_trio_soon()

    # ---- trio side -------------------------------------------------------------------------

    def _take(self) -> list[_Result]:
        with self._lock:
            results, self._results = self._results, []
        return results

    def _on_output(self, result: _Result) -> None:
        sequence, packet = result
        waiting = self._waiting
        if waiting is not None and waiting[0] == sequence:
            self._result = packet
            waiting[1].set()


def _system_clock() -> bool:
    return type(trio.lowlevel.current_clock()).__name__ == "SystemClock"


@asynccontextmanager
async def open_opus_encode_worker(encoder: OpusEncoder) -> AsyncIterator[OpusEncodeWorker]:
    """An encode thread for ``encoder`` while inside (inline encoding under a mock clock)."""
    worker = OpusEncodeWorker(encoder)
    worker._threaded = _system_clock()
    async with worker._running(worker._on_output, "clank-opus-encode" if worker._threaded else None):
        yield worker
