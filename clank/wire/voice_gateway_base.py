"""Voice gateway wire constants, opcodes and the field readers the payload modules share.

Sans-io. Part of the voice gateway wire format (``clank.wire.voice_gateway`` re-exports the
public names); every reader raises :class:`MalformedMessage` with close code 4002 naming the field.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, Literal, TypeGuard

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
