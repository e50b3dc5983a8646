"""A standard Discord client library (discord.py) logs in to the sandbox and sees the guild.

discord.py is configured the way any user of the library points it elsewhere: its REST base
(``discord.http.Route.BASE``) is set to the sandbox's ``api_url``. ``discord.AutoShardedClient``
asks the sandbox's ``/gateway/bot`` for the gateway URL and shard count; the plain ``discord.Client``
(2.7) always dials ``DiscordWebSocket.DEFAULT_GATEWAY``, so that is pointed at the sandbox's
``gateway_url``. The sandbox runs in its own process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import discord
import pytest
import yarl
from cryptography import x509
from discord.gateway import DiscordWebSocket

STEP_TIMEOUT = 15.0


@pytest.fixture(scope="module")
def sandbox_info(sandbox_process: Any) -> dict[str, Any]:
    """One ``clank sandbox --tls`` for this module (login does not depend on the voice TLS)."""
    info: dict[str, Any] = sandbox_process.start("--scenario", "empty", "--tls")
    return info


@pytest.fixture
def discord_endpoints() -> Iterator[None]:
    """Restore discord.py's endpoints (class attributes) after the test points them at the sandbox."""
    saved = discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    try:
        yield
    finally:
        discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved


def point_discordpy_at(info: dict[str, Any]) -> None:
    discord.http.Route.BASE = f"{info['api_url']}/v10"
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(info["gateway_url"])


CLIENT_KINDS = {"client": discord.Client, "auto_sharded": discord.AutoShardedClient}


async def _observe_login(info: dict[str, Any], kind: str) -> dict[str, Any]:
    client = CLIENT_KINDS[kind](intents=discord.Intents.default(), guild_ready_timeout=0.2)
    ready = asyncio.Event()
    client.event(_setter(ready, "on_ready"))
    async with client:
        await asyncio.wait_for(client.login(info["bot_token"]), STEP_TIMEOUT)
        runner = asyncio.create_task(client.connect(reconnect=False))
        try:
            await asyncio.wait_for(ready.wait(), STEP_TIMEOUT)
            guild = client.get_guild(int(info["guild_id"]))
            assert client.user is not None
            seen: dict[str, Any] = {
                "me": (client.user.id, client.user.bot),
                "guild_ids": [g.id for g in client.guilds],
                "voice_channel_ids": [c.id for c in guild.voice_channels] if guild else [],
                "text_channel_ids": [c.id for c in guild.text_channels] if guild else [],
            }
            text = client.get_channel(int(info["text_channel_id"]))
            assert isinstance(text, discord.TextChannel)
            sent = await asyncio.wait_for(text.send(f"hello from {kind}"), STEP_TIMEOUT)
            history = [m async for m in text.history(limit=5)]
            seen["posted"] = (sent.author.id, sent.content)
            seen["history"] = [(m.id, m.content) for m in history]
            seen["sent_id"] = sent.id
        finally:
            await asyncio.wait_for(client.close(), STEP_TIMEOUT)
            await asyncio.wait_for(runner, STEP_TIMEOUT)
    return seen


def _setter(event: asyncio.Event, name: str) -> Any:
    async def handler() -> None:
        event.set()

    handler.__name__ = name
    return handler


@pytest.mark.parametrize("kind", sorted(CLIENT_KINDS))
def test_discordpy_bot_logs_in_and_sees_guild_and_channels(
    sandbox_info: dict[str, Any], discord_endpoints: None, kind: str
) -> None:
    info = sandbox_info
    bot = next(u for u in info["users"] if u["name"] == "clankbot")
    point_discordpy_at(info)
    if kind == "auto_sharded":
        # Prove the URL really comes from /gateway/bot: the default would dial nowhere.
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL("ws://127.0.0.1:9/")

    seen = asyncio.run(asyncio.wait_for(_observe_login(info, kind), 4 * STEP_TIMEOUT))

    assert seen["me"] == (int(bot["id"]), True)
    assert seen["guild_ids"] == [int(info["guild_id"])]
    assert int(info["voice_channel_id"]) in seen["voice_channel_ids"]
    assert int(info["text_channel_id"]) in seen["text_channel_ids"]
    assert seen["posted"] == (int(bot["id"]), f"hello from {kind}")
    assert (seen["sent_id"], f"hello from {kind}") in seen["history"]


def test_sandbox_tls_flag_prints_a_ca_file_that_signs_the_voice_servers(sandbox_info: dict[str, Any]) -> None:
    ca = x509.load_pem_x509_certificate(Path(sandbox_info["ca_file"]).read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
