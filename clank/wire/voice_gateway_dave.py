"""Voice gateway DAVE payloads: the binary op29/op30 transition body and the JSON ops 21-24, 31.

Sans-io. Part of the voice gateway wire format (``clank.wire.voice_gateway`` re-exports them).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Final

import attrs

from clank.wire.voice_gateway_base import (
    VoiceOp,
    _bad,
    _drop_none,
    _int,
    _obj,
    _opt_int,
)

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
