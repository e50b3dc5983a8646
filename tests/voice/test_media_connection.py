"""open_media_connection on its own against the sandbox voice server over real loopback sockets (WS +
UDP + DAVE). Resumes, rejoins and crashes on the fake network: test_media_leg_fakenet.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio

from clank.config import DiscordSettings, Settings
from clank.errors import AuthenticationFailed, ClankError
from clank.io.media_connection import open_media_connection
from clank.io.media_leg_params import MediaConnectionParams
from clank.sandbox.rtc.server import MediaServerConfig, open_media_server
from clank.wire.gateway_events import dave_group_id_for_voice

GUILD = "111"
CHANNEL = "222000000000000001"
USER = "333000000000000001"
SESSION = "f" * 32
SETTINGS = Settings(discord=DiscordSettings(voice_url_scheme="ws"))
pytestmark = pytest.mark.e2e


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


async def test_a_refused_token_is_a_classified_error_out_of_the_block() -> None:
    with trio.fail_after(20):
        async with open_media_server("voice", GUILD, int(CHANNEL), MediaServerConfig()) as server:
            server.grant(USER, SESSION)
            with pytest.raises(ClankError) as info:
                async with open_media_connection(params(server.endpoint, "not-the-token")):
                    pytest.fail("a refused identify must not reach the block")
    assert isinstance(info.value, AuthenticationFailed)  # 4004: the session must rejoin
