"""Voice gateway wire format: JSON text frames, binary DAVE frames and the typed payloads.

Sans-io. The same protocol serves all three transport roles (voice, stream_watch,
stream_publish); the client core (``protocol/voice_gateway.py``) and the sandbox voice server
(``sandbox/voice_gateway_core.py``) both build on this module so the two sides cannot drift.

Frames:

* text: ``{"op": n, "d": ..., "seq": n?}`` (``seq`` only on replayable server messages);
* binary, server -> client: ``[seq u16 BE][op u8][payload]``;
* binary, client -> server: ``[op u8][payload]`` (no seq).

Every payload value has ``parse(d)`` (from the decoded ``d`` object) and ``serialize()`` (to
a JSON-ready ``d``); ``text_frame(value)`` wraps one into a text frame. Unknown fields are
tolerated. Anything we cannot accept raises :class:`MalformedMessage` with close code 4002
("failed to decode payload"), never ``KeyError``/``TypeError``/``struct.error``.
"""

from __future__ import annotations

import enum
import json
import struct
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, ClassVar, Final, Literal, TypeGuard

import attrs

from clank.errors import MalformedMessage

KIND: Final = "voice_gateway"
DECODE_FAILED: Final = 4002
"""Voice close code "failed to decode payload"."""

GATEWAY_VERSION: Final = 9

MODE_AES256_GCM: Final = "aead_aes256_gcm_rtpsize"
MODE_XCHACHA20: Final = "aead_xchacha20_poly1305_rtpsize"
SUPPORTED_MODES: Final = (MODE_AES256_GCM, MODE_XCHACHA20)
"""Preference order: AES-256-GCM when offered, XChaCha20 is mandatory to support."""

SECRET_KEY_SIZE: Final = 32

OPUS_PT: Final = 120
H264_PT: Final = 103
H264_RTX_PT: Final = 104
VP8_PT: Final = 105
VP8_RTX_PT: Final = 106

Role = Literal["voice", "stream_watch", "stream_publish"]
ROLES: Final[tuple[Role, ...]] = ("voice", "stream_watch", "stream_publish")


class VoiceOp(enum.IntEnum):
    IDENTIFY = 0
    SELECT_PROTOCOL = 1
    READY = 2
    HEARTBEAT = 3
    SESSION_DESCRIPTION = 4
    SPEAKING = 5
    HEARTBEAT_ACK = 6
    RESUME = 7
    HELLO = 8
    RESUMED = 9
    CLIENTS_CONNECT = 11
    VIDEO = 12
    CLIENT_DISCONNECT = 13
    SESSION_UPDATE = 14
    MEDIA_SINK_WANTS = 15
    VOICE_BACKEND_VERSION = 16
    CHANNEL_OPTIONS_UPDATE = 17
    CLIENT_FLAGS = 18
    SPEED_TEST = 19
    CLIENT_PLATFORM = 20
    DAVE_PREPARE_TRANSITION = 21
    DAVE_EXECUTE_TRANSITION = 22
    DAVE_TRANSITION_READY = 23
    DAVE_PREPARE_EPOCH = 24
    DAVE_MLS_EXTERNAL_SENDER = 25
    DAVE_MLS_KEY_PACKAGE = 26
    DAVE_MLS_PROPOSALS = 27
    DAVE_MLS_COMMIT_WELCOME = 28
    DAVE_MLS_ANNOUNCE_COMMIT_TRANSITION = 29
    DAVE_MLS_WELCOME = 30
    DAVE_MLS_INVALID_COMMIT_WELCOME = 31
    NO_ROUTE = 32


DAVE_JSON_OPS: Final = frozenset({21, 22, 23, 24, 31})
DAVE_BINARY_OPS: Final = frozenset({25, 26, 27, 28, 29, 30})
SERVER_BINARY_OPS: Final = frozenset({25, 27, 29, 30})
CLIENT_BINARY_OPS: Final = frozenset({26, 28})


def _bad(reason: str) -> MalformedMessage:
    return MalformedMessage(KIND, reason, close_code=DECODE_FAILED)


# --------------------------------------------------------------------------- frames


@attrs.frozen
class TextFrame:
    """One JSON text frame. ``seq`` is set on replayable server -> client messages."""

    op: int
    d: Any = None
    seq: int | None = None

    @classmethod
    def parse(cls, text: str | bytes) -> TextFrame:
        try:
            obj = json.loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise _bad(f"invalid JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise _bad("frame is not an object")
        op = obj.get("op")
        if not _is_int(op):
            raise _bad("missing or non-integer 'op'")
        seq = obj.get("seq")
        if seq is not None and not _is_int(seq):
            raise _bad("'seq' is not an integer")
        return cls(op=op, d=obj.get("d"), seq=seq)

    def serialize(self) -> str:
        obj: dict[str, Any] = {"op": self.op, "d": self.d}
        if self.seq is not None:
            obj["seq"] = self.seq
        return json.dumps(obj, separators=(",", ":"))


# Server -> client binary frame: [seq u16 BE][op u8] then the payload.
_SERVER_BINARY_HEADER = struct.Struct(">HB")
# Client -> server binary frame: [op u8] then the payload.
_CLIENT_BINARY_HEADER = struct.Struct(">B")
SEQ_MODULUS: Final = 1 << 16


@attrs.frozen
class ServerBinaryFrame:
    """A binary (DAVE/MLS) frame from the voice server, carrying the low 16 bits of its seq."""

    seq: int
    op: int
    payload: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")

    @classmethod
    def parse(cls, data: bytes) -> ServerBinaryFrame:
        if len(data) < _SERVER_BINARY_HEADER.size:
            raise _bad(f"binary frame of {len(data)} bytes is shorter than its 3-byte header")
        seq, op = _SERVER_BINARY_HEADER.unpack_from(data)
        return cls(seq=seq, op=op, payload=bytes(data[_SERVER_BINARY_HEADER.size :]))

    def serialize(self) -> bytes:
        return _SERVER_BINARY_HEADER.pack(self.seq % SEQ_MODULUS, self.op) + self.payload


@attrs.frozen
class ClientBinaryFrame:
    """A binary (DAVE/MLS) frame from the client: op byte then payload, no seq."""

    op: int
    payload: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")

    @classmethod
    def parse(cls, data: bytes) -> ClientBinaryFrame:
        if len(data) < _CLIENT_BINARY_HEADER.size:
            raise _bad("empty binary frame")
        (op,) = _CLIENT_BINARY_HEADER.unpack_from(data)
        return cls(op=op, payload=bytes(data[_CLIENT_BINARY_HEADER.size :]))

    def serialize(self) -> bytes:
        return _CLIENT_BINARY_HEADER.pack(self.op) + self.payload


# Binary op29/op30 bodies: [transition_id u16 BE] then the MLS commit / welcome.
_TRANSITION_PREFIX = struct.Struct(">H")


@attrs.frozen
class TransitionPayload:
    """Body of binary op29 (announce commit) and op30 (welcome)."""

    transition_id: int
    body: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")

    @classmethod
    def parse(cls, payload: bytes) -> TransitionPayload:
        if len(payload) < _TRANSITION_PREFIX.size:
            raise _bad("transition payload shorter than its 2-byte transition id")
        (tid,) = _TRANSITION_PREFIX.unpack_from(payload)
        return cls(transition_id=tid, body=bytes(payload[_TRANSITION_PREFIX.size :]))

    def serialize(self) -> bytes:
        return _TRANSITION_PREFIX.pack(self.transition_id) + self.body


# --------------------------------------------------------------------------- field readers


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _obj(d: object, what: str) -> Mapping[str, Any]:
    if not isinstance(d, dict):
        raise _bad(f"{what} payload is not an object")
    return d


def _integral(value: object) -> int | None:
    """An integer, or a float with an integral value (``30.0``: Discord's JSON has those)."""
    if _is_int(value):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _int(d: Mapping[str, Any], key: str, what: str) -> int:
    value = _integral(d.get(key))
    if value is None:
        raise _bad(f"{what}.{key} is missing or not an integer")
    return value


def _opt_int(d: Mapping[str, Any], key: str, what: str) -> int | None:
    raw = d.get(key)
    if raw is None:
        return None
    value = _integral(raw)
    if value is None:
        raise _bad(f"{what}.{key} is not an integer")
    return value


def _number(d: Mapping[str, Any], key: str, what: str) -> float:
    value = d.get(key)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _bad(f"{what}.{key} is missing or not a number")
    return float(value)


def _str(d: Mapping[str, Any], key: str, what: str) -> str:
    value = d.get(key)
    if not isinstance(value, str):
        raise _bad(f"{what}.{key} is missing or not a string")
    return value


def _opt_str(d: Mapping[str, Any], key: str, what: str) -> str | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad(f"{what}.{key} is not a string")
    return value


def _snowflake(d: Mapping[str, Any], key: str, what: str) -> str:
    """Snowflakes are decimal strings; tolerate integers from sloppy peers."""
    value = d.get(key)
    if isinstance(value, str) and value:
        return value
    if _is_int(value):
        return str(value)
    raise _bad(f"{what}.{key} is missing or not a snowflake")


def _opt_snowflake(d: Mapping[str, Any], key: str, what: str) -> str | None:
    if d.get(key) is None:
        return None
    return _snowflake(d, key, what)


def _bool(d: Mapping[str, Any], key: str, what: str, default: bool) -> bool:
    value = d.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _bad(f"{what}.{key} is not a boolean")
    return value


def _opt_bool(d: Mapping[str, Any], key: str, what: str) -> bool | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise _bad(f"{what}.{key} is not a boolean")
    return value


def _list(d: Mapping[str, Any], key: str, what: str) -> list[Any]:
    value = d.get(key, [])
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(f"{what}.{key} is not a list")
    return value


def _str_tuple(d: Mapping[str, Any], key: str, what: str) -> tuple[str, ...]:
    items = _list(d, key, what)
    if not all(isinstance(item, str) for item in items):
        raise _bad(f"{what}.{key} holds a non-string")
    return tuple(items)


def _snowflake_tuple(d: Mapping[str, Any], key: str, what: str) -> tuple[str, ...]:
    items = _list(d, key, what)
    return tuple(_snowflake({"id": item}, "id", f"{what}.{key}[]") for item in items)


def _drop_none(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if v is not None}


def _frozen_map(value: Mapping[Any, Any]) -> Mapping[Any, Any]:
    return MappingProxyType(dict(value))


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


# --------------------------------------------------------------------------- DAVE JSON ops


@attrs.frozen
class DavePrepareTransition:
    OP: ClassVar[int] = VoiceOp.DAVE_PREPARE_TRANSITION

    transition_id: int
    protocol_version: int

    @classmethod
    def parse(cls, d: object) -> DavePrepareTransition:
        o = _obj(d, "dave_prepare_transition")
        w = "dave_prepare_transition"
        return cls(transition_id=_int(o, "transition_id", w), protocol_version=_int(o, "protocol_version", w))

    def serialize(self) -> dict[str, Any]:
        return {"transition_id": self.transition_id, "protocol_version": self.protocol_version}


@attrs.frozen
class DaveExecuteTransition:
    OP: ClassVar[int] = VoiceOp.DAVE_EXECUTE_TRANSITION

    transition_id: int

    @classmethod
    def parse(cls, d: object) -> DaveExecuteTransition:
        return cls(
            transition_id=_int(_obj(d, "dave_execute_transition"), "transition_id", "dave_execute_transition")
        )

    def serialize(self) -> dict[str, Any]:
        return {"transition_id": self.transition_id}


@attrs.frozen
class DaveTransitionReady:
    OP: ClassVar[int] = VoiceOp.DAVE_TRANSITION_READY

    transition_id: int

    @classmethod
    def parse(cls, d: object) -> DaveTransitionReady:
        return cls(
            transition_id=_int(_obj(d, "dave_transition_ready"), "transition_id", "dave_transition_ready")
        )

    def serialize(self) -> dict[str, Any]:
        return {"transition_id": self.transition_id}


@attrs.frozen
class DavePrepareEpoch:
    OP: ClassVar[int] = VoiceOp.DAVE_PREPARE_EPOCH

    protocol_version: int
    epoch: int
    transition_id: int | None = None

    @classmethod
    def parse(cls, d: object) -> DavePrepareEpoch:
        o = _obj(d, "dave_prepare_epoch")
        w = "dave_prepare_epoch"
        return cls(
            protocol_version=_int(o, "protocol_version", w),
            epoch=_int(o, "epoch", w),
            transition_id=_opt_int(o, "transition_id", w),
        )

    def serialize(self) -> dict[str, Any]:
        return _drop_none(
            {
                "protocol_version": self.protocol_version,
                "epoch": self.epoch,
                "transition_id": self.transition_id,
            }
        )


@attrs.frozen
class DaveInvalidCommitWelcome:
    """op31 — sent as JSON (protocol notes §9 #3), not as a binary frame."""

    OP: ClassVar[int] = VoiceOp.DAVE_MLS_INVALID_COMMIT_WELCOME

    transition_id: int

    @classmethod
    def parse(cls, d: object) -> DaveInvalidCommitWelcome:
        w = "dave_invalid_commit_welcome"
        return cls(transition_id=_int(_obj(d, w), "transition_id", w))

    def serialize(self) -> dict[str, Any]:
        return {"transition_id": self.transition_id}


DaveJsonPayload = (
    DavePrepareTransition
    | DaveExecuteTransition
    | DaveTransitionReady
    | DavePrepareEpoch
    | DaveInvalidCommitWelcome
)

DAVE_JSON_TYPES: Final[Mapping[int, type[DaveJsonPayload]]] = MappingProxyType(
    {
        VoiceOp.DAVE_PREPARE_TRANSITION: DavePrepareTransition,
        VoiceOp.DAVE_EXECUTE_TRANSITION: DaveExecuteTransition,
        VoiceOp.DAVE_TRANSITION_READY: DaveTransitionReady,
        VoiceOp.DAVE_PREPARE_EPOCH: DavePrepareEpoch,
        VoiceOp.DAVE_MLS_INVALID_COMMIT_WELCOME: DaveInvalidCommitWelcome,
    }
)


def parse_dave_json(op: int, d: object) -> DaveJsonPayload:
    kind = DAVE_JSON_TYPES.get(op)
    if kind is None:
        raise _bad(f"op {op} is not a DAVE JSON opcode")
    return kind.parse(d)


Payload = (
    Identify
    | Resume
    | Ready
    | SelectProtocol
    | SessionDescription
    | Hello
    | Heartbeat
    | HeartbeatAck
    | Speaking
    | ClientsConnect
    | ClientDisconnect
    | Video
    | SessionUpdate
    | ClientFlags
    | ClientPlatform
    | DaveJsonPayload
)


def text_frame(payload: Payload, seq: int | None = None) -> str:
    """Serialize one payload as a text frame (``MediaSinkWants`` needs :func:`sink_wants_frame`)."""
    return TextFrame(op=payload.OP, d=payload.serialize(), seq=seq).serialize()


def sink_wants_frame(wants: MediaSinkWants, fmt: SinkWantsFormat, seq: int | None = None) -> str:
    return TextFrame(op=VoiceOp.MEDIA_SINK_WANTS, d=wants.serialize(fmt), seq=seq).serialize()


def voice_gateway_url(endpoint: str, scheme: str = "wss", version: int = GATEWAY_VERSION) -> str:
    """``wss://<endpoint>/?v=9``. ``endpoint`` has no scheme and may carry a port."""
    host = endpoint.strip().rstrip("/")
    if "://" in host:  # tolerate endpoints that already carry a scheme: ours wins
        host = host.split("://", 1)[1]
    return f"{scheme}://{host}/?v={version}"


def pick_mode(offered: Sequence[str], preference: Sequence[str] = SUPPORTED_MODES) -> str | None:
    """The first of our preferred modes that the server offers."""
    for mode in preference:
        if mode in offered:
            return mode
    return None
