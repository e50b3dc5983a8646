"""Publish sources: what a Go Live publish encodes, one picture per frame tick.

A source is asked for a picture at every tick of the publisher's frame clock
(:meth:`PublishSource.next_frame`, cheap and synchronous: pictures are prepared elsewhere) and
returns a yuv420p ``av.VideoFrame`` at the stream size, or None when it has nothing (yet).

:class:`PushedFrames` is the pushed-images source: callers push JPEG, PNG or raw RGB images
(:func:`decode_image` turns them into stream-sized yuv420p frames; run it off the trio
thread); each tick takes the oldest queued picture, or repeats the last one when nothing new
came (keeps the stream alive at a low cost: x264 codes a repeated picture in a few bytes). The
queue is bounded and drops the oldest picture when full (counted).
"""

from __future__ import annotations

import collections
import io
from typing import Final, Literal, Protocol

import attrs
import av
import numpy as np
import PIL.Image

from clank.errors import InvalidArgument

__all__ = [
    "IMAGE_CONTENT_TYPES",
    "MAX_IMAGE_PIXELS",
    "PUSHED_QUEUE_SIZE",
    "PublishSource",
    "PushedFrames",
    "PushedFramesStatistics",
    "decode_image",
]

ImageKind = Literal["image/jpeg", "image/png", "image/x-raw-rgb"]
IMAGE_CONTENT_TYPES: Final[tuple[ImageKind, ...]] = ("image/jpeg", "image/png", "image/x-raw-rgb")
#: Images larger than this (decoded pixels) are refused: a decompression bomb guard.
MAX_IMAGE_PIXELS: Final = 4096 * 4096
PUSHED_QUEUE_SIZE: Final = 4


class PublishSource(Protocol):
    """What the publisher's frame clock reads; see the module docstring."""

    name: str

    def next_frame(self, now: float) -> av.VideoFrame | None: ...


def decode_image(
    data: bytes, content_type: str, width: int, height: int, *, raw_size: tuple[int, int] | None = None
) -> av.VideoFrame:
    """An image (JPEG/PNG, or raw RGB24 of ``raw_size``) as a yuv420p frame of ``width`` x ``height``.

    CPU work (decode + scale + colour conversion): call it from a worker thread. Raises
    ``InvalidArgument`` naming ``image`` (undecodable, too large), ``content_type`` or ``width``/
    ``height`` (raw RGB of the wrong size).
    """
    kind = content_type.split(";")[0].strip().lower()
    if kind == "image/x-raw-rgb":
        if raw_size is None:
            raise InvalidArgument("width", "raw RGB images need width and height")
        w, h = raw_size
        if w < 1 or h < 1 or w * h > MAX_IMAGE_PIXELS:
            raise InvalidArgument("width", f"raw RGB size {w}x{h} out of range")
        if len(data) != w * h * 3:
            raise InvalidArgument("image", f"raw RGB {w}x{h} needs {w * h * 3} bytes, got {len(data)}")
        rgb = np.frombuffer(data, dtype=np.uint8).reshape(h, w, 3)
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
    elif kind in ("image/jpeg", "image/png"):
        frame = _decode_compressed(data)
    else:
        raise InvalidArgument(
            "content_type", f"expected one of {', '.join(IMAGE_CONTENT_TYPES)}, got {kind!r}"
        )
    return frame.reformat(width=width, height=height, format="yuv420p")


def _decode_compressed(data: bytes) -> av.VideoFrame:
    try:
        with PIL.Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise InvalidArgument(
                    "image", f"{image.width}x{image.height} is larger than {MAX_IMAGE_PIXELS} pixels"
                )
            rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except InvalidArgument:
        raise
    except (OSError, ValueError, PIL.Image.DecompressionBombError, SyntaxError) as exc:
        raise InvalidArgument("image", f"not a decodable JPEG/PNG image ({exc})") from exc
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")


@attrs.frozen
class PushedFramesStatistics:
    pushed: int
    dropped: int
    repeated: int
    taken: int
    queued: int


class PushedFrames:
    """The pushed-images source (see the module docstring)."""

    name = "frames"

    def __init__(self, queue_size: int = PUSHED_QUEUE_SIZE) -> None:
        self._queue: collections.deque[av.VideoFrame] = collections.deque()
        self._queue_size = max(1, queue_size)
        self._last: av.VideoFrame | None = None
        self._pushed = 0
        self._dropped = 0
        self._repeated = 0
        self._taken = 0

    @property
    def last(self) -> av.VideoFrame | None:
        """The picture most recently handed to the encoder."""
        return self._last

    def push(self, frame: av.VideoFrame) -> None:
        """Queue one stream-sized yuv420p picture (the oldest is dropped when the queue is full)."""
        self._pushed += 1
        if len(self._queue) >= self._queue_size:
            self._queue.popleft()
            self._dropped += 1
        self._queue.append(frame)

    def next_frame(self, now: float) -> av.VideoFrame | None:
        if self._queue:
            self._last = self._queue.popleft()
            self._taken += 1
            return self._last
        if self._last is not None:
            self._repeated += 1
        return self._last

    def statistics(self) -> PushedFramesStatistics:
        return PushedFramesStatistics(
            pushed=self._pushed,
            dropped=self._dropped,
            repeated=self._repeated,
            taken=self._taken,
            queued=len(self._queue),
        )
