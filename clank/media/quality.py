"""Pixel access and picture-quality helpers for yuv420p frames (numpy).

``plane_array`` gives a zero-copy view of one plane without the row padding FFmpeg adds
(``line_size`` may exceed the visible width). ``psnr`` compares two frames of the same size;
tests and the media benchmark use it to check that encode → decode → JPEG keeps the content.
"""

from __future__ import annotations

import math
from typing import Literal

import av
import numpy as np
import numpy.typing as npt

from clank.errors import UsageError

Plane = npt.NDArray[np.uint8]

# PSNR of identical planes is infinite; report this ceiling instead so results stay comparable.
PSNR_CEILING_DB = 100.0


def plane_array(frame: av.VideoFrame, index: int) -> Plane:
    """A (height, width) uint8 view of plane ``index`` with the row padding cut off (no copy)."""
    plane = frame.planes[index]
    rows = plane.buffer_size // plane.line_size
    full = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(rows, plane.line_size)
    view: Plane = full[: plane.height, : plane.width]
    return view


def yuv420p_planes(frame: av.VideoFrame) -> tuple[Plane, Plane, Plane]:
    """The Y, U, V views of a yuv420p frame (raises UsageError for other formats)."""
    if frame.format.name != "yuv420p":
        raise UsageError(f"expected a yuv420p frame, got {frame.format.name}")
    return plane_array(frame, 0), plane_array(frame, 1), plane_array(frame, 2)


def plane_psnr(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
    """PSNR in dB between two same-shaped uint8 arrays (capped at ``PSNR_CEILING_DB``)."""
    if a.shape != b.shape:
        raise UsageError(f"cannot compare planes of shapes {a.shape} and {b.shape}")
    diff = a.astype(np.int32) - b.astype(np.int32)
    mse = float(np.mean(diff * diff))
    if mse == 0.0:
        return PSNR_CEILING_DB
    return min(PSNR_CEILING_DB, 10.0 * math.log10(255.0 * 255.0 / mse))


def psnr(a: av.VideoFrame, b: av.VideoFrame, *, planes: Literal["luma", "all"] = "luma") -> float:
    """PSNR between two yuv420p frames: luma only, or the pixel-weighted mean MSE of Y, U and V."""
    if (a.width, a.height) != (b.width, b.height):
        raise UsageError(f"frame sizes differ: {a.width}x{a.height} vs {b.width}x{b.height}")
    pa, pb = yuv420p_planes(a), yuv420p_planes(b)
    if planes == "luma":
        return plane_psnr(pa[0], pb[0])
    total_sq = 0.0
    total_px = 0
    for x, y in zip(pa, pb, strict=True):
        diff = x.astype(np.int32) - y.astype(np.int32)
        total_sq += float(np.sum(diff * diff))
        total_px += diff.size
    mse = total_sq / total_px
    if mse == 0.0:
        return PSNR_CEILING_DB
    return min(PSNR_CEILING_DB, 10.0 * math.log10(255.0 * 255.0 / mse))
