"""CPU work off the trio thread on niced threads, except under a virtual clock (tests): inline.

Encoding, decoding and file reads run on worker threads so the trio thread stays free. They run
at a lower priority than it (``BACKGROUND_NICE``, as the decode and encode workers): on a machine
whose cores are busy, a nice-0 worker (the publish visualizer renders ~30% of a core) competes
as an equal with the trio thread, which then waits for a core for milliseconds at a time (the
event-loop lag of ``bench/bench_dashboard.py``). trio's own thread cache cannot be used for this:
an unprivileged thread cannot undo a nice, so a niced cached thread would carry it into
unrelated ``trio.to_thread`` work. :class:`_NicedThreads` is a cache of our own instead: an idle
thread takes the next job, a new one starts when none is idle, and an idle thread ends after
``IDLE_TIMEOUT_S``.

Under a virtual clock (``autojump_clock``, ``MockClock``) a thread and the clock race: a thread
that is busy looks idle to trio, so the clock jumps to the next deadline while a frame is still
being encoded — how much virtual time passes depends on how loaded the machine is. So, whenever
trio runs any clock other than its own system clock, :func:`run_cpu` calls the function inline on
the trio thread (after a checkpoint) and the worker threads (:mod:`clank.io.worker_thread`)
process each job inside ``submit``: CPU work then takes no virtual time and a test is
deterministic. Production never runs another clock.

    frame = await run_cpu(encoder.encode, picture, limiter=limiter)
"""

from __future__ import annotations

import contextvars
import os
import queue
import threading
from collections.abc import Callable
from typing import Final, TypeVar, TypeVarTuple

import outcome
import trio

__all__ = ["BACKGROUND_NICE", "IDLE_TIMEOUT_S", "inline_cpu", "lower_thread_priority", "run_cpu"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

#: How much nicer than the trio thread CPU work runs (the decode and encode workers use the same).
BACKGROUND_NICE: Final = 5
#: An idle thread of the cache ends after this long without a job.
IDLE_TIMEOUT_S: Final = 10.0


def inline_cpu() -> bool:
    """True when trio runs a clock other than its system clock (a virtual clock in tests)."""
    return type(trio.lowlevel.current_clock()).__name__ != "SystemClock"


def lower_thread_priority(nice: int) -> bool:
    """Raise the calling thread's niceness by ``nice`` (Linux); False where unsupported."""
    setpriority = getattr(os, "setpriority", None)
    if setpriority is None or not hasattr(threading, "get_native_id"):
        return False
    try:
        tid = threading.get_native_id()
        setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + nice)
    except OSError:
        return False
    return True


_Job = Callable[[], None]


class _NicedThreads:
    """A thread cache like trio's, whose threads run at ``nice`` above the process's niceness."""

    def __init__(self, nice: int, name: str) -> None:
        self._nice = nice
        self._name = name
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue[_Job]] = []  # one inbox per idle thread, newest last
        self._started = 0

    @property
    def threads_started(self) -> int:
        return self._started

    def start(self, job: _Job) -> None:
        with self._lock:
            if self._idle:
                self._idle.pop().put(job)  # the most recently idle thread: its cache is warm
                return
            self._started += 1
            name = f"{self._name} {self._started}"
        threading.Thread(target=self._main, args=(job,), name=name, daemon=True).start()

    def _main(self, job: _Job) -> None:
        lower_thread_priority(self._nice)
        inbox: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        while True:
            job()
            with self._lock:
                self._idle.append(inbox)
            try:
                job = inbox.get(timeout=IDLE_TIMEOUT_S)
            except queue.Empty:
                with self._lock:
                    if inbox in self._idle:
                        self._idle.remove(inbox)
                        return
                # start() took this inbox under the lock just before the timeout: its job is in it.
                job = inbox.get()


_THREADS: Final = _NicedThreads(BACKGROUND_NICE, "clank cpu")


async def run_cpu(
    fn: Callable[[*Ts], T],
    *args: *Ts,
    limiter: trio.CapacityLimiter | None = None,
    abandon_on_cancel: bool = False,
) -> T:
    """``fn(*args)`` on a niced worker thread, like ``trio.to_thread.run_sync`` (same limiter and
    cancellation rules: without ``abandon_on_cancel`` a cancel waits for ``fn`` to return);
    inline (see the module docstring) under a virtual clock."""
    if inline_cpu():
        await trio.lowlevel.checkpoint()
        return fn(*args)
    await trio.lowlevel.checkpoint_if_cancelled()
    if limiter is None:
        limiter = trio.to_thread.current_default_thread_limiter()
    borrower = object()  # holds a limiter token until the thread is done, abandoned or not
    await limiter.acquire_on_behalf_of(borrower)
    token = trio.lowlevel.current_trio_token()
    task = trio.lowlevel.current_task()
    context = contextvars.copy_context()
    abandoned = False

    def finished(result: outcome.Outcome[T]) -> None:  # in trio
        limiter.release_on_behalf_of(borrower)
        if not abandoned:
            trio.lowlevel.reschedule(task, result)

    def in_thread() -> None:
        result: outcome.Outcome[T] = outcome.capture(lambda: context.run(fn, *args))
        try:
            token.run_sync_soon(finished, result)
        except trio.RunFinishedError:
            pass  # trio is gone (an abandoned job outlived the run): nobody wants the result

    def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        nonlocal abandoned
        if abandon_on_cancel:
            abandoned = True
            return trio.lowlevel.Abort.SUCCEEDED
        return trio.lowlevel.Abort.FAILED  # the thread still reschedules us; the cancel follows

    try:
        _THREADS.start(in_thread)
    except BaseException:
        limiter.release_on_behalf_of(borrower)
        raise
    result: T = await trio.lowlevel.wait_task_rescheduled(abort)
    return result
