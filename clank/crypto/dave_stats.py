"""What one DAVE session reports: its state and per-media encrypt/decrypt counters.

``clank.crypto.dave.DaveSessionCore.statistics`` builds these; the status and dashboard read them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final, Literal

import attrs
import davey

Media = Literal["audio", "video"]


class DaveState(enum.Enum):
    INACTIVE = "inactive"
    PENDING = "pending"
    AWAITING_RESPONSE = "awaiting_response"
    ACTIVE = "active"
    DISABLED = "disabled"


# davey's enums are not hashable, so this is a list of pairs rather than a dict.
STATUS_TO_STATE: Final[tuple[tuple[davey.SessionStatus, DaveState], ...]] = (
    (davey.SessionStatus.inactive, DaveState.INACTIVE),
    (davey.SessionStatus.pending, DaveState.PENDING),
    (davey.SessionStatus.awaiting_response, DaveState.AWAITING_RESPONSE),
    (davey.SessionStatus.active, DaveState.ACTIVE),
)


@attrs.frozen
class MediaCounters:
    ok: int = 0
    fail: int = 0
    passthrough: int = 0


@attrs.frozen
class DaveStatistics:
    """A snapshot of one DAVE session; ``decrypt`` is keyed by (sender user id, media)."""

    state: DaveState
    protocol_version: int
    epoch: int | None
    voice_privacy_code: str | None
    encrypt: Mapping[str, MediaCounters]
    decrypt: Mapping[tuple[int, str], MediaCounters]
    decrypt_failures: Mapping[str, int]
    recoveries: int
    transitions_executed: int
    last_error: str | None
    proposals_failed: int = 0
    """op27s we could not use (malformed, or refused by davey): dropped, no op31 (DAVE spec)."""

    def decrypt_counters(self, user_id: int, media: Media) -> MediaCounters:
        return self.decrypt.get((user_id, media), MediaCounters())


class Count:
    __slots__ = ("fail", "ok", "passthrough")

    def __init__(self) -> None:
        self.ok = 0
        self.fail = 0
        self.passthrough = 0

    def freeze(self) -> MediaCounters:
        return MediaCounters(self.ok, self.fail, self.passthrough)
