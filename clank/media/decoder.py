"""One persistent single-threaded PyAV video decoder per stream.

Every access unit is decoded (P frames need the reference state of the ones before them), so
this object is long-lived: it is created once per watched stream and fed in order. PyAV
releases the GIL while decoding, so decoders on separate worker threads use separate cores;
``thread_count=1`` because frame/slice threading costs 15-50% more CPU in total
(docs: performance notes). ``decode(..., show_all=True)`` (concealment: the receive side waited
long enough for a keyframe) sets FFmpeg's ``flags2 SHOW_ALL`` on the open context, so pictures come
out although references are missing (FFmpeg otherwise outputs nothing until a keyframe, and after an
unrepaired loss nothing until the next one); those pictures are flagged ``concealed``.

Errors are translated here: no ``av`` exception escapes ``decode``. Each failure is counted;
after ``reset_after_errors`` consecutive failures the codec context is replaced (a corrupt
reference state otherwise poisons every following P frame). ``needs_keyframe`` tells the
receive side to ask the sender for a keyframe (PLI/FIR): it is set from the start, on any
error and on reset, and cleared when a keyframe decodes.
"""

from __future__ import annotations

from typing import Literal, cast

import attrs
import av
from av.video.codeccontext import VideoCodecContext

from clank.errors import UsageError

VideoCodec = Literal["h264", "vp8"]

# FFmpeg decoder names per codec we accept from the wire.
_DECODER_NAMES: dict[str, str] = {"h264": "h264", "vp8": "vp8"}

# A handful of bad frames in a row means the reference chain is gone: start over.
DEFAULT_RESET_AFTER_ERRORS = 5

_H264_IDR = 5
_SHOW_ALL = 1 << 22  # AV_CODEC_FLAG2_SHOW_ALL: "show all frames before the first keyframe"


@attrs.frozen
class DecodedFrame:
    """A decoded picture. ``timestamp`` is the RTP timestamp of the access unit it came from."""

    image: av.VideoFrame = attrs.field(eq=False, repr=False)
    width: int
    height: int
    timestamp: int
    keyframe: bool
    concealed: bool = False
    """Decoded without a keyframe since the start, an error or a reset (references missing)."""


@attrs.frozen
class DecoderStatistics:
    access_units: int
    frames: int
    errors: int
    consecutive_errors: int
    resets: int
    needs_keyframe: bool
    width: int
    height: int


def access_unit_is_keyframe(codec: VideoCodec, access_unit: bytes) -> bool:
    """Whether an access unit starts a new reference chain (never raises).

    H264 (Annex-B): it holds an IDR slice (NAL type 5); SPS/PPS/SEI alone are not keyframes.
    VP8: bit 0 of the first byte of the frame tag is the inverse key-frame flag (RFC 6386 9.1).
    """
    if codec == "vp8":
        return bool(access_unit) and access_unit[0] & 0x01 == 0
    index = access_unit.find(b"\x00\x00\x01")
    while index != -1:
        header = index + 3
        if header < len(access_unit) and access_unit[header] & 0x1F == _H264_IDR:
            return True
        index = access_unit.find(b"\x00\x00\x01", header)
    return False


class VideoDecoder:
    """Decode access units of one stream, in order, keeping the reference state between calls."""

    def __init__(self, codec: VideoCodec, *, reset_after_errors: int = DEFAULT_RESET_AFTER_ERRORS) -> None:
        if codec not in _DECODER_NAMES:
            raise UsageError(f"unsupported video codec {codec!r}")
        if reset_after_errors < 1:
            raise UsageError("reset_after_errors must be at least 1")
        self.codec: VideoCodec = codec
        self._reset_after_errors = reset_after_errors
        self._context = self._open_context()
        self._access_units = 0
        self._frames = 0
        self._errors = 0
        self._consecutive_errors = 0
        self._resets = 0
        self._needs_keyframe = True
        self._width = 0
        self._height = 0

    def _open_context(self) -> VideoCodecContext:
        context = cast(VideoCodecContext, av.CodecContext.create(_DECODER_NAMES[self.codec], "r"))
        context.thread_count = 1
        return context

    @property
    def needs_keyframe(self) -> bool:
        return self._needs_keyframe

    def decode(self, access_unit: bytes, timestamp: int, *, show_all: bool = False) -> list[DecodedFrame]:
        """Decode one access unit (Annex-B for H264, one frame for VP8). Bad input yields ``[]``.

        ``show_all``: output pictures even with references missing (concealment), flagged.
        """
        self._access_units += 1
        flags2 = self._context.flags2
        wanted = flags2 | _SHOW_ALL if show_all else flags2 & ~_SHOW_ALL
        if wanted != flags2:
            self._context.flags2 = wanted
        if not access_unit:
            self._count_error()
            return []
        packet = av.Packet(access_unit)
        packet.pts = timestamp
        try:
            images = self._context.decode(packet)
        except (av.FFmpegError, ValueError, MemoryError):
            # FFmpegError covers InvalidDataError & co; PyAV raises plain ValueError for some
            # malformed parameter sets. Either way the bytes were bad, which is counted, not fatal.
            self._count_error()
            return []
        self._consecutive_errors = 0
        broken = self._needs_keyframe or show_all
        frames = [self._wrap(image, timestamp, broken) for image in images]
        self._frames += len(frames)
        if any(frame.keyframe for frame in frames):
            self._needs_keyframe = False
        return frames

    def _wrap(self, image: av.VideoFrame, timestamp: int, broken: bool = False) -> DecodedFrame:
        self._width, self._height = image.width, image.height
        pts = image.pts if image.pts is not None else timestamp
        keyframe = bool(image.key_frame)
        return DecodedFrame(
            image=image,
            width=image.width,
            height=image.height,
            timestamp=pts,
            keyframe=keyframe,
            concealed=broken and not keyframe,
        )

    def _count_error(self) -> None:
        self._errors += 1
        self._consecutive_errors += 1
        self._needs_keyframe = True
        if self._consecutive_errors >= self._reset_after_errors:
            self.reset()

    def reset(self) -> None:
        """Drop all reference state (a new codec context); the next useful input is a keyframe."""
        self._context = self._open_context()
        self._resets += 1
        self._consecutive_errors = 0
        self._needs_keyframe = True

    def statistics(self) -> DecoderStatistics:
        return DecoderStatistics(
            access_units=self._access_units,
            frames=self._frames,
            errors=self._errors,
            consecutive_errors=self._consecutive_errors,
            resets=self._resets,
            needs_keyframe=self._needs_keyframe,
            width=self._width,
            height=self._height,
        )
