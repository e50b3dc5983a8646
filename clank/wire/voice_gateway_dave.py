"""Voice gateway DAVE payloads: the binary op29/op30 transition body and the JSON ops 21-24, 31.

Sans-io. Part of the voice gateway wire format (``clank.wire.voice_gateway`` re-exports them).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar, Final

import attrs

from clank.wire.convert import Message, Shape
from clank.wire.voice_gateway_base import VOICE_GATEWAY, VoiceOp, _bad

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
# Field readers and writers come from the voice gateway family converter (wire/convert.py).


@VOICE_GATEWAY.message
@attrs.frozen
class DavePrepareTransition(Message):
    OP: ClassVar[int] = VoiceOp.DAVE_PREPARE_TRANSITION
    WIRE: ClassVar[Shape] = Shape("dave_prepare_transition")

    transition_id: int
    protocol_version: int


@VOICE_GATEWAY.message
@attrs.frozen
class DaveExecuteTransition(Message):
    OP: ClassVar[int] = VoiceOp.DAVE_EXECUTE_TRANSITION
    WIRE: ClassVar[Shape] = Shape("dave_execute_transition")

    transition_id: int


@VOICE_GATEWAY.message
@attrs.frozen
class DaveTransitionReady(Message):
    OP: ClassVar[int] = VoiceOp.DAVE_TRANSITION_READY
    WIRE: ClassVar[Shape] = Shape("dave_transition_ready")

    transition_id: int


@VOICE_GATEWAY.message
@attrs.frozen
class DavePrepareEpoch(Message):
    OP: ClassVar[int] = VoiceOp.DAVE_PREPARE_EPOCH
    WIRE: ClassVar[Shape] = Shape("dave_prepare_epoch", drop_none=True)

    protocol_version: int
    epoch: int
    transition_id: int | None = None


@VOICE_GATEWAY.message
@attrs.frozen
class DaveInvalidCommitWelcome(Message):
    """op31 — sent as JSON (protocol notes §9 #3), not as a binary frame."""

    OP: ClassVar[int] = VoiceOp.DAVE_MLS_INVALID_COMMIT_WELCOME
    WIRE: ClassVar[Shape] = Shape("dave_invalid_commit_welcome")

    transition_id: int


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
