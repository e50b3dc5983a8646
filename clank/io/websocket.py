"""A trio-websocket connection whose failures are clank errors.

trio-websocket raises its own ``HandshakeError`` / ``ConnectionClosed``; callers above the
I/O layer only ever see ``clank.errors.TransportError`` and ``clank.errors.ConnectionClosed``.
The translation happens here, once.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio_websocket

from clank.errors import ConnectionClosed, TransportError
from clank.logging import get_logger

log = get_logger("clank.io.websocket")

#: Seconds for the whole connect: TCP, TLS and the HTTP upgrade. Enforced by our own cancel
#: scope: trio-websocket's ``connect_timeout`` alone cannot end a connect whose peer accepts TCP
#: but never answers (its reader task keeps the nursery open), which hung clank silently.
CONNECT_TIMEOUT = 10.0
#: Seconds we wait for the peer to answer our close frame before dropping the TCP stream.
CLOSE_TIMEOUT = 2.0
#: When we close because our scope was cancelled (shutdown, role stop), trio-websocket's reader
#: task is cancelled too, so the peer's close reply can never be read: send ours and go.
CANCELLED_CLOSE_TIMEOUT = 0.1
#: Gateway READY payloads of large accounts reach several MiB.
MAX_MESSAGE_SIZE = 64 * 1024 * 1024
#: Frames trio-websocket may hold before its reader stops reading the socket.
MESSAGE_QUEUE_SIZE = 64
#: Close code trio-websocket reports when the TCP stream ended without a close frame.
ABNORMAL_CLOSURE = 1006


class WebSocket:
    """One open websocket. ``receive``/``send`` raise ``clank.errors.ConnectionClosed``."""

    def __init__(self, connection: trio_websocket.WebSocketConnection) -> None:
        self._connection = connection

    @property
    def close_code(self) -> int | None:
        reason = self._connection.closed
        return None if reason is None else reason.code

    async def receive(self) -> str | bytes:
        try:
            return await self._connection.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise _translate(exc) from exc

    async def send(self, message: str | bytes) -> None:
        try:
            await self._connection.send_message(message)
        except trio_websocket.ConnectionClosed as exc:
            raise _translate(exc) from exc

    async def aclose(self, code: int = 1000, reason: str = "", *, cancelled: bool | None = None) -> None:
        """Send a close frame and wait (bounded) for the peer's; idempotent. Closes the TCP stream.

        ``cancelled``: whether the caller's scope was cancelled (then trio-websocket's reader task
        is cancelled too and the peer's reply can never arrive: send ours and go). By default it
        is judged from the current deadline, which a caller's own shield hides: a caller that
        shields its close must check before shielding and pass it. Within a caller's shielded
        budget, the budget's deadline still holds."""
        now = trio.current_time()
        if cancelled is None:
            cancelled = trio.current_effective_deadline() == -math.inf
        deadline = now + (CANCELLED_CLOSE_TIMEOUT if cancelled else CLOSE_TIMEOUT)
        if not cancelled:
            deadline = min(deadline, trio.current_effective_deadline())
        with trio.CancelScope(deadline=deadline, shield=True):
            await self._connection.aclose(code, reason or None)
        # trio-websocket 0.12 leaves the TCP stream open when the *server* closed first (the
        # client waits for the server's TCP FIN, and aclose() returns early once a close
        # reason is known), so the socket would only be freed by the GC. Close it here.
        stream = getattr(self._connection, "_stream", None)
        if isinstance(stream, trio.abc.AsyncResource):
            with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
                await trio.aclose_forcefully(stream)


def _translate(exc: trio_websocket.ConnectionClosed) -> ConnectionClosed:
    if exc.reason is None:
        return ConnectionClosed(ABNORMAL_CLOSURE, "")
    return ConnectionClosed(exc.reason.code, exc.reason.reason or "")


@asynccontextmanager
async def open_websocket(
    url: str,
    *,
    max_message_size: int = MAX_MESSAGE_SIZE,
    message_queue_size: int = MESSAGE_QUEUE_SIZE,
) -> AsyncIterator[WebSocket]:
    """Connect to ``url`` (``ws://`` or ``wss://``); close with 1000 on exit unless already closed.

    A connection that cannot be made — refused, or no answer within :data:`CONNECT_TIMEOUT` —
    raises ``TransportError`` naming the URL (never any credentials: callers keep tokens out of
    URLs).
    """
    opened = False
    log.debug("websocket connecting", url=url, timeout_s=CONNECT_TIMEOUT)
    try:
        # The deadline covers the whole open (TCP, TLS, upgrade) and is lifted once open.
        with trio.CancelScope(deadline=trio.current_time() + CONNECT_TIMEOUT) as connecting:
            async with trio_websocket.open_websocket_url(
                url,
                connect_timeout=CONNECT_TIMEOUT,
                disconnect_timeout=CLOSE_TIMEOUT,
                max_message_size=max_message_size,
                message_queue_size=message_queue_size,
            ) as connection:
                connecting.deadline = math.inf
                opened = True
                ws = WebSocket(connection)
                try:
                    yield ws
                finally:
                    await ws.aclose()
        if connecting.cancelled_caught and not opened:
            raise TransportError(
                f"could not connect to {url}: no answer within {CONNECT_TIMEOUT:g} s{_scheme_hint(url)}"
            )
    except trio_websocket.HandshakeError as exc:
        if opened:
            # Only DisconnectionTimeout can get here after a successful open: the peer
            # never answered our close. The stream is closed regardless.
            raise TransportError(f"websocket {url} did not close cleanly") from exc
        raise TransportError(f"could not connect to {url}: {_describe(exc)}{_scheme_hint(url)}") from exc
    except ValueError as exc:
        if opened:
            raise
        raise TransportError(f"invalid websocket URL {url!r}: {exc}") from exc


_LOOPBACK_PREFIXES = ("wss://127.", "wss://localhost", "wss://[::1]")


def _scheme_hint(url: str) -> str:
    """A TLS connect to a loopback server is almost always a local sandbox that speaks plain ws."""
    if not url.startswith(_LOOPBACK_PREFIXES):
        return ""
    return (
        " (a local sandbox serves plain ws://: set CLANK_DISCORD_VOICE_URL_SCHEME=ws, or clank sandbox --tls)"
    )


def _describe(exc: trio_websocket.HandshakeError) -> str:
    if isinstance(exc, trio_websocket.ConnectionTimeout):
        return "timed out"
    if isinstance(exc, trio_websocket.ConnectionRejected):
        return f"HTTP {exc.status_code}"
    cause = exc.__cause__ or exc.__context__
    return str(cause) if cause is not None else type(exc).__name__
