"""Voice gateway client core (sans-io): handshake, heartbeats, resume, close policy, SSRC map.

One :class:`VoiceGatewayCore` per transport role (voice, stream_watch, stream_publish); the
protocol is the same for all three (discord-protocol.md §3). The trio driver feeds it websocket
frames, the IP discovery result and the clock (``now``, seconds); every call returns a list of
:data:`Event` values — frames to send (``SendText``/``SendBinary``) and things that happened.
The core never raises on peer input: garbage becomes a :class:`Failed` event.

Lifecycle (one websocket per pass; a resume or reconnect is a new pass on the same core)::

    IDLE --connection_opened--> HELLO_WAIT --op8/send op0--> READY_WAIT --op2--> DISCOVERY
    DISCOVERY --ip_discovered/send op1--> SESSION_WAIT --op4--> CONNECTED
    HELLO_WAIT --op8/send op7 (resumable)--> RESUME_WAIT --op9--> CONNECTED
    any --connection_lost / failure--> IDLE (resume, reconnect) or CLOSED (new session, stop, error)

Messages that arrive before the handshake completes (op5, op11, op12, op13, op15, op18, op20,
DAVE ops including binary op25) are buffered and replayed, in order, right after the session
description (or op9) — never lost.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Final, Literal

import attrs

from clank.errors import (
    AuthenticationFailed,
    ClankError,
    ConnectionClosed,
    HandshakeTimeout,
    MalformedMessage,
    ProtocolError,
    SessionInvalidated,
    TransportError,
    UsageError,
)
from clank.wire import voice_gateway as vg
from clank.wire.voice_gateway import VoiceOp, voice_gateway_url

__all__ = [
    "CLOSE_POLICY",
    "HANDSHAKE_BUFFER_LIMIT",
    "ClientDisconnected",
    "ClientFlags",
    "ClientPlatform",
    "ClientsConnected",
    "CloseAction",
    "ClosePolicy",
    "Closed",
    "DaveBinary",
    "DaveJson",
    "Event",
    "Failed",
    "HeartbeatAck",
    "MalformedDropped",
    "MediaSinkWants",
    "NeedIpDiscovery",
    "Phase",
    "Ready",
    "Resumed",
    "SendBinary",
    "SendText",
    "SessionEstablished",
    "SessionUpdate",
    "Speaking",
    "SsrcBinding",
    "VideoState",
    "VoiceGatewayConfig",
    "VoiceGatewayCore",
    "VoiceGatewayStatistics",
    "classify_close",
    "voice_gateway_url",
]

HANDSHAKE_BUFFER_LIMIT: Final = 512
"""Frames held while the handshake is in progress; overflowing it fails the connection."""

OUTBOX_LIMIT: Final = 64
"""Frames we hold while resuming; beyond it the oldest are dropped (and counted)."""

CLIENT_CLOSE_RESUMABLE: Final = 4000
"""Close code we send when we drop a connection we mean to resume (1000 would end the session)."""
CLIENT_CLOSE_NORMAL: Final = 1000


class Phase(enum.Enum):
    IDLE = "idle"
    HELLO_WAIT = "hello_wait"
    READY_WAIT = "ready_wait"
    RESUME_WAIT = "resume_wait"
    DISCOVERY = "discovery"
    SESSION_WAIT = "session_wait"
    CONNECTED = "connected"
    CLOSED = "closed"


# --------------------------------------------------------------------------- close policy


class CloseAction(enum.Enum):
    RESUME = "resume"
    """Reconnect to the same endpoint and send op7; falls back to RECONNECT without a session."""
    RECONNECT = "reconnect"
    """Reconnect to the same endpoint with a fresh op0 identify."""
    NEW_SESSION = "new_session"
    """Rejoin through the main gateway (op4) to get a new voice server/token."""
    STOP = "stop"
    """Do not reconnect (unless the session layer sees a new server update)."""
    ERROR = "error"
    """A configuration or protocol error that retrying will not fix."""


@attrs.frozen
class ClosePolicy:
    action: CloseAction
    meaning: str


CLOSE_POLICY: Final[Mapping[int, ClosePolicy]] = MappingProxyType(
    {
        1000: ClosePolicy(CloseAction.STOP, "normal closure"),
        1006: ClosePolicy(CloseAction.RESUME, "abnormal closure (network drop)"),
        4001: ClosePolicy(CloseAction.RECONNECT, "unknown opcode"),
        4002: ClosePolicy(CloseAction.RECONNECT, "failed to decode payload"),
        4003: ClosePolicy(CloseAction.RECONNECT, "not authenticated"),
        4004: ClosePolicy(CloseAction.NEW_SESSION, "authentication failed"),
        4005: ClosePolicy(CloseAction.RECONNECT, "already authenticated"),
        4006: ClosePolicy(CloseAction.NEW_SESSION, "session no longer valid"),
        4009: ClosePolicy(CloseAction.RECONNECT, "session timeout"),  # a fresh connect (DDOC 3.11)
        4011: ClosePolicy(CloseAction.NEW_SESSION, "server not found"),
        4012: ClosePolicy(CloseAction.ERROR, "unknown protocol"),
        4013: ClosePolicy(CloseAction.RESUME, "WebRTC crashed"),
        4014: ClosePolicy(CloseAction.STOP, "disconnected (kicked, moved or main gateway dropped)"),
        4015: ClosePolicy(CloseAction.RESUME, "voice server crashed"),
        4016: ClosePolicy(CloseAction.ERROR, "unknown encryption mode"),
        4017: ClosePolicy(CloseAction.ERROR, "E2EE/DAVE protocol required"),
        4020: ClosePolicy(CloseAction.RECONNECT, "bad request"),
        4021: ClosePolicy(CloseAction.STOP, "rate limited"),
        4022: ClosePolicy(CloseAction.STOP, "call terminated"),
    }
)
_NETWORK_DROP: Final = ClosePolicy(CloseAction.RESUME, "connection lost")
_UNKNOWN_CLOSE: Final = ClosePolicy(CloseAction.NEW_SESSION, "unknown close code")


def classify_close(code: int | None) -> ClosePolicy:
    """The policy for a server close code; ``None`` (no close frame) is a network drop."""
    if code is None:
        return _NETWORK_DROP
    policy = CLOSE_POLICY.get(code)
    if policy is not None:
        return policy
    return _NETWORK_DROP if code < 4000 else _UNKNOWN_CLOSE


def _close_error(code: int | None, reason: str, meaning: str) -> ClankError:
    if code == 4004:
        return AuthenticationFailed(f"voice gateway closed {code}: {meaning}")
    if code in (4006, 4009):
        return SessionInvalidated(f"voice gateway closed {code}: {meaning}")
    return ConnectionClosed(code, reason or meaning)


# --------------------------------------------------------------------------- events


@attrs.frozen
class SendText:
    """A text frame for the driver to send. ``text`` may hold the token: not in the repr."""

    op: int
    text: str = attrs.field(repr=False)


@attrs.frozen
class SendBinary:
    op: int
    data: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")


@attrs.frozen
class Ready:
    ssrc: int
    ip: str
    port: int
    modes: tuple[str, ...]
    streams: tuple[vg.ReadyStream, ...]
    experiments: tuple[str, ...]


@attrs.frozen
class NeedIpDiscovery:
    """The driver must run UDP IP discovery against ``ip:port`` and call ``ip_discovered``."""

    ip: str
    port: int
    ssrc: int


@attrs.frozen
class SessionEstablished:
    mode: str
    secret_key: bytes = attrs.field(repr=False)
    audio_codec: str | None = None
    video_codec: str | None = None
    media_session_id: str | None = None
    dave_protocol_version: int = 0
    keyframe_interval: int | None = None
    ssrc: int = 0
    streams: tuple[vg.ReadyStream, ...] = ()


@attrs.frozen
class Resumed:
    """op9: UDP, keys and DAVE state stay as they were; no new op1."""


@attrs.frozen
class Speaking:
    user_id: str
    ssrc: int
    flags: int


@attrs.frozen
class ClientsConnected:
    user_ids: tuple[str, ...]


@attrs.frozen
class ClientDisconnected:
    user_id: str


@attrs.frozen
class VideoState:
    """A remote user's video state after merging a (possibly partial) op12 into what we knew."""

    user_id: str
    audio_ssrc: int | None
    video_ssrc: int | None
    rtx_ssrc: int | None
    streams: tuple[vg.VideoStream, ...]

    @property
    def has_video(self) -> bool:
        return bool(self.video_ssrc) or bool(self.streams)


@attrs.frozen
class SessionUpdate:
    update: vg.SessionUpdate


@attrs.frozen(eq=False)
class MediaSinkWants:
    wants: vg.MediaSinkWants


@attrs.frozen
class MalformedDropped:
    """A message of an established connection had an unexpected shape: logged, counted, dropped."""

    op: int
    reason: str


@attrs.frozen
class ClientFlags:
    user_id: str
    flags: int


@attrs.frozen
class ClientPlatform:
    user_id: str
    platform: int


@attrs.frozen
class DaveJson:
    op: int
    payload: vg.DaveJsonPayload


@attrs.frozen
class DaveBinary:
    op: int
    payload: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")


@attrs.frozen
class HeartbeatAck:
    latency: float
    """Seconds between our op3 and its op6."""


@attrs.frozen
class Closed:
    """The server closed the websocket (or it dropped); ``action`` says what to do next."""

    code: int | None
    reason: str
    action: CloseAction
    error: ClankError = attrs.field(eq=False)


@attrs.frozen
class Failed:
    """We give up on this websocket: close it with ``close_code``, then follow ``action``."""

    reason: str
    action: CloseAction
    error: ClankError = attrs.field(eq=False)
    close_code: int = CLIENT_CLOSE_RESUMABLE


Event = (
    SendText
    | SendBinary
    | Ready
    | NeedIpDiscovery
    | SessionEstablished
    | Resumed
    | Speaking
    | ClientsConnected
    | ClientDisconnected
    | VideoState
    | SessionUpdate
    | MediaSinkWants
    | ClientFlags
    | ClientPlatform
    | MalformedDropped
    | DaveJson
    | DaveBinary
    | HeartbeatAck
    | Closed
    | Failed
)


# --------------------------------------------------------------------------- config, queries


@attrs.frozen
class VoiceGatewayConfig:
    role: vg.Role
    server_id: str
    """Guild id (DM: channel id) on the voice leg; ``rtc_server_id`` on stream legs."""
    channel_id: str | None
    user_id: str
    session_id: str
    token: str = attrs.field(repr=False)
    max_dave_protocol_version: int = 1
    video: bool = True
    streams: tuple[vg.StreamRequest, ...] = (vg.SCREEN_STREAM,)
    mode_preference: tuple[str, ...] = vg.SUPPORTED_MODES
    codecs: tuple[vg.Codec, ...] | None = None
    """``None``: the role's default list (``wire.voice_gateway.codecs_for_role``)."""
    experiments: tuple[str, ...] | None = None
    """``None``: echo the experiments from Ready."""
    sink_wants_format: vg.SinkWantsFormat = vg.SinkWantsFormat.NESTED
    heartbeat_cap: float | None = None
    """Seconds. The Hello interval is the longest allowed gap; a cap sends more often (web: 5 s)."""
    handshake_timeout: float = 10.0
    discovery_timeout: float = 5.0

    @property
    def effective_codecs(self) -> tuple[vg.Codec, ...]:
        return vg.codecs_for_role(self.role) if self.codecs is None else self.codecs


@attrs.frozen
class SsrcBinding:
    """Who sends on an SSRC. ``primary_ssrc`` is the media SSRC an RTX SSRC repairs."""

    user_id: str
    kind: Literal["audio", "video", "rtx"]
    rid: str | None = None
    primary_ssrc: int | None = None
    rtx_ssrc: int | None = None


@attrs.frozen
class VoiceGatewayStatistics:
    heartbeats_sent: int
    heartbeat_acks: int
    last_latency: float | None
    replayed: int
    unknown_ops: int
    ignored: int
    dropped_sends: int
    last_seq: int | None
    malformed: Mapping[int, int] = attrs.field(factory=dict)
    """Messages dropped after the handshake because their shape was unexpected, per opcode."""


_HANDSHAKE_OPS: Final = frozenset(
    {VoiceOp.HELLO, VoiceOp.READY, VoiceOp.SESSION_DESCRIPTION, VoiceOp.RESUMED}
)
"""Strict even after the handshake: a malformed one of these still ends the connection."""


class VoiceGatewayCore:
    """Client side of one voice gateway connection (and its resumes). Not thread-safe."""

    def __init__(self, config: VoiceGatewayConfig) -> None:
        self.config = config
        self._phase = Phase.IDLE
        self._deadline: float | None = None
        self._last_seq: int | None = None
        self._cadence: float | None = None
        self._next_heartbeat: float | None = None
        self._pending_nonce: int | None = None
        self._pending_sent_at = 0.0
        self._last_nonce = -1
        self._buffer: list[vg.TextFrame | vg.ServerBinaryFrame] = []
        self._outbox: list[SendText | SendBinary] = []
        self._dropped_sends = 0
        self._ready: vg.Ready | None = None
        self._mode: str | None = None
        self._session: SessionEstablished | None = None
        self._audio: dict[str, int] = {}
        self._video: dict[str, VideoState] = {}
        self._connected_users: set[str] = set()
        self._heartbeats_sent = 0
        self._acks = 0
        self._latency: float | None = None
        self._replayed = 0
        self._unknown_ops = 0
        self._malformed: dict[int, int] = {}
        self._ignored = 0

    # ------------------------------------------------------------------ queries

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def session(self) -> SessionEstablished | None:
        """The established session (kept across resumes), if any."""
        return self._session

    @property
    def resumable(self) -> bool:
        return self._session is not None

    @property
    def ready(self) -> vg.Ready | None:
        return self._ready

    @property
    def connected_user_ids(self) -> frozenset[str]:
        """Other users on this leg, from op11/op13 (DAVE's expected user ids)."""
        return frozenset(self._connected_users)

    def next_deadline(self) -> float | None:
        """When ``tick`` must next be called (handshake step deadline or next heartbeat)."""
        candidates = [t for t in (self._deadline, self._next_heartbeat) if t is not None]
        return min(candidates) if candidates else None

    def ssrc_map(self) -> Mapping[int, SsrcBinding]:
        """Audio SSRC -> user; video SSRC -> user/rid/rtx; RTX SSRC -> user/primary."""
        out: dict[int, SsrcBinding] = {}
        for user_id, ssrc in self._audio.items():
            out[ssrc] = SsrcBinding(user_id, "audio")
        for state in self._video.values():
            for stream in state.streams:
                out[stream.ssrc] = SsrcBinding(
                    state.user_id, "video", stream.rid, stream.ssrc, stream.rtx_ssrc
                )
                if stream.rtx_ssrc:
                    out[stream.rtx_ssrc] = SsrcBinding(
                        state.user_id, "rtx", stream.rid, stream.ssrc, stream.rtx_ssrc
                    )
            if state.video_ssrc and state.video_ssrc not in out:
                out[state.video_ssrc] = SsrcBinding(
                    state.user_id, "video", None, state.video_ssrc, state.rtx_ssrc or None
                )
                if state.rtx_ssrc and state.rtx_ssrc not in out:
                    out[state.rtx_ssrc] = SsrcBinding(
                        state.user_id, "rtx", None, state.video_ssrc, state.rtx_ssrc
                    )
        return MappingProxyType(out)

    def video_state(self, user_id: str) -> VideoState | None:
        return self._video.get(user_id)

    def statistics(self) -> VoiceGatewayStatistics:
        return VoiceGatewayStatistics(
            heartbeats_sent=self._heartbeats_sent,
            heartbeat_acks=self._acks,
            last_latency=self._latency,
            replayed=self._replayed,
            unknown_ops=self._unknown_ops,
            malformed=dict(self._malformed),
            ignored=self._ignored,
            dropped_sends=self._dropped_sends,
            last_seq=self._last_seq,
        )

    # ------------------------------------------------------------------ driver inputs

    def connection_opened(self, now: float) -> list[Event]:
        """A websocket to the voice endpoint is open; wait for Hello."""
        if self._phase is not Phase.IDLE:
            raise UsageError(f"connection_opened in phase {self._phase.value}")
        if not self.resumable:
            self._forget_session()
        self._phase = Phase.HELLO_WAIT
        self._deadline = now + self.config.handshake_timeout
        self._cadence = None
        self._next_heartbeat = None
        self._pending_nonce = None
        return []

    def connection_lost(self, code: int | None, reason: str, now: float) -> list[Event]:
        """The websocket closed (``code`` None: no close frame). Idempotent after a Failed/close."""
        if self._phase in (Phase.IDLE, Phase.CLOSED):
            return []
        policy = classify_close(code)
        action = self._settle(policy.action)
        return [Closed(code, reason, action, _close_error(code, reason, policy.meaning))]

    def close(self) -> None:
        """We are leaving on purpose: no more reconnects. The driver closes the socket with 1000."""
        self._enter_closed()

    def receive_text(self, text: str | bytes, now: float) -> list[Event]:
        if self._phase in (Phase.IDLE, Phase.CLOSED):
            return []
        frame: vg.TextFrame | None = None
        try:
            frame = vg.TextFrame.parse(text)
            if frame.seq is not None:
                self._last_seq = frame.seq
            return self._on_text(frame, now)
        except MalformedMessage as exc:
            if frame is not None and self._liberal(frame.op):
                return self._drop_malformed(frame.op, exc)
            return self._fail(exc.reason, CloseAction.RECONNECT, exc, exc.close_code or vg.DECODE_FAILED)

    def receive_binary(self, data: bytes, now: float) -> list[Event]:
        if self._phase in (Phase.IDLE, Phase.CLOSED):
            return []
        try:
            frame = vg.ServerBinaryFrame.parse(data)
        except MalformedMessage as exc:
            return self._fail(exc.reason, CloseAction.RECONNECT, exc, exc.close_code or vg.DECODE_FAILED)
        self._last_seq = self._unwrap_seq(frame.seq)
        if self._phase is not Phase.CONNECTED:
            return self._buffer_frame(frame)
        return self._on_binary(frame)

    def ip_discovered(self, ip: str, port: int, now: float) -> list[Event]:
        """UDP IP discovery finished: send op1 Select Protocol."""
        if self._phase in (Phase.IDLE, Phase.CLOSED):
            return []  # the websocket went away while discovery ran; the close was reported
        if self._phase is not Phase.DISCOVERY or self._ready is None:
            raise UsageError(f"ip_discovered in phase {self._phase.value}")
        mode = vg.pick_mode(self._ready.modes, self.config.mode_preference)
        if mode is None:
            error = ProtocolError(f"no supported encryption mode in {list(self._ready.modes)}")
            return self._fail("no supported encryption mode", CloseAction.ERROR, error, CLIENT_CLOSE_NORMAL)
        self._mode = mode
        experiments = self._ready.experiments if self.config.experiments is None else self.config.experiments
        select = vg.SelectProtocol(
            protocol="udp",
            address=ip,
            port=port,
            mode=mode,
            codecs=self.config.effective_codecs,
            experiments=experiments,
        )
        self._phase = Phase.SESSION_WAIT
        self._deadline = now + self.config.handshake_timeout
        return [self._text(select)]

    def tick(self, now: float) -> list[Event]:
        """Handshake deadlines and heartbeats. Call at ``next_deadline()`` (calling early is harmless)."""
        if self._deadline is not None and now >= self._deadline:
            phase = self._phase
            timeout = HandshakeTimeout(f"voice gateway {phase.value} timed out")
            return self._fail(f"{phase.value} timed out", CloseAction.RECONNECT, timeout)
        if self._next_heartbeat is not None and now >= self._next_heartbeat:
            if self._pending_nonce is not None:
                zombie = TransportError("zombie connection: heartbeat ACK missed")
                return self._fail("heartbeat ACK missed", CloseAction.RESUME, zombie)
            return [self._send_heartbeat(now)]
        return []

    # ------------------------------------------------------------------ senders
    # Valid once a session was established. While a resume is under way the frames are held
    # and sent right after op9; a fresh identify discards them (the new session starts over).

    def speaking(self, flags: int) -> list[Event]:
        ready = self._require_session("speaking")
        return self._out(self._text(vg.Speaking(speaking=flags, ssrc=ready.ssrc, delay=0)))

    def video_state_announcement(
        self,
        active: bool,
        *,
        max_bitrate: int | None = None,
        max_framerate: int | None = None,
        max_resolution: vg.MaxResolution | None = None,
    ) -> list[Event]:
        """op12 announcing our Ready streams as active (publishing) or inactive (watch/voice)."""
        ready = self._require_session("video_state_announcement")
        streams = tuple(
            vg.VideoStream(
                ssrc=s.ssrc,
                rtx_ssrc=s.rtx_ssrc,
                type=s.type,
                rid=s.rid,
                quality=s.quality,
                active=active,
                max_bitrate=max_bitrate,
                max_framerate=max_framerate,
                max_resolution=max_resolution,
            )
            for s in ready.streams
        )
        first = ready.streams[0] if ready.streams else None
        video = vg.Video(
            audio_ssrc=ready.ssrc,
            video_ssrc=first.ssrc if first else 0,
            rtx_ssrc=first.rtx_ssrc if first else 0,
            streams=streams,
        )
        return self._out(self._text(video))

    def send_video(self, video: vg.Video) -> list[Event]:
        """A raw op12 (e.g. the clear form ``video_ssrc=0, streams=()``)."""
        self._require_session("send_video")
        return self._out(self._text(video))

    def media_sink_wants(self, wants: vg.MediaSinkWants) -> list[Event]:
        self._require_session("media_sink_wants")
        text = vg.sink_wants_frame(wants, self.config.sink_wants_format)
        return self._out(SendText(VoiceOp.MEDIA_SINK_WANTS, text))

    def session_update(self, codecs: Sequence[vg.Codec]) -> list[Event]:
        self._require_session("session_update")
        return self._out(self._text(vg.SessionUpdate(codecs=tuple(codecs))))

    def send_dave_json(self, payload: vg.DaveTransitionReady | vg.DaveInvalidCommitWelcome) -> list[Event]:
        self._require_session("send_dave_json")
        return self._out(self._text(payload))

    def send_dave_binary(self, op: int, payload: bytes) -> list[Event]:
        """op26 key package or op28 commit/welcome."""
        self._require_session("send_dave_binary")
        if op not in vg.CLIENT_BINARY_OPS:
            raise UsageError(f"op {op} is not a client binary opcode")
        return self._out(SendBinary(op, vg.ClientBinaryFrame(op, payload).serialize()))

    # ------------------------------------------------------------------ text dispatch

    def _on_text(self, frame: vg.TextFrame, now: float) -> list[Event]:
        op = frame.op
        if op == VoiceOp.HEARTBEAT_ACK:
            return self._on_ack(vg.HeartbeatAck.parse(frame.d), now)
        if op == VoiceOp.HEARTBEAT:
            # The server asks for an immediate heartbeat.
            return [self._send_heartbeat(now)] if self._cadence is not None else []
        if op == VoiceOp.HELLO:
            return self._on_hello(vg.Hello.parse(frame.d), now)
        if op == VoiceOp.READY:
            return self._on_ready(vg.Ready.parse(frame.d), now)
        if op == VoiceOp.SESSION_DESCRIPTION:
            return self._on_session_description(vg.SessionDescription.parse(frame.d))
        if op == VoiceOp.RESUMED:
            return self._on_resumed()
        if self._phase is not Phase.CONNECTED:
            return self._buffer_frame(frame)
        return self._on_message(frame)

    def _on_hello(self, hello: vg.Hello, now: float) -> list[Event]:
        self._cadence = hello.heartbeat_interval / 1000.0
        if self.config.heartbeat_cap is not None:
            self._cadence = min(self._cadence, self.config.heartbeat_cap)
        if self._phase is not Phase.HELLO_WAIT:
            self._ignored += 1  # a repeated Hello only updates the cadence
            return []
        self._next_heartbeat = now + self._cadence
        self._deadline = now + self.config.handshake_timeout
        cfg = self.config
        if self.resumable:
            self._phase = Phase.RESUME_WAIT
            seq_ack = -1 if self._last_seq is None else self._last_seq
            resume = vg.Resume(cfg.server_id, cfg.channel_id, cfg.session_id, cfg.token, seq_ack)
            return [self._text(resume)]
        self._phase = Phase.READY_WAIT
        identify = vg.Identify(
            server_id=cfg.server_id,
            channel_id=cfg.channel_id,
            user_id=cfg.user_id,
            session_id=cfg.session_id,
            token=cfg.token,
            video=cfg.video,
            streams=cfg.streams,
            max_dave_protocol_version=cfg.max_dave_protocol_version,
        )
        return [self._text(identify)]

    def _on_ready(self, ready: vg.Ready, now: float) -> list[Event]:
        if self._phase is not Phase.READY_WAIT:
            self._ignored += 1
            return []
        self._ready = ready
        self._phase = Phase.DISCOVERY
        self._deadline = now + self.config.discovery_timeout
        return [
            Ready(ready.ssrc, ready.ip, ready.port, ready.modes, ready.streams, ready.experiments),
            NeedIpDiscovery(ready.ip, ready.port, ready.ssrc),
        ]

    def _on_session_description(self, desc: vg.SessionDescription) -> list[Event]:
        ready = self._ready
        if self._phase is not Phase.SESSION_WAIT or ready is None:
            if self._phase is Phase.CONNECTED:
                self._ignored += 1
                return []
            raise MalformedMessage(vg.KIND, f"session description in phase {self._phase.value}", 4002)
        if desc.mode not in self.config.mode_preference:
            error = ProtocolError(f"server chose unsupported mode {desc.mode!r}")
            return self._fail("unsupported mode", CloseAction.ERROR, error, CLIENT_CLOSE_NORMAL)
        self._session = SessionEstablished(
            mode=desc.mode,
            secret_key=desc.secret_key,
            audio_codec=desc.audio_codec,
            video_codec=desc.video_codec,
            media_session_id=desc.media_session_id,
            dave_protocol_version=desc.dave_protocol_version,
            keyframe_interval=desc.keyframe_interval,
            ssrc=ready.ssrc,
            streams=ready.streams,
        )
        self._phase = Phase.CONNECTED
        self._deadline = None
        events: list[Event] = [self._session]
        return events + self._replay()

    def _on_resumed(self) -> list[Event]:
        if self._phase is not Phase.RESUME_WAIT:
            self._ignored += 1
            return []
        self._phase = Phase.CONNECTED
        self._deadline = None
        events: list[Event] = [Resumed()]
        outbox, self._outbox = self._outbox, []
        return events + outbox + self._replay()

    def _on_ack(self, ack: vg.HeartbeatAck, now: float) -> list[Event]:
        # Any op6 answers our outstanding heartbeat, whatever its ``t`` (Discord's need not echo it).
        if self._pending_nonce is None:
            self._ignored += 1
            return []
        self._pending_nonce = None
        self._acks += 1
        self._latency = max(0.0, now - self._pending_sent_at)
        return [HeartbeatAck(self._latency)]

    def _on_message(self, frame: vg.TextFrame) -> list[Event]:
        """Messages of an established connection (live or replayed from the handshake buffer)."""
        op, d = frame.op, frame.d
        if op == VoiceOp.SPEAKING:
            return self._on_speaking(vg.Speaking.parse(d))
        if op == VoiceOp.CLIENTS_CONNECT:
            ids = tuple(u for u in vg.ClientsConnect.parse(d).user_ids if u != self.config.user_id)
            self._connected_users.update(ids)
            return [ClientsConnected(ids)]
        if op == VoiceOp.VIDEO:
            return self._on_video(vg.Video.parse(d))
        if op == VoiceOp.CLIENT_DISCONNECT:
            user_id = vg.ClientDisconnect.parse(d).user_id
            self._connected_users.discard(user_id)
            self._audio.pop(user_id, None)
            self._video.pop(user_id, None)
            return [ClientDisconnected(user_id)]
        if op == VoiceOp.SESSION_UPDATE:
            return [SessionUpdate(vg.SessionUpdate.parse(d))]
        if op == VoiceOp.MEDIA_SINK_WANTS:
            return [MediaSinkWants(vg.MediaSinkWants.parse(d))]
        if op == VoiceOp.CLIENT_FLAGS:
            if isinstance(d, dict) and "flags" not in d and "user_id" in d:
                return self._on_video(vg.Video.parse(d))  # op18 carrying video state (clanky reads it so)
            flags = vg.ClientFlags.parse(d)
            return [ClientFlags(flags.user_id, flags.flags)]
        if op == VoiceOp.CLIENT_PLATFORM:
            platform = vg.ClientPlatform.parse(d)
            return [ClientPlatform(platform.user_id, platform.platform)]
        if op in vg.DAVE_JSON_OPS:
            return [DaveJson(op, vg.parse_dave_json(op, d))]
        self._unknown_ops += 1  # op16, op17, op19 and future ops are tolerated
        return []

    def _on_binary(self, frame: vg.ServerBinaryFrame) -> list[Event]:
        if frame.op not in vg.SERVER_BINARY_OPS:
            self._unknown_ops += 1
            return []
        return [DaveBinary(frame.op, frame.payload)]

    def _on_speaking(self, speaking: vg.Speaking) -> list[Event]:
        user_id = speaking.user_id
        if user_id is None or user_id == self.config.user_id:
            self._ignored += 1
            return []
        if speaking.ssrc:
            self._audio[user_id] = speaking.ssrc
        return [Speaking(user_id, speaking.ssrc, speaking.speaking)]

    def _on_video(self, video: vg.Video) -> list[Event]:
        user_id = video.user_id
        if user_id is None or user_id == self.config.user_id:
            self._ignored += 1
            return []
        state = _merge_video(self._video.get(user_id), user_id, video)
        self._video[user_id] = state
        if state.audio_ssrc:
            self._audio[user_id] = state.audio_ssrc
        return [state]

    # ------------------------------------------------------------------ helpers

    def _buffer_frame(self, frame: vg.TextFrame | vg.ServerBinaryFrame) -> list[Event]:
        if len(self._buffer) >= HANDSHAKE_BUFFER_LIMIT:
            error = ProtocolError(
                f"more than {HANDSHAKE_BUFFER_LIMIT} messages before the handshake completed"
            )
            return self._fail("handshake buffer overflow", CloseAction.RECONNECT, error)
        self._buffer.append(frame)
        return []

    def _replay(self) -> list[Event]:
        frames, self._buffer = self._buffer, []
        events: list[Event] = []
        for frame in frames:
            self._replayed += 1
            try:
                if isinstance(frame, vg.ServerBinaryFrame):
                    events += self._on_binary(frame)
                else:
                    events += self._on_message(frame)
            except MalformedMessage as exc:
                if self._liberal(frame.op):
                    events += self._drop_malformed(frame.op, exc)
                    continue
                return events + self._fail(exc.reason, CloseAction.RECONNECT, exc, exc.close_code or 4002)
        return events

    def _liberal(self, op: int) -> bool:
        """Once connected, a malformed non-handshake message is dropped, not fatal (item: be liberal)."""
        return self._phase is Phase.CONNECTED and op not in _HANDSHAKE_OPS

    def _drop_malformed(self, op: int, exc: MalformedMessage) -> list[Event]:
        self._malformed[op] = self._malformed.get(op, 0) + 1
        return [MalformedDropped(op, exc.reason)]

    def _send_heartbeat(self, now: float) -> SendText:
        nonce = max(int(now * 1000), self._last_nonce + 1)
        self._last_nonce = nonce
        self._pending_nonce = nonce
        self._pending_sent_at = now
        self._heartbeats_sent += 1
        if self._cadence is not None:
            self._next_heartbeat = now + self._cadence
        return self._text(vg.Heartbeat(t=nonce, seq_ack=self._last_seq))

    def _unwrap_seq(self, seq16: int) -> int:
        """Binary frames carry only the low 16 bits of the seq; extend it from the last full seq."""
        last = self._last_seq
        if last is None or last < vg.SEQ_MODULUS:
            return seq16
        candidate = last - (last % vg.SEQ_MODULUS) + seq16
        if candidate < last - vg.SEQ_MODULUS // 2:
            candidate += vg.SEQ_MODULUS
        return candidate

    def _text(self, payload: vg.Payload) -> SendText:
        return SendText(payload.OP, vg.text_frame(payload))

    def _require_session(self, what: str) -> vg.Ready:
        if self._phase is Phase.CLOSED or self._session is None or self._ready is None:
            raise UsageError(f"{what} needs an established session (phase {self._phase.value})")
        return self._ready

    def _out(self, frame: SendText | SendBinary) -> list[Event]:
        """Send now, or hold the frame while a resume is under way (flushed after op9)."""
        if self._phase is Phase.CONNECTED:
            return [frame]
        if len(self._outbox) >= OUTBOX_LIMIT:
            del self._outbox[0]  # the oldest goes: sink wants and speaking are re-sent anyway
            self._dropped_sends += 1
        self._outbox.append(frame)
        return []

    def _fail(
        self, reason: str, action: CloseAction, error: ClankError, close_code: int = CLIENT_CLOSE_RESUMABLE
    ) -> list[Event]:
        settled = self._settle(action)
        if settled in (CloseAction.STOP, CloseAction.ERROR, CloseAction.NEW_SESSION):
            close_code = CLIENT_CLOSE_NORMAL if close_code == CLIENT_CLOSE_RESUMABLE else close_code
        return [Failed(reason, settled, error, close_code)]

    def _settle(self, action: CloseAction) -> CloseAction:
        """Move to IDLE (another pass follows) or CLOSED; a resume without a session is a reconnect."""
        self._deadline = None
        self._next_heartbeat = None
        self._pending_nonce = None
        if action is CloseAction.RESUME and not self.resumable:
            action = CloseAction.RECONNECT
        if action is CloseAction.RECONNECT:
            self._forget_session()
        if action in (CloseAction.RESUME, CloseAction.RECONNECT):
            self._phase = Phase.IDLE
        else:
            self._enter_closed()
        return action

    def _enter_closed(self) -> None:
        self._phase = Phase.CLOSED
        self._deadline = None
        self._next_heartbeat = None
        self._pending_nonce = None

    def _forget_session(self) -> None:
        """A fresh identify: the server will resend everything, so start from nothing."""
        self._session = None
        self._ready = None
        self._mode = None
        self._last_seq = None
        self._buffer = []
        self._outbox = []
        self._audio.clear()
        self._video.clear()
        self._connected_users.clear()


def _merge_video(prev: VideoState | None, user_id: str, video: vg.Video) -> VideoState:
    """Apply a possibly partial op12 (discord-protocol.md §3.8).

    No streams (absent or empty) and no ``video_ssrc`` clears the user's video; streams absent
    but ``video_ssrc`` kept preserves the prior stream bindings.
    """
    audio = video.audio_ssrc or (prev.audio_ssrc if prev else None)
    if video.streams is None:
        if not video.video_ssrc:
            return VideoState(user_id, audio, None, None, ())
        streams = prev.streams if prev else ()
        rtx = video.rtx_ssrc or (prev.rtx_ssrc if prev else None)
        return VideoState(user_id, audio, video.video_ssrc, rtx, streams)
    streams = tuple(s for s in video.streams if s.ssrc)
    if not streams and not video.video_ssrc:
        return VideoState(user_id, audio, None, None, ())
    video_ssrc = video.video_ssrc or streams[0].ssrc
    rtx = video.rtx_ssrc or (streams[0].rtx_ssrc if streams else None)
    return VideoState(user_id, audio, video_ssrc, rtx, streams)
