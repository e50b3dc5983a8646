"""Voice gateway wire constants, opcodes and the error every voice gateway parser raises.

Sans-io. Part of the voice gateway wire format (``clank.wire.voice_gateway`` re-exports the
public names); malformed input raises :class:`MalformedMessage` with close code 4002.
"""

from __future__ import annotations

import enum
from typing import Final, Literal

from clank.errors import MalformedMessage
from clank.wire.convert import Family
from clank.wire.convert import is_int as _is_int

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


def _fail(payload: str, key: str | None, problem: str) -> MalformedMessage:
    return _bad(f"{payload} {problem}" if key is None else f"{payload}.{key} {problem}")


def _snowflake(value: object) -> str | None:
    """Snowflakes are decimal strings; tolerate integers from sloppy peers."""
    if isinstance(value, str):
        return value or None
    return str(value) if _is_int(value) else None


VOICE_GATEWAY: Final = Family(_fail, _snowflake)
"""The voice gateway family: errors read ``<payload>.<key> <problem>`` with close code 4002."""
converter: Final = VOICE_GATEWAY.converter
