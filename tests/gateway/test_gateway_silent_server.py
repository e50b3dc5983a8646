"""A server that accepts TCP but never answers the WebSocket upgrade: clank gives up in bounded
time with one clear error instead of hanging (the same wrapper serves the voice and stream legs)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from clank.errors import TransportError
from clank.io.gateway import open_gateway_client
from clank.io.websocket import CONNECT_TIMEOUT, open_websocket
from clank.protocol.backoff import BackoffPolicy


@pytest.fixture
def loopback_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.005)


@asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """Accepts connections, reads what comes and never writes a byte."""
    held: list[trio.SocketStream] = []

    async def handler(stream: trio.SocketStream) -> None:
        held.append(stream)
        while await stream.receive_some(4096):
            pass
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("scheme", ["ws", "wss"])
async def test_open_websocket_gives_up_on_a_silent_server(
    loopback_clock: trio.testing.MockClock, scheme: str
) -> None:
    async with silent_server() as port:
        start = trio.current_time()
        with trio.fail_after(CONNECT_TIMEOUT * 3), pytest.raises(TransportError) as caught:
            async with open_websocket(f"{scheme}://127.0.0.1:{port}/?v=8"):
                raise AssertionError("connected to a server that never answered")
        elapsed = trio.current_time() - start
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert CONNECT_TIMEOUT - 0.5 <= elapsed <= CONNECT_TIMEOUT + 1.0


async def test_gateway_on_a_silent_server_logs_each_attempt_and_stops(
    loopback_clock: trio.testing.MockClock,
) -> None:
    backoff = BackoffPolicy(initial=1.0, cap=2.0, multiplier=2.0, jitter=0.0)
    async with silent_server() as port:
        with (
            capture_logs() as logs,
            trio.fail_after(CONNECT_TIMEOUT * 5),
            pytest.raises(TransportError, match="unreachable after 2"),
        ):
            async with open_gateway_client(
                url=f"ws://127.0.0.1:{port}/",
                token="tok-silent",
                max_initial_attempts=2,
                backoff=backoff,
                rng=random.Random(1),
            ) as gw:
                await gw.wait_ready()
    events = [e for e in logs if str(e.get("event", "")).startswith("gateway")]
    assert [e["attempt"] for e in events if e["event"] == "gateway connecting"] == [0, 1]
    failures = [e for e in events if e["event"] == "gateway connect failed"]
    assert len(failures) == 2 and "no answer within" in failures[0]["error"]
