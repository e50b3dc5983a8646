"""Voice gateway handshake and liveness payloads: codecs, op0/op7/op2/op1/op4, op8/op3/op6.

Sans-io. Part of the voice gateway wire format (``clank.wire.voice_gateway`` re-exports them).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Final

import attrs

from clank.wire.voice_gateway_base import (
    H264_PT,
    H264_RTX_PT,
    OPUS_PT,
    SECRET_KEY_SIZE,
    VP8_PT,
    VP8_RTX_PT,
    Role,
    VoiceOp,
    _bad,
    _bool,
    _drop_none,
    _int,
    _is_int,
    _list,
    _number,
    _obj,
    _opt_bool,
    _opt_int,
    _opt_snowflake,
    _opt_str,
    _snowflake,
    _str,
    _str_tuple,
)

# --------------------------------------------------------------------------- codecs


@attrs.frozen
class Codec:
    """One entry of op1/op14 ``codecs``. ``encode``/``decode`` are only set for video."""

    name: str
    type: str
    priority: int
    payload_type: int
    rtx_payload_type: int | None = None
    encode: bool | None = None
    decode: bool | None = None

    @classmethod
    def parse(cls, d: object) -> Codec:
        o = _obj(d, "codec")
        return cls(
            name=_str(o, "name", "codec"),
            type=_str(o, "type", "codec"),
            priority=_int(o, "priority", "codec"),
            payload_type=_int(o, "payload_type", "codec"),
            rtx_payload_type=_opt_int(o, "rtx_payload_type", "codec"),
            encode=_opt_bool(o, "encode", "codec"),
            decode=_opt_bool(o, "decode", "codec"),
        )

    def serialize(self) -> dict[str, Any]:
        return _drop_none(
            {
                "name": self.name,
                "type": self.type,
                "priority": self.priority,
                "payload_type": self.payload_type,
                "rtx_payload_type": self.rtx_payload_type,
                "encode": self.encode,
                "decode": self.decode,
            }
        )


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


def _codecs(items: list[Any]) -> tuple[Codec, ...]:
    return tuple(Codec.parse(item) for item in items)


# --------------------------------------------------------------------------- handshake payloads


@attrs.frozen
class StreamRequest:
    """A simulcast layer offered in Identify (``{"type":"screen","rid":"100","quality":100}``)."""

    type: str = "screen"
    rid: str = "100"
    quality: int = 100

    @classmethod
    def parse(cls, d: object) -> StreamRequest:
        o = _obj(d, "identify.stream")
        return cls(
            type=_str(o, "type", "identify.stream"),
            rid=_str(o, "rid", "identify.stream"),
            quality=_opt_int(o, "quality", "identify.stream") or 100,
        )

    def serialize(self) -> dict[str, Any]:
        return {"type": self.type, "rid": self.rid, "quality": self.quality}


SCREEN_STREAM: Final = StreamRequest()


@attrs.frozen
class Identify:
    OP: ClassVar[int] = VoiceOp.IDENTIFY

    server_id: str
    channel_id: str | None
    user_id: str
    session_id: str
    token: str = attrs.field(repr=False)
    video: bool = False
    streams: tuple[StreamRequest, ...] = ()
    max_dave_protocol_version: int = 0

    @classmethod
    def parse(cls, d: object) -> Identify:
        o = _obj(d, "identify")
        return cls(
            server_id=_snowflake(o, "server_id", "identify"),
            channel_id=_opt_snowflake(o, "channel_id", "identify"),
            user_id=_snowflake(o, "user_id", "identify"),
            session_id=_str(o, "session_id", "identify"),
            token=_str(o, "token", "identify"),
            video=_bool(o, "video", "identify", False),
            streams=tuple(StreamRequest.parse(s) for s in _list(o, "streams", "identify")),
            max_dave_protocol_version=_opt_int(o, "max_dave_protocol_version", "identify") or 0,
        )

    def serialize(self) -> dict[str, Any]:
        out: dict[str, Any] = {"server_id": self.server_id}
        if self.channel_id is not None:
            out["channel_id"] = self.channel_id
        out |= {"user_id": self.user_id, "session_id": self.session_id, "token": self.token}
        if self.video or self.streams:
            out["video"] = self.video
            out["streams"] = [s.serialize() for s in self.streams]
        out["max_dave_protocol_version"] = self.max_dave_protocol_version
        return out


@attrs.frozen
class Resume:
    OP: ClassVar[int] = VoiceOp.RESUME

    server_id: str
    channel_id: str | None
    session_id: str
    token: str = attrs.field(repr=False)
    seq_ack: int = -1

    @classmethod
    def parse(cls, d: object) -> Resume:
        o = _obj(d, "resume")
        seq_ack = _opt_int(o, "seq_ack", "resume")
        return cls(
            server_id=_snowflake(o, "server_id", "resume"),
            channel_id=_opt_snowflake(o, "channel_id", "resume"),
            session_id=_str(o, "session_id", "resume"),
            token=_str(o, "token", "resume"),
            seq_ack=-1 if seq_ack is None else seq_ack,
        )

    def serialize(self) -> dict[str, Any]:
        out: dict[str, Any] = {"server_id": self.server_id}
        if self.channel_id is not None:
            out["channel_id"] = self.channel_id
        out |= {"session_id": self.session_id, "token": self.token, "seq_ack": self.seq_ack}
        return out


@attrs.frozen
class ReadyStream:
    """A send layer the server assigned to us in Ready. ``rtx_ssrc`` defaults to ``ssrc + 1``."""

    type: str
    rid: str
    ssrc: int
    rtx_ssrc: int
    quality: int = 100
    active: bool = False

    @classmethod
    def parse(cls, d: object) -> ReadyStream:
        o = _obj(d, "ready.stream")
        ssrc = _int(o, "ssrc", "ready.stream")
        rtx = _opt_int(o, "rtx_ssrc", "ready.stream")
        return cls(
            type=_opt_str(o, "type", "ready.stream") or "video",
            rid=_opt_str(o, "rid", "ready.stream") or "100",
            ssrc=ssrc,
            rtx_ssrc=ssrc + 1 if rtx is None else rtx,
            quality=_opt_int(o, "quality", "ready.stream") or 100,
            active=_bool(o, "active", "ready.stream", False),
        )

    def serialize(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "rid": self.rid,
            "ssrc": self.ssrc,
            "rtx_ssrc": self.rtx_ssrc,
            "quality": self.quality,
            "active": self.active,
        }


@attrs.frozen
class Ready:
    OP: ClassVar[int] = VoiceOp.READY

    ssrc: int
    ip: str
    port: int
    modes: tuple[str, ...]
    experiments: tuple[str, ...] = ()
    streams: tuple[ReadyStream, ...] = ()

    @classmethod
    def parse(cls, d: object) -> Ready:
        # A heartbeat_interval in Ready is ignored on purpose (it is not authoritative).
        o = _obj(d, "ready")
        port = _int(o, "port", "ready")
        if not 0 <= port <= 0xFFFF:
            raise _bad("ready.port out of range")
        return cls(
            ssrc=_int(o, "ssrc", "ready"),
            ip=_str(o, "ip", "ready"),
            port=port,
            modes=_str_tuple(o, "modes", "ready"),
            experiments=_str_tuple(o, "experiments", "ready"),
            streams=tuple(ReadyStream.parse(s) for s in _list(o, "streams", "ready")),
        )

    def serialize(self) -> dict[str, Any]:
        return {
            "ssrc": self.ssrc,
            "ip": self.ip,
            "port": self.port,
            "modes": list(self.modes),
            "experiments": list(self.experiments),
            "streams": [s.serialize() for s in self.streams],
        }


@attrs.frozen
class SelectProtocol:
    OP: ClassVar[int] = VoiceOp.SELECT_PROTOCOL

    protocol: str
    address: str
    port: int
    mode: str
    codecs: tuple[Codec, ...] = ()
    experiments: tuple[str, ...] = ()

    @classmethod
    def parse(cls, d: object) -> SelectProtocol:
        o = _obj(d, "select_protocol")
        data = _obj(o.get("data"), "select_protocol.data")
        return cls(
            protocol=_str(o, "protocol", "select_protocol"),
            address=_str(data, "address", "select_protocol.data"),
            port=_int(data, "port", "select_protocol.data"),
            mode=_str(data, "mode", "select_protocol.data"),
            codecs=_codecs(_list(o, "codecs", "select_protocol")),
            experiments=_str_tuple(o, "experiments", "select_protocol"),
        )

    def serialize(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "data": {"address": self.address, "port": self.port, "mode": self.mode},
            "codecs": [c.serialize() for c in self.codecs],
            "experiments": list(self.experiments),
        }


def _key_bytes(value: object) -> bytes:
    if not isinstance(value, list) or len(value) != SECRET_KEY_SIZE:
        raise _bad(f"session_description.secret_key is not a list of {SECRET_KEY_SIZE} integers")
    if not all(_is_int(b) and 0 <= b <= 0xFF for b in value):
        raise _bad("session_description.secret_key holds a non-byte")
    return bytes(value)


@attrs.frozen
class SessionDescription:
    OP: ClassVar[int] = VoiceOp.SESSION_DESCRIPTION

    mode: str
    secret_key: bytes = attrs.field(repr=False)
    audio_codec: str | None = "opus"
    video_codec: str | None = None
    media_session_id: str | None = None
    dave_protocol_version: int = 0
    keyframe_interval: int | None = None

    @classmethod
    def parse(cls, d: object) -> SessionDescription:
        o = _obj(d, "session_description")
        w = "session_description"
        return cls(
            mode=_str(o, "mode", w),
            secret_key=_key_bytes(o.get("secret_key")),
            audio_codec=_opt_str(o, "audio_codec", w),
            video_codec=_opt_str(o, "video_codec", w),
            media_session_id=_opt_str(o, "media_session_id", w),
            dave_protocol_version=_opt_int(o, "dave_protocol_version", w) or 0,
            keyframe_interval=_opt_int(o, "keyframe_interval", w),
        )

    def serialize(self) -> dict[str, Any]:
        return _drop_none(
            {
                "mode": self.mode,
                "secret_key": list(self.secret_key),
                "audio_codec": self.audio_codec,
                "video_codec": self.video_codec,
                "media_session_id": self.media_session_id,
                "dave_protocol_version": self.dave_protocol_version,
                "keyframe_interval": self.keyframe_interval,
            }
        )


# --------------------------------------------------------------------------- liveness


@attrs.frozen
class Hello:
    OP: ClassVar[int] = VoiceOp.HELLO

    heartbeat_interval: float
    """Milliseconds."""
    v: int | None = None

    @classmethod
    def parse(cls, d: object) -> Hello:
        o = _obj(d, "hello")
        interval = _number(o, "heartbeat_interval", "hello")
        if not 0 < interval < 3_600_000:
            raise _bad("hello.heartbeat_interval out of range")
        return cls(heartbeat_interval=interval, v=_opt_int(o, "v", "hello"))

    def serialize(self) -> dict[str, Any]:
        interval: float | int = self.heartbeat_interval
        if interval == int(interval):
            interval = int(interval)
        return _drop_none({"v": self.v, "heartbeat_interval": interval})


@attrs.frozen
class Heartbeat:
    """op3. ``seq_ack`` is None before any seq was seen (serialized as -1)."""

    OP: ClassVar[int] = VoiceOp.HEARTBEAT

    t: int
    seq_ack: int | None = None

    @classmethod
    def parse(cls, d: object) -> Heartbeat:
        if _is_int(d):  # pre-v8 form: the bare nonce
            return cls(t=int(d))
        if d is None:  # a server heartbeat request may carry no payload
            return cls(t=0)
        o = _obj(d, "heartbeat")
        seq_ack = _opt_int(o, "seq_ack", "heartbeat")
        return cls(t=_int(o, "t", "heartbeat"), seq_ack=None if seq_ack is None or seq_ack < 0 else seq_ack)

    def serialize(self) -> dict[str, Any]:
        return {"t": self.t, "seq_ack": -1 if self.seq_ack is None else self.seq_ack}


@attrs.frozen
class HeartbeatAck:
    OP: ClassVar[int] = VoiceOp.HEARTBEAT_ACK

    t: int

    @classmethod
    def parse(cls, d: object) -> HeartbeatAck:
        if _is_int(d):
            return cls(t=int(d))
        return cls(t=_int(_obj(d, "heartbeat_ack"), "t", "heartbeat_ack"))

    def serialize(self) -> dict[str, Any]:
        return {"t": self.t}
