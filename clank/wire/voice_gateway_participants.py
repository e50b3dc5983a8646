"""Voice gateway participant and media-state payloads: op5, op11-op15, op18, op20.

Sans-io. Part of the voice gateway wire format (``clank.wire.voice_gateway`` re-exports them).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, ClassVar

import attrs

from clank.wire.voice_gateway_base import (
    VoiceOp,
    _bad,
    _bool,
    _drop_none,
    _frozen_map,
    _int,
    _is_int,
    _obj,
    _opt_int,
    _opt_snowflake,
    _opt_str,
    _snowflake,
    _snowflake_tuple,
)
from clank.wire.voice_gateway_handshake import (
    Codec,
    _codecs,
)

# --------------------------------------------------------------------------- participants


@attrs.frozen
class Speaking:
    """op5 in both directions: client sends ``{speaking, delay, ssrc}``, server adds ``user_id``."""

    OP: ClassVar[int] = VoiceOp.SPEAKING
    VOICE: ClassVar[int] = 1
    SOUNDSHARE: ClassVar[int] = 2
    PRIORITY: ClassVar[int] = 4

    speaking: int
    ssrc: int
    user_id: str | None = None
    delay: int | None = None

    @classmethod
    def parse(cls, d: object) -> Speaking:
        o = _obj(d, "speaking")
        flags = o.get("speaking")
        if isinstance(flags, bool):  # very old clients sent a boolean
            flags = int(flags)
        if not _is_int(flags):
            raise _bad("speaking.speaking is missing or not an integer")
        return cls(
            speaking=int(flags),
            ssrc=_int(o, "ssrc", "speaking"),
            user_id=_opt_snowflake(o, "user_id", "speaking"),
            delay=_opt_int(o, "delay", "speaking"),
        )

    def serialize(self) -> dict[str, Any]:
        return _drop_none(
            {"speaking": self.speaking, "delay": self.delay, "ssrc": self.ssrc, "user_id": self.user_id}
        )


@attrs.frozen
class ClientsConnect:
    OP: ClassVar[int] = VoiceOp.CLIENTS_CONNECT

    user_ids: tuple[str, ...]

    @classmethod
    def parse(cls, d: object) -> ClientsConnect:
        return cls(user_ids=_snowflake_tuple(_obj(d, "clients_connect"), "user_ids", "clients_connect"))

    def serialize(self) -> dict[str, Any]:
        return {"user_ids": list(self.user_ids)}


@attrs.frozen
class ClientDisconnect:
    OP: ClassVar[int] = VoiceOp.CLIENT_DISCONNECT

    user_id: str

    @classmethod
    def parse(cls, d: object) -> ClientDisconnect:
        return cls(user_id=_snowflake(_obj(d, "client_disconnect"), "user_id", "client_disconnect"))

    def serialize(self) -> dict[str, Any]:
        return {"user_id": self.user_id}


@attrs.frozen
class MaxResolution:
    type: str = "source"
    width: int = 0
    height: int = 0

    @classmethod
    def parse(cls, d: object) -> MaxResolution:
        o = _obj(d, "max_resolution")
        return cls(
            type=_opt_str(o, "type", "max_resolution") or "source",
            width=_opt_int(o, "width", "max_resolution") or 0,
            height=_opt_int(o, "height", "max_resolution") or 0,
        )

    def serialize(self) -> dict[str, Any]:
        return {"type": self.type, "width": self.width, "height": self.height}


@attrs.frozen
class VideoStream:
    """One simulcast layer in op12."""

    ssrc: int
    rtx_ssrc: int | None = None
    type: str = "video"
    rid: str | None = "100"
    quality: int | None = 100
    active: bool = True
    max_bitrate: int | None = None
    max_framerate: int | None = None
    max_resolution: MaxResolution | None = None

    @classmethod
    def parse(cls, d: object) -> VideoStream:
        """Every field is optional (a stream entry without ``ssrc`` reads as ssrc 0: not sending)."""
        o = _obj(d, "video.stream")
        w = "video.stream"
        res = o.get("max_resolution")
        return cls(
            ssrc=_opt_int(o, "ssrc", w) or 0,
            rtx_ssrc=_opt_int(o, "rtx_ssrc", w),
            type=_opt_str(o, "type", w) or "video",
            rid=_opt_str(o, "rid", w),
            quality=_opt_int(o, "quality", w),
            active=_bool(o, "active", w, True),
            max_bitrate=_opt_int(o, "max_bitrate", w),
            max_framerate=_opt_int(o, "max_framerate", w),
            max_resolution=None if res is None else MaxResolution.parse(res),
        )

    def serialize(self) -> dict[str, Any]:
        return _drop_none(
            {
                "type": self.type,
                "rid": self.rid,
                "ssrc": self.ssrc,
                "rtx_ssrc": self.rtx_ssrc,
                "active": self.active,
                "quality": self.quality,
                "max_bitrate": self.max_bitrate,
                "max_framerate": self.max_framerate,
                "max_resolution": None if self.max_resolution is None else self.max_resolution.serialize(),
            }
        )


@attrs.frozen
class Video:
    """op12 in both directions. ``None`` means "absent" (a partial update); ``streams=()`` is present, empty.

    The client never sets ``user_id``; the server always does.
    """

    OP: ClassVar[int] = VoiceOp.VIDEO

    user_id: str | None = None
    audio_ssrc: int | None = None
    video_ssrc: int | None = None
    rtx_ssrc: int | None = None
    streams: tuple[VideoStream, ...] | None = None

    @classmethod
    def parse(cls, d: object) -> Video:
        o = _obj(d, "video")
        streams = o.get("streams")
        if streams is not None and not isinstance(streams, list):
            raise _bad("video.streams is not a list")
        return cls(
            user_id=_opt_snowflake(o, "user_id", "video"),
            audio_ssrc=_opt_int(o, "audio_ssrc", "video"),
            video_ssrc=_opt_int(o, "video_ssrc", "video"),
            rtx_ssrc=_opt_int(o, "rtx_ssrc", "video"),
            streams=None if streams is None else tuple(VideoStream.parse(s) for s in streams),
        )

    def serialize(self) -> dict[str, Any]:
        return _drop_none(
            {
                "user_id": self.user_id,
                "audio_ssrc": self.audio_ssrc,
                "video_ssrc": self.video_ssrc,
                "rtx_ssrc": self.rtx_ssrc,
                "streams": None if self.streams is None else [s.serialize() for s in self.streams],
            }
        )


@attrs.frozen
class SessionUpdate:
    """op14. Client -> server carries ``codecs``; server -> client the changed session fields."""

    OP: ClassVar[int] = VoiceOp.SESSION_UPDATE

    codecs: tuple[Codec, ...] | None = None
    audio_codec: str | None = None
    video_codec: str | None = None
    media_session_id: str | None = None
    keyframe_interval: int | None = None

    @classmethod
    def parse(cls, d: object) -> SessionUpdate:
        o = _obj(d, "session_update")
        w = "session_update"
        codecs = o.get("codecs")
        if codecs is not None and not isinstance(codecs, list):
            raise _bad("session_update.codecs is not a list")
        return cls(
            codecs=None if codecs is None else _codecs(codecs),
            audio_codec=_opt_str(o, "audio_codec", w),
            video_codec=_opt_str(o, "video_codec", w),
            media_session_id=_opt_str(o, "media_session_id", w),
            keyframe_interval=_opt_int(o, "keyframe_interval", w),
        )

    def serialize(self) -> dict[str, Any]:
        return _drop_none(
            {
                "codecs": None if self.codecs is None else [c.serialize() for c in self.codecs],
                "audio_codec": self.audio_codec,
                "video_codec": self.video_codec,
                "media_session_id": self.media_session_id,
                "keyframe_interval": self.keyframe_interval,
            }
        )


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


@attrs.frozen
class MediaSinkWants:
    """op15: per-SSRC wanted quality 0-100 (0 = don't send), ``any`` = default for others.

    Mappings are read-only; this value is comparable but not hashable.
    """

    OP: ClassVar[int] = VoiceOp.MEDIA_SINK_WANTS

    any: int | None = None
    streams: Mapping[int, int] = attrs.field(factory=dict, converter=_frozen_map)
    pixel_counts: Mapping[int, float] = attrs.field(factory=dict, converter=_frozen_map)

    @classmethod
    def parse(cls, d: object) -> MediaSinkWants:
        """Accept both the nested and the flat form."""
        o = _obj(d, "media_sink_wants")
        any_q = o.get("any")
        if any_q is not None and not _is_int(any_q):
            raise _bad("media_sink_wants.any is not an integer")
        streams: dict[int, int] = {}
        nested = o.get("streams")
        if nested is not None:
            for key, value in _obj(nested, "media_sink_wants.streams").items():
                streams[_ssrc_key(key, "media_sink_wants.streams")] = _quality(value, "media_sink_wants")
        for key, value in o.items():
            # Flat form: decimal keys are SSRCs; other unknown keys are tolerated.
            if key in ("any", "streams", "pixelCounts") or not (isinstance(key, str) and key.isdecimal()):
                continue
            streams[_ssrc_key(key, "media_sink_wants")] = _quality(value, "media_sink_wants")
        pixels: dict[int, float] = {}
        raw_pixels = o.get("pixelCounts")
        if raw_pixels is not None:
            for key, value in _obj(raw_pixels, "media_sink_wants.pixelCounts").items():
                if not isinstance(value, int | float) or isinstance(value, bool):
                    raise _bad("media_sink_wants.pixelCounts value is not a number")
                pixels[_ssrc_key(key, "media_sink_wants.pixelCounts")] = float(value)
        return cls(any=None if any_q is None else int(any_q), streams=streams, pixel_counts=pixels)

    def serialize(self, fmt: SinkWantsFormat = SinkWantsFormat.NESTED) -> dict[str, Any]:
        qualities = {str(ssrc): q for ssrc, q in self.streams.items()}
        out: dict[str, Any] = {}
        if self.any is not None:
            out["any"] = self.any
        out |= qualities
        if fmt is SinkWantsFormat.NESTED:
            out["streams"] = dict(qualities)
        if self.pixel_counts:
            out["pixelCounts"] = {str(ssrc): px for ssrc, px in self.pixel_counts.items()}
        return out


@attrs.frozen
class ClientFlags:
    """op18 ``{user_id, flags}``. Not video state."""

    OP: ClassVar[int] = VoiceOp.CLIENT_FLAGS

    user_id: str
    flags: int

    @classmethod
    def parse(cls, d: object) -> ClientFlags:
        o = _obj(d, "client_flags")
        return cls(
            user_id=_snowflake(o, "user_id", "client_flags"), flags=_opt_int(o, "flags", "client_flags") or 0
        )

    def serialize(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "flags": self.flags}


@attrs.frozen
class ClientPlatform:
    """op20 ``{user_id, platform}``."""

    OP: ClassVar[int] = VoiceOp.CLIENT_PLATFORM

    user_id: str
    platform: int

    @classmethod
    def parse(cls, d: object) -> ClientPlatform:
        o = _obj(d, "client_platform")
        w = "client_platform"
        return cls(user_id=_snowflake(o, "user_id", w), platform=_opt_int(o, "platform", w) or 0)

    def serialize(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "platform": self.platform}
