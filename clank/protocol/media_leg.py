"""One media leg (voice, stream_watch, stream_publish) as a sans-io core: everything but the sockets.

:class:`MediaLegCore` composes the voice-gateway handshake/resume core
(:class:`~clank.protocol.voice_gateway.VoiceGatewayCore`), the DAVE session
(:class:`~clank.crypto.dave.DaveSessionCore`), the transport AEAD, the RTP send state and the
datagram demultiplexer, and decides what follows when a websocket pass ends (resume, fresh
identify, give up — :data:`~clank.protocol.backoff.MEDIA_LEG_RECONNECT`). The trio driver
(:mod:`clank.io.media_connection`) feeds it and drains it::

    inputs   connection_opened / receive_message / connection_lost / connection_failed
             ip_discovered / tick(now) / leave
             send(...)                       control messages from the role (op5, op12, op15)
             datagrams.seal_rtp / seal_rtcp  -> sealed datagram bytes (or None, counted)
             datagrams.receive_datagram(d)   -> RtpIn | RtcpIn | None (dropped, counted)
    outputs  data_to_send()                  websocket frames, in order (the one send path)
             next_event()                    LegEvent values, in order
             next_deadline()                 when to call tick()
             pass_ended()                    NextPass: resume / reconnect (+ delay) / give up

The outbox (frames) is kept apart from the events, h11 style, so the driver has one send path.
Events are for the role (:data:`MediaEvent`) plus three driver commands: :class:`NeedIpDiscovery`
(open the datagram endpoint, run discovery, call ``ip_discovered``), :class:`CloseWebSocket`
(we give up on this websocket with a code) and :class:`PassOver` (stop reading this websocket).

The datagram path (RTP send state, sealing, demux and drop counters) is
:class:`~clank.protocol.media_datagrams.MediaDatagrams`, whose cipher and readiness the core sets.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping
from typing import Final, Literal

import attrs

from clank.crypto.dave import DaveBinary as DaveOut
from clank.crypto.dave import DaveFrame, DaveSessionCore
from clank.crypto.dave_stats import DaveState, DaveStatistics
from clank.crypto.transport import TransportCipher
from clank.errors import ClankError, MalformedMessage, TransportError
from clank.protocol import voice_gateway as vgc
from clank.protocol.backoff import MEDIA_LEG_RECONNECT, ReconnectPolicy
from clank.protocol.media_datagrams import MediaDatagrams
from clank.wire import voice_gateway as vg

__all__ = [
    "CloseWebSocket",
    "DaveProblem",
    "DaveStateChanged",
    "LegEvent",
    "MediaEvent",
    "MediaLegConfig",
    "MediaLegCore",
    "MediaLegCounters",
    "NeedIpDiscovery",
    "NextPass",
    "PassOver",
    "TransportState",
    "TransportStateChanged",
]

TransportState = Literal["connecting", "ready", "reconnecting", "failed", "disconnected"]

NeedIpDiscovery = vgc.NeedIpDiscovery


# --------------------------------------------------------------------------- events


@attrs.frozen
class TransportStateChanged:
    state: TransportState
    reason: str | None = None
    close_code: int | None = None


@attrs.frozen
class DaveStateChanged:
    state: DaveState
    protocol_version: int
    epoch: int | None
    voice_privacy_code: str | None


@attrs.frozen
class DaveProblem:
    """A DAVE message we could not use (a failed op27, or an op31 recovery); the driver logs it."""

    error: str


@attrs.frozen
class CloseWebSocket:
    """Driver: close this websocket with ``code`` (our own Failed), then end the pass."""

    code: int


@attrs.frozen
class PassOver:
    """Driver: this websocket pass is over; call :meth:`MediaLegCore.pass_ended`."""


MediaEvent = (
    TransportStateChanged
    | DaveStateChanged
    | DaveProblem
    | vgc.Speaking
    | vgc.ClientsConnected
    | vgc.ClientDisconnected
    | vgc.VideoState
    | vgc.SessionUpdate
    | vgc.MediaSinkWants
    | vgc.ClientFlags
    | vgc.ClientPlatform
    | vgc.SessionEstablished
    | vgc.Resumed
    | vgc.MalformedDropped
)
"""What a role sees of its leg (in order, synchronously, before the next packet)."""

LegEvent = MediaEvent | NeedIpDiscovery | CloseWebSocket | PassOver

_ROLE_CONTROL: Final = (
    vgc.Speaking,
    vgc.ClientsConnected,
    vgc.ClientDisconnected,
    vgc.VideoState,
    vgc.SessionUpdate,
    vgc.MediaSinkWants,
    vgc.ClientFlags,
    vgc.ClientPlatform,
)


@attrs.frozen
class NextPass:
    """What follows a websocket pass: ``resume`` (same UDP, keys, DAVE), ``reconnect`` (fresh
    identify: a new generation, new UDP endpoint) after ``delay`` seconds, or ``give_up``
    (raise ``error``: the session decides, e.g. rejoin through the main gateway on 4006)."""

    action: Literal["resume", "reconnect", "give_up"]
    delay: float
    error: ClankError = attrs.field(eq=False)
    close_code: int | None = None


@attrs.frozen
class MediaLegConfig:
    gateway: vgc.VoiceGatewayConfig
    dave_group_id: int
    max_dave_protocol_version: int = 1
    reconnect: ReconnectPolicy = MEDIA_LEG_RECONNECT


@attrs.frozen
class MediaLegCounters:
    packets_in: int
    packets_out: int
    rtcp_in: int
    rtcp_out: int
    send_dropped: int
    control_dropped: int
    drops: dict[str, int]
    resumes: int
    reconnects: int


@attrs.frozen
class _Outcome:
    action: vgc.CloseAction
    error: ClankError = attrs.field(eq=False)
    code: int | None


# --------------------------------------------------------------------------- the core


class MediaLegCore:
    """One leg's protocol state; see the module docstring for the call pattern."""

    def __init__(self, config: MediaLegConfig, rng: random.Random) -> None:
        self.config = config
        self.gateway = vgc.VoiceGatewayCore(config.gateway)
        self.dave = DaveSessionCore(
            int(config.gateway.user_id), config.dave_group_id, config.max_dave_protocol_version
        )
        self._rng = rng
        declared = frozenset(
            pt
            for codec in config.gateway.effective_codecs
            for pt in (codec.payload_type, codec.rtx_payload_type)
            if pt is not None
        )
        self.datagrams = MediaDatagrams(declared, rng)
        """RTP send state, sealing and the receive demux (the driver's datagram path)."""
        self._outbox: deque[str | bytes] = deque()
        self._events: deque[LegEvent] = deque()
        self._state: TransportState = "connecting"
        self._outcome: _Outcome | None = None
        self._failures = 0
        self._reached_ready = False
        self._leaving = False
        self._dave_seen: tuple[DaveState, int, int | None] | None = None
        self._dave_problems = 0
        self._control_dropped = 0
        self._resumes = self._reconnects = 0

    # ------------------------------------------------------------------ queries

    @property
    def state(self) -> TransportState:
        return self._state

    @property
    def cipher(self) -> TransportCipher | None:
        """The transport cipher of the current voice session (None before it / after a reconnect)."""
        return self.datagrams.cipher

    @property
    def ready(self) -> vg.Ready | None:
        return self.gateway.ready

    @property
    def ssrc(self) -> int | None:
        ready = self.gateway.ready
        return None if ready is None else ready.ssrc

    @property
    def leaving(self) -> bool:
        return self._leaving

    @property
    def pass_over(self) -> bool:
        return self._outcome is not None

    @property
    def can_send_control(self) -> bool:
        """A session exists (frames go now, or are held by the gateway core during a resume)."""
        return self.gateway.session is not None and self.gateway.phase is not vgc.Phase.CLOSED

    def ssrc_map(self) -> Mapping[int, vgc.SsrcBinding]:
        return self.gateway.ssrc_map()

    def video_state(self, user_id: str) -> vgc.VideoState | None:
        return self.gateway.video_state(user_id)

    def next_deadline(self) -> float | None:
        return self.gateway.next_deadline()

    def counters(self) -> MediaLegCounters:
        datagrams = self.datagrams.counters()
        return MediaLegCounters(
            packets_in=datagrams.packets_in,
            packets_out=datagrams.packets_out,
            rtcp_in=datagrams.rtcp_in,
            rtcp_out=datagrams.rtcp_out,
            send_dropped=datagrams.send_dropped,
            control_dropped=self._control_dropped,
            drops=datagrams.drops,
            resumes=self._resumes,
            reconnects=self._reconnects,
        )

    def dave_statistics(self) -> DaveStatistics:
        return self.dave.statistics()

    # ------------------------------------------------------------------ outputs

    def data_to_send(self) -> list[str | bytes]:
        """Websocket frames to send now, in order (empties the outbox)."""
        out = list(self._outbox)
        self._outbox.clear()
        return out

    def next_event(self) -> LegEvent | None:
        return self._events.popleft() if self._events else None

    # ------------------------------------------------------------------ websocket inputs

    def connection_opened(self, now: float) -> None:
        self._outcome = None
        self._feed(self.gateway.connection_opened(now))

    def receive_message(self, message: str | bytes, now: float) -> None:
        if self._outcome is not None:
            return
        if isinstance(message, str):
            events = self.gateway.receive_text(message, now)
        else:
            events = self.gateway.receive_binary(message, now)
        try:
            self._feed(events)
        except MalformedMessage as exc:
            # A DAVE frame we cannot accept: end this connection (a fresh identify re-creates
            # the DAVE session) with "failed to decode payload".
            self._feed(self.gateway.connection_lost(vg.DECODE_FAILED, exc.reason, now))

    def connection_lost(self, code: int | None, reason: str, error: ClankError, now: float) -> None:
        """The websocket closed (``code`` None: no close frame)."""
        self._feed(self.gateway.connection_lost(code, reason, now))
        if self._outcome is None:  # the gateway core had already settled (our own Failed)
            self._end_pass(_Outcome(vgc.CloseAction.RESUME, error, code))

    def connection_failed(self, error: TransportError) -> None:
        """The websocket could not be opened, or broke outside a receive."""
        if self._outcome is None:
            action = vgc.CloseAction.RESUME if self.gateway.resumable else vgc.CloseAction.RECONNECT
            self._outcome = _Outcome(action, error, None)

    def ip_discovered(self, ip: str, port: int, now: float) -> None:
        self._feed(self.gateway.ip_discovered(ip, port, now))

    def tick(self, now: float) -> None:
        if self._outcome is None:
            self._feed(self.gateway.tick(now))

    def leave(self) -> None:
        """We are leaving on purpose: no more passes; the driver closes the websocket with 1000."""
        self._leaving = True
        self.gateway.close()
        self._set_state("disconnected", "left")

    def pass_ended(self) -> NextPass:
        """Decide what follows the pass that just ended (counts failures, computes the backoff)."""
        outcome = self._outcome
        if outcome is None:
            raise TransportError("websocket pass ended without an outcome")
        self._outcome = None
        if self._leaving:  # our own close: nothing follows, the state stays "disconnected"
            self.gateway.close()
            return NextPass("give_up", 0.0, outcome.error, outcome.code)
        action = outcome.action
        if action in (vgc.CloseAction.RESUME, vgc.CloseAction.RECONNECT):
            policy = self.config.reconnect
            self._failures = 0 if self._reached_ready else self._failures + 1
            self._reached_ready = False
            if policy.gives_up(self._failures):
                self._set_state("failed", str(outcome.error), outcome.code)
                return NextPass("give_up", 0.0, outcome.error, outcome.code)
            if action is vgc.CloseAction.RECONNECT:
                self._reconnects += 1
                self.datagrams.cipher = None
            self._set_state("reconnecting", str(outcome.error), outcome.code)
            delay = policy.backoff.delay(self._failures + 1, self._rng)
            kind: Literal["resume", "reconnect"] = (
                "resume" if action is vgc.CloseAction.RESUME else "reconnect"
            )
            return NextPass(kind, delay, outcome.error, outcome.code)
        final: TransportState = "disconnected" if action is vgc.CloseAction.STOP else "failed"
        self._set_state(final, str(outcome.error), outcome.code)
        return NextPass("give_up", 0.0, outcome.error, outcome.code)

    # ------------------------------------------------------------------ control sends (role)

    def send(self, frames: list[vgc.Event]) -> bool:
        """Queue what a gateway-core sender returned; False (counted) without a session."""
        for event in frames:
            if isinstance(event, vgc.SendText):
                self._outbox.append(event.text)
            elif isinstance(event, vgc.SendBinary):
                self._outbox.append(event.data)
        return True

    def speaking(self, flags: int) -> bool:
        """op5 with our SSRC (voice: 1, stream publish: 2 SOUNDSHARE, 0: stopped).

        Between sessions (a fresh identify is under way) there is nothing to announce to: the frame
        is dropped and counted; roles re-announce when the state becomes ready again.
        """
        if not self.can_send_control:
            self._control_dropped += 1
            return False
        return self.send(self.gateway.speaking(flags))

    def video_state_announcement(
        self,
        active: bool,
        *,
        max_bitrate: int | None = None,
        max_framerate: int | None = None,
        max_resolution: vg.MaxResolution | None = None,
    ) -> bool:
        """op12 announcing our Ready streams active (publishing) or inactive (watch/voice)."""
        if not self.can_send_control:
            self._control_dropped += 1
            return False
        return self.send(
            self.gateway.video_state_announcement(
                active, max_bitrate=max_bitrate, max_framerate=max_framerate, max_resolution=max_resolution
            )
        )

    def media_sink_wants(self, wants: vg.MediaSinkWants) -> bool:
        if not self.can_send_control:
            self._control_dropped += 1
            return False
        return self.send(self.gateway.media_sink_wants(wants))

    # ------------------------------------------------------------------ routing

    def _feed(self, events: list[vgc.Event]) -> None:
        for event in events:
            if isinstance(event, vgc.SendText):
                self._outbox.append(event.text)
            elif isinstance(event, vgc.SendBinary):
                self._outbox.append(event.data)
            elif isinstance(event, vgc.NeedIpDiscovery):
                self._events.append(event)
            elif isinstance(event, vgc.SessionEstablished):
                self.datagrams.cipher = TransportCipher(event.mode, event.secret_key)
                self.datagrams.default_ssrc = self.ssrc
                self._dave(self.dave.on_session_description(event.dave_protocol_version))
                self._events.append(event)
                self._set_state("ready")
            elif isinstance(event, vgc.Resumed):
                self._resumes += 1
                self._events.append(event)
                self._set_state("ready")
            elif isinstance(event, vgc.DaveJson):
                self._dave(self.dave.on_message(event.payload))
            elif isinstance(event, vgc.DaveBinary):
                self._dave(self.dave.on_binary(event.op, event.payload))
            elif isinstance(event, vgc.Failed):
                self._events.append(CloseWebSocket(event.close_code))
                self._end_pass(_Outcome(event.action, event.error, event.close_code))
                return
            elif isinstance(event, vgc.Closed):
                self._end_pass(_Outcome(event.action, event.error, event.code))
                return
            elif isinstance(event, vgc.HeartbeatAck | vgc.Ready):
                continue
            elif isinstance(event, _ROLE_CONTROL):
                self._roster(event)
                self._events.append(event)
            elif isinstance(event, vgc.MalformedDropped):
                self._events.append(event)  # the driver logs it; the core counted it per opcode

    def _roster(self, event: vgc.Event) -> None:
        """op5/op11/op13/op12 keep DAVE's expected members current."""
        if isinstance(event, vgc.Speaking | vgc.VideoState):
            self.dave.clients_connected([int(event.user_id)])
        elif isinstance(event, vgc.ClientsConnected):
            self.dave.clients_connected(int(u) for u in event.user_ids)
        elif isinstance(event, vgc.ClientDisconnected):
            self.dave.client_disconnected(int(event.user_id))

    def _dave(self, frames: list[DaveFrame]) -> None:
        for frame in frames:
            if isinstance(frame, DaveOut):
                self.send(self.gateway.send_dave_binary(frame.op, frame.payload))
            else:
                self.send(self.gateway.send_dave_json(_typed_dave_json(frame.op, frame.data)))
        dave = self.dave
        seen = (dave.state, dave.protocol_version, dave.epoch)
        if dave.problems != self._dave_problems:
            self._dave_problems = dave.problems
            self._events.append(DaveProblem(dave.last_error or "unknown"))
        if seen != self._dave_seen:
            self._dave_seen = seen
            self._events.append(
                DaveStateChanged(dave.state, dave.protocol_version, dave.epoch, dave.voice_privacy_code)
            )

    def _end_pass(self, outcome: _Outcome) -> None:
        self._outcome = outcome
        self._events.append(PassOver())

    def _set_state(
        self, state: TransportState, reason: str | None = None, close_code: int | None = None
    ) -> None:
        if state == self._state and reason is None:
            return
        self._state = state
        self.datagrams.ready = state == "ready"
        if state == "ready":
            self._reached_ready = True
        self._events.append(TransportStateChanged(state, reason, close_code))


def _typed_dave_json(
    op: int, data: Mapping[str, object]
) -> vg.DaveTransitionReady | vg.DaveInvalidCommitWelcome:
    """The client's two JSON DAVE messages (op23, op31) as wire values."""
    raw = data.get("transition_id", 0)
    tid = raw if isinstance(raw, int) else 0
    if op == vg.VoiceOp.DAVE_MLS_INVALID_COMMIT_WELCOME:
        return vg.DaveInvalidCommitWelcome(tid)
    return vg.DaveTransitionReady(tid)
