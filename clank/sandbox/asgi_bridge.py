"""Serve the sandbox's ASGI websocket endpoint (the main gateway) on the in-memory fake network.

``open_sandbox(net=...)`` runs the same :class:`~clank.sandbox.gateway.GatewayServer` it runs under
hypercorn, but over :class:`clank.io.fakenet.FakeNet`: each trio-websocket connection is wrapped as a
Starlette ``WebSocket`` (an ASGI scope plus ``receive``/``send``), so tests of the whole session run
under ``autojump_clock`` with no sockets. REST is not served there (the session does not use it).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio
import trio_websocket
from starlette.websockets import WebSocket

__all__ = ["asgi_websocket_handler"]

Endpoint = Callable[[WebSocket], Awaitable[None]]


def asgi_websocket_handler(
    endpoint: Endpoint, host: str
) -> Callable[[trio_websocket.WebSocketRequest], Awaitable[None]]:
    """A trio-websocket handler that hands each connection to the ASGI ``endpoint``."""

    async def handle(request: trio_websocket.WebSocketRequest) -> None:
        path, _, query = request.path.partition("?")
        ws = await request.accept()
        scope: dict[str, Any] = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "scheme": "ws",
            "path": urllib.parse.unquote(path) or "/",
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": query.encode(),
            "headers": [],
            "server": (host, 0),
            "client": ("127.0.0.1", 0),
            "subprotocols": [],
        }
        connected = False

        async def receive() -> dict[str, Any]:
            nonlocal connected
            if not connected:
                connected = True
                return {"type": "websocket.connect"}
            try:
                message = await ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                code = 1006 if exc.reason is None else int(exc.reason.code)
                return {"type": "websocket.disconnect", "code": code}
            if isinstance(message, str):
                return {"type": "websocket.receive", "text": message}
            return {"type": "websocket.receive", "bytes": message}

        async def send(message: MutableMapping[str, Any]) -> None:
            kind = message["type"]
            try:
                if kind == "websocket.send":
                    text = message.get("text")
                    await ws.send_message(text if text is not None else message.get("bytes") or b"")
                elif kind == "websocket.close":
                    await ws.aclose(message.get("code", 1000), message.get("reason") or None)
            except trio_websocket.ConnectionClosed:
                pass  # like an ASGI server: sends after the peer left are dropped

        try:
            await endpoint(WebSocket(scope, receive, send))
        finally:
            with trio.move_on_after(1.0, shield=True):
                await ws.aclose()

    return handle
