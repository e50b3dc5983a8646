"""The long-lived worker thread under ``io/decode_worker.py`` and ``io/encode_worker.py``.

The trio side puts jobs into a ``queue.SimpleQueue`` (~0.1 µs, never blocks; each subclass
bounds it with its own drop policy); one thread takes them in order and runs :meth:`_process`;
results cross back through state the subclass guards with ``_lock``, and the thread wakes a
delivery task with ``TrioToken.run_sync_soon`` (never blocking on trio). The delivery task calls
``on_output`` in trio for each item :meth:`_take` returns, so its exceptions propagate normally,
and an exception in the thread surfaces there too. Stopping is bounded: the thread finishes the
job it is on, skips whatever is still queued and ends (``THREAD_STOP_TIMEOUT``).

Under a virtual clock (tests, :func:`clank.io.offload.inline_cpu`) no thread runs: ``_inline`` is
True, subclasses process each job inside ``submit`` and the wake-up is immediate, so the clock
cannot jump while a job is half done.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final, Generic, TypeVar

import attrs
import outcome
import trio

from clank.errors import UsageError
from clank.io.offload import inline_cpu, lower_thread_priority

__all__ = [
    "THREAD_STOP_TIMEOUT",
    "CpuSlots",
    "CpuSlotsStatistics",
    "WorkerThread",
    "lower_thread_priority",
    "nearest_percentile",
]

THREAD_STOP_TIMEOUT: Final = 2.0  # seconds to wait for the thread to finish its current job

JobT = TypeVar("JobT")
OutT = TypeVar("OutT")


def nearest_percentile(sorted_values: list[float], fraction: float) -> float:
    """The value at the rounded index ``fraction`` of the way through (the workers' latency figures)."""
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


@attrs.frozen
class _Stop:
    """Tells the thread to finish; it skips whatever is still queued once closing is set."""


@attrs.frozen
class CpuSlotsStatistics:
    total: int
    held: int
    waiting: int  # threads queued for a slot


class CpuSlots:
    """At most ``count`` holders at once (``with slots:``), served first come, first served.

    A released slot is handed straight to the oldest waiter. ``threading.Semaphore`` lets the
    releasing thread take it back at once (it is still running, the woken waiter is not yet):
    a decode thread with a backlog kept its slot job after job while the other streams' queues
    overflowed.
    """

    def __init__(self, count: int) -> None:
        if count < 1:
            raise UsageError(f"need at least one slot, got {count}")
        self._lock = threading.Lock()
        self._total = count
        self._free = count
        self._waiters: collections.deque[threading.Lock] = collections.deque()

    def statistics(self) -> CpuSlotsStatistics:
        with self._lock:
            return CpuSlotsStatistics(self._total, self._total - self._free, len(self._waiters))

    def __enter__(self) -> None:
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
        waiter.acquire()  # released by __exit__ of the holder whose slot this becomes

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._free += 1


class WorkerThread(Generic[JobT, OutT]):
    """One job queue, one thread, one delivery task. Subclasses give ``_process`` and ``_take``.

    ``_cpu_slots``: when a subclass sets it, its threads run ``_process`` only while holding one
    of its slots (shared by every worker of that subclass), so at most that many of them are
    runnable at once however many streams there are.
    """

    _cpu_slots: CpuSlots | None = None

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[JobT | _Stop] = queue.SimpleQueue()
        self._token = trio.lowlevel.current_trio_token()
        self._lock = threading.Lock()  # guards what the thread hands to trio
        self._closing = False
        self._wake = trio.Event()
        self._thread_started = False
        self._thread_done = trio.Event()
        self._thread_outcome: outcome.Outcome[None] | None = None
        self._trio_finished = False
        self._cpu_seconds = 0.0  # thread CPU time spent in _process
        self._inline = inline_cpu()  # no thread: jobs run inside submit (virtual clock, tests)

    # ---- for subclasses --------------------------------------------------------------------

    def _process(self, job: JobT) -> None:
        """Thread side: do one job (results go where ``_take`` finds them, then ``_wake_trio_soon``)."""
        raise NotImplementedError

    def _take(self) -> list[OutT]:
        """Trio side, after a wake-up: the results to hand to ``on_output``, in order."""
        raise NotImplementedError

    def _wake_trio_soon(self) -> None:
        """Thread side: wake the delivery task. When trio has finished (after a timed-out stop)
        nobody wants the result, and the thread ends after this job."""
        if self._inline:
            self._wake.set()
            return
        try:
            self._token.run_sync_soon(self._wake_now)
        except trio.RunFinishedError:
            self._trio_finished = True

    def _wake_now(self) -> None:
        self._wake.set()  # looked up in trio: the event the delivery task waits on now

    # ---- trio side -------------------------------------------------------------------------

    @asynccontextmanager
    async def _running(
        self, on_output: Callable[[OutT], None], thread_name: str | None, *, nice: int = 0
    ) -> AsyncIterator[None]:
        """Deliver results to ``on_output`` while inside; ``thread_name`` None runs no thread."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._deliver, on_output)
            if thread_name is not None and not self._inline:
                self._start_thread(thread_name, nice)
            try:
                yield
            finally:
                with trio.move_on_after(THREAD_STOP_TIMEOUT, shield=True):
                    await self._stop()
                nursery.cancel_scope.cancel()

    async def _deliver(self, on_output: Callable[[OutT], None]) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()  # replace before taking the results: no wake-up is lost
            if self._thread_outcome is not None:
                self._thread_outcome.unwrap()  # a bug in the thread surfaces here, loudly
            for item in self._take():
                on_output(item)

    def _start_thread(self, name: str, nice: int) -> None:
        self._thread_started = True
        if not nice:
            trio.lowlevel.start_thread_soon(self._run, self._thread_finished, name=name)
            return

        # A thread of our own, not trio's thread cache: it is niced, and a cached thread would
        # carry that niceness into unrelated to_thread work (an unprivileged thread cannot undo it).
        def main() -> None:
            lower_thread_priority(nice)
            self._thread_finished(outcome.capture(self._run))

        threading.Thread(target=main, name=name, daemon=True).start()

    async def _stop(self) -> None:
        self._closing = True
        if not self._thread_started:
            return
        self._queue.put(_Stop())
        await self._thread_done.wait()

    # ---- thread side -----------------------------------------------------------------------

    def _run(self) -> None:
        slots = self._cpu_slots
        while not self._trio_finished:
            job = self._queue.get()
            if isinstance(job, _Stop):
                return
            if self._closing:
                continue
            if slots is None:
                self._timed(job)
                continue
            with slots:
                if not self._closing:  # (it may have closed while this thread waited for a slot)
                    self._timed(job)

    def _timed(self, job: JobT) -> None:
        started = time.thread_time()
        self._process(job)
        self._cpu_seconds += time.thread_time() - started

    def _thread_finished(self, result: outcome.Outcome[None]) -> None:
        def record() -> None:
            self._thread_outcome = result
            self._thread_done.set()
            self._wake.set()

        try:
            self._token.run_sync_soon(record)
        except trio.RunFinishedError:
            pass  # trio gave up waiting (bounded stop) and has finished: nobody to tell
