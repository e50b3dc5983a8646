"""DAVE verification codes, computed on request on a worker thread and cached per group state.

A pairwise verification code costs one scrypt (N=16384) inside davey: about 0.27 s of CPU, and
davey holds the GIL for all of it. Recomputing every member's code on every ``status()`` (the
dashboard asks twice a second) stalled the trio loop most of the time, so the periodic status
only *reads* this cache; a code is computed when someone asks for it (the dashboard's "verify"
button, ``GET /api/dave/verification``) — like Discord's own client, which shows one member's
code when you open their verify dialog — and then kept for as long as the group is the same.

The cache key is ``(epoch, voice privacy code, user id)``: the privacy code changes on every
transition and tells a re-created group (epoch 1 again) from the old one. Entries of older group
states are dropped when a newer state is seen.

Because davey keeps the GIL, computing on a thread does not let the trio thread run during those
0.27 s; it does keep the work off the loop's own call stack (no Rust call from an HTTP handler)
and serialises requests (one code at a time, :data:`MAX_PENDING` waiting at most).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final, Protocol

import trio

from clank.errors import InvalidArgument
from clank.io.offload import run_cpu

#: Requests that may wait for the worker at once; more answer "busy" rather than queueing stalls.
MAX_PENDING: Final = 4

GroupKey = tuple[int | None, str | None]


class DaveCodeSource(Protocol):
    """What the cache needs from a DAVE session (``clank.crypto.dave.DaveSessionCore``)."""

    @property
    def epoch(self) -> int | None: ...

    @property
    def voice_privacy_code(self) -> str | None: ...

    def group_user_ids(self) -> frozenset[int]: ...

    def get_verification_code(self, user_id: int) -> str | None: ...


class VerificationCodes:
    """Cache of pairwise verification codes for one DAVE session's current group."""

    def __init__(self) -> None:
        self._group: GroupKey = (None, None)
        self._codes: dict[int, str] = {}
        self._limiter = trio.CapacityLimiter(1)
        self._pending = 0
        #: How many codes were computed (davey calls), for tests and statistics.
        self.computed = 0

    def cached(self, dave: DaveCodeSource) -> Mapping[int, str]:
        """The codes already computed for ``dave``'s current group (cheap: no davey code call)."""
        self._sync(dave)
        return dict(self._codes)

    async def code(self, dave: DaveCodeSource, user_id: int) -> str | None:
        """``user_id``'s code in ``dave``'s current group; None when they are not in it."""
        group = self._sync(dave)
        if user_id in self._codes:
            return self._codes[user_id]
        if user_id not in dave.group_user_ids():
            return None
        if self._pending >= MAX_PENDING:
            raise InvalidArgument("user", "too many verification codes are being computed; retry shortly")
        self._pending += 1
        try:
            found = await run_cpu(_compute(dave, user_id), limiter=self._limiter)
        finally:
            self._pending -= 1
        self.computed += 1
        if found and self._sync(dave) == group:
            self._codes[user_id] = found
        return found

    def _sync(self, dave: DaveCodeSource) -> GroupKey:
        group = (dave.epoch, dave.voice_privacy_code)
        if group != self._group:
            self._group = group
            self._codes = {}
        return group


def _compute(dave: DaveCodeSource, user_id: int) -> Callable[[], str | None]:
    return lambda: dave.get_verification_code(user_id)


def group_code(code: str, size: int = 5) -> str:
    """``"123451234512345"`` → ``"12345 12345 12345"`` (how Discord's client shows codes)."""
    return " ".join(code[i : i + size] for i in range(0, len(code), size))
