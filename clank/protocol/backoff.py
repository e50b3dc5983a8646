"""Reconnect backoff, one formula for every reconnect in clank (sans-io: the RNG is passed in).

    main gateway       BackoffPolicy()                                   1 s .. 60 s
    media legs         MEDIA_LEG_RECONNECT.backoff  (resume / re-identify) 0 .. 10 s, full jitter
    voice rejoin       VOICE_REJOIN.backoff (op4 through the main gateway) 0.5 .. 30 s

A :class:`ReconnectPolicy` adds the give-up rule: so many consecutive failed attempts (attempts
that never reached a working session) and the caller stops.
"""

from __future__ import annotations

import random
from typing import Final

import attrs

from clank.errors import UsageError

__all__ = ["MEDIA_LEG_RECONNECT", "VOICE_REJOIN", "BackoffPolicy", "ReconnectPolicy"]


@attrs.frozen
class BackoffPolicy:
    """Exponential backoff with jitter: attempt ``n`` (1-based) waits at most ``cap``.

    The ceiling is ``initial * multiplier**(n-1)`` up to ``cap``; the wait is the ceiling scaled by
    a random factor in ``[1 - jitter, 1]`` so many clients do not reconnect in lock-step, and never
    below ``floor`` (``None``: ``initial``).
    """

    initial: float = 1.0
    cap: float = 60.0
    multiplier: float = 2.0
    jitter: float = 0.5
    floor: float | None = None

    def ceiling(self, attempt: int) -> float:
        if attempt < 1:
            raise UsageError(f"backoff attempt must be >= 1, got {attempt}")
        exponent = min(attempt - 1, 64)  # keep the float finite for absurd attempt counts
        return min(self.cap, self.initial * self.multiplier**exponent)

    def delay(self, attempt: int, rng: random.Random) -> float:
        ceiling = self.ceiling(attempt)
        scaled = ceiling * (1.0 - self.jitter * rng.random())
        floor = self.initial if self.floor is None else self.floor
        return min(self.cap, max(floor, scaled))


@attrs.frozen
class ReconnectPolicy:
    """Backoff plus when to stop: ``max_failures`` consecutive attempts that never got ready."""

    backoff: BackoffPolicy
    max_failures: int

    def gives_up(self, failures: int) -> bool:
        return failures >= self.max_failures


MEDIA_LEG_RECONNECT: Final = ReconnectPolicy(
    BackoffPolicy(initial=0.5, cap=10.0, jitter=1.0, floor=0.0), max_failures=5
)
"""A voice/stream leg's resume and re-identify: first wait in [0, 0.5] s, doubling to 10 s."""
VOICE_REJOIN: Final = ReconnectPolicy(
    BackoffPolicy(initial=1.0, cap=30.0, jitter=0.5, floor=0.0), max_failures=6
)
"""The voice session's rejoin through the main gateway: [0.5, 1] s, doubling to 30 s; five
rejoins in a row that never got the voice role ready, and the sixth failure ends the session."""
