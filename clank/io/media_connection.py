"""The trio driver of one media leg (voice, stream_watch, stream_publish) over injected transports.

All protocol decisions live in the sans-io :class:`~clank.protocol.media_leg.MediaLegCore`
(handshake, resume, reconnect policy and backoff, DAVE routing, AEAD, RTP send state, datagram
demux). This driver owns the sockets and the tasks::

    open_media_connection()           (nursery; lifetime = the block)
     └─ run loop                      generation = one voice session on the server (fresh identify)
         ├─ datagram task             endpoint + IP discovery + drain loop; kept across resumes
         └─ websocket pass            reader + timer; a drop resumes (op7 -> op9) in a new pass

Parameters and injected transports (real sockets, or the in-memory network of
:mod:`clank.io.fakenet` under ``autojump_clock``) are in :mod:`clank.io.media_leg_params`;
:mod:`clank.io.media_connection_statistics` builds what :meth:`MediaConnection.statistics` reports.

API for a role (voice, stream_watch, stream_publish)::

    async with open_media_connection(params, packet_handler=on_rtp, rtcp_handler=on_rtcp,
                                     event_handler=on_event) as conn:
        conn.send_rtp(pt, payload, ssrc=..., timestamp=..., marker=...)   # never blocks; bool
        conn.send_rtcp(plain)                                             # NACK / PLI / RR
        conn.seal_rtp(pt, payload) / send_sealed / count_sent / endpoint  # timed sends (voice)
        await conn.speaking(flags); await conn.video_state(active, ...); await conn.media_sink_wants(w)
        conn.dave                       # the leg's DaveSessionCore (encrypt_video / decrypt)
        conn.ssrc, conn.ready_streams, conn.ssrc_map(), conn.video_state_of(user_id)
        conn.state, await conn.wait_ready(), conn.statistics(), conn.events (bounded channel)

``packet_handler(header, payload, now)`` gets every transport-decrypted RTP packet and
``rtcp_handler(packets, now)`` every RTCP compound, synchronously inside the drain loop (no
channel hop per packet). ``event_handler(event)`` gets each :data:`MediaEvent` synchronously
(so the role's SSRC map is current before the next packet); the same events are published on
:attr:`MediaConnection.events` (bounded; a slow observer loses events, counted). A publishing
leg sends its send core's packets with ``send_rtp_packet`` and gets NACK/PLI in ``rtcp_handler``.

Close handling follows the core: RESUME keeps UDP, keys and DAVE; RECONNECT starts a new
generation; NEW_SESSION raises ``SessionInvalidated`` (or ``AuthenticationFailed``) so the session
can rejoin through the main gateway; STOP raises ``ConnectionClosed`` with the code (4014: the
session ends); ERROR raises the core's error. Expected failures leave the block as one clank error.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final, NoReturn

import trio

from clank.crypto.dave import DaveSessionCore
from clank.errors import ConnectionClosed, TransportError, UsageError
from clank.io.groups import raise_single
from clank.io.media_connection_statistics import MediaConnectionStatistics, leg_statistics, log_leg_event
from clank.io.media_leg_params import MediaConnectionParams, MessageSocket
from clank.io.udp import Address, DatagramEndpoint, UdpEndpoint, discover_ip
from clank.logging import bound, register_secret
from clank.protocol import voice_gateway as vgc
from clank.protocol.media_datagrams import DROP_REASONS, RtcpIn, RtpIn
from clank.protocol.media_leg import (
    CloseWebSocket,
    DaveStateChanged,
    MediaEvent,
    MediaLegCore,
    NeedIpDiscovery,
    PassOver,
    TransportState,
    TransportStateChanged,
)
from clank.wire import voice_gateway as vg
from clank.wire.rtcp import RtcpPacket
from clank.wire.rtp import RtpExtension, RtpHeader
from clank.wire.udp_keepalive import build_keepalive

__all__ = [
    "DROP_REASONS",
    "EVENT_BUFFER",
    "DaveStateChanged",
    "MediaConnection",
    "MediaEvent",
    "PacketHandler",
    "RtcpHandler",
    "TransportState",
    "TransportStateChanged",
    "open_media_connection",
]


#: Control events an observer may lag behind before new ones are dropped (and counted).
EVENT_BUFFER: Final = 256
#: Seconds we give the websocket close handshake when leaving.
CLOSE_BUDGET: Final = 1.0

PacketHandler = Callable[[RtpHeader, bytes, float], None]
"""``(header, media payload, now)``: transport-decrypted, padding and extension stripped."""
RtcpHandler = Callable[[tuple[RtcpPacket, ...], float], None]
EventHandler = Callable[[MediaEvent], None]


# --------------------------------------------------------------------------- the driver


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
        self.leg = MediaLegCore(params.leg_config(), rng)
        self._datagrams = self.leg.datagrams
        self._transports = params.transports
        self._packet_handler = packet_handler
        self._rtcp_handler = rtcp_handler
        self._event_handler = event_handler
        self._send_events, self.events = trio.open_memory_channel[MediaEvent](EVENT_BUFFER)
        self._events_dropped = 0
        self._ws: MessageSocket | None = None
        self._ws_scope: trio.CancelScope | None = None
        self._generation: trio.Nursery | None = None
        self._udp: DatagramEndpoint | None = None
        self._state_changed = trio.Event()
        self._wake_timer = trio.Event()
        self._task_status: trio.TaskStatus[None] | None = None
        self._keepalives_sent = 0

    # ------------------------------------------------------------------ queries

    @property
    def core(self) -> vgc.VoiceGatewayCore:
        """The leg's voice-gateway core (SSRC map, video states, handshake phase)."""
        return self.leg.gateway

    @property
    def dave(self) -> DaveSessionCore:
        return self.leg.dave

    @property
    def state(self) -> TransportState:
        return self.leg.state

    @property
    def ssrc(self) -> int | None:
        """Our audio SSRC on this leg (from Ready)."""
        return self.leg.ssrc

    @property
    def ready_streams(self) -> tuple[vg.ReadyStream, ...]:
        ready = self.leg.ready
        return () if ready is None else ready.streams

    @property
    def session(self) -> vgc.SessionEstablished | None:
        return self.leg.gateway.session

    @property
    def udp_local_address(self) -> Address | None:
        return None if self._udp is None else self._udp.local_address

    def ssrc_map(self) -> dict[int, vgc.SsrcBinding]:
        return dict(self.leg.ssrc_map())

    def video_state_of(self, user_id: str) -> vgc.VideoState | None:
        return self.leg.video_state(user_id)

    def statistics(self) -> MediaConnectionStatistics:
        return leg_statistics(self.leg, self._udp, self._events_dropped, self._keepalives_sent)

    async def wait_ready(self) -> None:
        """Wait until media can flow (session established or resumed)."""
        while self.leg.state != "ready":
            if self.leg.state in ("failed", "disconnected"):
                raise UsageError(f"media connection is {self.leg.state}")
            await self._state_changed.wait()

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
        """Seal (``MediaDatagrams.seal_rtp``: our seq/timestamps per SSRC) and send one RTP
        packet; False (and counted) when not connected or the socket is full."""
        if self._udp is None:
            return self.send_sealed(None)
        return self.send_sealed(
            self._datagrams.seal_rtp(
                payload_type,
                payload,
                ssrc=ssrc,
                timestamp=timestamp,
                timestamp_step=timestamp_step,
                marker=marker,
                extension=extension,
            )
        )

    def seal_rtp(self, payload_type: int, payload: bytes, *, timestamp_step: int = 0) -> bytes | None:
        """Seal one RTP packet on our SSRC now (its seq/timestamp taken) for a later send by
        ``io/timed_sender.py``; None (counted) when not connected."""
        if self._udp is None:
            self._datagrams.datagram_sent(b"", False)
            return None
        return self._datagrams.seal_rtp(payload_type, payload, timestamp_step=timestamp_step)

    @property
    def endpoint(self) -> DatagramEndpoint | None:
        """The generation's datagram endpoint (None between generations)."""
        return self._udp

    def count_sent(self, endpoint: UdpEndpoint, packet: bytes, ok: bool) -> None:
        """Count a sealed packet another thread sent on ``endpoint.thread_socket()``."""
        endpoint.count_sent(len(packet), ok)
        self._datagrams.datagram_sent(packet, ok)

    def send_rtp_packet(self, header: RtpHeader, plaintext: bytes) -> bool:
        """Seal and send a packet whose header a send core built (the publish role's
        ``VideoSendCore`` owns its sequence numbers for its RTX store); False as ``send_rtp``."""
        if self._udp is None:
            return self.send_sealed(None)
        return self.send_sealed(self._datagrams.seal_rtp_packet(header, plaintext))

    def send_rtcp(self, plain: bytes) -> bool:
        """Protect (header + sender SSRC as AAD) and send one plain RTCP datagram."""
        if self._udp is None:
            return self.send_sealed(None)
        return self.send_sealed(self._datagrams.seal_rtcp(plain))

    def send_sealed(self, packet: bytes | None) -> bool:
        """The one datagram send path (also for :meth:`seal_rtp`'s packets): ``None`` is a packet
        the core could not seal (counted); False (counted) when not connected or full."""
        udp = self._udp
        if udp is None:
            self._datagrams.datagram_sent(b"", False)
            return False
        if packet is None:
            return False
        ok = udp.send_nowait(packet)
        self._datagrams.datagram_sent(packet, ok)
        return ok

    def send_datagram(self, data: bytes) -> bool:
        """Send raw bytes on the leg's endpoint (e.g. a UDP keep-alive); False when not connected."""
        udp = self._udp
        return udp is not None and udp.send_nowait(data)

    # ------------------------------------------------------------------ control send

    @property
    def can_send_control(self) -> bool:
        """A session exists (frames are sent now, or held by the core during a resume)."""
        return self.leg.can_send_control

    async def speaking(self, flags: int) -> None:
        """op5 with our SSRC (voice: 1, stream publish: 2 SOUNDSHARE, 0 = stopped)."""
        self.leg.speaking(flags)
        await self._flush()

    async def video_state(
        self,
        active: bool,
        *,
        max_bitrate: int | None = None,
        max_framerate: int | None = None,
        max_resolution: vg.MaxResolution | None = None,
    ) -> None:
        """op12 announcing our Ready streams active (publishing) or inactive (watch/voice)."""
        self.leg.video_state_announcement(
            active, max_bitrate=max_bitrate, max_framerate=max_framerate, max_resolution=max_resolution
        )
        await self._flush()

    async def media_sink_wants(self, wants: vg.MediaSinkWants) -> None:
        self.leg.media_sink_wants(wants)
        await self._flush()

    async def _flush(self) -> None:
        """The one send path: the core's outbox onto the current websocket (if any)."""
        frames = self.leg.data_to_send()
        ws = self._ws
        if ws is None:
            return  # between passes: held frames live in the gateway core, the rest is stale
        for data in frames:
            try:
                await ws.send(data)
            except ConnectionClosed:
                return  # the reader sees the close; resumable frames are re-sent by the role

    # ------------------------------------------------------------------ run loop

    async def _run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        params = self.params
        url = vg.voice_gateway_url(params.endpoint, params.settings.discord.voice_url_scheme)
        self._task_status = task_status
        while True:
            async with trio.open_nursery() as generation:
                self._generation = generation
                while True:
                    await self._one_pass(url)
                    step = self.leg.pass_ended()
                    self._dispatch()
                    if step.action == "give_up":
                        if self.leg.leaving:
                            await trio.sleep_forever()  # the block is closing us
                        raise step.error
                    await trio.sleep(step.delay)
                    if step.action == "reconnect":
                        break
                generation.cancel_scope.cancel()
            self._generation = None
            self._udp = None

    async def _one_pass(self, url: str) -> None:
        """One websocket: connect, serve until the core says the pass is over."""
        try:
            async with self._transports.open_websocket(url) as ws:
                self._ws = ws
                try:
                    self.leg.connection_opened(trio.current_time())
                    await self._pump()
                    async with trio.open_nursery() as nursery:
                        self._ws_scope = nursery.cancel_scope
                        nursery.start_soon(self._timer)
                        await self._reader(ws)
                        nursery.cancel_scope.cancel()
                finally:
                    self._ws = None
                    self._ws_scope = None
        except TransportError as exc:
            self.leg.connection_failed(exc)

    async def _reader(self, ws: MessageSocket) -> None:
        while not self.leg.pass_over:
            try:
                message = await ws.receive()
            except ConnectionClosed as exc:
                self.leg.connection_lost(exc.code, exc.reason, exc, trio.current_time())
                await self._pump()
                return
            self.leg.receive_message(message, trio.current_time())
            self._poke_timer()
            await self._pump()

    async def _timer(self) -> None:
        while True:
            wake = self._wake_timer
            deadline = self.leg.next_deadline()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await wake.wait()
            self.leg.tick(trio.current_time())
            await self._pump()

    def _poke_timer(self) -> None:
        self._wake_timer.set()
        self._wake_timer = trio.Event()

    async def _pump(self) -> None:
        """Send the outbox, then act on every event (which may queue more frames)."""
        while True:
            await self._flush()
            event = self.leg.next_event()
            if event is None:
                return
            if isinstance(event, NeedIpDiscovery):
                await self._discover(event)
            elif isinstance(event, CloseWebSocket):
                ws = self._ws
                if ws is not None:
                    with trio.move_on_after(CLOSE_BUDGET, shield=True):
                        await ws.aclose(event.code)
            elif isinstance(event, PassOver):
                if self._ws_scope is not None:
                    self._ws_scope.cancel()
            else:
                self._deliver(event)

    def _dispatch(self) -> None:
        """Deliver queued events outside a pass (state changes decided by ``pass_ended``)."""
        while (event := self.leg.next_event()) is not None:
            if not isinstance(event, NeedIpDiscovery | CloseWebSocket | PassOver):
                self._deliver(event)

    def _deliver(self, event: MediaEvent) -> None:
        log_leg_event(self.params.role, event)
        if self._event_handler is not None:
            self._event_handler(event)
        try:
            self._send_events.send_nowait(event)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self._events_dropped += 1
        if isinstance(event, TransportStateChanged):
            if event.state == "ready":
                task_status, self._task_status = self._task_status, None
                if task_status is not None:
                    task_status.started()
            self._state_changed.set()
            self._state_changed = trio.Event()

    async def _discover(self, need: NeedIpDiscovery) -> None:
        generation = self._generation
        if generation is None:
            raise UsageError("IP discovery outside a generation")
        ip, port = await generation.start(self._udp_task, (need.ip, need.port), need.ssrc)
        self.leg.ip_discovered(ip, port, trio.current_time())

    async def _udp_task(self, remote: Address, ssrc: int, *, task_status: trio.TaskStatus[Address]) -> None:
        """Open the media endpoint, run IP discovery on it, then drain it for the generation."""
        rcvbuf = self.params.settings.voice.receive_buffer_bytes
        async with self._transports.open_datagram(remote, rcvbuf) as endpoint:
            # Discovery reads the endpoint itself, so the drain loop starts only afterwards.
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

    async def _keepalive_loop(self, endpoint: DatagramEndpoint) -> None:
        """An 8-byte counter every ``voice.udp_keepalive_s`` for the endpoint's life (0: never).

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

    def _on_datagram(self, data: bytes, address: Address) -> None:
        received = self._datagrams.receive_datagram(data)
        if received is None:
            return
        if isinstance(received, RtpIn):
            if self._packet_handler is not None:
                self._packet_handler(received.header, received.payload, trio.current_time())
        elif isinstance(received, RtcpIn) and self._rtcp_handler is not None:
            self._rtcp_handler(received.packets, trio.current_time())

    async def _leave(self) -> None:
        """Close the websocket with 1000 (no resume); bounded."""
        self.leg.leave()
        self._dispatch()
        ws = self._ws
        if ws is not None:
            # A role stop cancels trio-websocket's reader too: no close reply can be read then.
            cancelled = trio.current_effective_deadline() == -math.inf
            with trio.move_on_after(CLOSE_BUDGET, shield=True):
                await ws.aclose(vgc.CLIENT_CLOSE_NORMAL, cancelled=cancelled)


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
                    nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise_single(group)
    finally:
        connection._send_events.close()
