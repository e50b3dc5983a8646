"""JPEG from yuv420p planes: valid files, right size, same content, aspect kept."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
from PIL import Image

from clank.errors import UsageError
from clank.media.jpeg import encode_jpeg, fit_size
from clank.media.quality import plane_array, plane_psnr
from clank.media.synth import ScreenSynth, WebcamSynth


def _jpeg_luma(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG"
        return np.asarray(image.convert("YCbCr"))[:, :, 0]


@pytest.mark.parametrize(
    ("size", "max_pixels", "expected"),
    [
        ((1280, 720), None, (1280, 720)),
        ((1280, 720), 1280 * 720, (1280, 720)),
        ((1920, 1080), 1280 * 720, (1280, 720)),
        ((1280, 720), 640 * 360, (640, 360)),
        ((1281, 721), None, (1280, 720)),
        ((640, 480), 10_000_000, (640, 480)),  # never upscaled
        ((3, 3), None, (2, 2)),
    ],
)
def test_fit_size_table(size: tuple[int, int], max_pixels: int | None, expected: tuple[int, int]) -> None:
    assert fit_size(*size, max_pixels) == expected


@pytest.mark.parametrize(
    ("width", "height"), [(1920, 1080), (1280, 720), (1000, 1000), (720, 1280), (853, 479)]
)
def test_scaling_keeps_aspect_and_even_size(width: int, height: int) -> None:
    out_w, out_h = fit_size(width, height, 300_000)
    assert out_w % 2 == 0 and out_h % 2 == 0
    assert out_w * out_h <= 300_000
    assert abs(out_w / out_h - width / height) < 0.02 * (width / height)


def test_tiny_frames_are_refused() -> None:
    with pytest.raises(UsageError):
        fit_size(1, 100, None)


def test_jpeg_of_720p_screen_decodes_with_the_same_content() -> None:
    source = ScreenSynth(1280, 720).frame(42)
    raw = encode_jpeg(source, max_pixels=None, quality=85, full_range=False)
    assert (raw.width, raw.height) == (1280, 720)
    luma = _jpeg_luma(raw.data)
    assert luma.shape == (720, 1280)
    assert plane_psnr(luma, plane_array(source, 0)) >= 28.0
    # Default: converted to JPEG's full range, so compare with the range-converted source.
    full = encode_jpeg(source, max_pixels=None, quality=85)
    reference = source.reformat(format="yuv420p", dst_color_range="JPEG")
    assert plane_psnr(_jpeg_luma(full.data), plane_array(reference, 0)) >= 28.0


def test_full_range_stretches_video_black_and_white() -> None:
    frame = av.VideoFrame(64, 64, "yuv420p")
    for index, value in enumerate((16, 128, 128)):
        plane_array(frame, index)[:] = value
    plane_array(frame, 0)[:, 32:] = 235
    luma = _jpeg_luma(encode_jpeg(frame, max_pixels=None, quality=95).data)
    assert luma[:, :24].max() <= 3 and luma[:, 40:].min() >= 252


def test_scaled_jpeg_has_the_scaled_size_and_content() -> None:
    source = WebcamSynth(1280, 720).frame(10)
    image = encode_jpeg(source, max_pixels=640 * 360, quality=85, full_range=False)
    assert (image.width, image.height) == (640, 360)
    luma = _jpeg_luma(image.data)
    reference = source.reformat(640, 360, format="yuv420p")
    assert plane_psnr(luma, plane_array(reference, 0)) >= 28.0


def test_padded_odd_sized_frames_encode_correctly() -> None:
    rgb = np.zeros((363, 643, 3), dtype=np.uint8)
    rgb[::6] = 255
    rgb[:, ::9, 2] = 200
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    assert frame.planes[0].line_size > frame.width  # rows are padded: strides matter
    image = encode_jpeg(frame, max_pixels=None, quality=90, full_range=False)
    assert (image.width, image.height) == (642, 362)
    reference = frame.reformat(642, 362, format="yuv420p")
    assert plane_psnr(_jpeg_luma(image.data), plane_array(reference, 0)) >= 28.0


def test_quality_out_of_range_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        encode_jpeg(av.VideoFrame(64, 64, "yuv420p"), max_pixels=None, quality=0)
