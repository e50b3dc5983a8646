"""Sandbox voice server, websocket side (sans-io): one core per client websocket.

Built on ``clank.wire.voice_gateway`` so client and server share one wire format. It runs the
server half of discord-protocol.md §3 / §8.2: Hello on open, Identify validation (through an
injected callback), SSRC allocation, Ready, Select Protocol checks, Session Description with a
generated key, heartbeat ACKs and timeout, buffered resume (op7 -> op9 + replay) and scripted
closes. UDP/SFU and the DAVE external sender are built on top by the sandbox: they call the
``send_*`` helpers and react to the ``Client*`` events.

The replay buffer and the seq counter belong to a :class:`VoiceServerSession`
(:mod:`clank.sandbox.voice_server_session`, with the config and the events), which outlives
a websocket: after a drop, a new core finds it through ``find_session`` and resumes it. Frames
sent through a core whose websocket is gone still enter the session's buffer and are
replayed on resume.
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable, Mapping
from typing import Any, Final

from clank.errors import MalformedMessage, SandboxError
from clank.protocol.voice_gateway import SendBinary, SendText  # the same frame events as the client's
from clank.sandbox.voice_server_session import (
    REPLAY_BUFFER_LIMIT,
    ClientDaveBinary,
    ClientDaveJson,
    ClientSessionUpdate,
    ClientSinkWants,
    ClientSpeaking,
    ClientVideo,
    CloseConnection,
    HeartbeatReceived,
    Identified,
    ServerEvent,
    SessionDescribed,
    SessionResumed,
    VoiceServerConfig,
    VoiceServerSession,
)
from clank.wire import voice_gateway as vg
from clank.wire.voice_gateway import VoiceOp

# The values live in voice_server_session; they are re-exported so the core stays the one import.
__all__ = [
    "CLOSE_ALREADY_AUTHENTICATED",
    "CLOSE_AUTHENTICATION_FAILED",
    "CLOSE_BAD_REQUEST",
    "CLOSE_DAVE_REQUIRED",
    "CLOSE_DECODE_FAILED",
    "CLOSE_NOT_AUTHENTICATED",
    "CLOSE_SESSION_INVALID",
    "CLOSE_SESSION_TIMEOUT",
    "CLOSE_UNKNOWN_ENCRYPTION_MODE",
    "CLOSE_UNKNOWN_OPCODE",
    "CLOSE_UNKNOWN_PROTOCOL",
    "REPLAY_BUFFER_LIMIT",
    "ClientDaveBinary",
    "ClientDaveJson",
    "ClientSessionUpdate",
    "ClientSinkWants",
    "ClientSpeaking",
    "ClientVideo",
    "CloseConnection",
    "ConnectionState",
    "HeartbeatReceived",
    "Identified",
    "SendBinary",
    "SendText",
    "ServerEvent",
    "SessionDescribed",
    "SessionResumed",
    "VoiceServerConfig",
    "VoiceServerConnectionCore",
    "VoiceServerSession",
]

CLOSE_UNKNOWN_OPCODE: Final = 4001
CLOSE_DECODE_FAILED: Final = 4002
CLOSE_NOT_AUTHENTICATED: Final = 4003
CLOSE_AUTHENTICATION_FAILED: Final = 4004
CLOSE_ALREADY_AUTHENTICATED: Final = 4005
CLOSE_SESSION_INVALID: Final = 4006
CLOSE_SESSION_TIMEOUT: Final = 4009
CLOSE_UNKNOWN_PROTOCOL: Final = 4012
CLOSE_UNKNOWN_ENCRYPTION_MODE: Final = 4016
CLOSE_DAVE_REQUIRED: Final = 4017
CLOSE_BAD_REQUEST: Final = 4020

# Client ops the server accepts once identified; anything else closes with 4001.
_CLIENT_TEXT_OPS: Final = frozenset(
    {
        VoiceOp.HEARTBEAT,
        VoiceOp.SPEAKING,
        VoiceOp.VIDEO,
        VoiceOp.SESSION_UPDATE,
        VoiceOp.MEDIA_SINK_WANTS,
        VoiceOp.VOICE_BACKEND_VERSION,
        VoiceOp.DAVE_TRANSITION_READY,
        VoiceOp.DAVE_MLS_INVALID_COMMIT_WELCOME,
        VoiceOp.NO_ROUTE,
    }
)


# --------------------------------------------------------------------------- connection core


class ConnectionState(enum.Enum):
    AWAIT_IDENTIFY = "await_identify"
    IDENTIFIED = "identified"
    SESSION = "session"
    CLOSED = "closed"


def _default_key() -> bytes:
    return secrets.token_bytes(vg.SECRET_KEY_SIZE)


def _default_media_session_id() -> str:
    return secrets.token_hex(16)


class VoiceServerConnectionCore:
    """Server side of one voice gateway websocket."""

    def __init__(
        self,
        config: VoiceServerConfig,
        *,
        validate_identify: Callable[[vg.Identify], int | None],
        find_session: Callable[[vg.Resume], VoiceServerSession | None],
        allocate_ssrc: Callable[[], int],
        new_key: Callable[[], bytes] = _default_key,
        new_media_session_id: Callable[[], str] = _default_media_session_id,
    ) -> None:
        """``validate_identify`` returns None to accept or a close code (4004 bad token, 4006 unknown
        session); ``find_session`` looks up a resumable session (None -> 4006)."""
        self.config = config
        self._validate_identify = validate_identify
        self._find_session = find_session
        self._allocate_ssrc = allocate_ssrc
        self._new_key = new_key
        self._new_media_session_id = new_media_session_id
        self._state = ConnectionState.AWAIT_IDENTIFY
        self._session: VoiceServerSession | None = None
        self._heartbeat_deadline: float | None = None
        self._acking = True
        self.close_code: int | None = None
        self.seq_ack_violations = 0

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def session(self) -> VoiceServerSession | None:
        return self._session

    def next_deadline(self) -> float | None:
        return self._heartbeat_deadline

    # ------------------------------------------------------------------ driver inputs

    def connection_opened(self, now: float) -> list[ServerEvent]:
        self._heartbeat_deadline = now + self.config.heartbeat_timeout
        hello = vg.Hello(heartbeat_interval=self.config.heartbeat_interval_ms, v=self.config.version)
        return [SendText(hello.OP, vg.text_frame(hello))]

    def connection_lost(self) -> None:
        """The websocket is gone; the session stays resumable."""
        self._state = ConnectionState.CLOSED
        self._heartbeat_deadline = None

    def tick(self, now: float) -> list[ServerEvent]:
        if self._heartbeat_deadline is not None and now >= self._heartbeat_deadline:
            return self.close(CLOSE_SESSION_TIMEOUT, "heartbeat timeout")
        return []

    def receive_text(self, text: str | bytes, now: float) -> list[ServerEvent]:
        if self._state is ConnectionState.CLOSED:
            return []
        try:
            frame = vg.TextFrame.parse(text)
            return self._on_text(frame, now)
        except MalformedMessage as exc:
            return self.close(exc.close_code or CLOSE_DECODE_FAILED, exc.reason)

    def receive_binary(self, data: bytes, now: float) -> list[ServerEvent]:
        if self._state is ConnectionState.CLOSED:
            return []
        try:
            frame = vg.ClientBinaryFrame.parse(data)
        except MalformedMessage as exc:
            return self.close(CLOSE_DECODE_FAILED, exc.reason)
        if self._state is ConnectionState.AWAIT_IDENTIFY:
            return self.close(CLOSE_NOT_AUTHENTICATED, "binary frame before identify")
        if frame.op not in vg.CLIENT_BINARY_OPS:
            return self.close(CLOSE_UNKNOWN_OPCODE, f"unknown binary opcode {frame.op}")
        return [ClientDaveBinary(frame.op, frame.payload)]

    # ------------------------------------------------------------------ scripted behaviour

    def close(self, code: int, reason: str = "") -> list[ServerEvent]:
        """Close the websocket with ``code`` (scripted closes: 4006, 4014, 4015, 4021, 4022 ...)."""
        if self._state is ConnectionState.CLOSED:
            return []
        self._state = ConnectionState.CLOSED
        self._heartbeat_deadline = None
        self.close_code = code
        return [CloseConnection(code, reason)]

    def stop_acking(self) -> None:
        """Fault: keep receiving heartbeats but never ACK them (the client should go zombie)."""
        self._acking = False

    def request_heartbeat(self) -> list[ServerEvent]:
        """Server op3: ask the client for an immediate heartbeat."""
        return self._live(
            [SendText(VoiceOp.HEARTBEAT, vg.TextFrame(op=VoiceOp.HEARTBEAT, d=None).serialize())]
        )

    # ------------------------------------------------------------------ outgoing helpers (seq'd, replayable)

    def send_message(self, op: int, d: Mapping[str, Any] | None) -> list[ServerEvent]:
        """Fault/fidelity: any JSON message, as Discord may send it (op18 video state, op16 ...)."""
        return self._send_raw(op, d)

    def send_speaking(self, user_id: str, ssrc: int, flags: int) -> list[ServerEvent]:
        return self._send(vg.Speaking(speaking=flags, ssrc=ssrc, user_id=user_id))

    def send_clients_connect(self, user_ids: tuple[str, ...]) -> list[ServerEvent]:
        return self._send(vg.ClientsConnect(user_ids))

    def send_video(self, video: vg.Video) -> list[ServerEvent]:
        return self._send(video)

    def send_client_disconnect(self, user_id: str) -> list[ServerEvent]:
        return self._send(vg.ClientDisconnect(user_id))

    def send_session_update(self, update: vg.SessionUpdate) -> list[ServerEvent]:
        return self._send(update)

    def send_media_sink_wants(
        self, wants: vg.MediaSinkWants, fmt: vg.SinkWantsFormat = vg.SinkWantsFormat.NESTED
    ) -> list[ServerEvent]:
        return self._send_raw(VoiceOp.MEDIA_SINK_WANTS, wants.serialize(fmt))

    def send_client_flags(self, user_id: str, flags: int) -> list[ServerEvent]:
        return self._send(vg.ClientFlags(user_id, flags))

    def send_client_platform(self, user_id: str, platform: int) -> list[ServerEvent]:
        return self._send(vg.ClientPlatform(user_id, platform))

    def send_prepare_transition(self, transition_id: int, protocol_version: int) -> list[ServerEvent]:
        return self._send(vg.DavePrepareTransition(transition_id, protocol_version))

    def send_execute_transition(self, transition_id: int) -> list[ServerEvent]:
        return self._send(vg.DaveExecuteTransition(transition_id))

    def send_prepare_epoch(
        self, protocol_version: int, epoch: int, transition_id: int | None = None
    ) -> list[ServerEvent]:
        return self._send(vg.DavePrepareEpoch(protocol_version, epoch, transition_id))

    def send_dave_binary(self, op: int, payload: bytes) -> list[ServerEvent]:
        """Binary op25 external sender, op27 proposals, op29 commit, op30 welcome."""
        if op not in vg.SERVER_BINARY_OPS:
            raise SandboxError(f"op {op} is not a server binary opcode")
        session = self._require_session()
        seq = session.next_seq()
        session.sent_ops[op] += 1
        frame = SendBinary(op, vg.ServerBinaryFrame(seq, op, payload).serialize())
        session.remember(seq, frame)
        return self._live([frame])

    # ------------------------------------------------------------------ text dispatch

    def _on_text(self, frame: vg.TextFrame, now: float) -> list[ServerEvent]:
        op = frame.op
        if op == VoiceOp.HEARTBEAT:
            return self._on_heartbeat(vg.Heartbeat.parse(frame.d), now)
        if op == VoiceOp.IDENTIFY:
            if self._state is not ConnectionState.AWAIT_IDENTIFY:
                return self.close(CLOSE_ALREADY_AUTHENTICATED, "already authenticated")
            return self._on_identify(vg.Identify.parse(frame.d))
        if op == VoiceOp.RESUME:
            if self._state is not ConnectionState.AWAIT_IDENTIFY:
                return self.close(CLOSE_ALREADY_AUTHENTICATED, "already authenticated")
            return self._on_resume(vg.Resume.parse(frame.d))
        if self._state is ConnectionState.AWAIT_IDENTIFY:
            return self.close(CLOSE_NOT_AUTHENTICATED, f"op {op} before identify")
        if op == VoiceOp.SELECT_PROTOCOL:
            return self._on_select_protocol(vg.SelectProtocol.parse(frame.d))
        if op not in _CLIENT_TEXT_OPS:
            return self.close(CLOSE_UNKNOWN_OPCODE, f"unknown opcode {op}")
        return self._on_client_message(op, frame.d)

    def _on_heartbeat(self, heartbeat: vg.Heartbeat, now: float) -> list[ServerEvent]:
        self._heartbeat_deadline = now + self.config.heartbeat_timeout
        last = self._session.last_seq if self._session is not None else 0
        if heartbeat.seq_ack is not None and heartbeat.seq_ack > last:
            self.seq_ack_violations += 1
        events: list[ServerEvent] = [HeartbeatReceived(heartbeat.t, heartbeat.seq_ack, self._acking)]
        if self._acking:
            ack = vg.HeartbeatAck(heartbeat.t if self.config.heartbeat_ack_echo else heartbeat.t + 1)
            events.append(SendText(ack.OP, vg.text_frame(ack)))
        return events

    def _on_identify(self, identify: vg.Identify) -> list[ServerEvent]:
        verdict = self._validate_identify(identify)
        if verdict is not None:
            return self.close(verdict, "identify rejected")
        if self.config.require_dave and identify.max_dave_protocol_version < 1:
            return self.close(CLOSE_DAVE_REQUIRED, "E2EE/DAVE protocol required")
        audio_ssrc = self._allocate_ssrc()
        streams = []
        for request in identify.streams:
            ssrc = self._allocate_ssrc()
            rtx = self._allocate_ssrc()
            streams.append(vg.ReadyStream("video", request.rid, ssrc, rtx, request.quality, active=False))
        session = VoiceServerSession(identify, audio_ssrc, tuple(streams))
        self._session = session
        self._state = ConnectionState.IDENTIFIED
        ready = vg.Ready(
            ssrc=audio_ssrc,
            ip=self.config.ip,
            port=self.config.port,
            modes=self.config.modes,
            experiments=self.config.experiments,
            streams=session.streams,
        )
        return [Identified(session), *self._send(ready)]

    def _on_resume(self, resume: vg.Resume) -> list[ServerEvent]:
        session = self._find_session(resume)
        if session is None:
            return self.close(CLOSE_SESSION_INVALID, "unknown session")
        frames = session.frames_after(resume.seq_ack)
        if frames is None:
            return self.close(CLOSE_SESSION_INVALID, "seq_ack no longer in the replay buffer")
        self._session = session
        self._state = ConnectionState.SESSION if session.described else ConnectionState.IDENTIFIED
        resumed = vg.TextFrame(op=VoiceOp.RESUMED, d=None).serialize()
        return [SessionResumed(session, len(frames)), SendText(VoiceOp.RESUMED, resumed), *frames]

    def _on_select_protocol(self, select: vg.SelectProtocol) -> list[ServerEvent]:
        session = self._require_session()
        if session.described:
            return self.close(CLOSE_BAD_REQUEST, "protocol already selected")
        if select.protocol != "udp":
            return self.close(CLOSE_UNKNOWN_PROTOCOL, f"unknown protocol {select.protocol!r}")
        if select.mode not in self.config.modes:
            return self.close(CLOSE_UNKNOWN_ENCRYPTION_MODE, f"unknown encryption mode {select.mode!r}")
        key = self._new_key()
        if len(key) != vg.SECRET_KEY_SIZE:
            raise SandboxError(f"new_key returned {len(key)} bytes")
        session.select = select
        session.mode = select.mode
        session.secret_key = key
        session.media_session_id = self._new_media_session_id()
        session.dave_protocol_version = min(
            self.config.dave_protocol_version, session.identify.max_dave_protocol_version
        )
        self._state = ConnectionState.SESSION
        description = vg.SessionDescription(
            mode=select.mode,
            secret_key=key,
            audio_codec=self.config.audio_codec,
            video_codec=self.config.video_codec,
            media_session_id=session.media_session_id,
            dave_protocol_version=session.dave_protocol_version,
            keyframe_interval=self.config.keyframe_interval,
        )
        return [*self._send(description), *self._backend_version(), SessionDescribed(session)]

    def _on_client_message(self, op: int, d: Any) -> list[ServerEvent]:
        if op == VoiceOp.SPEAKING:
            return [ClientSpeaking(vg.Speaking.parse(d))]
        if op == VoiceOp.VIDEO:
            return [ClientVideo(vg.Video.parse(d))]
        if op == VoiceOp.MEDIA_SINK_WANTS:
            if self.config.sink_wants_flat_only and isinstance(d, dict):
                d = {k: v for k, v in d.items() if k != "streams"}
            return [ClientSinkWants(vg.MediaSinkWants.parse(d))]
        if op == VoiceOp.SESSION_UPDATE:
            return [ClientSessionUpdate(vg.SessionUpdate.parse(d))]
        if op in vg.DAVE_JSON_OPS:
            return [ClientDaveJson(op, vg.parse_dave_json(op, d))]
        if op == VoiceOp.VOICE_BACKEND_VERSION:
            return self._backend_version()
        return []  # op32 no route: accepted, nothing to do

    # ------------------------------------------------------------------ helpers

    def _backend_version(self) -> list[ServerEvent]:
        version = self.config.backend_version
        return [] if version is None else self._send_raw(VoiceOp.VOICE_BACKEND_VERSION, dict(version))

    def _require_session(self) -> VoiceServerSession:
        if self._session is None:
            raise SandboxError("no identified session on this connection yet")
        return self._session

    def _send(self, payload: vg.Payload) -> list[ServerEvent]:
        return self._send_raw(payload.OP, payload.serialize())

    def _send_raw(self, op: int, d: Mapping[str, Any] | None) -> list[ServerEvent]:
        session = self._require_session()
        seq = session.next_seq()
        session.sent_ops[op] += 1
        frame = SendText(op, vg.TextFrame(op=op, d=d, seq=seq).serialize())
        session.remember(seq, frame)
        return self._live([frame])

    def _live(self, events: list[ServerEvent]) -> list[ServerEvent]:
        """Frames only reach a live websocket; the replay buffer has them for a later resume."""
        return [] if self._state is ConnectionState.CLOSED else events
