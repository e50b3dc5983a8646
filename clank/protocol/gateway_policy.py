"""Main-gateway policy (sans-io data): constants, the close-code table, phases and their transitions.

Split from :mod:`clank.protocol.gateway` (the core); tables are data so tests can iterate them.
"""

from __future__ import annotations

import enum
import urllib.parse
from collections.abc import Mapping
from typing import Any

import attrs

from clank.errors import AuthenticationFailed, ClankError, ConnectionClosed, UsageError

API_VERSION = 9
#: Close code we use when we drop a connection but want to resume (1000/1001 end the session).
RESUMABLE_CLOSE_CODE = 4000
#: Seconds to wait for Hello after the socket opens, and for READY/RESUMED after Hello.
HANDSHAKE_TIMEOUT = 30.0
#: Bounds of the randomized wait after op9 (Discord asks for 1-5 s before a new Identify).
INVALID_SESSION_WAIT = (1.0, 5.0)
#: Connect attempts (the first one included) before giving up when we have never been READY,
#: so ``clank run`` fails fast with one line.
DEFAULT_MAX_INITIAL_ATTEMPTS = 5
#: A Hello interval above this (one hour) is garbage, not a policy.
MAX_HEARTBEAT_INTERVAL_MS = 3_600_000

DEFAULT_PROPERTIES: Mapping[str, Any] = {"os": "Windows", "browser": "Discord Client", "device": ""}
#: Capability bit 14: voice states of large guilds arrive as PASSIVE_UPDATE_V2, which clank does not
#: read, so it is never announced (sharers in large guilds would otherwise go unseen).
PASSIVE_GUILD_UPDATE_V2 = 1 << 14
#: Capability bits many user clients send (includes DEDUPE_USER_OBJECTS and PRIORITIZED_READY_PAYLOAD),
#: without PASSIVE_GUILD_UPDATE_V2.
DEFAULT_CAPABILITIES = 30717 & ~PASSIVE_GUILD_UPDATE_V2
DEFAULT_PRESENCE: Mapping[str, Any] = {"status": "online", "since": 0, "activities": [], "afk": False}


# --------------------------------------------------------------------------- policies (data)


class CloseAction(enum.Enum):
    RESUME = "resume"  # reconnect to resume_gateway_url and send op6
    NEW_SESSION = "new_session"  # reconnect to the base URL and Identify again
    STOP = "stop"  # give up: retrying cannot help


@attrs.frozen
class CloseRule:
    action: CloseAction
    meaning: str


#: What to do when the *server* closes the socket with a code. Codes not listed: RESUME.
CLOSE_POLICY: Mapping[int, CloseRule] = {
    1000: CloseRule(CloseAction.RESUME, "normal closure"),
    1001: CloseRule(CloseAction.RESUME, "going away"),
    4000: CloseRule(CloseAction.RESUME, "unknown error"),
    4001: CloseRule(CloseAction.RESUME, "unknown opcode"),
    4002: CloseRule(CloseAction.RESUME, "decode error"),
    4003: CloseRule(CloseAction.NEW_SESSION, "not authenticated"),
    4004: CloseRule(CloseAction.STOP, "authentication failed: the user token was refused"),
    4005: CloseRule(CloseAction.NEW_SESSION, "already authenticated"),
    4007: CloseRule(CloseAction.NEW_SESSION, "invalid seq"),
    4008: CloseRule(CloseAction.RESUME, "rate limited"),
    4009: CloseRule(CloseAction.NEW_SESSION, "session timed out"),
    4010: CloseRule(CloseAction.STOP, "invalid shard"),
    4011: CloseRule(CloseAction.STOP, "sharding required"),
    4012: CloseRule(CloseAction.STOP, "invalid API version"),
    4013: CloseRule(CloseAction.STOP, "invalid intents"),
    4014: CloseRule(CloseAction.STOP, "disallowed intents"),
    # User sessions (discord.py-self / userdoccers): too many sessions -> back off and identify anew;
    # 4016 -> stop (retrying the same way cannot help).
    4015: CloseRule(CloseAction.NEW_SESSION, "too many sessions: backing off"),
    4016: CloseRule(CloseAction.STOP, "session rejected by the server"),
}
DEFAULT_CLOSE_RULE = CloseRule(CloseAction.RESUME, "connection lost")


def close_rule(code: int | None) -> CloseRule:
    """The policy for a server close (``None``: no close frame, e.g. TCP reset)."""
    if code is None:
        return DEFAULT_CLOSE_RULE
    return CLOSE_POLICY.get(code, DEFAULT_CLOSE_RULE)


def stop_error(code: int, rule: CloseRule) -> ClankError:
    if code == 4004:
        return AuthenticationFailed(f"Discord gateway closed with 4004 ({rule.meaning}); check the token")
    return ConnectionClosed(code, f"gateway gave up: {rule.meaning}")


class Phase(enum.Enum):
    IDLE = "idle"  # not started
    CONNECTING = "connecting"  # Connect issued; waiting for the driver to open a socket
    AWAITING_HELLO = "awaiting_hello"
    IDENTIFYING = "identifying"  # Identify sent, waiting for READY
    RESUMING = "resuming"  # Resume sent, waiting for RESUMED
    CONNECTED = "connected"  # READY or RESUMED seen
    CLOSING = "closing"  # we asked the driver to close; waiting for connection_closed
    STOPPED = "stopped"


#: Allowed phase transitions; ``_enter`` refuses anything else (a bug, not a peer error).
TRANSITIONS: Mapping[Phase, frozenset[Phase]] = {
    Phase.IDLE: frozenset({Phase.CONNECTING}),
    Phase.CONNECTING: frozenset({Phase.AWAITING_HELLO, Phase.CONNECTING, Phase.STOPPED}),
    Phase.AWAITING_HELLO: frozenset(
        {Phase.IDENTIFYING, Phase.RESUMING, Phase.CLOSING, Phase.CONNECTING, Phase.STOPPED}
    ),
    Phase.IDENTIFYING: frozenset({Phase.CONNECTED, Phase.CLOSING, Phase.CONNECTING, Phase.STOPPED}),
    Phase.RESUMING: frozenset({Phase.CONNECTED, Phase.CLOSING, Phase.CONNECTING, Phase.STOPPED}),
    Phase.CONNECTED: frozenset({Phase.CLOSING, Phase.CONNECTING, Phase.STOPPED}),
    Phase.CLOSING: frozenset({Phase.CONNECTING, Phase.STOPPED}),
    Phase.STOPPED: frozenset(),
}


def gateway_url(base: str, *, compress: bool) -> str:
    """``base`` with ``v=9&encoding=json`` (and ``compress=zlib-stream``) in its query."""
    parts = urllib.parse.urlsplit(base)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise UsageError(f"gateway URL must be ws:// or wss:// with a host, got {base!r}")
    query = [
        (k, v)
        for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if k not in ("v", "encoding", "compress")
    ]
    query += [("v", str(API_VERSION)), ("encoding", "json")]
    if compress:
        query.append(("compress", "zlib-stream"))
    path = parts.path or "/"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, urllib.parse.urlencode(query), ""))
