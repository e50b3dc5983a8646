"""Realistic bench content, generated and deterministic (no media is committed).

A screen share as users send it: the project's synthetic screen (an editor whose text scrolls, a
window moving over it, a clock; ``clank.media.synth.ScreenSynth``) with a *video region* playing
in it, like a browser showing a clip: a multi-octave noise texture that pans and drifts, with a
fresh film-grain layer every frame. The grain makes the region high-entropy (the encoder cannot
predict it away), so at 720p30 ~3 Mbit/s and 1080p30 ~6 Mbit/s the bits go where they go in a
real share, and decode costs what it costs there.

Encoded with the project's own encoders (``clank.media.encoder.VideoEncoder``: x264 ultrafast +
zerolatency, baseline, keyframe every 2 s; libvpx realtime), so the bitstream has the shape of
what the publish path and browsers send.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import attrs
import av
import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clank.media.decoder import VideoCodec
from clank.media.encoder import EncodedFrame, VideoEncoder
from clank.media.quality import yuv420p_planes
from clank.media.synth import ScreenSynth

FPS = 30


@attrs.frozen
class Profile:
    name: str
    width: int
    height: int
    bitrate: int


PROFILES = (
    Profile("720p30", 1280, 720, 3_000_000),
    Profile("1080p30", 1920, 1080, 6_000_000),
)


def _texture(rng: np.random.Generator, height: int, width: int) -> npt.NDArray[np.float32]:
    """Smooth multi-octave noise in [0, 1], shape (height, width)."""
    out = np.zeros((height, width), dtype=np.float32)
    weight = 1.0
    total = 0.0
    for cell in (64, 24, 8, 3):
        small = rng.random((height // cell + 2, width // cell + 2), dtype=np.float32)
        big = np.repeat(np.repeat(small, cell, axis=0), cell, axis=1)[:height, :width]
        # A box blur over one cell turns the blocks into soft blobs.
        kernel = np.ones(cell, dtype=np.float32) / cell
        big = np.apply_along_axis(np.convolve, 1, big, kernel, mode="same")
        big = np.apply_along_axis(np.convolve, 0, big, kernel, mode="same")
        out += weight * big
        total += weight
        weight *= 0.6
    out /= total
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / max(1e-6, hi - lo)


class RealisticScreen:
    """Frames by index: ``ScreenSynth`` plus a panning, grainy video region (about 1/5 of the screen)."""

    def __init__(self, width: int, height: int, *, fps: int = FPS, seed: int = 7) -> None:
        self.width, self.height, self.fps = width, height, fps
        self._screen = ScreenSynth(width, height, fps=fps, scene_seconds=4.0, seed=seed)
        rng = np.random.default_rng(seed)
        self._vw = (width * 9 // 20) & ~15
        self._vh = (self._vw * 9 // 16) & ~15
        self._left = (width * 5 // 10) & ~1
        self._top = (height * 4 // 10) & ~1
        # Texture twice the region each way, so any pan offset has a full window to show.
        tex = _texture(rng, 2 * self._vh, 2 * self._vw)
        self._luma = (tex * 190 + 30).astype(np.uint8)
        chroma = _texture(rng, self._vh, self._vw)
        self._cb = (chroma * 80 + 88).astype(np.uint8)
        self._cr = (160 - chroma * 70).astype(np.uint8)
        # A bank of grain planes (cycled by frame index: deterministic, cheap per frame).
        self._grain = rng.integers(-14, 15, size=(8, self._vh, self._vw), dtype=np.int16)

    def frame(self, index: int) -> av.VideoFrame:
        image = self._screen.frame(index)
        y, u, v = yuv420p_planes(image)
        t = index / self.fps
        dx = int((0.5 + 0.5 * math.sin(t * 0.9)) * self._vw)
        dy = int((0.5 + 0.5 * math.cos(t * 0.6)) * self._vh)
        region = self._luma[dy : dy + self._vh, dx : dx + self._vw].astype(np.int16)
        region += self._grain[index % len(self._grain)]
        top, left, vh, vw = self._top, self._left, self._vh, self._vw
        y[top : top + vh, left : left + vw] = np.clip(region, 16, 235).astype(np.uint8)
        cdx, cdy = (dx // 2) % (vw // 2), (dy // 2) % (vh // 2)
        u[top // 2 : (top + vh) // 2, left // 2 : (left + vw) // 2] = np.roll(self._cb, (cdy, cdx), (0, 1))[
            ::2, ::2
        ][: vh // 2, : vw // 2]
        v[top // 2 : (top + vh) // 2, left // 2 : (left + vw) // 2] = np.roll(self._cr, (cdy, cdx), (0, 1))[
            ::2, ::2
        ][: vh // 2, : vw // 2]
        image.pts = index
        return image


def encode_content(
    codec: VideoCodec, profile: Profile, seconds: float, *, seed: int = 7
) -> list[EncodedFrame]:
    """``seconds`` of realistic content at ``profile``, encoded with the project's encoder."""
    source = RealisticScreen(profile.width, profile.height, seed=seed)
    encoder = VideoEncoder(codec, profile.width, profile.height, FPS, profile.bitrate)
    out: list[EncodedFrame] = []
    for index in range(round(seconds * FPS)):
        out += encoder.encode(source.frame(index))
    return out + encoder.flush()


def bitrate_mbps(aus: list[EncodedFrame]) -> float:
    return sum(len(a.data) for a in aus) * 8 / (len(aus) / FPS) / 1e6
