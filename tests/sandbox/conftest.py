"""Helpers for sandbox tests: a minimal raw gateway client over trio-websocket (not the product client)."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream

from clank.wire.gateway import ZlibStreamInflater


class RawGateway:
    """Reads and writes gateway frames as plain dicts; remembers the last ``s``."""

    def __init__(self, ws: WebSocketConnection, compressed: bool) -> None:
        self.ws = ws
        self.inflater = ZlibStreamInflater() if compressed else None
        self.seq: int | None = None
        self.binary_frames = 0

    async def recv(self) -> dict[str, Any]:
        while True:
            message = await self.ws.get_message()
            if isinstance(message, bytes):
                self.binary_frames += 1
                assert self.inflater is not None, "binary frame on an uncompressed connection"
                text = self.inflater.feed(message)
                if text is None:
                    continue
            else:
                text = message
            frame: dict[str, Any] = json.loads(text)
            if frame.get("s") is not None:
                self.seq = frame["s"]
            return frame

    async def send(self, op: int, d: Any) -> None:
        await self.ws.send_message(json.dumps({"op": op, "d": d}))

    async def recv_until(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Frames up to and including the first matching one."""
        frames = []
        while True:
            frame = await self.recv()
            frames.append(frame)
            if predicate(frame):
                return frames

    async def recv_dispatch(self, event: str) -> dict[str, Any]:
        frames = await self.recv_until(lambda f: f.get("t") == event)
        return frames[-1]["d"]  # type: ignore[no-any-return]

    async def hello(self) -> dict[str, Any]:
        frame = await self.recv()
        assert frame["op"] == 10, frame
        return frame["d"]  # type: ignore[no-any-return]

    async def identify(self, token: str, capabilities: int = 0) -> list[dict[str, Any]]:
        """hello -> identify -> the login burst: a bot's ends with GUILD_CREATE (one guild in the
        sandbox); a user's is READY (guilds inline) and READY_SUPPLEMENTAL when bit 5 was sent."""
        await self.hello()
        await self.send(2, {"token": token, "capabilities": capabilities, "properties": {"os": "Linux"}})
        frames = await self.recv_until(lambda f: f.get("t") == "READY")
        if frames[-1]["d"]["user"].get("bot"):
            return frames + await self.recv_until(lambda f: f.get("t") == "GUILD_CREATE")
        if capabilities & (1 << 5):
            return frames + await self.recv_until(lambda f: f.get("t") == "READY_SUPPLEMENTAL")
        return frames

    async def expect_close(self) -> int | None:
        """Read until the server closes; return its close code."""
        try:
            while True:
                await self.ws.get_message()
        except ConnectionClosed as exc:
            return exc.reason.code


@asynccontextmanager
async def connect_gateway(url: str, *, compress: bool = False, version: int = 9) -> AsyncIterator[RawGateway]:
    """Connect to ``url`` (``ws://host:port/``).

    We own the TCP stream ourselves: trio-websocket 0.12's client does not close its socket when
    the *server* closes first (ResourceWarning), so the stream is closed here explicitly.
    """
    parsed = urllib.parse.urlsplit(url)
    assert parsed.hostname is not None and parsed.port is not None
    resource = (
        (parsed.path or "/") + f"?v={version}&encoding=json" + ("&compress=zlib-stream" if compress else "")
    )
    async with trio.open_nursery() as nursery:
        stream = await trio.open_tcp_stream(parsed.hostname, parsed.port)
        try:
            ws = await wrap_client_stream(nursery, stream, parsed.hostname, resource)
            try:
                yield RawGateway(ws, compress)
            finally:
                with trio.move_on_after(2, shield=True):
                    await ws.aclose()
        finally:
            await stream.aclose()


@pytest.fixture
def gateway_connect() -> Callable[..., Any]:
    return connect_gateway


@pytest.fixture
def time_limit() -> float:
    return 10.0


def dispatches(frames: list[dict[str, Any]]) -> list[str]:
    return [f["t"] for f in frames if f["op"] == 0]


@pytest.fixture
def dispatch_names() -> Callable[[list[dict[str, Any]]], list[str]]:
    return dispatches


__all__ = ["RawGateway", "connect_gateway", "trio"]
