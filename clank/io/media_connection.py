"""The trio driver of one media leg (voice, stream_watch or stream_publish): WS + UDP + AEAD + DAVE.

:func:`open_media_connection` runs a :class:`~clank.protocol.voice_gateway.VoiceGatewayCore` over
trio-websocket, a UDP endpoint with IP discovery, the :class:`~clank.crypto.transport.TransportCipher`
from the session description and a :class:`~clank.crypto.dave.DaveSessionCore` (DAVE ops routed
both ways). Lifetimes::

    open_media_connection()           (nursery; lifetime = the block)
     └─ run loop                      generation = one voice session on the server (fresh identify)
         ├─ UDP task                  endpoint + drain loop; kept across resumes
         └─ websocket pass            reader + timer; a drop resumes (op7 -> op9) in a new pass

Receive path (performance-notes.md): the UDP task drains the socket inline; each datagram is
demultiplexed, transport-decrypted and handed synchronously to the role's ``packet_handler``
(``(RtpHeader, payload, now)``) — no channel hop per packet. RTCP goes to ``rtcp_handler``.
Control events go synchronously to the role's ``event_handler`` (so its SSRC map is current
before the next packet) and are also published on :attr:`MediaConnection.events` (bounded; a
slow observer loses events, counted), never blocking the websocket reader.

Close handling follows the core's table: RESUME keeps UDP, keys and DAVE; RECONNECT starts a new
generation; NEW_SESSION raises ``SessionInvalidated`` (or ``AuthenticationFailed``) so the session
can rejoin through the main gateway; STOP raises ``ConnectionClosed`` with the code (4014: the
session ends); ERROR raises the core's error. Expected failures leave the block as one clank error.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Final, Literal, NoReturn

import attrs
import trio

from clank.config import Settings
from clank.crypto.dave import DaveBinary as DaveOut
from clank.crypto.dave import DaveFrame, DaveSessionCore, DaveState, DaveStatistics
from clank.crypto.transport import TransportCipher
from clank.errors import (
    ClankError,
    ConnectionClosed,
    DecryptionFailed,
    MalformedMessage,
    MalformedPacket,
    TransportError,
    UsageError,
)
from clank.io.groups import raise_single
from clank.io.udp import Address, UdpEndpoint, UdpStatistics, discover_ip, open_udp_endpoint
from clank.io.websocket import WebSocket, open_websocket
from clank.logging import bound, get_logger, register_secret
from clank.protocol import voice_gateway as vgc
from clank.wire import voice_gateway as vg
from clank.wire.rtcp import RtcpPacket, parse_compound
from clank.wire.rtp import PROBE_PAYLOAD_TYPE, PacketKind, RtpExtension, RtpHeader, classify
from clank.wire.udp_keepalive import build_keepalive

__all__ = [
    "EVENT_BUFFER",
    "DaveStateChanged",
    "MediaConnection",
    "MediaConnectionParams",
    "MediaConnectionStatistics",
    "MediaEvent",
    "PacketHandler",
    "RtcpHandler",
    "TransportState",
    "TransportStateChanged",
    "open_media_connection",
]

log = get_logger("clank.media_connection")

#: Control events an observer may lag behind before new ones are dropped (and counted).
EVENT_BUFFER: Final = 256
#: Consecutive failed (re)connects before the connection gives up.
MAX_CONSECUTIVE_FAILURES: Final = 5
#: Reconnect backoff: base * 2**attempt seconds, capped, with full jitter.
BACKOFF_BASE: Final = 0.5
BACKOFF_CAP: Final = 10.0
#: Seconds we give the websocket close handshake when leaving.
CLOSE_BUDGET: Final = 1.0

TransportState = Literal["connecting", "ready", "reconnecting", "failed", "disconnected"]

PacketHandler = Callable[[RtpHeader, bytes, float], None]
"""``(header, media payload, now)``: transport-decrypted, padding and extension stripped."""
RtcpHandler = Callable[[tuple[RtcpPacket, ...], float], None]
EventHandler = Callable[["MediaEvent"], None]

DROP_REASONS: Final = (
    "no_key",
    "malformed",
    "decrypt",
    "probe",
    "empty",
    "rtcp_malformed",
    "rtcp_decrypt",
    "control",
    "unknown",
)


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


MediaEvent = (
    TransportStateChanged
    | DaveStateChanged
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
)


@attrs.frozen
class MediaConnectionParams:
    """Everything one leg needs.

    ``dave_group_id``: ``dave_group_id_for_voice`` / ``dave_group_id_for_stream`` (wire.gateway_events).
    """

    role: vg.Role
    endpoint: str
    server_id: str
    channel_id: str | None
    user_id: str
    session_id: str = attrs.field(repr=False)
    token: str = attrs.field(repr=False)
    dave_group_id: int
    settings: Settings = attrs.field(factory=Settings, repr=False)
    video: bool = True
    streams: tuple[vg.StreamRequest, ...] = (vg.SCREEN_STREAM,)
    codecs: tuple[vg.Codec, ...] | None = None
    sink_wants_format: vg.SinkWantsFormat = vg.SinkWantsFormat.NESTED
    heartbeat_cap: float | None = None

    def gateway_config(self) -> vgc.VoiceGatewayConfig:
        voice = self.settings.voice
        return vgc.VoiceGatewayConfig(
            role=self.role,
            server_id=self.server_id,
            channel_id=self.channel_id,
            user_id=self.user_id,
            session_id=self.session_id,
            token=self.token,
            max_dave_protocol_version=voice.max_dave_protocol_version,
            video=self.video,
            streams=self.streams,
            mode_preference=tuple(voice.mode_preference),
            codecs=self.codecs,
            sink_wants_format=self.sink_wants_format,
            heartbeat_cap=self.heartbeat_cap,
        )


@attrs.frozen
class MediaConnectionStatistics:
    state: TransportState
    ssrc: int | None
    mode: str | None
    packets_in: int
    packets_out: int
    rtcp_in: int
    rtcp_out: int
    send_dropped: int
    control_dropped: int
    drops: dict[str, int]
    resumes: int
    reconnects: int
    heartbeat_latency: float | None
    events_dropped: int
    gateway: vgc.VoiceGatewayStatistics
    udp: UdpStatistics | None
    dave: DaveStatistics
    keepalives_sent: int = 0
    """UDP keep-alives sent (wire.udp_keepalive; every ``voice.udp_keepalive_s`` from Ready)."""


class _Outcome(Exception):
    """Internal: a websocket pass ended; carries what to do next."""

    def __init__(self, action: vgc.CloseAction, error: ClankError, code: int | None) -> None:
        super().__init__(str(error))
        self.action = action
        self.error = error
        self.code = code


class MediaConnection:
    """Handle on a running media leg; made by :func:`open_media_connection`."""

    def __init__(
        self,
        params: MediaConnectionParams,
        packet_handler: PacketHandler | None,
        rtcp_handler: RtcpHandler | None,
        event_handler: EventHandler | None,
        rng: random.Random,
    ) -> None:
        self.params = params
        self.core = vgc.VoiceGatewayCore(params.gateway_config())
        self.dave = DaveSessionCore(
            int(params.user_id),
            params.dave_group_id,
            params.settings.voice.max_dave_protocol_version,
        )
        self._packet_handler = packet_handler
        self._rtcp_handler = rtcp_handler
        self._event_handler = event_handler
        self._rng = rng
        self._rtcp_aad = params.settings.voice.rtcp_aad_bytes
        self._send_events, self.events = trio.open_memory_channel[MediaEvent](EVENT_BUFFER)
        self._events_dropped = 0
        self._state: TransportState = "connecting"
        self._ws: WebSocket | None = None
        self._ws_scope: trio.CancelScope | None = None
        self._outcome: _Outcome | None = None
        self._udp: UdpEndpoint | None = None
        self._cipher: TransportCipher | None = None
        self._ready_event = trio.Event()
        self._wake_timer = trio.Event()
        self._seq: dict[int, int] = {}
        self._timestamps: dict[int, int] = {}
        self._drops = dict.fromkeys(DROP_REASONS, 0)
        self._packets_in = 0
        self._packets_out = 0
        self._rtcp_in = 0
        self._rtcp_out = 0
        self._send_dropped = 0
        self._control_dropped = 0
        self._resumes = 0
        self._reconnects = 0
        self._keepalives_sent = 0
        self._dave_seen: tuple[DaveState, int, int | None] | None = None
        self._leaving = False
        self._reached_ready = False
        self._task_status: trio.TaskStatus[None] | None = None

    # ------------------------------------------------------------------ queries

    @property
    def state(self) -> TransportState:
        return self._state

    @property
    def ssrc(self) -> int | None:
        """Our audio SSRC on this leg (from Ready)."""
        ready = self.core.ready
        return None if ready is None else ready.ssrc

    @property
    def ready_streams(self) -> tuple[vg.ReadyStream, ...]:
        ready = self.core.ready
        return () if ready is None else ready.streams

    @property
    def session(self) -> vgc.SessionEstablished | None:
        return self.core.session

    @property
    def udp_local_address(self) -> Address | None:
        return None if self._udp is None else self._udp.local_address

    def ssrc_map(self) -> dict[int, vgc.SsrcBinding]:
        return dict(self.core.ssrc_map())

    def statistics(self) -> MediaConnectionStatistics:
        gateway = self.core.statistics()
        return MediaConnectionStatistics(
            state=self._state,
            ssrc=self.ssrc,
            mode=self._cipher.mode if self._cipher is not None else None,
            packets_in=self._packets_in,
            packets_out=self._packets_out,
            rtcp_in=self._rtcp_in,
            rtcp_out=self._rtcp_out,
            send_dropped=self._send_dropped,
            control_dropped=self._control_dropped,
            drops=dict(self._drops),
            resumes=self._resumes,
            reconnects=self._reconnects,
            heartbeat_latency=gateway.last_latency,
            events_dropped=self._events_dropped,
            gateway=gateway,
            udp=self._udp.statistics() if self._udp is not None else None,
            dave=self.dave.statistics(),
            keepalives_sent=self._keepalives_sent,
        )

    async def wait_ready(self) -> None:
        """Wait until media can flow (session established or resumed)."""
        while self._state != "ready":
            if self._state in ("failed", "disconnected"):
                raise UsageError(f"media connection is {self._state}")
            await self._ready_event.wait()

    # ------------------------------------------------------------------ media send (never blocks)

    def send_rtp(
        self,
        payload_type: int,
        payload: bytes,
        *,
        ssrc: int | None = None,
        timestamp: int | None = None,
        timestamp_step: int = 0,
        marker: bool = False,
        extension: RtpExtension | None = None,
    ) -> bool:
        """Seal and send one RTP packet; False (and counted) when not connected or the socket is full.

        Sequence numbers are ours per SSRC. ``timestamp`` None uses the SSRC's running timestamp,
        which then advances by ``timestamp_step`` (audio: 960 per 20 ms frame).
        """
        cipher, udp = self._cipher, self._udp
        own = self.ssrc
        ssrc = own if ssrc is None else ssrc
        if cipher is None or udp is None or ssrc is None or self._state != "ready":
            self._send_dropped += 1
            return False
        seq = self._seq.get(ssrc)
        if seq is None:
            seq = self._rng.randrange(0x10000)
        self._seq[ssrc] = (seq + 1) & 0xFFFF
        if timestamp is None:
            ts = self._timestamps.get(ssrc)
            timestamp = self._rng.randrange(1 << 32) if ts is None else ts
        self._timestamps[ssrc] = (timestamp + timestamp_step) & 0xFFFFFFFF
        header = RtpHeader(
            payload_type,
            seq,
            timestamp,
            ssrc,
            marker,
            False,
            (),
            extension.profile if extension is not None else None,
            extension.words if extension is not None else 0,
        )
        plaintext = payload if extension is None else extension.body + payload
        packet = cipher.seal_rtp(header.serialize(), plaintext)
        if udp.send_nowait(packet):
            self._packets_out += 1
            return True
        self._send_dropped += 1
        return False

    def send_rtcp(self, plain: bytes) -> bool:
        """Protect (AAD per ``voice.rtcp_aad_bytes``) and send one plain RTCP datagram."""
        cipher, udp = self._cipher, self._udp
        if cipher is None or udp is None or self._state != "ready":
            self._send_dropped += 1
            return False
        if udp.send_nowait(cipher.seal_rtcp(plain, self._rtcp_aad)):
            self._rtcp_out += 1
            return True
        self._send_dropped += 1
        return False

    # ------------------------------------------------------------------ control send

    @property
    def can_send_control(self) -> bool:
        """A session exists (frames are sent now, or held by the core during a resume)."""
        return self.core.session is not None and self.core.phase is not vgc.Phase.CLOSED

    async def speaking(self, flags: int) -> None:
        """op5 with our SSRC (voice: 1, stream publish: 2 SOUNDSHARE, 0 = stopped).

        Between sessions (a fresh identify is under way) there is nothing to announce to: the
        frame is dropped and counted; roles re-announce when the state becomes ready again.
        """
        if not self.can_send_control:
            self._control_dropped += 1
            return
        await self._send(self.core.speaking(flags))

    async def video_state(
        self,
        active: bool,
        *,
        max_bitrate: int | None = None,
        max_framerate: int | None = None,
        max_resolution: vg.MaxResolution | None = None,
    ) -> None:
        """op12 announcing our Ready streams active (publishing) or inactive (watch/voice)."""
        if not self.can_send_control:
            self._control_dropped += 1
            return
        await self._send(
            self.core.video_state_announcement(
                active, max_bitrate=max_bitrate, max_framerate=max_framerate, max_resolution=max_resolution
            )
        )

    async def media_sink_wants(self, wants: vg.MediaSinkWants) -> None:
        if not self.can_send_control:
            self._control_dropped += 1
            return
        await self._send(self.core.media_sink_wants(wants))

    async def _send(self, events: Sequence[vgc.Event]) -> None:
        ws = self._ws
        for event in events:
            if isinstance(event, vgc.SendText | vgc.SendBinary) and ws is not None:
                try:
                    await ws.send(event.text if isinstance(event, vgc.SendText) else event.data)
                except ConnectionClosed:
                    return  # the reader sees the close; resumable frames are re-sent by the role

    # ------------------------------------------------------------------ run loop

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        params = self.params
        url = vg.voice_gateway_url(params.endpoint, params.settings.discord.voice_url_scheme)
        self._task_status = task_status
        failures = 0
        while True:
            outcome: _Outcome
            async with trio.open_nursery() as generation:
                while True:
                    self._reached_ready = False
                    outcome = await self._one_pass(url, generation)
                    if outcome.action is not vgc.CloseAction.RESUME:
                        break
                    failures = 0 if self._reached_ready else failures + 1
                    if failures >= MAX_CONSECUTIVE_FAILURES:
                        self._set_state("failed", str(outcome.error), outcome.code)
                        raise outcome.error
                    self._set_state("reconnecting", str(outcome.error), outcome.code)
                    await trio.sleep(self._backoff(failures))
                generation.cancel_scope.cancel()
            self._udp = None
            self._cipher = None
            if outcome.action is vgc.CloseAction.RECONNECT:
                failures = 0 if self._reached_ready else failures + 1
                if failures >= MAX_CONSECUTIVE_FAILURES:
                    self._set_state("failed", str(outcome.error), outcome.code)
                    raise outcome.error
                self._reconnects += 1
                self._set_state("reconnecting", str(outcome.error), outcome.code)
                await trio.sleep(self._backoff(failures))
                continue
            final: TransportState = "disconnected" if outcome.action is vgc.CloseAction.STOP else "failed"
            self._set_state(final, str(outcome.error), outcome.code)
            raise outcome.error

    def _backoff(self, attempt: int) -> float:
        return self._rng.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))

    async def _one_pass(self, url: str, generation: trio.Nursery) -> _Outcome:
        """One websocket: connect, serve until it ends; what to do next."""
        self._outcome = None
        try:
            async with open_websocket(url) as ws:
                self._ws = ws
                try:
                    await self._serve(ws, generation)
                finally:
                    self._ws = None
                    if self._leaving:
                        self.core.close()
                    outcome = self._pass_outcome()
                    if outcome is not None and outcome.code is not None and outcome.code >= 4000:
                        # Our own close (Failed): tell the server why.
                        with trio.move_on_after(CLOSE_BUDGET, shield=True):
                            await ws.aclose(outcome.code)
        except TransportError as exc:
            if self._pass_outcome() is None:
                action = vgc.CloseAction.RESUME if self.core.resumable else vgc.CloseAction.RECONNECT
                return _Outcome(action, exc, None)
        outcome = self._pass_outcome()
        if outcome is None:
            raise UsageError("websocket pass ended without an outcome")
        return outcome

    def _pass_outcome(self) -> _Outcome | None:
        return self._outcome

    async def _serve(self, ws: WebSocket, generation: trio.Nursery) -> None:
        await self._handle(ws, self.core.connection_opened(trio.current_time()))
        async with trio.open_nursery() as nursery:
            self._ws_scope = nursery.cancel_scope
            nursery.start_soon(self._timer, ws)
            await self._reader(ws, generation)
            nursery.cancel_scope.cancel()

    async def _reader(self, ws: WebSocket, generation: trio.Nursery) -> None:
        while self._outcome is None:
            try:
                message = await ws.receive()
            except ConnectionClosed as exc:
                await self._handle(ws, self.core.connection_lost(exc.code, exc.reason, trio.current_time()))
                if self._outcome is None:  # the core had already settled (our own Failed)
                    self._outcome = _Outcome(vgc.CloseAction.RESUME, exc, exc.code)
                return
            now = trio.current_time()
            if isinstance(message, str):
                events = self.core.receive_text(message, now)
            else:
                events = self.core.receive_binary(message, now)
            self._poke_timer()
            try:
                await self._handle(ws, events, generation)
            except MalformedMessage as exc:
                # A DAVE frame we cannot accept: the control path ends this connection (fresh
                # identify, which re-creates the DAVE session) with "failed to decode payload".
                log.warning("voice DAVE message malformed", role=self.params.role, error=str(exc))
                await self._handle(ws, self.core.connection_lost(vg.DECODE_FAILED, exc.reason, now))

    async def _timer(self, ws: WebSocket) -> None:
        while True:
            wake = self._wake_timer
            deadline = self.core.next_deadline()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await wake.wait()
            await self._handle(ws, self.core.tick(trio.current_time()))

    def _poke_timer(self) -> None:
        self._wake_timer.set()
        self._wake_timer = trio.Event()

    async def _handle(
        self, ws: WebSocket, events: list[vgc.Event], generation: trio.Nursery | None = None
    ) -> None:
        for event in events:
            if isinstance(event, vgc.SendText):
                await self._ws_send(ws, event.text)
            elif isinstance(event, vgc.SendBinary):
                await self._ws_send(ws, event.data)
            elif isinstance(event, vgc.NeedIpDiscovery):
                if generation is None:
                    raise UsageError("IP discovery outside the reader")
                await self._discover(event, generation)
            elif isinstance(event, vgc.SessionEstablished):
                await self._established(ws, event)
            elif isinstance(event, vgc.Resumed):
                self._resumes += 1
                log.info("voice connection resumed", role=self.params.role)
                self._emit(event)
                self._set_state("ready")
            elif isinstance(event, vgc.DaveJson):
                await self._dave(ws, self.dave.on_message(event.payload))
            elif isinstance(event, vgc.DaveBinary):
                await self._dave(ws, self.dave.on_binary(event.op, event.payload))
            elif isinstance(event, vgc.Closed | vgc.Failed):
                await self._ended(ws, event)
                return
            elif isinstance(event, vgc.HeartbeatAck | vgc.Ready):
                continue
            else:
                self._control(event)

    def _control(self, event: vgc.Event) -> None:
        """op5/op11/op13/op12/...: feed DAVE's expected users, then the role and observers."""
        if isinstance(event, vgc.Speaking):
            self.dave.clients_connected([int(event.user_id)])
        elif isinstance(event, vgc.ClientsConnected):
            self.dave.clients_connected(int(u) for u in event.user_ids)
        elif isinstance(event, vgc.ClientDisconnected):
            self.dave.client_disconnected(int(event.user_id))
        elif isinstance(event, vgc.VideoState):
            self.dave.clients_connected([int(event.user_id)])
        if isinstance(
            event,
            vgc.Speaking
            | vgc.ClientsConnected
            | vgc.ClientDisconnected
            | vgc.VideoState
            | vgc.SessionUpdate
            | vgc.MediaSinkWants
            | vgc.ClientFlags
            | vgc.ClientPlatform,
        ):
            self._emit(event)

    async def _ws_send(self, ws: WebSocket, data: str | bytes) -> None:
        try:
            await ws.send(data)
        except ConnectionClosed:
            pass  # the reader sees the close on its next receive

    async def _discover(self, need: vgc.NeedIpDiscovery, generation: trio.Nursery) -> None:
        ip, port = await generation.start(self._udp_task, (need.ip, need.port), need.ssrc)
        ws = self._ws
        events = self.core.ip_discovered(ip, port, trio.current_time())
        if ws is not None:
            await self._handle(ws, events)

    async def _udp_task(self, remote: Address, ssrc: int, *, task_status: trio.TaskStatus[Address]) -> None:
        """Open the media socket, run IP discovery on it, then drain it for the generation."""
        async with open_udp_endpoint(
            remote,
            local_host=_local_host_for(remote[0]),
            rcvbuf=self.params.settings.voice.receive_buffer_bytes,
        ) as endpoint:
            # Discovery reads the socket itself, so the drain loop starts only afterwards.
            address = await discover_ip(endpoint, ssrc)
            self._udp = endpoint
            task_status.started(address)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._keepalive_loop, endpoint)
                    await endpoint.drain_loop(self._on_datagram)  # runs until cancelled
            finally:
                if self._udp is endpoint:
                    self._udp = None

    async def _keepalive_loop(self, endpoint: UdpEndpoint) -> None:
        """An 8-byte counter every ``voice.udp_keepalive_s`` for the socket's life (0: never).

        Discord stops delivering media to a UDP client it does not hear from; a listen-only leg
        sends nothing else. The first one goes out at once, so the server hears us right after
        IP discovery even before any media.
        """
        interval = self.params.settings.voice.udp_keepalive_s
        if interval <= 0:
            return
        counter = 0
        while True:
            if endpoint.send_nowait(build_keepalive(counter)):
                self._keepalives_sent += 1
            counter = (counter + 1) & 0xFFFFFFFF
            await trio.sleep(interval)

    async def _established(self, ws: WebSocket, event: vgc.SessionEstablished) -> None:
        self._cipher = TransportCipher(event.mode, event.secret_key)
        await self._dave(ws, self.dave.on_session_description(event.dave_protocol_version))
        self._emit(event)
        log.info(
            "voice connection ready",
            role=self.params.role,
            mode=event.mode,
            dave_protocol_version=event.dave_protocol_version,
            ssrc=event.ssrc,
        )
        self._set_state("ready")

    async def _dave(self, ws: WebSocket, frames: list[DaveFrame]) -> None:
        for frame in frames:
            if isinstance(frame, DaveOut):
                events = self.core.send_dave_binary(frame.op, frame.payload)
            else:
                tid = int(frame.data.get("transition_id", 0))
                payload: vg.DaveTransitionReady | vg.DaveInvalidCommitWelcome
                if frame.op == vg.VoiceOp.DAVE_MLS_INVALID_COMMIT_WELCOME:
                    payload = vg.DaveInvalidCommitWelcome(tid)
                else:
                    payload = vg.DaveTransitionReady(tid)
                events = self.core.send_dave_json(payload)
            for out in events:
                if isinstance(out, vgc.SendText):
                    await self._ws_send(ws, out.text)
                elif isinstance(out, vgc.SendBinary):
                    await self._ws_send(ws, out.data)
        self._check_dave_state()

    def _check_dave_state(self) -> None:
        dave = self.dave
        seen = (dave.state, dave.protocol_version, dave.epoch)
        if seen != self._dave_seen:
            self._dave_seen = seen
            self._emit(
                DaveStateChanged(dave.state, dave.protocol_version, dave.epoch, dave.voice_privacy_code)
            )

    async def _ended(self, ws: WebSocket, event: vgc.Closed | vgc.Failed) -> None:
        code = event.code if isinstance(event, vgc.Closed) else event.close_code
        self._outcome = _Outcome(
            event.action, event.error, code if isinstance(event, vgc.Failed) else event.code
        )
        if isinstance(event, vgc.Failed):
            log.warning(
                "voice connection failed",
                role=self.params.role,
                reason=event.reason,
                action=event.action.value,
            )
        else:
            log.info(
                "voice connection closed", role=self.params.role, code=event.code, action=event.action.value
            )
        if self._ws_scope is not None:
            self._ws_scope.cancel()

    # ------------------------------------------------------------------ UDP receive (inline)

    def _on_datagram(self, data: bytes, address: Address) -> None:
        kind = classify(data)
        if kind is PacketKind.RTP:
            cipher = self._cipher
            if cipher is None:
                self._drops["no_key"] += 1
                return
            try:
                header, payload = cipher.open_rtp(data)
            except MalformedPacket:
                self._drops["malformed"] += 1
                return
            except DecryptionFailed:
                self._drops["decrypt"] += 1
                return
            if header.payload_type == PROBE_PAYLOAD_TYPE:
                self._drops["probe"] += 1
                return
            if not payload:
                self._drops["empty"] += 1
                return
            self._packets_in += 1
            if self._packet_handler is not None:
                self._packet_handler(header, payload, trio.current_time())
        elif kind is PacketKind.RTCP:
            self._on_rtcp(data)
        elif kind in (
            PacketKind.IP_DISCOVERY_RESPONSE,
            PacketKind.KEEPALIVE,
            PacketKind.IP_DISCOVERY_REQUEST,
        ):
            self._drops["control"] += 1
        else:
            self._drops["unknown"] += 1

    def _on_rtcp(self, data: bytes) -> None:
        cipher = self._cipher
        if cipher is None:
            self._drops["no_key"] += 1
            return
        try:
            plain = cipher.open_rtcp(data, self._rtcp_aad)
        except DecryptionFailed:
            self._drops["rtcp_decrypt"] += 1
            return
        except MalformedPacket:
            self._drops["rtcp_malformed"] += 1
            return
        try:
            packets = parse_compound(plain)
        except MalformedPacket:
            self._drops["rtcp_malformed"] += 1
            return
        self._rtcp_in += 1
        if self._rtcp_handler is not None:
            self._rtcp_handler(packets, trio.current_time())

    # ------------------------------------------------------------------ events

    def _emit(self, event: MediaEvent) -> None:
        if self._event_handler is not None:
            self._event_handler(event)
        try:
            self._send_events.send_nowait(event)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self._events_dropped += 1

    def _set_state(
        self, state: TransportState, reason: str | None = None, close_code: int | None = None
    ) -> None:
        if state == self._state and reason is None:
            return
        self._state = state
        if state == "ready":
            self._reached_ready = True
            task_status, self._task_status = self._task_status, None
            if task_status is not None:
                task_status.started()
        self._emit(TransportStateChanged(state, reason, close_code))
        self._ready_event.set()
        self._ready_event = trio.Event()

    async def _leave(self) -> None:
        """Close the websocket with 1000 (no resume); bounded."""
        self._leaving = True
        self.core.close()
        ws = self._ws
        if ws is not None:
            with trio.move_on_after(CLOSE_BUDGET, shield=True):
                await ws.aclose(vgc.CLIENT_CLOSE_NORMAL)


def _local_host_for(remote_host: str) -> str:
    """Bind loopback for a loopback server (the sandbox), every interface otherwise."""
    return "127.0.0.1" if remote_host.startswith("127.") else "0.0.0.0"


@asynccontextmanager
async def open_media_connection(
    params: MediaConnectionParams,
    *,
    packet_handler: PacketHandler | None = None,
    rtcp_handler: RtcpHandler | None = None,
    event_handler: EventHandler | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[MediaConnection]:
    """Connect one media leg; the block starts once the session is established (media can flow).

    ``packet_handler``, ``rtcp_handler`` and ``event_handler`` run synchronously inside the
    receive tasks: keep them short and never let them raise for bad input. Raises one clank
    error (``SessionInvalidated``, ``ConnectionClosed``, ``TransportError`` ...) when the leg
    cannot continue; leaving the block closes the websocket with 1000 within ~1 s.
    """
    register_secret(params.token)
    connection = MediaConnection(params, packet_handler, rtcp_handler, event_handler, rng or random.Random())
    try:
        with bound(leg=params.role):
            async with trio.open_nursery() as nursery:
                await nursery.start(connection._run)
                try:
                    yield connection
                finally:
                    await connection._leave()
                    connection._set_state("disconnected", "left")
                    nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise_single(group)
    finally:
        connection._send_events.close()
