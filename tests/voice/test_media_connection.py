"""open_media_connection on its own against the sandbox voice server (loopback WS + UDP + DAVE)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio

from clank.config import DiscordSettings, Settings
from clank.errors import AuthenticationFailed, ClankError
from clank.io.media_connection import (
    MediaConnectionParams,
    MediaEvent,
    TransportStateChanged,
    open_media_connection,
)
from clank.sandbox.rtc.server import MediaServerConfig, open_media_server
from clank.wire.gateway_events import dave_group_id_for_voice

GUILD = "111"
CHANNEL = "222000000000000001"
USER = "333000000000000001"
SESSION = "f" * 32
SETTINGS = Settings(discord=DiscordSettings(voice_url_scheme="ws"))


async def wait_until(predicate: Callable[[], bool], step: float = 0.02) -> None:
    while True:
        if predicate():
            return
        await trio.sleep(step)


def params(endpoint: str, token: str) -> MediaConnectionParams:
    return MediaConnectionParams(
        role="voice",
        endpoint=endpoint,
        server_id=GUILD,
        channel_id=CHANNEL,
        user_id=USER,
        session_id=SESSION,
        token=token,
        dave_group_id=dave_group_id_for_voice(CHANNEL),
        settings=SETTINGS,
        heartbeat_cap=0.3,
    )


async def test_missed_heartbeat_acks_resume_keeping_udp_and_keys() -> None:
    states: list[str] = []

    def on_event(event: MediaEvent) -> None:
        if isinstance(event, TransportStateChanged):
            states.append(event.state)

    with trio.fail_after(20):
        async with open_media_server("voice", GUILD, int(CHANNEL), MediaServerConfig()) as server:
            token = server.grant(USER, SESSION)
            async with open_media_connection(params(server.endpoint, token), event_handler=on_event) as conn:
                assert conn.state == "ready" and conn.ssrc is not None
                ssrc, udp = conn.ssrc, conn.udp_local_address
                assert repr(conn.params).find(token) == -1  # the token never shows in a repr
                server.stop_acking(int(USER))
                await wait_until(lambda: "reconnecting" in states)
                server.stop_acking(int(USER), on=False)
                await wait_until(lambda: conn.statistics().resumes >= 1 and conn.state == "ready")
                assert conn.ssrc == ssrc and conn.udp_local_address == udp
                await wait_until(lambda: conn.statistics().heartbeat_latency is not None)
                assert conn.statistics().dave.protocol_version == 1
            assert conn.statistics().state == "disconnected"
    assert states[:3] == ["ready", "reconnecting", "ready"]


async def test_a_refused_token_is_a_classified_error_out_of_the_block() -> None:
    with trio.fail_after(20):
        async with open_media_server("voice", GUILD, int(CHANNEL), MediaServerConfig()) as server:
            server.grant(USER, SESSION)
            with pytest.raises(ClankError) as info:
                async with open_media_connection(params(server.endpoint, "not-the-token")):
                    pytest.fail("a refused identify must not reach the block")
    assert isinstance(info.value, AuthenticationFailed)  # 4004: the session must rejoin
