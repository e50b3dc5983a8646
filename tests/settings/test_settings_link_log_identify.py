"""Settings audit: ``link.public_url``, ``link.ttl_minutes``, ``log.format`` / ``log.level`` and
what ``discord.*`` puts in Identify.

The Identify keys go through the real reader (``clank.open_session`` → the gateway client) to a
one-shot gateway on loopback that records the Identify and refuses the token (4004).
"""

from __future__ import annotations

import io
import json
import logging
import socket
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import pytest
import structlog
import trio
from trio_websocket import WebSocketRequest, serve_websocket

import clank
from clank.config import ClientProperties, LinkSettings
from clank.control.link import LinkTransport, link_availability
from clank.control.share_http import open_share_listener
from clank.errors import AuthenticationFailed, ChannelUnavailable, TransportError
from clank.logging import configure_logging, get_logger
from clank.sandbox.app import open_sandbox

CLOSED_PORT = "http://127.0.0.1:9/api"  # nothing listens on the discard port: the channel check steps aside


# ----------------------------------------------------------------------------------- link.*


async def test_public_url_and_host_decide_where_links_point_and_the_listener_binds() -> None:
    assert not link_availability(LinkSettings(), sandbox_mode=False).available
    settings = LinkSettings(port=0, public_url="https://share.example.org/")
    assert link_availability(settings, sandbox_mode=False).available
    transport = LinkTransport(settings)
    with trio.fail_after(10):
        async with open_share_listener(transport, settings) as listener:
            assert listener.url == "https://share.example.org" != listener.bound_url
            session = transport.create("1001", requester_id=None, channel_id=None, now=0.0)
            assert session.url.startswith("https://share.example.org/share/")
        async with open_share_listener(transport, attrs.evolve(settings, public_url="")) as plain:
            assert plain.url == plain.bound_url and plain.url.startswith("http://127.0.0.1:")
        # link.host: where the share listener binds.
        async with open_share_listener(
            transport, attrs.evolve(settings, public_url="", host="127.0.0.2")
        ) as other:
            assert other.bound_url.startswith("http://127.0.0.2:")


@pytest.mark.parametrize(("ttl_minutes", "alive_after_90_s"), [(1, False), (5, True)])
def test_ttl_minutes_is_how_long_a_link_lives(ttl_minutes: int, alive_after_90_s: bool) -> None:
    transport = LinkTransport(LinkSettings(ttl_minutes=ttl_minutes), base_url="http://127.0.0.1:1")
    session = transport.create("1001", requester_id=None, channel_id=None, now=0.0)
    assert session.expires_in_minutes(0.0) == ttl_minutes
    expired = transport.expire(90.0)
    assert (session not in expired) is alive_after_90_s
    assert bool(transport.live()) is alive_after_90_s


# ----------------------------------------------------------------------------------- log.*


@contextmanager
def logging_restored() -> Iterator[None]:
    """Put structlog's and the root logger's configuration back afterwards (other tests' view)."""
    config = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        structlog.configure(**config)
        root.handlers[:], root.level = handlers, level


def _emit(env: dict[str, str]) -> str:
    """What clank's logging writes with ``log.*`` from ``env`` (read as ``clank run`` reads it)."""
    settings = clank.load_settings(environ=env)
    out = io.StringIO()
    configure_logging(settings.log.format, settings.log.level, stream=out)
    log = get_logger("clank.test")
    log.info("voice channel check skipped", error="ConnectError")
    log.error("gateway stopped", error="unreachable")
    return out.getvalue()


def test_log_format_and_level_shape_what_reaches_stderr() -> None:
    with logging_restored():
        as_json = _emit({"CLANK_LOG_FORMAT": "json", "CLANK_LOG_LEVEL": "info"})
        quiet = _emit({"CLANK_LOG_FORMAT": "console", "CLANK_LOG_LEVEL": "error"})
    records = [json.loads(line) for line in as_json.splitlines()]
    assert [r["event"] for r in records] == ["voice channel check skipped", "gateway stopped"]
    # console + error: readable lines (no JSON), and the info line is filtered out.
    lines = quiet.splitlines()
    assert len(lines) == 1 and "gateway stopped" in lines[0] and not lines[0].startswith("{"), quiet


# ----------------------------------------------------------------------------------- discord.*


async def _one_shot_gateway(
    seen: dict[str, Any], *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    async def handler(request: WebSocketRequest) -> None:
        seen["path"] = request.path
        ws = await request.accept()
        hello = json.dumps({"op": 10, "d": {"heartbeat_interval": 41250}, "s": None, "t": None}).encode()
        if "compress=zlib-stream" in request.path:
            deflate = zlib.compressobj()
            await ws.send_message(deflate.compress(hello) + deflate.flush(zlib.Z_SYNC_FLUSH))
        else:
            await ws.send_message(hello.decode())
        seen["identify"] = json.loads(await ws.get_message())
        await ws.aclose(4004, "Authentication failed.")

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        task_status.started(server.port)


@pytest.mark.parametrize("compress", [False, True])
async def test_token_properties_capabilities_and_compress_are_what_identify_sends(compress: bool) -> None:
    properties = ClientProperties(
        os="Linux", browser="Discord Web", device="pixel", system_locale="de-DE", release_channel="canary"
    )
    seen: dict[str, Any] = {}
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(_one_shot_gateway, seen)
            settings = clank.load_settings(environ={})
            discord = attrs.evolve(
                settings.discord,
                token="token-for-the-identify-test",
                api_url=CLOSED_PORT,
                gateway_url=f"ws://127.0.0.1:{port}/",
                guild_id="1",
                voice_channel_id="2",
                capabilities=4096 + 16,
                compress=compress,
                properties=properties,
                connect_attempts=1,
            )
            with pytest.raises(AuthenticationFailed):
                async with clank.open_session(attrs.evolve(settings, discord=discord)):
                    pytest.fail("a refused token opened a session")
            nursery.cancel_scope.cancel()
    identify = seen["identify"]
    assert identify["op"] == 2
    assert identify["d"]["token"] == "token-for-the-identify-test"
    assert identify["d"]["capabilities"] == 4096 + 16
    sent = identify["d"]["properties"]
    assert {k: sent[k] for k in attrs.asdict(properties)} == attrs.asdict(properties)
    assert ("compress=zlib-stream" in seen["path"]) is compress


@pytest.mark.parametrize("right_guild", [True, False])
async def test_guild_id_must_own_the_voice_channel(right_guild: bool) -> None:
    with trio.fail_after(30):
        async with open_sandbox(scenario="empty") as sb:
            settings = clank.load_settings(environ={})
            discord = attrs.evolve(
                settings.discord,
                token=sb.token,
                api_url=sb.api_url,
                gateway_url=sb.gateway_url,
                guild_id=sb.guild_id if right_guild else "123456789012345678",
                voice_channel_id=sb.voice_channel_id,
                voice_url_scheme="ws",
            )
            settings = attrs.evolve(
                settings, discord=discord, notes=attrs.evolve(settings.notes, enabled=False)
            )
            if right_guild:
                async with clank.open_session(settings) as service:
                    status = service.status()
                    assert status["inVoice"] and status["guildId"] == sb.guild_id
            else:
                with pytest.raises(ChannelUnavailable, match=r"discord\.guild_id"):
                    async with clank.open_session(settings):
                        pytest.fail("joined a channel of another guild")


@pytest.mark.parametrize("attempts", [1, 2])
async def test_connect_attempts_bounds_the_first_connection(attempts: int) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    settings = clank.load_settings(environ={})
    discord = attrs.evolve(
        settings.discord,
        token="token-for-the-attempts-test",
        api_url=CLOSED_PORT,
        gateway_url=f"ws://127.0.0.1:{closed}/",
        guild_id="1",
        voice_channel_id="2",
        connect_attempts=attempts,
    )
    with trio.fail_after(30), pytest.raises(TransportError, match=f"unreachable after {attempts} attempts"):
        async with clank.open_session(attrs.evolve(settings, discord=discord)):
            pytest.fail("an unreachable gateway opened a session")
