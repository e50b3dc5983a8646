"""discord.py joins a sandbox voice channel with DAVE and plays a tone; the sandbox and clank hear it.

discord.py hard-codes ``wss://{endpoint}/?v=8`` for voice, so the sandbox runs with ``tls=True`` and
discord.py trusts its throwaway CA through an aiohttp connector (``discord.Client(connector=...)``).
DAVE is davey on both ends: discord.py's own ``davey.DaveSession`` and our ``DaveSessionCore``
(in the simulated listener, or in clank's voice role), grouped by the sandbox's external sender.
discord.py only offers ``aead_xchacha20_poly1305_rtpsize``, so this also covers that transport mode.

The sandbox (trio) runs in the test; discord.py (asyncio) runs with ``asyncio.run`` on a worker thread
and, once its tone has played, reads what the trio side heard through ``trio.from_thread``. Every step
is bounded on both sides.
"""

from __future__ import annotations

import asyncio
import io
import ssl
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, Generic, TypeVar

import aiohttp
import attrs
import av
import discord
import numpy as np
import pytest
import trio
import yarl
from discord.gateway import DiscordWebSocket

from clank.config import Settings
from clank.io.gateway import open_gateway_client
from clank.media.audio import dominant_frequency
from clank.sandbox.app import Sandbox, open_sandbox
from clank.session.voice_role import UserAudio
from clank.session.voice_session import open_voice_session

TONE_HZ = 440.0
TONE_SECONDS = 1.5  # the checks want 1 s of it
STEP_TIMEOUT = 20.0
DISCORDPY_TIMEOUT = 60.0
SAMPLE_RATE = 48000
AV_LIBS = Path(av.__file__).resolve().parents[1] / "av.libs"  # the libopus PyAV bundles
DISCORDPY_MODE = "aead_xchacha20_poly1305_rtpsize"

T = TypeVar("T")


@attrs.frozen
class VoiceOutcome(Generic[T]):
    bot_user_id: int
    mode: str
    voice_privacy_code: str | None
    heard: T


@attrs.frozen
class ListenerHeard:
    samples: int
    frequency: float
    dave_ok: int
    privacy_code: str | None


@attrs.frozen
class ClankHeard:
    user_ids: frozenset[str]
    pcm: np.ndarray[Any, np.dtype[np.int16]] = attrs.field(eq=False)
    privacy_code: str | None


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
    """Restore discord.py's endpoints (class attributes) after the test points them at the sandbox."""
    saved = discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    try:
        yield
    finally:
        discord.http.Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved


async def _dave_established(vc: discord.VoiceClient) -> None:
    """discord.py has no event for it: poll its public privacy code (set once in the MLS group)."""
    while True:
        if vc.voice_privacy_code is not None:
            return
        await asyncio.sleep(0.05)


async def _play_tone(info: dict[str, Any], ca_file: str, listen: Callable[[int], T]) -> VoiceOutcome[T]:
    """discord.py: log in, join voice (DAVE), play the tone, ask the trio side what it heard, leave."""
    connector = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=ca_file))
    client = discord.Client(intents=discord.Intents.default(), connector=connector, guild_ready_timeout=0.2)
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
                # Play once the MLS group has welcomed us (before that discord.py sends passthrough).
                await asyncio.wait_for(_dave_established(vc), STEP_TIMEOUT)
                loop = asyncio.get_running_loop()
                finished = asyncio.Event()
                vc.play(
                    discord.PCMAudio(io.BytesIO(_tone_pcm(TONE_HZ, TONE_SECONDS))),
                    after=lambda _error: loop.call_soon_threadsafe(finished.set),
                )
                await asyncio.wait_for(finished.wait(), TONE_SECONDS + STEP_TIMEOUT)
                assert client.user is not None
                # Briefly blocks this loop (the player thread is done) while trio answers.
                heard = listen(client.user.id)
                return VoiceOutcome(client.user.id, vc.mode, vc.voice_privacy_code, heard)
            finally:
                await asyncio.wait_for(vc.disconnect(force=True), STEP_TIMEOUT)
        finally:
            await asyncio.wait_for(client.close(), STEP_TIMEOUT)
            await asyncio.wait_for(runner, STEP_TIMEOUT)


def _run_discordpy(info: dict[str, Any], ca_file: str, listen: Callable[[int], T]) -> VoiceOutcome[T]:
    """Worker thread: discord.py's own event loop, bounded as a whole."""
    discord.opus.load_opus(_libopus_path())
    discord.http.Route.BASE = f"{info['api_url']}/v10"
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(info["gateway_url"])
    return asyncio.run(asyncio.wait_for(_play_tone(info, ca_file, listen), DISCORDPY_TIMEOUT))


async def _discordpy_plays(sb: Sandbox, listen_in_trio: Callable[[int], T]) -> VoiceOutcome[T]:
    assert sb.ca_file is not None

    def listen(bot_id: int) -> T:
        return trio.from_thread.run_sync(listen_in_trio, bot_id)

    return await trio.to_thread.run_sync(partial(_run_discordpy, sb.info(), sb.ca_file, listen))


async def test_discordpy_plays_a_dave_encrypted_tone_that_a_simulated_listener_hears(
    discord_endpoints: None,
) -> None:
    with trio.fail_after(DISCORDPY_TIMEOUT + 15):
        async with open_sandbox(scenario="empty", tls=True) as sb:
            assert sb.media is not None
            alice = sb.world.user_by_name("alice")
            await sb.world.join_voice(alice.id, sb.voice_channel_id)
            listener = sb.media.listener(alice.id)

            def listen(bot_id: int) -> ListenerHeard:
                dave = listener.dave_session.statistics()
                return ListenerHeard(
                    samples=len(listener.received_pcm(bot_id)),
                    frequency=listener.heard_frequency(bot_id),
                    dave_ok=dave.decrypt_counters(bot_id, "audio").ok,
                    privacy_code=dave.voice_privacy_code,
                )

            outcome = await _discordpy_plays(sb, listen)

    assert outcome.bot_user_id == int(sb.bot_user_id)
    assert outcome.mode == DISCORDPY_MODE
    heard = outcome.heard
    assert heard.samples >= SAMPLE_RATE  # at least a second of the tone arrived
    assert abs(heard.frequency - TONE_HZ) < 10.0
    # End-to-end encrypted: the listener decrypted discord.py's frames with DAVE, in the same group.
    assert heard.dave_ok > 0
    assert outcome.voice_privacy_code is not None
    assert outcome.voice_privacy_code == heard.privacy_code


async def test_clank_receives_discordpy_audio_with_its_user_id(
    discord_endpoints: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    frames: list[UserAudio] = []
    with trio.fail_after(DISCORDPY_TIMEOUT + 30):
        async with open_sandbox(scenario="empty", tls=True) as sb:
            assert sb.ca_file is not None
            # clank keeps its production voice URL scheme (wss) and trusts the sandbox CA the
            # standard way: trio-websocket's default SSL context honours SSL_CERT_FILE.
            monkeypatch.setenv("SSL_CERT_FILE", sb.ca_file)
            async with (
                open_gateway_client(url=sb.gateway_url, token=sb.token) as gateway,
                open_voice_session(
                    gateway, guild_id=sb.guild_id, channel_id=sb.voice_channel_id, settings=Settings()
                ) as session,
            ):
                await session.voice.wait_ready()
                connection = session.voice.api.connection
                with session.voice.api.subscribe_audio(
                    None, rate=SAMPLE_RATE, channels=1, buffer=500
                ) as audio:

                    async def collect() -> None:
                        async for item in audio:
                            frames.append(item)

                    def listen(bot_id: int) -> ClankHeard:
                        received = [f for f in frames if not f.concealed]
                        return ClankHeard(
                            user_ids=frozenset(f.user_id for f in frames),
                            pcm=np.concatenate([f.pcm.reshape(-1) for f in received])
                            if received
                            else np.zeros(0, np.int16),
                            privacy_code=connection.dave.voice_privacy_code,
                        )

                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(collect)
                        outcome = await _discordpy_plays(sb, listen)
                        nursery.cancel_scope.cancel()

    heard = outcome.heard
    assert heard.user_ids == {sb.bot_user_id}  # every frame is attributed to discord.py's user
    assert len(heard.pcm) >= SAMPLE_RATE  # at least a second of the tone arrived
    assert abs(dominant_frequency(heard.pcm[-SAMPLE_RATE:], SAMPLE_RATE) - TONE_HZ) < 10.0
    assert outcome.voice_privacy_code is not None
    assert outcome.voice_privacy_code == heard.privacy_code
