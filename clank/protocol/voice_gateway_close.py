"""Voice gateway close-code policy (sans-io data): what a server close code means and what follows.

The table is data (house rule 8); tests iterate over it. A row may name a different action for
the voice leg (``voice_action``: its credentials come from the main gateway, so it can rejoin
through op4); ``ClosePolicy.action_for(role)`` picks the one that applies. ``classify_close`` maps a code (or
``None``: the websocket dropped without a close frame) to a :class:`ClosePolicy`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

import attrs

from clank.errors import AuthenticationFailed, ClankError, ConnectionClosed, SessionInvalidated

__all__ = [
    "CLIENT_CLOSE_NORMAL",
    "CLIENT_CLOSE_RESUMABLE",
    "CLOSE_POLICY",
    "CloseAction",
    "ClosePolicy",
    "classify_close",
    "close_error",
]

CLIENT_CLOSE_RESUMABLE: Final = 4000
"""Close code we send when we drop a connection we mean to resume (1000 would end the session)."""
CLIENT_CLOSE_NORMAL: Final = 1000


class CloseAction(enum.Enum):
    RESUME = "resume"
    """Reconnect to the same endpoint and send op7; falls back to RECONNECT without a session."""
    RECONNECT = "reconnect"
    """Reconnect to the same endpoint with a fresh op0 identify."""
    NEW_SESSION = "new_session"
    """Rejoin through the main gateway (op4) to get a new voice server/token."""
    STOP = "stop"
    """Do not reconnect (unless the session layer sees a new server update)."""
    ERROR = "error"
    """A configuration or protocol error that retrying will not fix."""


@attrs.frozen
class ClosePolicy:
    action: CloseAction
    meaning: str
    voice_action: CloseAction | None = None
    """The voice leg's action when it differs from ``action`` (the stream legs')."""

    def action_for(self, role: str) -> CloseAction:
        """``voice_action`` on the voice leg (when set), else ``action``."""
        if role == "voice" and self.voice_action is not None:
            return self.voice_action
        return self.action


_REJOIN: Final = CloseAction.NEW_SESSION
"""4001/4002/4003/4005/4020 on the voice leg: the server refused what we sent with these
credentials, so rejoin through the main gateway (op4) for a fresh token and server instead of
identifying again with the old ones. Stream legs re-identify (their credentials come from op20)."""


CLOSE_POLICY: Final[Mapping[int, ClosePolicy]] = MappingProxyType(
    {
        1000: ClosePolicy(CloseAction.STOP, "normal closure"),
        1006: ClosePolicy(CloseAction.RESUME, "abnormal closure (network drop)"),
        4001: ClosePolicy(CloseAction.RECONNECT, "unknown opcode", _REJOIN),
        4002: ClosePolicy(CloseAction.RECONNECT, "failed to decode payload", _REJOIN),
        4003: ClosePolicy(CloseAction.RECONNECT, "not authenticated", _REJOIN),
        4004: ClosePolicy(CloseAction.NEW_SESSION, "authentication failed"),
        4005: ClosePolicy(CloseAction.RECONNECT, "already authenticated", _REJOIN),
        4006: ClosePolicy(CloseAction.NEW_SESSION, "session no longer valid"),
        4009: ClosePolicy(CloseAction.RECONNECT, "session timeout"),  # a fresh connect (DDOC 3.11)
        4011: ClosePolicy(CloseAction.NEW_SESSION, "server not found"),
        4012: ClosePolicy(CloseAction.ERROR, "unknown protocol"),
        4013: ClosePolicy(CloseAction.RESUME, "WebRTC crashed"),
        4014: ClosePolicy(CloseAction.STOP, "disconnected (kicked, moved or main gateway dropped)"),
        4015: ClosePolicy(CloseAction.RESUME, "voice server crashed"),
        4016: ClosePolicy(CloseAction.ERROR, "unknown encryption mode"),
        4017: ClosePolicy(CloseAction.ERROR, "E2EE/DAVE protocol required"),
        4020: ClosePolicy(CloseAction.RECONNECT, "bad request", _REJOIN),
        4021: ClosePolicy(CloseAction.STOP, "rate limited"),
        4022: ClosePolicy(CloseAction.STOP, "call terminated"),
    }
)
_NETWORK_DROP: Final = ClosePolicy(CloseAction.RESUME, "connection lost")
_UNKNOWN_CLOSE: Final = ClosePolicy(CloseAction.NEW_SESSION, "unknown close code")


def classify_close(code: int | None) -> ClosePolicy:
    """The policy for a server close code; ``None`` (no close frame) is a network drop."""
    if code is None:
        return _NETWORK_DROP
    policy = CLOSE_POLICY.get(code)
    if policy is not None:
        return policy
    return _NETWORK_DROP if code < 4000 else _UNKNOWN_CLOSE


def close_error(code: int | None, reason: str, meaning: str) -> ClankError:
    if code == 4004:
        return AuthenticationFailed(f"voice gateway closed {code}: {meaning}")
    if code in (4006, 4009):
        return SessionInvalidated(f"voice gateway closed {code}: {meaning}")
    return ConnectionClosed(code, reason or meaning)
