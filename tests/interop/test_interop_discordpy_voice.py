"""discord.py joins a sandbox voice channel with DAVE and plays a tone that a simulated listener hears.

discord.py hard-codes ``wss://{endpoint}/?v=8`` for voice, so the sandbox runs with ``tls=True`` and
discord.py trusts its throwaway CA through an aiohttp connector (``discord.Client(connector=...)``).
DAVE is davey on both ends: discord.py's own ``davey.DaveSession`` and the simulated listener's
``DaveSessionCore``, grouped by the sandbox's external sender.

The sandbox (trio) runs in the test; discord.py (asyncio) runs with ``asyncio.run`` on a worker thread
and reports back through ``trio.from_thread``. Every step is bounded on both sides.
"""

from __future__ import annotations

import asyncio
import io
import ssl
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import av
import attrs
import discord
import numpy as np
import pytest
import trio
import yarl
from discord.gateway import DiscordWebSocket

from clank.sandbox.app import Sandbox, open_sandbox

TONE_HZ = 440.0
TONE_SECONDS = 3.0
STEP_TIMEOUT = 20.0
DISCORDPY_TIMEOUT = 60.0
SAMPLE_RATE = 48000
AV_LIBS = Path(av.__file__).resolve().parents[1] / "av.libs"  # the libopus PyAV bundles


@attrs.frozen
class Heard:
    samples: int
    frequency: float
    dave_ok: int
    listener_privacy_code: str | None


@attrs.frozen
class VoiceOutcome:
    bot_user_id: int
    voice_privacy_code: str | None
    heard: Heard


def _libopus_path() -> str:
    found = sorted(AV_LIBS.glob("libopus*.so*"))
    if not found:
        pytest.skip(f"no libopus bundled with PyAV in {AV_LIBS}")
    return str(found[0])


def _tone_pcm(frequency: float, seconds: float) -> bytes:
    """16-bit little-endian stereo 48 kHz, what ``discord.PCMAudio`` reads."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    mono = (np.sin(2 * np.pi * frequency * t) * 12000).astype("<i2")
    return np.repeat(mono, 2).tobytes()


@pytest.fixture
def discord_endpoints() -> Iterator[None]:
    saved = discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    try:
        yield
    finally:
        discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved


async def _play_tone(
    info: dict[str, Any], ca_file: str, listen: Callable[[int], Heard]
) -> VoiceOutcome:
    """discord.py: log in, join voice (DAVE), play the tone, ask the sandbox what it heard, leave."""
    connector = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=ca_file))
    client = discord.Client(
        intents=discord.Intents.default(), connector=connector, guild_ready_timeout=0.2
    )
    ready = asyncio.Event()

    @client.event
    async def on_ready() -> None:
        ready.set()

    async with client:
        await asyncio.wait_for(client.login(info["bot_token"]), STEP_TIMEOUT)
        runner = asyncio.create_task(client.connect(reconnect=False))
        try:
            await asyncio.wait_for(ready.wait(), STEP_TIMEOUT)
            channel = client.get_channel(int(info["voice_channel_id"]))
            assert isinstance(channel, discord.VoiceChannel)
            vc = await channel.connect(timeout=STEP_TIMEOUT, reconnect=False)
            try:
                # DAVE is negotiated once the MLS group includes us (the listener is already in).
                loop = asyncio.get_running_loop()
                deadline = loop.time() + STEP_TIMEOUT
                while vc.voice_privacy_code is None and loop.time() < deadline:
                    await asyncio.sleep(0.05)
                finished = asyncio.Event()
                vc.play(
                    discord.PCMAudio(io.BytesIO(_tone_pcm(TONE_HZ, TONE_SECONDS))),
                    after=lambda _error: loop.call_soon_threadsafe(finished.set),
                )
                await asyncio.wait_for(finished.wait(), TONE_SECONDS + STEP_TIMEOUT)
                assert client.user is not None
                # Briefly blocks this loop (the player thread is done) to read the listener.
                heard = listen(client.user.id)
                return VoiceOutcome(client.user.id, vc.voice_privacy_code, heard)
            finally:
                await asyncio.wait_for(vc.disconnect(force=True), STEP_TIMEOUT)
        finally:
            await asyncio.wait_for(client.close(), STEP_TIMEOUT)
            await asyncio.wait_for(runner, STEP_TIMEOUT)


def _run_discordpy(info: dict[str, Any], ca_file: str, listen: Callable[[int], Heard]) -> VoiceOutcome:
    """Worker thread: discord.py's own event loop, bounded as a whole."""
    discord.opus.load_opus(_libopus_path())
    discord.http.Route.BASE = f"{info['api_url']}/v10"
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(info["gateway_url"])
    return asyncio.run(asyncio.wait_for(_play_tone(info, ca_file, listen), DISCORDPY_TIMEOUT))


def _listener_report(sb: Sandbox, listener_id: str, bot_id: int) -> Heard:
    assert sb.media is not None
    member = sb.media.listener(listener_id)
    dave = member.dave_session.statistics()
    return Heard(
        samples=len(member.received_pcm(bot_id)),
        frequency=member.heard_frequency(bot_id),
        dave_ok=dave.decrypt_counters(bot_id, "audio").ok,
        listener_privacy_code=dave.voice_privacy_code,
    )


async def test_discordpy_plays_a_dave_encrypted_tone_that_a_simulated_listener_hears(
    discord_endpoints: None,
) -> None:
    with trio.fail_after(DISCORDPY_TIMEOUT + 15):
        async with open_sandbox(scenario="empty", tls=True) as sb:
            assert sb.ca_file is not None and sb.media is not None
            alice = sb.world.user_by_name("alice")
            await sb.world.join_voice(alice.id, sb.voice_channel_id)

            def listen(bot_id: int) -> Heard:
                return trio.from_thread.run_sync(_listener_report, sb, alice.id, bot_id)

            outcome = await trio.to_thread.run_sync(
                partial(_run_discordpy, sb.info(), sb.ca_file, listen)
            )

    print(outcome)
    assert outcome.bot_user_id == int(sb.bot_user_id)
    heard = outcome.heard
    assert heard.samples >= SAMPLE_RATE  # at least a second of the tone arrived
    assert abs(heard.frequency - TONE_HZ) < 10.0
    # End-to-end encrypted: the listener decrypted discord.py's frames with DAVE, in the same group.
    assert heard.dave_ok > 0
    assert outcome.voice_privacy_code is not None
    assert outcome.voice_privacy_code == heard.listener_privacy_code
