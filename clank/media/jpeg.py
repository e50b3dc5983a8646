"""JPEG from decoded frames: scale with PyAV, encode the I420 planes with simplejpeg.

Measured (performance notes, bench/bench_media.py): simplejpeg from the Y/U/V planes is ~2x
faster than RGB + Pillow and up to ~7x faster than ``frame.to_image()``, because it skips the
YUV → RGB conversion entirely. Scaling goes through ``frame.reformat`` (libswscale), which also
normalises the pixel format to yuv420p and the size to even dimensions so that the chroma
planes are exactly half the luma plane.

JPEG (JFIF) samples are full range (0-255) while decoded video is usually limited range
(16-235): encoding the planes as they are would give washed-out pictures. The range is
converted in the same swscale pass as the scaling, where it costs almost nothing; for a frame
that needs no scaling it costs about one extra pass (``full_range=False`` skips it).
"""

from __future__ import annotations

import math

import attrs
import av
import simplejpeg

from clank.errors import UsageError
from clank.media.quality import yuv420p_planes

DEFAULT_JPEG_QUALITY = 80


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


def scale_frame(frame: av.VideoFrame, *, max_pixels: int | None, full_range: bool = True) -> av.VideoFrame:
    """``frame`` as even-sized yuv420p within ``max_pixels`` (the same object when already so).

    With ``full_range`` the samples are converted to the 0-255 range JPEG expects.
    """
    width, height = fit_size(frame.width, frame.height, max_pixels)
    range_ok = not full_range or frame.color_range == _FULL_RANGE
    if (width, height) == (frame.width, frame.height) and frame.format.name == "yuv420p" and range_ok:
        return frame
    return frame.reformat(
        width=width,
        height=height,
        format="yuv420p",
        interpolation="BILINEAR",
        dst_color_range="JPEG" if full_range else None,
    )


def encode_jpeg(
    frame: av.VideoFrame,
    *,
    max_pixels: int | None,
    quality: int = DEFAULT_JPEG_QUALITY,
    full_range: bool = True,
) -> JpegImage:
    """Scale ``frame`` to fit ``max_pixels`` (keeping aspect) and encode it as a baseline JPEG."""
    if not 1 <= quality <= 100:
        raise UsageError(f"JPEG quality must be 1..100, got {quality}")
    scaled = scale_frame(frame, max_pixels=max_pixels, full_range=full_range)
    y, u, v = yuv420p_planes(scaled)
    data: bytes = simplejpeg.encode_jpeg_yuv_planes(y, u, v, quality=quality)
    return JpegImage(data=data, width=scaled.width, height=scaled.height)
