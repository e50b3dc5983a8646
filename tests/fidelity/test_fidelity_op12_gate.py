"""Nothing is forwarded to a client before its op12 (strict ``media_after_own_op12``).

Fake network + autojump clock, our media connection against a sandbox voice server with a
simulated speaker. A connection that sends no op12 (the voice leg before issue 15) gets no
media at all; its inactive op12 opens the flow. The voice role sends that op12 after op4, so a
whole voice session hears speakers (tests/fidelity/test_fidelity_op5_order.py and others).
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from fake_session import wait_until

from clank.config import DiscordSettings, Settings
from clank.io.fakenet import open_fake_net
from clank.io.media_connection import open_media_connection
from clank.io.media_leg_params import MediaConnectionParams
from clank.sandbox.rtc.server import MediaServerConfig, open_media_server
from clank.sandbox.rtc.users import open_simulated_member
from clank.wire.gateway_events import dave_group_id_for_voice

GUILD, CHANNEL, USER, SESSION = "111", "222000000000000001", "333000000000000001", "f" * 32
ALICE = 1001
SETTINGS = Settings(discord=DiscordSettings(voice_url_scheme="ws"))
pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


async def test_no_media_reaches_a_client_before_its_op12(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(120):
        async with open_fake_net() as net:
            config = MediaServerConfig(net=net)
            async with (
                open_media_server("voice", GUILD, int(CHANNEL), config) as server,
                open_simulated_member(server, ALICE, signal="tone", talking=True) as (alice, _speaker),
            ):
                await wait_until(lambda: alice.joined)
                params = MediaConnectionParams(
                    role="voice",
                    endpoint=server.endpoint,
                    server_id=GUILD,
                    channel_id=CHANNEL,
                    user_id=USER,
                    session_id=SESSION,
                    token=server.grant(USER, SESSION),
                    dave_group_id=dave_group_id_for_voice(CHANNEL),
                    settings=SETTINGS,
                    transports=net.media_transports(),
                )
                async with open_media_connection(params) as conn:
                    await wait_until(lambda: conn.dave.ready)
                    await trio.sleep(2.0)  # alice talks all along
                    assert conn.statistics().packets_in == 0
                    assert server.statistics().sfu.dropped.get("before_op12", 0) >= 50
                    await conn.video_state(False)  # what the voice role sends after op4
                    await wait_until(lambda: conn.statistics().packets_in >= 50)
