"""The whole voice session on the fake network (``clank.io.fakenet``), for tests under ``autojump_clock``.

Our gateway client, voice session and media legs against the sandbox (main gateway, voice and
stream servers, simulated members, real davey, real PyAV) with no sockets and virtual time.
Under the virtual clock encode and decode run inline on the trio thread (``clank.io.offload``),
so a test is deterministic however loaded the machine is. Import as ``from fake_session import
...`` (``tests/`` is on ``sys.path`` through its conftest).

    async def test_x(autojump_clock: trio.testing.MockClock) -> None:
        async with fake_session() as (net, sb, session):
            alice = await go_live(sb, "alice")
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs
import trio

from clank.config import DiscordSettings, Settings
from clank.io.fakenet import FakeNet, open_fake_net
from clank.io.gateway import open_gateway_client
from clank.media.decoder import VideoCodec
from clank.sandbox.app import Sandbox, open_sandbox
from clank.sandbox.fidelity import STRICT, FidelityRules
from clank.sandbox.rtc.backend import RtcMediaBackend
from clank.sandbox.rtc.streamer import VideoSettings
from clank.session.voice_session import VoiceSession, open_voice_session

SETTINGS = Settings(discord=DiscordSettings(voice_url_scheme="ws"))


def media(sb: Sandbox) -> RtcMediaBackend:
    assert isinstance(sb.media, RtcMediaBackend)
    return sb.media


def user_id(sb: Sandbox, name: str) -> str:
    return next(u.id for u in sb.world.users.values() if u.name == name)


async def wait_until(predicate: Callable[[], bool], step: float = 0.05) -> None:
    """Poll (the sandbox exposes state, not events); virtual time, so the step costs nothing."""
    while not predicate():  # noqa: ASYNC110 - the sandbox exposes state, not events
        await trio.sleep(step)


@asynccontextmanager
async def fake_session(
    *,
    codec: VideoCodec = "h264",
    width: int = 160,
    height: int = 120,
    fps: int = 5,
    bitrate: int = 100_000,
    screen: VideoSettings | None = None,
    settings: Settings = SETTINGS,
    seed: int = 0,
    fidelity: FidelityRules = STRICT,
    dave_protocol_version: int = 1,
) -> AsyncIterator[tuple[FakeNet, Sandbox, VoiceSession]]:
    """A joined, ready voice session; simulated screen shares use ``screen`` (else the small video
    the other arguments describe: every virtual frame is still really encoded and decoded)."""
    async with (
        open_fake_net() as net,
        open_sandbox(
            net=net, seed=seed, fidelity=fidelity, dave_protocol_version=dave_protocol_version
        ) as sb,
    ):
        if screen is None:
            screen = VideoSettings(
                codec=codec, width=width, height=height, fps=fps, bitrate=bitrate, keyframe_interval=2.0
            )
        media(sb).settings = attrs.evolve(media(sb).settings, screen=screen, webcam=screen)
        async with (
            open_gateway_client(url=sb.gateway_url, token=sb.token, connect=net.open_websocket) as gateway,
            open_voice_session(
                gateway,
                guild_id=sb.guild_id,
                channel_id=sb.voice_channel_id,
                settings=settings,
                transports=net.media_transports(),
            ) as session,
        ):
            await session.voice.wait_ready()
            yield net, sb, session


async def go_live(sb: Sandbox, name: str) -> str:
    owner = user_id(sb, name)
    await sb.world.join_voice(owner, sb.voice_channel_id)
    await sb.world.go_live(owner)
    return owner
