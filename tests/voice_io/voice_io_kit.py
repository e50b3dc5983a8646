"""Shared parts of the voice I/O tests: clank running on the sandbox, an API client, signal maths."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import numpy as np
import numpy.typing as npt
import trio

from clank.config import load_settings
from clank.control.voice_api import VoiceApi
from clank.runner import RunInfo, open_clank
from clank.sandbox.rtc.streamer import VideoSettings

FRAME = 960
SMALL_SCREEN = VideoSettings(width=160, height=120, fps=15, bitrate=150_000, keyframe_interval=2.0)


@attrs.define
class Running:
    info: RunInfo
    client: httpx.AsyncClient

    @property
    def sandbox(self) -> Any:
        return self.info.sandbox

    @property
    def token(self) -> str:
        return self.info.api.token

    @property
    def ws_url(self) -> str:
        return self.info.api.url.replace("http://", "ws://")

    @property
    def ours(self) -> int:
        return int(self.info.user_id)

    def user(self, name: str) -> str:
        return str(self.sandbox.world.user_by_name(name).id)

    async def join(self, name: str, channel: str | None = None) -> str:
        uid = self.user(name)
        await self.sandbox.world.join_voice(uid, channel or self.info.channel_id)
        return uid

    async def go_live(self, name: str) -> str:
        """``name`` joins our channel and goes live with a small screen (160x120, 15 fps): under
        the virtual clock every frame is really encoded and decoded (the "streamer" scenario's
        default 720p would cost seconds of CPU)."""
        media = self.sandbox.media
        media.settings = attrs.evolve(media.settings, screen=SMALL_SCREEN)
        uid = await self.join(name)
        await self.sandbox.world.go_live(uid)
        return uid

    def listener(self, uid: str) -> Any:
        return self.sandbox.media.listener(uid)

    @property
    def voice(self) -> VoiceApi:
        service = self.info.service
        assert service is not None and service.voice is not None
        return service.voice

    async def dave_ready(self) -> None:
        def ready() -> bool:
            role = self.voice._role()
            return role is not None and role.ssrc is not None and role.connection.dave.ready

        await wait_until(ready)


@asynccontextmanager
async def running(scenario: str = "empty") -> AsyncIterator[Running]:
    settings = load_settings(environ={})
    # No screen notes: these tests are about voice, and OCR notes cost seconds of CPU per watch.
    settings = attrs.evolve(settings, notes=attrs.evolve(settings.notes, enabled=False))
    async with open_clank(settings, scenario=scenario, api_port=0, demo_watch=False) as info:
        headers = {"Authorization": f"Bearer {info.api.token}"}
        async with httpx.AsyncClient(base_url=info.api.url, headers=headers, timeout=30) as client:
            yield Running(info, client)


async def wait_until(predicate: Callable[[], bool], step: float = 0.01) -> None:
    while not predicate():  # noqa: ASYNC110 - the sandbox exposes state, not events
        await trio.sleep(step)


def amplitude_at(pcm: npt.NDArray[Any], frequency: float, rate: int = 48_000) -> float:
    """Amplitude of the ``frequency`` component of mono ``pcm`` (projection on sin/cos)."""
    x = np.asarray(pcm, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if len(x) == 0:
        return 0.0
    t = np.arange(len(x)) / rate
    c = float(np.dot(x, np.cos(2 * np.pi * frequency * t)))
    s = float(np.dot(x, np.sin(2 * np.pi * frequency * t)))
    return 2 * float(np.hypot(c, s)) / len(x)


def frame_rms(pcm: npt.NDArray[Any], frame: int = FRAME) -> npt.NDArray[np.float64]:
    x = np.asarray(pcm, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=1)
    n = len(x) // frame
    blocks = x[: n * frame].reshape(n, frame)
    return np.sqrt((blocks**2).mean(axis=1))
