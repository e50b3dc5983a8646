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

import json
import struct
from collections.abc import Sequence
from typing import Any, Final

import attrs

from clank.wire.convert import is_int as _is_int
from clank.wire.voice_gateway_base import (
    CLIENT_BINARY_OPS,
    DAVE_BINARY_OPS,
    DAVE_JSON_OPS,
    DECODE_FAILED,
    GATEWAY_VERSION,
    H264_PT,
    H264_RTX_PT,
    KIND,
    MODE_AES256_GCM,
    MODE_XCHACHA20,
    OPUS_PT,
    ROLES,
    SECRET_KEY_SIZE,
    SERVER_BINARY_OPS,
    SUPPORTED_MODES,
    VP8_PT,
    VP8_RTX_PT,
    Role,
    VoiceOp,
    _bad,
)
from clank.wire.voice_gateway_dave import (
    DAVE_JSON_TYPES,
    DaveExecuteTransition,
    DaveInvalidCommitWelcome,
    DaveJsonPayload,
    DavePrepareEpoch,
    DavePrepareTransition,
    DaveTransitionReady,
    TransitionPayload,
    parse_dave_json,
)
from clank.wire.voice_gateway_handshake import (
    H264_DECODE,
    H264_ENCODE,
    OPUS_CODEC,
    ROLE_CODECS,
    SCREEN_STREAM,
    VP8_DECODE,
    Codec,
    Heartbeat,
    HeartbeatAck,
    Hello,
    Identify,
    Ready,
    ReadyStream,
    Resume,
    SelectProtocol,
    SessionDescription,
    StreamRequest,
    codecs_for_role,
)
from clank.wire.voice_gateway_participants import (
    ClientDisconnect,
    ClientFlags,
    ClientPlatform,
    ClientsConnect,
    MaxResolution,
    MediaSinkWants,
    SessionUpdate,
    SinkWantsFormat,
    Speaking,
    Video,
    VideoStream,
)

__all__ = [
    "CLIENT_BINARY_OPS",
    "DAVE_BINARY_OPS",
    "DAVE_JSON_OPS",
    "DAVE_JSON_TYPES",
    "DECODE_FAILED",
    "GATEWAY_VERSION",
    "H264_DECODE",
    "H264_ENCODE",
    "H264_PT",
    "H264_RTX_PT",
    "KIND",
    "MODE_AES256_GCM",
    "MODE_XCHACHA20",
    "OPUS_CODEC",
    "OPUS_PT",
    "ROLES",
    "ROLE_CODECS",
    "SCREEN_STREAM",
    "SECRET_KEY_SIZE",
    "SEQ_MODULUS",
    "SERVER_BINARY_OPS",
    "SUPPORTED_MODES",
    "VP8_DECODE",
    "VP8_PT",
    "VP8_RTX_PT",
    "ClientBinaryFrame",
    "ClientDisconnect",
    "ClientFlags",
    "ClientPlatform",
    "ClientsConnect",
    "Codec",
    "DaveExecuteTransition",
    "DaveInvalidCommitWelcome",
    "DaveJsonPayload",
    "DavePrepareEpoch",
    "DavePrepareTransition",
    "DaveTransitionReady",
    "Heartbeat",
    "HeartbeatAck",
    "Hello",
    "Identify",
    "MaxResolution",
    "MediaSinkWants",
    "Payload",
    "Ready",
    "ReadyStream",
    "Resume",
    "Role",
    "SelectProtocol",
    "ServerBinaryFrame",
    "SessionDescription",
    "SessionUpdate",
    "SinkWantsFormat",
    "Speaking",
    "StreamRequest",
    "TextFrame",
    "TransitionPayload",
    "Video",
    "VideoStream",
    "VoiceOp",
    "codecs_for_role",
    "parse_dave_json",
    "pick_mode",
    "sink_wants_frame",
    "text_frame",
    "voice_gateway_url",
]

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
