"""Voice gateway client core (sans-io): handshake, heartbeats, resume, close policy, SSRC map.

One :class:`VoiceGatewayCore` per transport role (voice, stream_watch, stream_publish); the
protocol is the same for all three (discord-protocol.md §3). The trio driver feeds it websocket
frames, the IP discovery result and the clock (``now``, seconds); every call returns a list of
:data:`Event` values — frames to send (``SendText``/``SendBinary``) and things that happened.
The core never raises on peer input: garbage becomes a :class:`Failed` event.

The events, config and statistics values live in :mod:`~clank.protocol.voice_gateway_events`,
the close-code table in :mod:`~clank.protocol.voice_gateway_close` and the SSRC roster in
:mod:`~clank.protocol.voice_roster`; this module re-exports the first two for its callers.

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

from collections.abc import Mapping, Sequence
from typing import Final

from clank.errors import (
    ClankError,
    HandshakeTimeout,
    MalformedMessage,
    ProtocolError,
    TransportError,
    UsageError,
)
from clank.protocol.voice_gateway_close import (
    CLIENT_CLOSE_NORMAL,
    CLIENT_CLOSE_RESUMABLE,
    CLOSE_POLICY,
    CloseAction,
    ClosePolicy,
    classify_close,
    close_error,
)
from clank.protocol.voice_gateway_events import (
    HANDSHAKE_BUFFER_LIMIT,
    OUTBOX_LIMIT,
    ClientDisconnected,
    ClientFlags,
    ClientPlatform,
    ClientsConnected,
    Closed,
    DaveBinary,
    DaveJson,
    Event,
    Failed,
    HeartbeatAck,
    MalformedDropped,
    MediaSinkWants,
    NeedIpDiscovery,
    Phase,
    Ready,
    Resumed,
    SendBinary,
    SendText,
    SessionEstablished,
    SessionUpdate,
    Speaking,
    SsrcBinding,
    VideoState,
    VoiceGatewayConfig,
    VoiceGatewayStatistics,
)
from clank.protocol.voice_heartbeat import HeartbeatClock
from clank.protocol.voice_roster import VoiceRoster, own_video_state
from clank.wire import voice_gateway as vg
from clank.wire.voice_gateway import VoiceOp, voice_gateway_url

__all__ = [
    "CLIENT_CLOSE_NORMAL",
    "CLIENT_CLOSE_RESUMABLE",
    "CLOSE_POLICY",
    "HANDSHAKE_BUFFER_LIMIT",
    "OUTBOX_LIMIT",
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
        self._heartbeat = HeartbeatClock()
        self._buffer: list[vg.TextFrame | vg.ServerBinaryFrame] = []
        self._outbox: list[SendText | SendBinary] = []
        self._dropped_sends = 0
        self._ready: vg.Ready | None = None
        self._mode: str | None = None
        self._session: SessionEstablished | None = None
        self._roster = VoiceRoster(config.user_id)
        self._replayed = 0
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
        return self._roster.connected_user_ids

    def next_deadline(self) -> float | None:
        """When ``tick`` must next be called (handshake step deadline or next heartbeat)."""
        candidates = [t for t in (self._deadline, self._heartbeat.next_due) if t is not None]
        return min(candidates) if candidates else None

    def ssrc_map(self) -> Mapping[int, SsrcBinding]:
        """Audio SSRC -> user; video SSRC -> user/rid/rtx; RTX SSRC -> user/primary."""
        return self._roster.ssrc_map()

    def video_state(self, user_id: str) -> VideoState | None:
        return self._roster.video_state(user_id)

    def statistics(self) -> VoiceGatewayStatistics:
        return VoiceGatewayStatistics(
            heartbeats_sent=self._heartbeat.sent,
            heartbeat_acks=self._heartbeat.acks,
            last_latency=self._heartbeat.latency,
            replayed=self._replayed,
            unknown_ops=self._roster.unknown_ops,
            malformed=dict(self._malformed),
            ignored=self._ignored + self._roster.ignored,
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
        self._heartbeat.reset()
        return []

    def connection_lost(self, code: int | None, reason: str, now: float) -> list[Event]:
        """The websocket closed (``code`` None: no close frame). Idempotent after a Failed/close."""
        if self._phase in (Phase.IDLE, Phase.CLOSED):
            return []
        policy = classify_close(code)
        action = self._settle(policy.action_for(self.config.role))
        return [Closed(code, reason, action, close_error(code, reason, policy.meaning))]

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
        return self._roster.on_binary(frame)

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
        due = self._heartbeat.next_due
        if due is not None and now >= due:
            if self._heartbeat.outstanding:
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
        video = own_video_state(
            ready,
            active,
            max_bitrate=max_bitrate,
            max_framerate=max_framerate,
            max_resolution=max_resolution,
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
            return [self._send_heartbeat(now)] if self._heartbeat.cadence is not None else []
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
        return self._roster.on_message(frame)

    def _on_hello(self, hello: vg.Hello, now: float) -> list[Event]:
        interval = hello.heartbeat_interval / 1000.0
        if self._phase is not Phase.HELLO_WAIT:
            self._heartbeat.update_cadence(interval, self.config.heartbeat_cap)
            self._ignored += 1  # a repeated Hello only updates the cadence
            return []
        self._heartbeat.start(interval, self.config.heartbeat_cap, now)
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
        latency = self._heartbeat.ack(now)
        if latency is None:
            self._ignored += 1
            return []
        return [HeartbeatAck(latency)]

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
                    events += self._roster.on_binary(frame)
                else:
                    events += self._roster.on_message(frame)
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
        nonce = self._heartbeat.beat(now)
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
        self._heartbeat.stop()
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
        self._heartbeat.stop()

    def _forget_session(self) -> None:
        """A fresh identify: the server will resend everything, so start from nothing."""
        self._session = None
        self._ready = None
        self._mode = None
        self._last_seq = None
        self._buffer = []
        self._outbox = []
        self._roster.clear()
