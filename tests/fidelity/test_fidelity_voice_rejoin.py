"""Voice closes 4001/4002/4003/4005/4020 rejoin through op4 for a fresh token and server (issue 15, item 11).

The whole session on the fake network under ``autojump_clock``: our gateway client and voice
session against the strict sandbox (main gateway, voice server, real davey). Before the fix the
voice leg re-identified on the same endpoint with the credentials the server had just refused
(``rejoins == 0``, a fresh identify counted in the leg's ``reconnects``); now the voice role ends
and the session sends op4 (leave, join) and connects with the new VOICE_SERVER_UPDATE.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from clank.config import DiscordSettings, Settings
from clank.io.fakenet import open_fake_net
from clank.io.gateway import open_gateway_client
from clank.sandbox.app import Sandbox, open_sandbox
from clank.sandbox.rtc.backend import RtcMediaBackend
from clank.session.roles import RoleState
from clank.session.voice_session import VoiceSession, open_voice_session

SETTINGS = Settings(discord=DiscordSettings(voice_url_scheme="ws"))
pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


async def wait_until(predicate: Callable[[], bool], step: float = 0.05) -> None:
    while True:
        if predicate():
            return
        await trio.sleep(step)


def media(sb: Sandbox) -> RtcMediaBackend:
    assert isinstance(sb.media, RtcMediaBackend)
    return sb.media


@asynccontextmanager
async def fake_session() -> AsyncIterator[tuple[Sandbox, VoiceSession]]:
    async with (
        open_fake_net() as net,
        open_sandbox(net=net) as sb,
        open_gateway_client(url=sb.gateway_url, token=sb.token, connect=net.open_websocket) as gateway,
        open_voice_session(
            gateway,
            guild_id=sb.guild_id,
            channel_id=sb.voice_channel_id,
            settings=SETTINGS,
            transports=net.media_transports(),
        ) as session,
    ):
        await session.voice.wait_ready()
        yield sb, session


@pytest.mark.parametrize("code", [4001, 4002, 4003, 4005, 4020])
async def test_a_refused_request_close_rejoins_through_op4(
    code: int, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(600):  # virtual time
        async with fake_session() as (sb, session):
            first = session.voice
            joins = session.statistics().joins
            media(sb).faults.close(sb.our_user_id, code)
            await wait_until(lambda: session.voice is not first)
            await session.voice.wait_ready()
            stats = session.statistics()
            assert stats.rejoins == 1 and stats.joins == joins + 1  # op4 null, then op4 with the channel
            assert first.state is RoleState.FAILED and first.close_code == code
            connection = first.api.statistics().connection
            assert connection is not None and connection.reconnects == 0  # no identify with the old token
            assert session.voice.state is RoleState.READY
