"""Deterministic identifiers for the sandbox: snowflakes, tokens and session ids from one seed.

A seeded sandbox produces the same ids on every run, so test failures and demo logs are
reproducible. Nothing here is a real secret, but tokens are still treated as secrets by the
callers (registered for log redaction, kept out of reprs).
"""

from __future__ import annotations

import random

# Discord epoch is 2015-01-01; a snowflake is (ms since that epoch) << 22 | worker/process/increment.
# We start at a fixed, plausible timestamp (mid-2024) and advance by one millisecond per id.
_BASE_TIMESTAMP_MS = 297_000_000_000
_SNOWFLAKE_SHIFT = 22


class IdFactory:
    """All ids of one sandbox world. Same seed, same ids."""

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)
        self._next_ms = _BASE_TIMESTAMP_MS + seed * 1_000_000

    def snowflake(self) -> str:
        self._next_ms += 1
        return str((self._next_ms << _SNOWFLAKE_SHIFT) | self._rng.randrange(1 << 12))

    def hex_id(self, nbytes: int = 16) -> str:
        """A gateway or voice session id: 32 lowercase hex characters by default."""
        return self._rng.randbytes(nbytes).hex()

    def token(self, prefix: str = "") -> str:
        return prefix + self._rng.randbytes(18).hex()

    def choice_rng(self) -> random.Random:
        """A child RNG (for scenario scripts) that does not disturb the id sequence."""
        return random.Random(self._rng.randrange(1 << 62))
