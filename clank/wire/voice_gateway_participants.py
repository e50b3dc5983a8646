"""Voice gateway participant and media-state payloads: op5, op11-op15, op18, op20.

Sans-io. Part of the voice gateway wire format (``clank.wire.voice_gateway`` re-exports them).
Each class declares its wire rules; the family converter (``wire/convert.py``) reads and writes it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import attrs

from clank.wire.convert import Fail, FieldHook, Message, Shape, wire
from clank.wire.convert import is_int as _is_int
from clank.wire.voice_gateway_base import VOICE_GATEWAY, VoiceOp, _bad, converter
from clank.wire.voice_gateway_handshake import Codec

# --------------------------------------------------------------------------- participants


def _speaking_flags(fail: Fail) -> FieldHook:
    def read(value: object, _t: Any = None) -> int:
        if type(value) is int:
            return value
        if isinstance(value, bool):  # very old clients sent a boolean
            return int(value)
        if not _is_int(value):
            raise fail("is missing or not an integer")
        return int(value)

    return read


@VOICE_GATEWAY.message
@attrs.frozen
class Speaking(Message):
    """op5 in both directions: client sends ``{speaking, delay, ssrc}``, server adds ``user_id``."""

    OP: ClassVar[int] = VoiceOp.SPEAKING
    WIRE: ClassVar[Shape] = Shape("speaking", order=("speaking", "delay", "ssrc", "user_id"), drop_none=True)
    VOICE: ClassVar[int] = 1
    SOUNDSHARE: ClassVar[int] = 2
    PRIORITY: ClassVar[int] = 4

    speaking: int = attrs.field(metadata=wire(read=_speaking_flags))
    ssrc: int
    user_id: str | None = attrs.field(default=None, metadata=wire(snowflake=True))
    delay: int | None = None


@VOICE_GATEWAY.message
@attrs.frozen
class ClientsConnect(Message):
    OP: ClassVar[int] = VoiceOp.CLIENTS_CONNECT
    WIRE: ClassVar[Shape] = Shape("clients_connect")

    user_ids: tuple[str, ...] = attrs.field(metadata=wire(snowflake=True, missing=()))


@VOICE_GATEWAY.message
@attrs.frozen
class ClientDisconnect(Message):
    OP: ClassVar[int] = VoiceOp.CLIENT_DISCONNECT
    WIRE: ClassVar[Shape] = Shape("client_disconnect")

    user_id: str = attrs.field(metadata=wire(snowflake=True))


@VOICE_GATEWAY.message
@attrs.frozen
class MaxResolution(Message):
    WIRE: ClassVar[Shape] = Shape("max_resolution")

    type: str = attrs.field(default="source", metadata=wire(empty_is_missing=True))
    width: int = 0
    height: int = 0


@VOICE_GATEWAY.message
@attrs.frozen
class VideoStream(Message):
    """One simulcast layer in op12.

    Every field is optional on the wire (a stream entry without ``ssrc`` reads as ssrc 0: not
    sending); an absent ``rid``/``quality`` reads as None, not as the constructor's default.
    """

    WIRE: ClassVar[Shape] = Shape(
        "video.stream",
        order=(
            "type",
            "rid",
            "ssrc",
            "rtx_ssrc",
            "active",
            "quality",
            "max_bitrate",
            "max_framerate",
            "max_resolution",
        ),
        drop_none=True,
    )

    ssrc: int = attrs.field(metadata=wire(missing=0))
    rtx_ssrc: int | None = None
    type: str = attrs.field(default="video", metadata=wire(empty_is_missing=True))
    rid: str | None = attrs.field(default="100", metadata=wire(missing=None))
    quality: int | None = attrs.field(default=100, metadata=wire(missing=None))
    active: bool = True
    max_bitrate: int | None = None
    max_framerate: int | None = None
    max_resolution: MaxResolution | None = None


@VOICE_GATEWAY.message
@attrs.frozen
class Video(Message):
    """op12 in both directions. ``None`` means "absent" (a partial update); ``streams=()`` is present, empty.

    The client never sets ``user_id``; the server always does.
    """

    OP: ClassVar[int] = VoiceOp.VIDEO
    WIRE: ClassVar[Shape] = Shape("video", drop_none=True)

    user_id: str | None = attrs.field(default=None, metadata=wire(snowflake=True))
    audio_ssrc: int | None = None
    video_ssrc: int | None = None
    rtx_ssrc: int | None = None
    streams: tuple[VideoStream, ...] | None = None


@VOICE_GATEWAY.message
@attrs.frozen
class SessionUpdate(Message):
    """op14. Client -> server carries ``codecs``; server -> client the changed session fields."""

    OP: ClassVar[int] = VoiceOp.SESSION_UPDATE
    WIRE: ClassVar[Shape] = Shape("session_update", drop_none=True)

    codecs: tuple[Codec, ...] | None = None
    audio_codec: str | None = None
    video_codec: str | None = None
    media_session_id: str | None = None
    keyframe_interval: int | None = None


class SinkWantsFormat(enum.Enum):
    NESTED = "nested"
    """``{"any": q, "ssrc": q, "streams": {"ssrc": q}, "pixelCounts": {...}}``: the documented flat
    keys *and* clankvox's nested map (servers that read either form see the same wants); the default."""
    FLAT = "flat"
    """``{"ssrc": q, "any": q, "pixelCounts": {...}}`` — what the community docs describe."""


def _ssrc_key(key: object, what: str) -> int:
    if isinstance(key, str) and key.isdecimal() and len(key) <= 10:
        value = int(key)
        if value <= 0xFFFFFFFF:
            return value
    raise _bad(f"{what} key {key!r} is not an SSRC")


def _quality(value: object, what: str) -> int:
    if not _is_int(value):
        raise _bad(f"{what} quality is not an integer")
    return int(value)


def _frozen_map(value: Mapping[Any, Any]) -> Mapping[Any, Any]:
    return MappingProxyType(dict(value))


def _object(d: object, what: str) -> Mapping[Any, Any]:
    if not isinstance(d, dict):
        raise _bad(f"{what} payload is not an object")
    return d


@attrs.frozen
class MediaSinkWants:
    """op15: per-SSRC wanted quality 0-100 (0 = don't send), ``any`` = default for others.

    Mappings are read-only; this value is comparable but not hashable. Its wire form is keyed by
    SSRC (flat and/or nested), not by field, so its two converter hooks are written out below.
    """

    OP: ClassVar[int] = VoiceOp.MEDIA_SINK_WANTS

    any: int | None = None
    streams: Mapping[int, int] = attrs.field(factory=dict, converter=_frozen_map)
    pixel_counts: Mapping[int, float] = attrs.field(factory=dict, converter=_frozen_map)

    @classmethod
    def parse(cls, d: object) -> MediaSinkWants:
        """Accept both the nested and the flat form."""
        return _structure_sink_wants(d)

    def serialize(self, fmt: SinkWantsFormat = SinkWantsFormat.NESTED) -> dict[str, Any]:
        return _unstructure_sink_wants(self, fmt)


def _structure_sink_wants(d: object, _t: Any = MediaSinkWants) -> MediaSinkWants:
    o = _object(d, "media_sink_wants")
    any_q = o.get("any")
    if any_q is not None and not _is_int(any_q):
        raise _bad("media_sink_wants.any is not an integer")
    streams: dict[int, int] = {}
    nested = o.get("streams")
    if nested is not None:
        for key, value in _object(nested, "media_sink_wants.streams").items():
            streams[_ssrc_key(key, "media_sink_wants.streams")] = _quality(value, "media_sink_wants")
    for key, value in o.items():
        # Flat form: decimal keys are SSRCs; other unknown keys are tolerated.
        if key in ("any", "streams", "pixelCounts") or not (isinstance(key, str) and key.isdecimal()):
            continue
        streams[_ssrc_key(key, "media_sink_wants")] = _quality(value, "media_sink_wants")
    pixels: dict[int, float] = {}
    raw_pixels = o.get("pixelCounts")
    if raw_pixels is not None:
        for key, value in _object(raw_pixels, "media_sink_wants.pixelCounts").items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise _bad("media_sink_wants.pixelCounts value is not a number")
            pixels[_ssrc_key(key, "media_sink_wants.pixelCounts")] = float(value)
    return MediaSinkWants(any=None if any_q is None else int(any_q), streams=streams, pixel_counts=pixels)


def _unstructure_sink_wants(
    wants: MediaSinkWants, fmt: SinkWantsFormat = SinkWantsFormat.NESTED
) -> dict[str, Any]:
    qualities = {str(ssrc): q for ssrc, q in wants.streams.items()}
    out: dict[str, Any] = {}
    if wants.any is not None:
        out["any"] = wants.any
    out |= qualities
    if fmt is SinkWantsFormat.NESTED:
        out["streams"] = dict(qualities)
    if wants.pixel_counts:
        out["pixelCounts"] = {str(ssrc): px for ssrc, px in wants.pixel_counts.items()}
    return out


converter.register_structure_hook(MediaSinkWants, _structure_sink_wants)
converter.register_unstructure_hook(MediaSinkWants, _unstructure_sink_wants)


@VOICE_GATEWAY.message
@attrs.frozen
class ClientFlags(Message):
    """op18 ``{user_id, flags}``. Not video state."""

    OP: ClassVar[int] = VoiceOp.CLIENT_FLAGS
    WIRE: ClassVar[Shape] = Shape("client_flags")

    user_id: str = attrs.field(metadata=wire(snowflake=True))
    flags: int = attrs.field(metadata=wire(missing=0))


@VOICE_GATEWAY.message
@attrs.frozen
class ClientPlatform(Message):
    """op20 ``{user_id, platform}``."""

    OP: ClassVar[int] = VoiceOp.CLIENT_PLATFORM
    WIRE: ClassVar[Shape] = Shape("client_platform")

    user_id: str = attrs.field(metadata=wire(snowflake=True))
    platform: int = attrs.field(metadata=wire(missing=0))
