"""Precise absolute sleeps (for pacers such as the 20 ms audio send loop): a Linux timerfd.

trio's timers wake its run loop through the epoll timeout, which Python rounds *up* to whole
milliseconds, so ``trio.sleep_until`` wakes 0-1 ms late (a 20 ms pacer alone measured p99
~1.5 ms). A timerfd armed at the absolute ``CLOCK_MONOTONIC`` deadline becomes readable at the
deadline itself and trio wakes on that I/O event with no rounding (bench/bench_watch.py prints
both side by side).

Python 3.11 has no ``os.timerfd_create`` (3.13 has; it is used when present), so libc is called
through ctypes. Where neither exists (not Linux), or when trio runs a clock other than its
system clock (``autojump_clock`` in tests), :meth:`PreciseTimer.sleep_until` is exactly
``trio.sleep_until``. trio's system clock is ``time.perf_counter()`` (``CLOCK_MONOTONIC`` on
Linux) plus a fixed offset, which is how a trio deadline becomes a timerfd deadline.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = 0o4000
_TFD_CLOEXEC = 0o2000000
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class _Timerfd:
    """One CLOCK_MONOTONIC timerfd, armed at absolute deadlines: non-blocking for trio's
    ``wait_readable``, or ``blocking`` for a thread that waits in ``read`` (GIL released)."""

    def __init__(self, *, blocking: bool = False) -> None:
        self._libc: Any = None
        create = getattr(os, "timerfd_create", None)
        if create is not None:
            flags = os.TFD_CLOEXEC if blocking else os.TFD_NONBLOCK | os.TFD_CLOEXEC  # type: ignore[attr-defined]
            self.fd: int = create(time.CLOCK_MONOTONIC, flags=flags)
            return
        libc = ctypes.CDLL(None, use_errno=True)
        flags = _TFD_CLOEXEC if blocking else _TFD_NONBLOCK | _TFD_CLOEXEC
        fd = int(libc.timerfd_create(_CLOCK_MONOTONIC, flags))
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create failed")
        self._libc = libc
        self.fd = fd

    def arm(self, monotonic_deadline: float) -> None:
        if self._libc is None:
            os.timerfd_settime(self.fd, flags=os.TFD_TIMER_ABSTIME, initial=monotonic_deadline)  # type: ignore[attr-defined]
            return
        fraction, whole = math.modf(monotonic_deadline)
        spec = _Itimerspec()
        spec.it_value.tv_sec = int(whole)
        spec.it_value.tv_nsec = max(1, int(fraction * 1e9))  # all-zero would disarm
        if self._libc.timerfd_settime(self.fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")

    def consume(self) -> None:
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.fd)


def _make_timerfd(*, blocking: bool = False) -> _Timerfd | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return _Timerfd(blocking=blocking)
    except (OSError, AttributeError):
        return None


class PreciseTimer:
    """``sleep_until`` on a timerfd (see the module docstring).

    Create with :func:`open_precise_timer` (closed on exit) or :meth:`create` (closed when the
    object is garbage-collected, for long-lived owners such as a pacer). One sleeper at a time;
    a second concurrent sleeper falls back to ``trio.sleep_until`` rather than failing.
    """

    def __init__(self, timerfd: _Timerfd | None) -> None:
        self._timerfd = timerfd

    @classmethod
    def create(cls) -> PreciseTimer:
        timer = cls(_make_timerfd())
        if timer._timerfd is not None:
            weakref.finalize(timer, timer._timerfd.close)
        return timer

    @property
    def precise(self) -> bool:
        """True when sleeps use the timerfd (Linux, trio's system clock)."""
        return self._timerfd is not None and type(trio.lowlevel.current_clock()).__name__ == "SystemClock"

    async def sleep_until(self, deadline: float) -> None:
        """Like ``trio.sleep_until(deadline)`` (trio clock), without the millisecond rounding."""
        timerfd = self._timerfd
        if timerfd is None or not self.precise:
            await trio.sleep_until(deadline)
            return
        offset = trio.current_time() - time.perf_counter()
        target = deadline - offset
        if target <= time.perf_counter():
            await trio.lowlevel.checkpoint()
            return
        timerfd.arm(target)
        try:
            await trio.lowlevel.wait_readable(timerfd.fd)
        except trio.BusyResourceError:  # another task sleeps on this timer
            await trio.sleep_until(deadline)
            return
        timerfd.consume()

    def _close(self) -> None:
        if self._timerfd is not None:
            trio.lowlevel.notify_closing(self._timerfd.fd)
            self._timerfd.close()
            self._timerfd = None


class ThreadTimer:
    """Blocking absolute sleeps for a (non-trio) thread: a blocking timerfd where there is one
    (no timer slack: ``time.sleep`` adds the thread's 50 µs slack), else ``time.sleep``.
    Deadlines are ``time.perf_counter()`` values (``CLOCK_MONOTONIC`` on Linux). One sleeper;
    :meth:`cancel` (from any thread) ends the sleep in progress and every later one at once.
    """

    def __init__(self) -> None:
        self._timerfd = _make_timerfd(blocking=True)
        self.cancelled = False

    def sleep_until(self, deadline: float) -> None:
        delay = deadline - time.perf_counter()
        if delay <= 0 or self.cancelled:
            return
        timerfd = self._timerfd
        if timerfd is None:
            time.sleep(delay)
            return
        timerfd.arm(deadline)
        if self._cancelled_meanwhile():  # cancel() ran before arm() and its expiry was overwritten
            return
        os.read(timerfd.fd, 8)  # returns at expiry; the GIL is released meanwhile

    def _cancelled_meanwhile(self) -> bool:
        return self.cancelled  # read again: another thread may have set it since the last look

    def cancel(self) -> None:
        self.cancelled = True
        if self._timerfd is not None:
            self._timerfd.arm(time.perf_counter())  # already past: a blocked read returns now

    def close(self) -> None:
        if self._timerfd is not None:
            self._timerfd.close()
            self._timerfd = None


@asynccontextmanager
async def open_precise_timer() -> AsyncIterator[PreciseTimer]:
    """A timer for one task's sleeps (one waiter at a time); closed on exit."""
    timer = PreciseTimer(_make_timerfd())
    try:
        yield timer
    finally:
        timer._close()
