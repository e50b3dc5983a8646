"""DAVE end-to-end encryption: a sans-io wrapper around ``davey.DaveSession``, one per transport role.

The voice gateway core hands DAVE messages in as ``(op, payload)`` — for binary server frames the bytes
after ``[seq u16][op u8]``, for JSON ops 21/22/24 the ``d`` object — and sends what the handlers return:
``DaveBinary`` (client binary frame ``[op u8][payload]``: op26 key package, op28 commit||welcome) and
``DaveJson`` (op23 transition ready, op31 invalid commit/welcome). No sockets, no clocks, no logging.

Recovery follows discord.py: a commit or welcome that davey refuses becomes JSON op31 plus a re-init
and a fresh op26 (the gateway then removes and re-adds us) — without the websocket reconnect loop
that other clients fall into.

Passthrough (unencrypted frames accepted) only inside transition windows: a downgrade prepare (op21
protocol 0) turns it on; an upgrade ends with ``set_passthrough_mode(False, 10)`` = 10 more seconds
(protocol notes §7.4, contradiction #16). The media frame layout and its diagnostics live in
``clank.crypto.dave_wire``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

import attrs
import davey

from clank.crypto.dave_stats import (
    STATUS_TO_STATE,
    Count,
    DaveState,
    DaveStatistics,
    Media,
)
from clank.crypto.dave_wire import MAGIC_MARKER, check_mls_vector, classify_decrypt_error
from clank.errors import DaveError, DecryptionFailed, MalformedMessage
from clank.wire.voice_gateway import (
    DaveExecuteTransition,
    DaveJsonPayload,
    DavePrepareEpoch,
    DavePrepareTransition,
    TransitionPayload,
    VoiceOp,
    parse_dave_json,
)

VideoCodec = Literal["h264", "h265", "vp8", "vp9", "av1"]

# Short names for the DAVE opcodes; the numbers live in the voice gateway wire module.
OP_PREPARE_TRANSITION: Final = VoiceOp.DAVE_PREPARE_TRANSITION
OP_EXECUTE_TRANSITION: Final = VoiceOp.DAVE_EXECUTE_TRANSITION
OP_TRANSITION_READY: Final = VoiceOp.DAVE_TRANSITION_READY
OP_PREPARE_EPOCH: Final = VoiceOp.DAVE_PREPARE_EPOCH
OP_EXTERNAL_SENDER: Final = VoiceOp.DAVE_MLS_EXTERNAL_SENDER
OP_KEY_PACKAGE: Final = VoiceOp.DAVE_MLS_KEY_PACKAGE
OP_PROPOSALS: Final = VoiceOp.DAVE_MLS_PROPOSALS
OP_COMMIT_WELCOME: Final = VoiceOp.DAVE_MLS_COMMIT_WELCOME
OP_ANNOUNCE_COMMIT: Final = VoiceOp.DAVE_MLS_ANNOUNCE_COMMIT_TRANSITION
OP_WELCOME: Final = VoiceOp.DAVE_MLS_WELCOME
OP_INVALID_COMMIT_WELCOME: Final = VoiceOp.DAVE_MLS_INVALID_COMMIT_WELCOME

OPUS_SILENCE: Final = b"\xf8\xff\xfe"
# Passthrough windows (seconds): discord.py keeps 120 s after a downgrade prepare; libdave's intent
# after an upgrade is 10 more seconds.
DOWNGRADE_PASSTHROUGH_S: Final = 120
UPGRADE_PASSTHROUGH_S: Final = 10
# The epoch value in op24 that means "(re)create the group".
EPOCH_RECREATE: Final = 1

_MEDIA_TYPES: Final[Mapping[str, davey.MediaType]] = {
    "audio": davey.MediaType.audio,
    "video": davey.MediaType.video,
}
_VIDEO_CODECS: Final[Mapping[str, davey.Codec]] = {
    "h264": davey.Codec.h264,
    "h265": davey.Codec.h265,
    "vp8": davey.Codec.vp8,
    "vp9": davey.Codec.vp9,
    "av1": davey.Codec.av1,
}


@attrs.frozen
class DaveBinary:
    """A client -> server binary DAVE frame: send as ``bytes([op]) + payload``."""

    op: int
    payload: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")


@attrs.frozen
class DaveJson:
    """A JSON DAVE frame: send as ``{"op": op, "d": data}``."""

    op: int
    data: dict[str, Any]


DaveFrame = DaveBinary | DaveJson


class DaveSessionCore:
    """DAVE for one transport role. ``group_id``: voice channel id, or rtc_server_id - 1 for streams."""

    def __init__(
        self,
        user_id: int,
        group_id: int,
        max_protocol_version: int = davey.DAVE_PROTOCOL_VERSION,
        *,
        validate_user_ids: bool = True,
    ) -> None:
        self.user_id = user_id
        self.group_id = group_id
        self.max_protocol_version = max_protocol_version
        self._validate_user_ids = validate_user_ids
        self._session: davey.DaveSession | None = None
        self._protocol_version = 0
        self._described = False
        self._external_sender: bytes | None = None
        self._key_package_sent = False
        self._pending_transitions: dict[int, int] = {}
        self._downgraded = False
        self._in_transition_window = False
        self._known_users: set[int] = set()
        self._encrypt: dict[str, Count] = {}
        self._decrypt: dict[tuple[int, str], Count] = {}
        self._failures: dict[str, int] = {}
        self._recoveries = 0
        self._proposals_failed = 0
        self._executed = 0
        self._last_error: str | None = None

    # ------------------------------------------------------------------ status

    @property
    def protocol_version(self) -> int:
        return self._protocol_version

    @property
    def state(self) -> DaveState:
        if self._described and self._protocol_version == 0:
            return DaveState.DISABLED
        if self._session is None:
            return DaveState.INACTIVE
        status = self._session.status
        return next(state for davey_status, state in STATUS_TO_STATE if davey_status == status)

    @property
    def problems(self) -> int:
        """Failed op27s plus op31 recoveries; the driver logs ``last_error`` when this grows."""
        return self._proposals_failed + self._recoveries

    @property
    def last_error(self) -> str | None:
        return self._last_error

    @property
    def ready(self) -> bool:
        return self._protocol_version > 0 and self._session is not None and self._session.ready

    @property
    def can_encrypt(self) -> bool:
        """True when frames must be (and can be) encrypted; False also when DAVE is off (pv 0)."""
        return self.ready

    @property
    def epoch(self) -> int | None:
        return None if self._session is None else self._session.epoch

    @property
    def voice_privacy_code(self) -> str | None:
        if self._session is None or not self._session.ready:
            return None
        return self._session.voice_privacy_code

    def get_verification_code(self, user_id: int) -> str | None:
        """The displayable code for ``user_id`` in our group, or None when there is none."""
        if self._session is None:
            return None
        try:
            return self._session.get_verification_code(user_id)
        except ValueError:
            return None

    def group_user_ids(self) -> frozenset[int]:
        if self._session is None:
            return frozenset()
        return frozenset(int(u) for u in self._session.get_user_ids())

    def statistics(self) -> DaveStatistics:
        return DaveStatistics(
            state=self.state,
            protocol_version=self._protocol_version,
            epoch=self.epoch,
            voice_privacy_code=self.voice_privacy_code,
            encrypt={media: c.freeze() for media, c in self._encrypt.items()},
            decrypt={key: c.freeze() for key, c in self._decrypt.items()},
            decrypt_failures=dict(self._failures),
            recoveries=self._recoveries,
            transitions_executed=self._executed,
            last_error=self._last_error,
            proposals_failed=self._proposals_failed,
        )

    # ------------------------------------------------------------------ dispatch

    def on_binary(self, op: int, payload: bytes) -> list[DaveFrame]:
        """Route one binary server frame (payload after ``[seq u16][op u8]``)."""
        if op == OP_EXTERNAL_SENDER:
            return self.on_external_sender(payload)
        if op == OP_PROPOSALS:
            return self.on_proposals(payload)
        # An op29/op30 too short for its transition id is malformed (raises); one with an id but
        # a body we cannot process is an invalid commit/welcome: op31 for that transition.
        if op == OP_ANNOUNCE_COMMIT:
            msg = TransitionPayload.parse(payload)
            return self.on_announce_commit(msg.transition_id, msg.body)
        if op == OP_WELCOME:
            msg = TransitionPayload.parse(payload)
            return self.on_welcome(msg.transition_id, msg.body)
        raise MalformedMessage("dave", f"unexpected binary op {op}")

    def on_json(self, op: int, d: object) -> list[DaveFrame]:
        """Route one JSON DAVE op (21, 22, 24) given its ``d`` object."""
        return self.on_message(parse_dave_json(op, d))

    def on_message(self, message: DaveJsonPayload) -> list[DaveFrame]:
        """Route one parsed JSON DAVE message (the voice gateway core already parsed it)."""
        match message:
            case DavePrepareTransition():
                return self.on_prepare_transition(message.transition_id, message.protocol_version)
            case DaveExecuteTransition():
                return self.on_execute_transition(message.transition_id)
            case DavePrepareEpoch():
                return self.on_prepare_epoch(message.protocol_version, message.epoch)
        raise MalformedMessage("dave", f"op {message.OP} is not sent by servers")

    # ------------------------------------------------------------------ handlers

    def on_session_description(self, dave_protocol_version: int) -> list[DaveFrame]:
        """op4: create (or re-init) the session and send our key package."""
        self._described = True
        self._protocol_version = min(dave_protocol_version, self.max_protocol_version)
        if self._protocol_version > 0:
            return self._reinit()
        if self._session is not None:
            self._session.reset()
            self._session.set_passthrough_mode(True)
        return []

    def on_external_sender(self, payload: bytes) -> list[DaveFrame]:
        """op25: remember it (it may precede op4) and give it to the session."""
        self._external_sender = bytes(payload)
        if self._session is None:
            return []
        try:
            self._session.set_external_sender(self._external_sender)
        except ValueError as exc:
            # AlreadyInGroup: the group already carries the sender. Bad bytes: a later op30 fails
            # and recovers through op31.
            self._last_error = f"set_external_sender: {exc}"
            return []
        if self._key_package_sent:
            return []  # a duplicate op26 creates an extra transition (clankvox)
        return [self._key_package()]

    def on_proposals(self, payload: bytes) -> list[DaveFrame]:
        """op27: payload[0] is the operation, payload[1:] the ``<V>`` vector davey consumes whole.

        A proposals message we cannot use (malformed, or refused by davey) is counted and dropped:
        no op31 (that is only for an unprocessable commit or welcome) and no reconnect. The next
        op29/op30 settles it: a commit that needed these proposals fails and recovers through op31.
        """
        try:
            if not payload:
                raise MalformedMessage("dave", "empty proposals payload")
            operation = payload[0]
            if operation not in (0, 1):
                raise MalformedMessage("dave", f"unknown proposals operation {operation}")
            check_mls_vector(payload[1:])
        except MalformedMessage as exc:
            return self._proposals_unusable(f"proposals: {exc.reason}")
        if self._session is None or self._protocol_version == 0:
            return []
        kind = davey.ProposalsOperationType.append if operation == 0 else davey.ProposalsOperationType.revoke
        expected = sorted(self._known_users) if self._validate_user_ids else None
        try:
            result = self._session.process_proposals(kind, bytes(payload[1:]), expected)
        except ValueError as exc:
            return self._proposals_unusable(f"process_proposals: {exc}")
        if result is None:
            return []
        return [DaveBinary(OP_COMMIT_WELCOME, result.commit + (result.welcome or b""))]

    def on_announce_commit(self, transition_id: int, commit: bytes) -> list[DaveFrame]:
        """op29: apply the winning commit (davey merges it if it is ours)."""
        if self._session is None or self._protocol_version == 0:
            return []
        try:
            self._session.process_commit(commit)
        except ValueError as exc:
            self._last_error = f"process_commit: {exc}"
            return self._recover(transition_id)
        return self._prepared(transition_id)

    def on_welcome(self, transition_id: int, welcome: bytes) -> list[DaveFrame]:
        """op30: join the group through a Welcome."""
        if self._session is None or self._protocol_version == 0:
            return []
        try:
            self._session.process_welcome(welcome)
        except ValueError as exc:
            self._last_error = f"process_welcome: {exc}"
            return self._recover(transition_id)
        return self._prepared(transition_id)

    def on_prepare_transition(self, transition_id: int, protocol_version: int) -> list[DaveFrame]:
        """op21: a protocol-version transition (in practice a downgrade to 0)."""
        self._pending_transitions[transition_id] = protocol_version
        if protocol_version == 0:
            self._in_transition_window = True
            if self._session is not None:
                self._session.set_passthrough_mode(True, DOWNGRADE_PASSTHROUGH_S)
        if transition_id == 0:
            self.on_execute_transition(0)
            return []
        return [DaveJson(OP_TRANSITION_READY, {"transition_id": transition_id})]

    def on_execute_transition(self, transition_id: int) -> list[DaveFrame]:
        """op22: switch to the prepared protocol version."""
        if transition_id not in self._pending_transitions:
            return []
        old = self._protocol_version
        self._protocol_version = self._pending_transitions.pop(transition_id)
        self._executed += 1
        if self._protocol_version == 0 and old != 0:
            self._downgraded = True
        elif transition_id != 0 and self._downgraded and self._protocol_version > 0:
            self._downgraded = False
            if self._session is not None:
                self._session.set_passthrough_mode(False, UPGRADE_PASSTHROUGH_S)
        if not self._pending_transitions:
            self._in_transition_window = self._protocol_version == 0
        return []

    def on_prepare_epoch(self, protocol_version: int, epoch: int) -> list[DaveFrame]:
        """op24: only epoch 1 means "(re)create the group" (discord.py/DVSN; not clankvox's every-op24)."""
        if epoch != EPOCH_RECREATE:
            return []
        self._described = True
        self._protocol_version = min(protocol_version, self.max_protocol_version)
        if self._protocol_version == 0:
            return []
        if self._downgraded:
            self._in_transition_window = True
        return self._reinit()

    def clients_connected(self, user_ids: Iterable[int]) -> None:
        """op11: users whose Add proposals we accept."""
        self._known_users.update(u for u in user_ids if u != self.user_id)

    def client_disconnected(self, user_id: int) -> None:
        """op13."""
        self._known_users.discard(user_id)

    # ------------------------------------------------------------------ media

    def encrypt_opus(self, frame: bytes) -> bytes:
        return self._encrypt_with("audio", lambda s: s.encrypt_opus(frame), frame)

    def encrypt_video(self, codec: VideoCodec, frame: bytes) -> bytes:
        """Encrypt one access unit (H264/H265: Annex-B with 4-byte start codes)."""
        davey_codec = _VIDEO_CODECS.get(codec)
        if davey_codec is None:
            raise DaveError(f"unsupported video codec {codec!r}")
        return self._encrypt_with(
            "video", lambda s: s.encrypt(davey.MediaType.video, davey_codec, frame), frame
        )

    def decrypt(self, user_id: int, media: Media, frame: bytes) -> bytes:
        """Decrypt one frame from ``user_id``; raises DecryptionFailed("dave", reason)."""
        count = self._decrypt.get((user_id, media))
        if count is None:
            count = self._decrypt[(user_id, media)] = Count()
        session = self._session
        if self._protocol_version == 0 or session is None:
            count.passthrough += 1
            return frame
        if media == "audio" and frame == OPUS_SILENCE:
            count.passthrough += 1
            return frame
        if not session.ready:
            if self._in_transition_window and not frame.endswith(MAGIC_MARKER):
                count.passthrough += 1
                return frame
            raise self._decrypt_failed(count, "not_ready")
        try:
            out = session.decrypt(user_id, _MEDIA_TYPES[media], frame)
        except ValueError as exc:
            raise self._decrypt_failed(count, classify_decrypt_error(str(exc))) from exc
        if frame.endswith(MAGIC_MARKER):
            count.ok += 1
        else:
            count.passthrough += 1
        return out

    def decrypt_or_count(self, user_id: int, media: Media, frame: bytes) -> bytes | None:
        """The media-path form of ``decrypt``: failures are counted and give None, never raise."""
        try:
            return self.decrypt(user_id, media, frame)
        except DecryptionFailed:
            return None

    def trial_decrypt(self, user_id: int, media: Media, frame: bytes) -> bytes | None:
        """Open ``frame`` with ``user_id``'s key, counting nothing: who sends an SSRC no op5 named?

        None unless DAVE is on and ready and the frame is a DAVE frame this user's key opens, so
        a wrong guess (or a call without DAVE) never binds anything.
        """
        session = self._session
        if self._protocol_version == 0 or session is None or not frame.endswith(MAGIC_MARKER):
            return None
        if not session.ready:
            return None
        try:
            return session.decrypt(user_id, _MEDIA_TYPES[media], frame)
        except ValueError:
            return None

    # ------------------------------------------------------------------ internals

    def _decrypt_failed(self, count: Count, reason: str) -> DecryptionFailed:
        count.fail += 1
        self._failures[reason] = self._failures.get(reason, 0) + 1
        return DecryptionFailed("dave", reason)

    def _encrypt_with(self, media: str, op: Any, frame: bytes) -> bytes:
        count = self._encrypt.get(media)
        if count is None:
            count = self._encrypt[media] = Count()
        session = self._session
        if self._protocol_version == 0 or session is None:
            count.passthrough += 1
            return frame
        if not session.ready:
            count.fail += 1
            raise DaveError("DAVE session not ready: frame must not be sent")
        try:
            out: bytes = op(session)
        except ValueError as exc:
            count.fail += 1
            raise DaveError(f"DAVE encrypt failed: {exc}") from exc
        count.ok += 1
        return out

    def _key_package(self) -> DaveBinary:
        assert self._session is not None
        self._key_package_sent = True
        return DaveBinary(OP_KEY_PACKAGE, self._session.get_serialized_key_package())

    def _reinit(self) -> list[DaveFrame]:
        if self._session is None:
            self._session = davey.DaveSession(self._protocol_version, self.user_id, self.group_id)
        else:
            self._session.reinit(self._protocol_version, self.user_id, self.group_id)
        if self._external_sender is not None:
            try:
                self._session.set_external_sender(self._external_sender)
            except ValueError as exc:
                self._last_error = f"set_external_sender: {exc}"
        return [self._key_package()]

    def _prepared(self, transition_id: int) -> list[DaveFrame]:
        if self._downgraded and self._session is not None:
            # Upgrade in progress: peers that are not ready yet still send clear frames.
            self._session.set_passthrough_mode(False, UPGRADE_PASSTHROUGH_S)
        if transition_id == 0:
            return []
        self._pending_transitions[transition_id] = self._protocol_version
        return [DaveJson(OP_TRANSITION_READY, {"transition_id": transition_id})]

    def _proposals_unusable(self, error: str) -> list[DaveFrame]:
        self._proposals_failed += 1
        self._last_error = error
        return []

    def _recover(self, transition_id: int) -> list[DaveFrame]:
        self._recoveries += 1
        out: list[DaveFrame] = [DaveJson(OP_INVALID_COMMIT_WELCOME, {"transition_id": transition_id})]
        return out + self._reinit()
