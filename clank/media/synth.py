"""Deterministic synthetic video: screen-like content and a webcam-like picture.

``ScreenSynth.frame(i)`` depends only on ``i`` (and the constructor arguments): a code-editor
style window whose text scrolls under a title bar (with ``headlines=True``, a large-font title from
:data:`HEADLINES`, as the sandbox streamer shows), a smaller window moving over it, and a clock
showing the frame number and media time. Every ``scene_seconds`` the whole screen switches to
another "application" (editor, browser page, terminal) so change metrics have cuts to find.
``WebcamSynth`` is a slowly drifting gradient with a face-like blob moving across it.

Cost: all text is rendered with Pillow once, in the constructor; a frame is composed straight
into the Y/U/V planes of a new yuv420p ``av.VideoFrame`` with numpy slice assignments (no
RGB → YUV conversion), well under 2 ms at 720p.
"""

from __future__ import annotations

import math
import random
from typing import Protocol

import attrs
import av
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from clank.errors import UsageError
from clank.media.quality import yuv420p_planes

Luma = npt.NDArray[np.uint8]

_CLOCK_CHARS = "0123456789:. frame"
#: The large-font title of each scene (editor, browser page, terminal), drawn in the title bar above
#: everything else: real words a screen reader (OCR) can be checked against.
HEADLINES: tuple[str, ...] = (
    "Editor packetize video frames",
    "Browser release notes clank",
    "Terminal pytest passed green",
)
_CODE_WORDS = (
    "def", "return", "async", "await", "with", "self", "trio", "frame", "packet", "for", "in",
    "if", "else", "import", "class", "None", "True", "len", "bytes", "decode", "nursery",
)  # fmt: skip


class FrameSource(Protocol):
    width: int
    height: int
    fps: int

    def frame(self, index: int) -> av.VideoFrame: ...


@attrs.frozen
class _Scene:
    """One full-screen "application": colours (Y, U, V) and its pre-rendered scrolling text."""

    background: tuple[int, int, int]
    window: tuple[int, int, int]
    text: Luma = attrs.field(eq=False, repr=False)  # two stacked copies, so any scroll slice exists
    headline: Luma | None = attrs.field(eq=False, repr=False)  # the title bar's large-font title
    period: int  # height of one copy
    scroll_px_per_frame: int


def _check_size(width: int, height: int) -> None:
    if width < 64 or height < 64 or width % 2 or height % 2:
        raise UsageError(f"synthetic video needs even dimensions of at least 64, got {width}x{height}")


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _render_lines(lines: list[str], width: int, line_height: int, ink: int, paper: int) -> Luma:
    image = Image.new("L", (width, line_height * len(lines)), paper)
    draw = ImageDraw.Draw(image)
    font = _font(max(8, line_height * 3 // 4))
    for row, line in enumerate(lines):
        draw.text((line_height // 2, row * line_height), line, fill=ink, font=font)
    return np.asarray(image, dtype=np.uint8)


def _code_lines(rng: random.Random, count: int) -> list[str]:
    lines = []
    for number in range(1, count + 1):
        indent = "    " * rng.randrange(0, 4)
        words = " ".join(rng.choice(_CODE_WORDS) for _ in range(rng.randrange(2, 9)))
        lines.append(f"{number:4d}  {indent}{words}")
    return lines


class ScreenSynth:
    """Screen-share-like frames by index (see module docstring)."""

    def __init__(
        self,
        width: int = 1280,
        height: int = 720,
        *,
        fps: int = 30,
        scene_seconds: float = 4.0,
        seed: int = 0,
        headlines: bool = False,
    ) -> None:
        _check_size(width, height)
        self.width, self.height, self.fps = width, height, fps
        self.frames_per_scene = max(1, round(scene_seconds * fps))
        self._line_height = max(12, height // 36)
        rng = random.Random(seed)
        # (background YUV, moving-window YUV, ink, paper) per scene: dark editor, light page, terminal.
        looks = [
            ((40, 140, 120), (200, 110, 140), 210, 40),
            ((230, 128, 128), (90, 160, 100), 30, 230),
            ((16, 120, 110), (120, 90, 200), 170, 16),
        ]
        titles = HEADLINES if headlines else ("",) * len(looks)
        self._scenes = [
            self._make_scene(rng, *look, headline=title) for look, title in zip(looks, titles, strict=True)
        ]
        self._glyphs = self._make_glyphs()

    def _make_scene(
        self,
        rng: random.Random,
        background: tuple[int, int, int],
        window: tuple[int, int, int],
        ink: int,
        paper: int,
        *,
        headline: str,
    ) -> _Scene:
        count = max(2, 2 * self.height // self._line_height)
        block = _render_lines(_code_lines(rng, count), self.width, self._line_height, ink, paper)
        if not headline:
            return _Scene(
                background=background,
                window=window,
                text=np.vstack([block, block]),
                headline=None,
                period=block.shape[0],
                scroll_px_per_frame=max(1, self._line_height // 6),
            )
        bar = self._line_height * 2
        title = Image.new("L", (self.width * 3 // 5, bar), background[0] // 2 + 20)
        size = max(8, bar * 3 // 4)
        ImageDraw.Draw(title).text(
            (self._line_height // 2, (bar - size) // 2), headline, fill=235, font=_font(size)
        )
        return _Scene(
            background=background,
            window=window,
            text=np.vstack([block, block]),
            headline=np.asarray(title, dtype=np.uint8),
            period=block.shape[0],
            scroll_px_per_frame=max(1, self._line_height // 6),
        )

    def _make_glyphs(self) -> dict[str, Luma]:
        size = self._line_height
        cell = size * 2 // 3
        glyphs = {}
        for char in set(_CLOCK_CHARS):
            image = Image.new("L", (cell, size), 0)
            ImageDraw.Draw(image).text((0, 0), char, fill=255, font=_font(size * 3 // 4))
            glyphs[char] = np.asarray(image, dtype=np.uint8)
        return glyphs

    def scene_index(self, index: int) -> int:
        """Which scene frame ``index`` shows; it changes every ``frames_per_scene`` frames."""
        return (index // self.frames_per_scene) % len(self._scenes)

    def frame(self, index: int) -> av.VideoFrame:
        scene = self._scenes[self.scene_index(index)]
        image = av.VideoFrame(self.width, self.height, "yuv420p")
        y, u, v = yuv420p_planes(image)
        y[:], u[:], v[:] = scene.background
        # Scrolling text below a title bar, like an editor.
        top = self._line_height * 2
        offset = (index * scene.scroll_px_per_frame) % scene.period
        y[top:] = scene.text[offset : offset + self.height - top]
        y[:top] = scene.background[0] // 2 + 20
        self._draw_window(index, scene, y, u, v)
        if scene.headline is not None:
            title = scene.headline
            y[: title.shape[0], : title.shape[1]] = title
            u[: title.shape[0] // 2, : title.shape[1] // 2] = 128
            v[: title.shape[0] // 2, : title.shape[1] // 2] = 128
        self._draw_clock(index, y, top)
        image.pts = index
        return image

    def _draw_window(self, index: int, scene: _Scene, y: Luma, u: Luma, v: Luma) -> None:
        width, height = self.width // 3 & ~1, self.height // 3 & ~1
        phase = index / self.fps
        left = int((self.width - width) * (0.5 + 0.5 * math.sin(phase * 0.7))) & ~1
        top = int((self.height - height) * (0.5 + 0.5 * math.sin(phase * 0.45 + 1.0))) & ~1
        luma, cb, cr = scene.window
        y[top : top + height, left : left + width] = luma
        y[top : top + self._line_height, left : left + width] = luma // 2
        u[top // 2 : (top + height) // 2, left // 2 : (left + width) // 2] = cb
        v[top // 2 : (top + height) // 2, left // 2 : (left + width) // 2] = cr

    def _draw_clock(self, index: int, y: Luma, bar_height: int) -> None:
        seconds = index / self.fps
        text = f"frame {index:06d}  {int(seconds // 60):02d}:{seconds % 60:05.2f}"
        cell = next(iter(self._glyphs.values())).shape[1]
        left = self.width - cell * (len(text) + 1)
        for position, char in enumerate(text):
            x = left + position * cell
            if x < 0:
                continue
            glyph = self._glyphs[char]
            rows = min(glyph.shape[0], bar_height)
            region = y[:rows, x : x + cell]
            np.maximum(region, glyph[:rows, : region.shape[1]], out=region)


class WebcamSynth:
    """A soft moving gradient with a face-like blob drifting over it (deterministic by index)."""

    def __init__(self, width: int = 640, height: int = 360, *, fps: int = 30) -> None:
        _check_size(width, height)
        self.width, self.height, self.fps = width, height, fps
        columns = np.arange(2 * width, dtype=np.float32)
        rows = np.arange(height, dtype=np.float32)[:, None]
        wave = 0.5 + 0.25 * np.sin(columns / width * 2 * math.pi) + 0.15 * np.cos(rows / height * math.pi)
        self._background = np.clip(wave * 200 + 20, 0, 255).astype(np.uint8)
        chroma_columns = np.arange(width, dtype=np.float32)
        self._chroma = np.clip(128 + 30 * np.sin(chroma_columns / width * 2 * math.pi), 0, 255).astype(
            np.uint8
        )
        self._face, self._mask = self._make_face(height // 2 & ~1)

    @staticmethod
    def _make_face(size: int) -> tuple[Luma, npt.NDArray[np.bool_]]:
        image = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(image)
        draw.ellipse((size // 8, 0, size * 7 // 8, size - 1), fill=170)
        for eye in (size * 3 // 8, size * 5 // 8):
            draw.ellipse((eye - size // 16, size * 3 // 8, eye + size // 16, size // 2), fill=40)
        draw.arc(
            (size // 3, size // 2, size * 2 // 3, size * 3 // 4), 20, 160, fill=60, width=max(1, size // 40)
        )
        face = np.asarray(image, dtype=np.uint8)
        return face, face > 0

    def frame(self, index: int) -> av.VideoFrame:
        image = av.VideoFrame(self.width, self.height, "yuv420p")
        y, u, v = yuv420p_planes(image)
        t = index / self.fps
        shift = int((0.5 + 0.5 * math.sin(t * 0.3)) * self.width)
        y[:] = self._background[:, shift : shift + self.width]
        u[:] = self._chroma[None, ::2][:, : u.shape[1]]
        v[:] = 128
        size = self._face.shape[0]
        left = int((self.width - size) * (0.5 + 0.4 * math.sin(t * 0.8))) & ~1
        top = int((self.height - size) * (0.5 + 0.4 * math.sin(t * 0.5 + 0.5))) & ~1
        region = y[top : top + size, left : left + size]
        region[self._mask] = self._face[self._mask]
        half = self._mask[::2, ::2]
        u[top // 2 : top // 2 + half.shape[0], left // 2 : left // 2 + half.shape[1]][half] = 110
        v[top // 2 : top // 2 + half.shape[0], left // 2 : left // 2 + half.shape[1]][half] = 150
        image.pts = index
        return image
