"""Pushed-image source: decoding untrusted images, the bounded queue, repeating the last picture."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings
from publish_kit import make_image

from clank.errors import InvalidArgument
from clank.media.publish_source import PushedFrames, decode_image


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400), st.sampled_from(["image/png", "image/jpeg", "image/x-raw-rgb"]))
def test_arbitrary_bytes_decode_or_fail_naming_the_field(data: bytes, content_type: str) -> None:
    try:
        frame = decode_image(data, content_type, 64, 48, raw_size=(4, 4))
    except InvalidArgument as exc:
        assert exc.field in ("image", "width")
    else:
        assert (frame.width, frame.height, frame.format.name) == (64, 48, "yuv420p")


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=40), st.integers(min_value=1, max_value=3000))
def test_truncated_png_and_jpeg_fail_cleanly(index: int, cut: int) -> None:
    for kind, content_type in (("PNG", "image/png"), ("JPEG", "image/jpeg")):
        data = make_image(index, 64, 48, kind=kind)
        try:
            decode_image(data[: min(cut, len(data) - 1)], content_type, 64, 48)
        except InvalidArgument as exc:
            assert exc.field == "image"


def test_images_are_scaled_to_the_stream_and_bad_types_are_named() -> None:
    frame = decode_image(make_image(1, 320, 240, kind="JPEG"), "image/jpeg; q=1", 160, 120)
    assert (frame.width, frame.height, frame.format.name) == (160, 120, "yuv420p")
    with pytest.raises(InvalidArgument) as wrong:
        decode_image(b"GIF89a", "image/gif", 160, 120)
    assert wrong.value.field == "content_type"
    with pytest.raises(InvalidArgument) as raw:
        decode_image(bytes(10), "image/x-raw-rgb", 160, 120)
    assert raw.value.field == "width"


def test_the_queue_drops_the_oldest_and_the_last_picture_repeats() -> None:
    source = PushedFrames(queue_size=2)
    assert source.next_frame(0.0) is None  # nothing pushed yet: no video
    pictures = [decode_image(make_image(i, 64, 48), "image/png", 64, 48) for i in range(3)]
    for picture in pictures:
        source.push(picture)
    assert source.next_frame(0.0) is pictures[1]  # pictures[0] was dropped
    assert source.next_frame(0.0) is pictures[2]
    assert source.next_frame(0.0) is pictures[2]  # repeated while nothing new comes
    stats = source.statistics()
    assert (stats.pushed, stats.dropped, stats.taken, stats.repeated, stats.queued) == (3, 1, 2, 1, 0)
