"""Shared helpers for the sandbox media tests."""

from __future__ import annotations

from collections.abc import Callable

import trio


async def wait_until(predicate: Callable[[], bool], step: float = 0.02) -> None:
    """Poll ``predicate`` (callers bound the wait with ``trio.fail_after``)."""
    while True:
        if predicate():
            return
        await trio.sleep(step)
