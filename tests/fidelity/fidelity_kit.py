"""Shared set-up of the strict-sandbox fidelity tests: small video, and a joined voice session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs
import trio

from clank.config import DiscordSettings, Settings, WatchSettings
from clank.io.gateway import GatewayClient, open_gateway_client
from clank.sandbox.app import Sandbox, open_sandbox
from clank.sandbox.rtc.streamer import VideoSettings
from clank.session.voice_session import VoiceSession, open_voice_session

SETTINGS = Settings(discord=DiscordSettings(voice_url_scheme="ws"))
WATCH = WatchSettings(max_fps=10.0, preferred_pixel_count=320 * 240, credentials_timeout_s=5.0)
SMALL = VideoSettings(codec="h264", width=320, height=240, bitrate=400_000, keyframe_interval=2.0)


async def wait_until(predicate: Callable[[], bool], step: float = 0.02) -> None:
    """Poll (the sandbox exposes state, not events); callers bound it with fail_after."""
    while True:
        if predicate():
            return
        await trio.sleep(step)


@asynccontextmanager
async def joined() -> AsyncIterator[tuple[Sandbox, GatewayClient, VoiceSession]]:
    async with open_sandbox() as sb:
        assert sb.media is not None
        sb.media.settings = attrs.evolve(sb.media.settings, screen=SMALL, webcam=SMALL)
        async with (
            open_gateway_client(url=sb.gateway_url, token=sb.token) as gateway,
            open_voice_session(
                gateway, guild_id=sb.guild_id, channel_id=sb.voice_channel_id, settings=SETTINGS
            ) as session,
        ):
            await session.voice.wait_ready()
            yield sb, gateway, session
