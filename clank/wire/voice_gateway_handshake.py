"""Voice gateway handshake and liveness payloads: codecs, op0/op7/op2/op1/op4, op8/op3/op6.

Sans-io. Part of the voice gateway wire format (``clank.wire.voice_gateway`` re-exports them).
Each class declares its wire rules; the family converter (``wire/convert.py``) reads and writes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Final

import attrs

from clank.wire.convert import REQUIRED, Fail, FieldHook, Message, Shape, wire
from clank.wire.convert import integral as _integral
from clank.wire.convert import is_int as _is_int
from clank.wire.voice_gateway_base import (
    H264_PT,
    H264_RTX_PT,
    OPUS_PT,
    SECRET_KEY_SIZE,
    VOICE_GATEWAY,
    VP8_PT,
    VP8_RTX_PT,
    Role,
    VoiceOp,
    _bad,
)

# --------------------------------------------------------------------------- codecs


@VOICE_GATEWAY.message
@attrs.frozen
class Codec(Message):
    """One entry of op1/op14 ``codecs``. ``encode``/``decode`` are only set for video."""

    WIRE: ClassVar[Shape] = Shape("codec", drop_none=True)

    name: str
    type: str
    priority: int
    payload_type: int
    rtx_payload_type: int | None = None
    encode: bool | None = None
    decode: bool | None = None


OPUS_CODEC: Final = Codec(name="opus", type="audio", priority=1000, payload_type=OPUS_PT)
# Priorities are multiples of 1000, unique per type, lowest wins (protocol notes §9 #12).
H264_DECODE: Final = Codec("H264", "video", 1000, H264_PT, H264_RTX_PT, encode=False, decode=True)
VP8_DECODE: Final = Codec("VP8", "video", 2000, VP8_PT, VP8_RTX_PT, encode=False, decode=True)
H264_ENCODE: Final = Codec("H264", "video", 1000, H264_PT, H264_RTX_PT, encode=True, decode=False)

ROLE_CODECS: Final[Mapping[Role, tuple[Codec, ...]]] = MappingProxyType(
    {
        "voice": (OPUS_CODEC, H264_DECODE, VP8_DECODE),
        "stream_watch": (OPUS_CODEC, H264_DECODE, VP8_DECODE),
        "stream_publish": (OPUS_CODEC, H264_ENCODE),
    }
)


def codecs_for_role(role: Role) -> tuple[Codec, ...]:
    return ROLE_CODECS[role]


# --------------------------------------------------------------------------- handshake payloads


@VOICE_GATEWAY.message
@attrs.frozen
class StreamRequest(Message):
    """A simulcast layer offered in Identify (``{"type":"screen","rid":"100","quality":100}``)."""

    WIRE: ClassVar[Shape] = Shape("identify.stream")

    type: str = attrs.field(default="screen", metadata=wire(missing=REQUIRED))
    rid: str = attrs.field(default="100", metadata=wire(missing=REQUIRED))
    quality: int = attrs.field(default=100, metadata=wire(empty_is_missing=True))


SCREEN_STREAM: Final = StreamRequest()


def _identify_keys(out: dict[str, Any]) -> dict[str, Any]:
    if not out["video"] and not out["streams"]:  # audio-only clients send neither key
        del out["video"], out["streams"]
    return out


@VOICE_GATEWAY.message
@attrs.frozen
class Identify(Message):
    OP: ClassVar[int] = VoiceOp.IDENTIFY
    WIRE: ClassVar[Shape] = Shape("identify", drop_none=True, post=_identify_keys)

    server_id: str = attrs.field(metadata=wire(snowflake=True))
    channel_id: str | None = attrs.field(metadata=wire(snowflake=True, missing=None))
    user_id: str = attrs.field(metadata=wire(snowflake=True))
    session_id: str
    token: str = attrs.field(repr=False)
    video: bool = False
    streams: tuple[StreamRequest, ...] = ()
    max_dave_protocol_version: int = 0


@VOICE_GATEWAY.message
@attrs.frozen
class Resume(Message):
    OP: ClassVar[int] = VoiceOp.RESUME
    WIRE: ClassVar[Shape] = Shape("resume", drop_none=True)

    server_id: str = attrs.field(metadata=wire(snowflake=True))
    channel_id: str | None = attrs.field(metadata=wire(snowflake=True, missing=None))
    session_id: str
    token: str = attrs.field(repr=False)
    seq_ack: int = -1


def _default_rtx(d: dict[str, Any]) -> dict[str, Any]:
    """A Ready stream without ``rtx_ssrc`` uses ``ssrc + 1``."""
    if d.get("rtx_ssrc") is None:
        ssrc = _integral(d.get("ssrc"))
        if ssrc is not None:
            return d | {"rtx_ssrc": ssrc + 1}
    return d


@VOICE_GATEWAY.message
@attrs.frozen
class ReadyStream(Message):
    """A send layer the server assigned to us in Ready. ``rtx_ssrc`` defaults to ``ssrc + 1``."""

    WIRE: ClassVar[Shape] = Shape("ready.stream", pre=_default_rtx)

    type: str = attrs.field(metadata=wire(missing="video", empty_is_missing=True))
    rid: str = attrs.field(metadata=wire(missing="100", empty_is_missing=True))
    ssrc: int
    rtx_ssrc: int
    quality: int = attrs.field(default=100, metadata=wire(empty_is_missing=True))
    active: bool = False


@VOICE_GATEWAY.message
@attrs.frozen
class Ready(Message):
    # A heartbeat_interval in Ready is ignored on purpose (it is not authoritative).
    OP: ClassVar[int] = VoiceOp.READY
    WIRE: ClassVar[Shape] = Shape("ready")

    ssrc: int
    ip: str
    port: int = attrs.field(metadata=wire(check=(lambda p: 0 <= p <= 0xFFFF, "out of range")))
    modes: tuple[str, ...] = attrs.field(metadata=wire(missing=()))
    experiments: tuple[str, ...] = ()
    streams: tuple[ReadyStream, ...] = ()


_DATA_KEYS: Final = ("address", "port", "mode")


def _flatten_data(d: dict[str, Any]) -> dict[str, Any]:
    """op1 nests address/port/mode under ``data``; read them as ``data.<key>`` fields."""
    data = d.get("data")
    if not isinstance(data, dict):
        raise _bad("select_protocol.data payload is not an object")
    return d | {f"data.{key}": data.get(key) for key in _DATA_KEYS}


def _nest_data(out: dict[str, Any]) -> dict[str, Any]:
    return {
        "protocol": out["protocol"],
        "data": {key: out[f"data.{key}"] for key in _DATA_KEYS},
        "codecs": out["codecs"],
        "experiments": out["experiments"],
    }


@VOICE_GATEWAY.message
@attrs.frozen
class SelectProtocol(Message):
    OP: ClassVar[int] = VoiceOp.SELECT_PROTOCOL
    WIRE: ClassVar[Shape] = Shape("select_protocol", pre=_flatten_data, post=_nest_data)

    protocol: str
    address: str = attrs.field(metadata=wire(key="data.address"))
    port: int = attrs.field(metadata=wire(key="data.port"))
    mode: str = attrs.field(metadata=wire(key="data.mode"))
    codecs: tuple[Codec, ...] = ()
    experiments: tuple[str, ...] = ()


def _key_bytes(fail: Fail) -> FieldHook:
    def read(value: object, _t: Any = None) -> bytes:
        if not isinstance(value, list) or len(value) != SECRET_KEY_SIZE:
            raise fail(f"is not a list of {SECRET_KEY_SIZE} integers")
        if not all(_is_int(b) and 0 <= b <= 0xFF for b in value):
            raise fail("holds a non-byte")
        return bytes(value)

    return read


@VOICE_GATEWAY.message
@attrs.frozen
class SessionDescription(Message):
    OP: ClassVar[int] = VoiceOp.SESSION_DESCRIPTION
    WIRE: ClassVar[Shape] = Shape("session_description", drop_none=True)

    mode: str
    secret_key: bytes = attrs.field(repr=False, metadata=wire(read=_key_bytes, write=list))
    audio_codec: str | None = attrs.field(default="opus", metadata=wire(missing=None))
    video_codec: str | None = None
    media_session_id: str | None = None
    dave_protocol_version: int = 0
    keyframe_interval: int | None = None


# --------------------------------------------------------------------------- liveness


def _whole_ms(interval: float) -> float | int:
    return int(interval) if interval == int(interval) else interval


@VOICE_GATEWAY.message
@attrs.frozen
class Hello(Message):
    OP: ClassVar[int] = VoiceOp.HELLO
    WIRE: ClassVar[Shape] = Shape("hello", order=("v", "heartbeat_interval"), drop_none=True)

    heartbeat_interval: float = attrs.field(
        metadata=wire(check=(lambda ms: 0 < ms < 3_600_000, "out of range"), write=_whole_ms)
    )
    """Milliseconds."""
    v: int | None = None


def _bare_nonce(d: object) -> object:
    if _is_int(d):  # pre-v8 form: the bare nonce
        return {"t": d}
    return {"t": 0} if d is None else d  # a server heartbeat request may carry no payload


def _seq_ack(fail: Fail) -> FieldHook:
    """Negative acks (-1: "none yet") read as None."""

    def read(value: object, _t: Any = None) -> int | None:
        if value is None:
            return None
        seq = _integral(value)
        if seq is None:
            raise fail("is not an integer")
        return None if seq < 0 else seq

    return read


@VOICE_GATEWAY.message
@attrs.frozen
class Heartbeat(Message):
    """op3. ``seq_ack`` is None before any seq was seen (serialized as -1)."""

    OP: ClassVar[int] = VoiceOp.HEARTBEAT
    WIRE: ClassVar[Shape] = Shape("heartbeat", bare=_bare_nonce)

    t: int
    seq_ack: int | None = attrs.field(
        default=None, metadata=wire(read=_seq_ack, write=lambda s: -1 if s is None else s)
    )


def _bare_ack(d: object) -> object:
    return {"t": d} if _is_int(d) else d


@VOICE_GATEWAY.message
@attrs.frozen
class HeartbeatAck(Message):
    OP: ClassVar[int] = VoiceOp.HEARTBEAT_ACK
    WIRE: ClassVar[Shape] = Shape("heartbeat_ack", bare=_bare_ack)

    t: int
