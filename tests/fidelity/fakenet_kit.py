"""Fake-network set-up for the strict-sandbox media-plane tests (virtual time, no sockets).

Our gateway client + voice session against the sandbox on ``clank.io.fakenet`` under
``autojump_clock``; small, slow video so every virtual frame is still really encoded and decoded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import numpy as np
import simplejpeg
from fake_session import fake_session as shared_fake_session

from clank.config import DiscordSettings, Settings, WatchSettings
from clank.io.fakenet import FakeNet
from clank.media.jpeg import scale_frame
from clank.media.quality import plane_array, plane_psnr
from clank.sandbox.app import Sandbox
from clank.sandbox.fidelity import STRICT, FidelityRules
from clank.sandbox.rtc.backend import RtcMediaBackend
from clank.sandbox.rtc.streamer import VideoSettings
from clank.session.voice_session import VoiceSession
from clank.watch.frames import ScreenFrame

SETTINGS = Settings(discord=DiscordSettings(voice_url_scheme="ws"))
WATCH = WatchSettings(max_fps=5.0, preferred_pixel_count=160 * 120, credentials_timeout_s=5.0)
TINY = VideoSettings(codec="h264", width=160, height=120, fps=5, bitrate=100_000, keyframe_interval=2.0)
PSNR_GOAL_DB = 30.0


def media(sb: Sandbox) -> RtcMediaBackend:
    assert sb.media is not None
    return sb.media


def frame_psnr(sb: Sandbox, owner: str, frame: ScreenFrame) -> float:
    """Luma PSNR of a published frame against the streamer's source picture of the same timestamp."""
    source = media(sb).streamer(owner).source_frame(frame.rtp_timestamp)
    assert source is not None, "the streamer no longer has that source frame"
    reference = plane_array(scale_frame(source, max_pixels=WATCH.preferred_pixel_count), 0)
    luma = simplejpeg.decode_jpeg(frame.jpeg, colorspace="GRAY")[:, :, 0]
    return plane_psnr(np.ascontiguousarray(luma), np.ascontiguousarray(reference))


@asynccontextmanager
async def fake_session(
    fidelity: FidelityRules = STRICT, video: VideoSettings = TINY, dave_protocol_version: int = 1
) -> AsyncIterator[tuple[FakeNet, Sandbox, VoiceSession]]:
    """``tests/fake_session.fake_session`` with this kit's strict rules, tiny video and settings."""
    async with shared_fake_session(
        screen=video, settings=SETTINGS, fidelity=fidelity, dave_protocol_version=dave_protocol_version
    ) as joined:
        yield joined
