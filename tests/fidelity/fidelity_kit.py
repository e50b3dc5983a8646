"""Shared set-up of the strict-sandbox fidelity tests: small video, and a joined voice session.

``joined()`` runs on the fake network (``tests/fake_session.py``): the tests take ``autojump_clock``,
so the seconds they wait are virtual and encode/decode run inline (deterministic)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio
from fake_session import fake_session

from clank.config import DiscordSettings, Settings, WatchSettings
from clank.io.fakenet import FakeNet
from clank.sandbox.app import Sandbox
from clank.sandbox.rtc.streamer import VideoSettings
from clank.session.voice_session import VoiceSession

SETTINGS = Settings(discord=DiscordSettings(voice_url_scheme="ws"))
WATCH = WatchSettings(max_fps=10.0, preferred_pixel_count=160 * 120, credentials_timeout_s=5.0)
SMALL = VideoSettings(codec="h264", width=160, height=120, fps=15, bitrate=150_000, keyframe_interval=2.0)


async def wait_until(predicate: Callable[[], bool], step: float = 0.02) -> None:
    """Poll (the sandbox exposes state, not events); callers bound it with fail_after."""
    while True:
        if predicate():
            return
        await trio.sleep(step)


@asynccontextmanager
async def joined() -> AsyncIterator[tuple[Sandbox, FakeNet, VoiceSession]]:
    """The sandbox (small screen and webcam video) and our ready voice session, on the fake net."""
    async with fake_session(screen=SMALL, settings=SETTINGS) as (net, sb, session):
        yield sb, net, session
