"""Test kit for the publish path: a sandbox with clank in voice, test images, viewers.

``in_voice()`` runs on the fake network (``tests/fake_session.py``; tests take ``autojump_clock``,
encode/decode run inline, deterministic); ``in_voice_over_sockets()`` is the real-socket variant
for the end-to-end tests that also use the sandbox's REST API."""

from __future__ import annotations

import functools
import io
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import numpy as np
import PIL.Image
import trio
from fake_session import fake_session

from clank.config import DiscordSettings, PublishSettings, Settings
from clank.io.fakenet import FakeNet
from clank.io.gateway import GatewayClient, open_gateway_client
from clank.media.visualizer import write_wav
from clank.sandbox.app import Sandbox, open_sandbox
from clank.sandbox.rtc.viewer import StreamViewer
from clank.session.stream_publish import PublishHandle
from clank.session.voice_session import VoiceSession, open_voice_session

PUBLISH = PublishSettings(width=320, height=240, fps=30, max_bitrate=600_000, credentials_timeout_s=5.0)
SETTINGS = Settings(discord=DiscordSettings(voice_url_scheme="ws"), publish=PUBLISH)


def user_id(sb: Sandbox, name: str) -> str:
    return next(u.id for u in sb.world.users.values() if u.name == name)


@functools.lru_cache(maxsize=256)
def make_image(index: int, width: int = 320, height: int = 240, kind: str = "PNG") -> bytes:
    """A screen-like picture: a gradient background, a moving box and stripes (compressible)."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    rgb[..., 0] = (x * 255 // width).astype(np.uint8)
    rgb[..., 1] = (y * 255 // height).astype(np.uint8)
    rgb[..., 2] = 80
    left = (index * 23) % (width - 60)
    rgb[40:120, left : left + 60] = (250, 250, 30)
    rgb[160:170, ::8] = 0
    out = io.BytesIO()
    PIL.Image.fromarray(rgb).save(out, format=kind)
    return out.getvalue()


async def wait_until(predicate: Callable[[], bool], step: float = 0.02) -> None:
    """Poll ``predicate`` (callers bound the wait with ``trio.fail_after``)."""
    while True:
        if predicate():
            return
        await trio.sleep(step)


@asynccontextmanager
async def in_voice(seed: int = 0) -> AsyncIterator[tuple[Sandbox, FakeNet, VoiceSession]]:
    """The sandbox and our ready voice session on the fake network (320x240 simulated shares)."""
    async with fake_session(seed=seed, width=320, height=240, fps=30, bitrate=500_000, settings=SETTINGS) as (
        net,
        sb,
        session,
    ):
        yield sb, net, session


@asynccontextmanager
async def in_voice_over_sockets(seed: int = 0) -> AsyncIterator[tuple[Sandbox, GatewayClient, VoiceSession]]:
    async with (
        open_sandbox(seed=seed) as sb,
        open_gateway_client(url=sb.gateway_url, token=sb.token) as gateway,
        open_voice_session(
            gateway, guild_id=sb.guild_id, channel_id=sb.voice_channel_id, settings=SETTINGS
        ) as session,
    ):
        await session.voice.wait_ready()
        yield sb, gateway, session


async def add_viewer(sb: Sandbox, handle: PublishHandle, name: str = "bob") -> StreamViewer:
    assert sb.media is not None and handle.stream_key is not None
    viewer_id = user_id(sb, name)
    await sb.world.join_voice(viewer_id, sb.voice_channel_id)
    return await sb.media.start_viewer(viewer_id, str(handle.stream_key), reference=handle.source_frame)


def write_music(path: str, seconds: float = 3.0) -> str:
    """A WAV of tones that change every half second (something for a visualizer to draw)."""
    rate = 48000
    t = np.arange(int(seconds * rate)) / rate
    freqs = np.array([220, 330, 440, 550, 660, 880])[(t * 2).astype(int) % 6]
    return write_wav(path, (np.sin(2 * np.pi * freqs * t) * 0.4 * 32767).astype(np.int16), rate)


def write_video(path: str, seconds: float = 2.0, fps: int = 30) -> str:
    """An MP4 (H264 + AAC) of a moving box over a gradient, with a tone."""
    import av

    with av.open(path, "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        audio = out.add_stream("aac", rate=48000)
        audio.layout = "stereo"
        for index in range(int(seconds * fps)):
            rgb = np.asarray(PIL.Image.open(io.BytesIO(make_image(index))).convert("RGB"))
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode(None):
            out.mux(packet)
        rate = 48000
        samples = np.sin(2 * np.pi * 440 * np.arange(int(seconds * rate)) / rate).astype(np.float32) * 0.3
        for start in range(0, len(samples), 1024):
            chunk = samples[start : start + 1024]
            if len(chunk) < 1024:
                break
            frame = av.AudioFrame.from_ndarray(np.stack([chunk, chunk]), format="fltp", layout="stereo")
            frame.sample_rate = rate
            frame.pts = start
            for packet in audio.encode(frame):
                out.mux(packet)
        for packet in audio.encode(None):
            out.mux(packet)
    return path
