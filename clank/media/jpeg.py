"""JPEG from decoded frames: scale with PyAV, encode the I420 planes with simplejpeg.

Measured (performance notes, bench/bench_media.py): simplejpeg from the Y/U/V planes is ~2x
faster than RGB + Pillow and up to ~7x faster than ``frame.to_image()``, because it skips the
YUV → RGB conversion entirely. Scaling goes through libswscale, which also normalises the
pixel format to yuv420p and the size to even dimensions so that the chroma planes are exactly
half the luma plane.

JPEG (JFIF) samples are full range (0-255) while decoded video is usually limited range
(16-235): encoding the planes as they are would give washed-out pictures. The range is
converted in the same swscale pass as the scaling; for a frame that needs no scaling the pass
only converts the range, and uses ``FAST_BILINEAR`` (no interpolation happens at the same
size; it measured 0.55 vs 0.87 ms at 720p, 51 dB from ``BILINEAR``). ``full_range=False``
skips it.

Cost (bench/bench_watch.py, realistic 720p): PyAV's ``reformat`` without ``threads`` starts a
swscale thread pool per call (one thread per CPU, built and torn down per picture, competing
with the decoders for the cores), and ``frame.reformat`` keeps its context on the source frame,
which is new every time. :class:`FrameScaler` keeps one single-threaded ``VideoReformatter``
(its cached swscale context survives from picture to picture); keep one per worker thread.
"""

from __future__ import annotations

import math

import attrs
import av
import simplejpeg
from av.video.reformatter import VideoReformatter

from clank.errors import UsageError
from clank.media.quality import yuv420p_planes

DEFAULT_JPEG_QUALITY = 80
SWSCALE_THREADS = 1  # never PyAV's default of one swscale thread per CPU (see module docstring)


@attrs.frozen
class JpegImage:
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    width: int
    height: int


def fit_size(width: int, height: int, max_pixels: int | None) -> tuple[int, int]:
    """The even output size for a frame: same aspect, at most ``max_pixels``, never upscaled."""
    if width < 2 or height < 2:
        raise UsageError(f"cannot encode a {width}x{height} frame")
    if max_pixels is not None and width * height > max_pixels:
        scale = math.sqrt(max_pixels / (width * height))
        width, height = int(width * scale), int(height * scale)
    return max(2, width - width % 2), max(2, height - height % 2)


_FULL_RANGE = 2  # AVCOL_RANGE_JPEG


class FrameScaler:
    """Scale / range-convert frames with one persistent single-threaded swscale context.

    Not thread-safe: one per thread (a decode worker owns one).
    """

    def __init__(self) -> None:
        self._reformatter = VideoReformatter()

    def scale(
        self, frame: av.VideoFrame, *, max_pixels: int | None, full_range: bool = True
    ) -> av.VideoFrame:
        """``frame`` as even-sized yuv420p within ``max_pixels`` (the same object when already so).

        With ``full_range`` the samples are converted to the 0-255 range JPEG expects.
        """
        width, height = fit_size(frame.width, frame.height, max_pixels)
        range_ok = not full_range or frame.color_range == _FULL_RANGE
        same_size = (width, height) == (frame.width, frame.height)
        if same_size and frame.format.name == "yuv420p" and range_ok:
            return frame
        return self._reformatter.reformat(
            frame,
            width=width,
            height=height,
            format="yuv420p",
            interpolation="FAST_BILINEAR" if same_size else "BILINEAR",
            dst_color_range="JPEG" if full_range else None,
            threads=SWSCALE_THREADS,
        )

    def encode(
        self,
        frame: av.VideoFrame,
        *,
        max_pixels: int | None,
        quality: int = DEFAULT_JPEG_QUALITY,
        full_range: bool = True,
    ) -> JpegImage:
        """Scale ``frame`` to fit ``max_pixels`` (keeping aspect) and encode it as a baseline JPEG."""
        if not 1 <= quality <= 100:
            raise UsageError(f"JPEG quality must be 1..100, got {quality}")
        scaled = self.scale(frame, max_pixels=max_pixels, full_range=full_range)
        y, u, v = yuv420p_planes(scaled)
        data: bytes = simplejpeg.encode_jpeg_yuv_planes(y, u, v, quality=quality)
        return JpegImage(data=data, width=scaled.width, height=scaled.height)


def scale_frame(frame: av.VideoFrame, *, max_pixels: int | None, full_range: bool = True) -> av.VideoFrame:
    """One-off :meth:`FrameScaler.scale` (a worker that scales often should keep a ``FrameScaler``)."""
    return FrameScaler().scale(frame, max_pixels=max_pixels, full_range=full_range)


def encode_jpeg(
    frame: av.VideoFrame,
    *,
    max_pixels: int | None,
    quality: int = DEFAULT_JPEG_QUALITY,
    full_range: bool = True,
) -> JpegImage:
    """One-off :meth:`FrameScaler.encode`."""
    return FrameScaler().encode(frame, max_pixels=max_pixels, quality=quality, full_range=full_range)
