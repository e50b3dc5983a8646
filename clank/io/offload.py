"""CPU work off the trio thread, except under a virtual clock (tests), where it runs inline.

Encoding, decoding and file reads run on worker threads so the trio thread stays free. Under a
virtual clock (``autojump_clock``, ``MockClock``) a thread and the clock race: a thread that is
busy looks idle to trio, so the clock jumps to the next deadline while a frame is still being
encoded — how much virtual time passes depends on how loaded the machine is. So, whenever trio
runs any clock other than its own system clock, :func:`run_cpu` calls the function inline on the
trio thread (after a checkpoint) and the worker threads (:mod:`clank.io.worker_thread`) process
each job inside ``submit``: CPU work then takes no virtual time and a test is deterministic.
Production never runs another clock.

    frame = await run_cpu(encoder.encode, picture, limiter=limiter)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, TypeVarTuple

import trio

__all__ = ["inline_cpu", "run_cpu"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


def inline_cpu() -> bool:
    """True when trio runs a clock other than its system clock (a virtual clock in tests)."""
    return type(trio.lowlevel.current_clock()).__name__ != "SystemClock"


async def run_cpu(
    fn: Callable[[*Ts], T],
    *args: *Ts,
    limiter: trio.CapacityLimiter | None = None,
    abandon_on_cancel: bool = False,
) -> T:
    """``trio.to_thread.run_sync(fn, *args)``; inline (see the module docstring) under a virtual clock."""
    if inline_cpu():
        await trio.lowlevel.checkpoint()
        return fn(*args)
    return await trio.to_thread.run_sync(fn, *args, limiter=limiter, abandon_on_cancel=abandon_on_cancel)
