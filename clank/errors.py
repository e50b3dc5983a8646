"""The whole clank exception tree, in one place.

Split by blame: *we* misused something (``UsageError``, ``ConfigError``), the *peer* sent
garbage (``ProtocolError`` and below), or the *transport* failed (``TransportError``).
Library errors (trio-websocket, OSError, davey's ValueError, PyAV's errors) are translated
into these once, at the I/O boundary, with ``raise ... from exc``.

    ClankError
    ├── ConfigError                 bad configuration; names the key and the expected form
    ├── UsageError                  we called something wrongly (state misuse, bad argument)
    │   └── InvalidArgument         a caller's argument is wrong; names the field (HTTP 400)
    ├── ProtocolError               the peer sent something we cannot accept
    │   ├── MalformedPacket         media path: undecodable bytes; counted and dropped
    │   └── MalformedMessage        control path: bad JSON/payload; ends the role (close_code)
    ├── TransportError              a connection could not be made or was lost
    │   ├── ConnectionClosed        the peer closed a websocket (code, reason)
    │   ├── HandshakeTimeout        a handshake step missed its deadline
    │   ├── AuthenticationFailed    the token was refused (gateway 4004, HTTP 401)
    │   ├── ListenFailed            a local server cannot bind its address (in use, not permitted)
    │   ├── ChannelUnavailable      the guild/voice channel to join does not exist or is not ours
    │   └── SessionInvalidated      the session cannot be resumed; a fresh one is needed
    ├── CryptoError
    │   ├── DecryptionFailed        transport AEAD or DAVE decrypt failed (media: counted)
    │   └── DaveError               a DAVE/MLS step failed (recovered with op31)
    ├── WatchError                  a watch could not start or ended (``reason`` is a stable code)
    │   └── PublishError            our Go Live publish could not start or ended (``reason`` code)
    ├── VisionError                 a vision provider could not describe a frame (``reason`` code)
    └── SandboxError                the local Discord was misused by a test or scenario
"""

from __future__ import annotations


class ClankError(Exception):
    """Base of every error clank raises on purpose."""


class ConfigError(ClankError):
    """Configuration is invalid. ``key`` is the dotted settings key, ``expected`` its form."""

    def __init__(self, key: str, expected: str, got: object = None) -> None:
        self.key = key
        self.expected = expected
        self.got = got
        detail = f" (got {got!r})" if got is not None else ""
        super().__init__(f"config key {key!r}: expected {expected}{detail}")


class UsageError(ClankError):
    """We used an API wrongly (wrong state, bad argument)."""


class InvalidArgument(UsageError):
    """A caller (agent, HTTP client) passed a wrong argument. ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class ProtocolError(ClankError):
    """The peer sent something that violates the protocol."""


class MalformedPacket(ProtocolError):
    """Undecodable media-path bytes. ``kind`` names the wire format (``rtp``, ``rtcp``, ...)."""

    def __init__(self, kind: str, reason: str) -> None:
        self.kind = kind
        self.reason = reason
        super().__init__(f"malformed {kind}: {reason}")


class MalformedMessage(ProtocolError):
    """A control-path message we cannot accept. Ends the role; ``close_code`` is sent if set."""

    def __init__(self, kind: str, reason: str, close_code: int | None = None) -> None:
        self.kind = kind
        self.reason = reason
        self.close_code = close_code
        super().__init__(f"malformed {kind}: {reason}")


class TransportError(ClankError):
    """A connection could not be established or was lost."""


class ConnectionClosed(TransportError):
    """The remote end closed the websocket."""

    def __init__(self, code: int | None, reason: str = "") -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"connection closed (code={code}, reason={reason!r})")


class HandshakeTimeout(TransportError):
    """A handshake step (hello, ready, session description, IP discovery) timed out."""


class AuthenticationFailed(TransportError):
    """The token was rejected (main gateway close 4004, HTTP 401)."""


class ListenFailed(TransportError):
    """A local server could not bind ``address``; ``change`` names the setting/flag to change."""

    def __init__(self, address: str, reason: str, change: str) -> None:
        self.address = address
        self.reason = reason
        self.change = change
        super().__init__(f"cannot listen on {address}: {reason} (change {change})")


class ChannelUnavailable(TransportError):
    """The guild or voice channel to join is unknown, not a voice channel, or not visible to us."""


class SessionInvalidated(TransportError):
    """The session is gone; only a fresh identify (or voice rejoin) can continue."""


class CryptoError(ClankError):
    """Base for encryption failures."""


class DecryptionFailed(CryptoError):
    """A transport or DAVE decrypt failed. On the media path this is counted, never fatal."""

    def __init__(self, layer: str, reason: str) -> None:
        self.layer = layer
        self.reason = reason
        super().__init__(f"{layer} decrypt failed: {reason}")


class DaveError(CryptoError):
    """A DAVE/MLS operation failed (bad commit or welcome, unexpected state)."""


class WatchError(ClankError):
    """A watch could not be started or has ended. ``reason`` is a stable machine-readable code."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class PublishError(WatchError):
    """Our Go Live publish could not be started or has ended (``reason``: a stable code).

    A ``WatchError`` subclass so that a role boundary treats it as an expected role failure.
    """


class VisionError(ClankError):
    """A vision provider failed to describe a frame; screen notes count it, the watch goes on.

    ``reason`` is a stable code (``timeout``, ``connect``, ``http_status``, ``bad_response``,
    ``bad_image``); ``status`` is the HTTP status for ``http_status``.
    """

    def __init__(self, reason: str, detail: str = "", status: int | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.status = status
        super().__init__(f"{reason}: {detail}" if detail else reason)


class SandboxError(ClankError):
    """The sandbox was driven wrongly by a scenario or test."""
