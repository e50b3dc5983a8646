"""Shared helpers for the sandbox media tests."""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio

from clank.crypto.dave import DaveBinary, DaveFrame, DaveSessionCore
from clank.crypto.transport import TransportCipher
from clank.errors import ConnectionClosed
from clank.io.fakenet import FakeNet
from clank.io.gateway import Dispatch, GatewayClient
from clank.io.lossy import MemoryDatagramEndpoint
from clank.io.udp import UdpEndpoint, open_udp_endpoint
from clank.io.websocket import WebSocket, open_websocket
from clank.protocol import voice_gateway as client
from clank.sandbox.app import Sandbox
from clank.sandbox.rtc.receiver import MediaReceiver, Received, ReceivedAudio, ReceivedFrame
from clank.sandbox.rtc.server import MediaServer
from clank.wire import rtcp
from clank.wire import voice_gateway as vg
from clank.wire.gateway_events import (
    StreamCreate,
    StreamServerUpdate,
    VoiceServerUpdate,
    VoiceState,
    dave_group_id_for_stream,
)
from clank.wire.ip_discovery import DiscoveryResponse, build_request
from clank.wire.rtp import PacketKind, classify


async def wait_until(predicate: Callable[[], bool], step: float = 0.02) -> None:
    """Poll ``predicate`` (callers bound the wait with ``trio.fail_after``)."""
    while True:
        if predicate():
            return
        await trio.sleep(step)


# --------------------------------------------------------------------------- raw clients
# A voice/stream client built from our own cores over a real websocket and UDP socket
# (VoiceGatewayCore + TransportCipher + DaveSessionCore + the sandbox's MediaReceiver).


def voice_config(
    server: MediaServer | None,
    user_id: str,
    session_id: str,
    *,
    server_id: str,
    channel_id: str | None,
    token: str | None = None,
    role: vg.Role = "voice",
    heartbeat_cap: float | None = None,
) -> client.VoiceGatewayConfig:
    """A client config; without ``token`` one is granted by ``server``."""
    if token is None:
        assert server is not None
        token = server.grant(user_id, session_id)
    return client.VoiceGatewayConfig(
        role=role,
        server_id=server_id,
        channel_id=channel_id,
        user_id=user_id,
        session_id=session_id,
        token=token,
        heartbeat_cap=heartbeat_cap,
    )


class RawVoiceClient:
    """Drives a ``VoiceGatewayCore`` over real sockets (test scaffolding, no product code).

    ``await connect()`` runs one websocket pass and returns how it ended (``Closed`` when the
    server closed it, ``Failed`` when the core gave up, e.g. a missed heartbeat ACK); a later
    ``connect()`` resumes (op7) when the core says so. ``receive_media`` reads the UDP socket for
    the client's whole life (IP discovery answers go to the pass that asked).
    """

    def __init__(
        self,
        config: client.VoiceGatewayConfig,
        endpoint: str,
        group_id: int,
        udp: UdpEndpoint | MemoryDatagramEndpoint,
        net: FakeNet | None = None,
    ) -> None:
        self.config = config
        self._open_websocket = open_websocket if net is None else net.open_websocket
        self.url = vg.voice_gateway_url(endpoint, scheme="ws")
        self.core = client.VoiceGatewayCore(config)
        self.udp = udp
        self.dave = DaveSessionCore(int(config.user_id), group_id)
        self.receiver: MediaReceiver | None = None
        self.session: client.SessionEstablished | None = None
        self.audio: list[ReceivedAudio] = []
        self.frames: list[ReceivedFrame] = []
        self.events: list[client.Event] = []
        self.ends: list[client.Closed | client.Failed] = []
        self.connected = trio.Event()
        """Set once the first session is established (or resumed)."""
        self._ws: WebSocket | None = None
        self._discovered_send, self._discovered = trio.open_memory_channel[tuple[str, int]](1)

    # ------------------------------------------------------------------ queries

    def resumes(self) -> int:
        return sum(isinstance(e, client.Resumed) for e in self.events)

    def audio_from(self, user_id: int) -> list[ReceivedAudio]:
        return [a for a in self.audio if a.user_id == user_id]

    # ------------------------------------------------------------------ websocket

    async def connect(self) -> client.Closed | client.Failed:
        async with self._open_websocket(self.url) as ws:
            self._ws = ws
            end = await self._handle(ws, self.core.connection_opened(trio.current_time()))
            while end is None:
                deadline = self.core.next_deadline()
                events: list[client.Event] = []
                with trio.move_on_at(math.inf if deadline is None else deadline) as timer:
                    try:
                        message = await ws.receive()
                    except ConnectionClosed as exc:
                        events = self.core.connection_lost(exc.code, exc.reason, trio.current_time())
                        # After leave() the core is closed and reports nothing: the pass still ends.
                        events = events or [client.Closed(exc.code, exc.reason, client.CloseAction.STOP, exc)]
                    else:
                        now = trio.current_time()
                        if isinstance(message, str):
                            events = self.core.receive_text(message, now)
                        else:
                            events = self.core.receive_binary(message, now)
                if timer.cancelled_caught:
                    events = self.core.tick(trio.current_time())
                end = await self._handle(ws, events)
            if isinstance(end, client.Failed):
                await ws.aclose(end.close_code, end.reason)
        self._ws = None
        self.ends.append(end)
        return end

    async def leave(self) -> None:
        """Close the current websocket with 1000 (we are leaving) and let the pass see it.

        Cheaper than cancelling a pass: a cancelled websocket waits out its close timeout.
        """
        self.core.close()
        if self._ws is not None:
            await self._ws.aclose(1000, "leaving")

    async def run(self) -> None:
        """Connect, and reconnect while the core says resume (for tests that don't steer passes)."""
        while True:
            end = await self.connect()
            if end.action is not client.CloseAction.RESUME:
                return

    # ------------------------------------------------------------------ UDP

    async def receive_media(self) -> None:
        while True:
            data, _ = await self.udp.receive()
            if classify(data) is PacketKind.IP_DISCOVERY_RESPONSE:
                response = DiscoveryResponse.parse(data)
                with contextlib.suppress(trio.WouldBlock):
                    self._discovered_send.send_nowait((response.ip, response.port))
                continue
            if self.receiver is None:
                continue
            self._on_media(self.receiver.receive(data, trio.current_time()))

    def poll(self) -> None:
        """Release video frames whose reorder deadline passed."""
        if self.receiver is not None:
            self._on_media(self.receiver.poll(trio.current_time()))

    def send_rtcp(self, packet: rtcp.RtcpPacket) -> None:
        assert self.receiver is not None and self.core.ready is not None
        address = (self.core.ready.ip, self.core.ready.port)
        self.udp.send_nowait(self.receiver.cipher.seal_rtcp(packet.serialize()), address)

    def _on_media(self, items: list[Received]) -> None:
        for item in items:
            if isinstance(item, ReceivedAudio):
                self.audio.append(item)
            elif isinstance(item, ReceivedFrame):
                self.frames.append(item)

    # ------------------------------------------------------------------ events

    def _dave_out(self, frames: list[DaveFrame]) -> list[client.Event]:
        out: list[client.Event] = []
        for frame in frames:
            if isinstance(frame, DaveBinary):
                out += self.core.send_dave_binary(frame.op, frame.payload)
            else:
                payload = vg.parse_dave_json(frame.op, frame.data)
                assert isinstance(payload, vg.DaveTransitionReady | vg.DaveInvalidCommitWelcome)
                out += self.core.send_dave_json(payload)
        return out

    async def _handle(
        self, ws: WebSocket, events: list[client.Event]
    ) -> client.Closed | client.Failed | None:
        for event in events:
            self.events.append(event)
            if isinstance(event, client.SendText):
                await ws.send(event.text)
            elif isinstance(event, client.SendBinary):
                await ws.send(event.data)
            elif isinstance(event, client.Closed | client.Failed):
                return event
            elif isinstance(event, client.NeedIpDiscovery):
                await self.udp.sendto(build_request(event.ssrc), (event.ip, event.port))
                ip, port = await self._discovered.receive()
                end = await self._handle(ws, self.core.ip_discovered(ip, port, trio.current_time()))
                if end is not None:
                    return end
            elif isinstance(event, client.SessionEstablished):
                self.session = event
                cipher = TransportCipher(event.mode, event.secret_key)
                self.receiver = MediaReceiver(cipher, self.dave, self.config.effective_codecs)
                self.connected.set()
                frames = self.dave.on_session_description(event.dave_protocol_version)
                await self._handle(ws, self._dave_out(frames))
                # Our inactive op12, as real clients send it: a strict server forwards other
                # users' video states only after it (clank.sandbox.fidelity).
                await self._handle(ws, self.core.video_state_announcement(False))
            elif isinstance(event, client.Resumed):
                self.connected.set()
            elif isinstance(event, client.Speaking) and self.receiver is not None:
                self.receiver.bind_audio(event.ssrc, int(event.user_id))
            elif isinstance(event, client.VideoState) and self.receiver is not None:
                self.receiver.bind_video(vg.Video(user_id=event.user_id, streams=event.streams))
            elif isinstance(event, client.ClientsConnected):
                self.dave.clients_connected(int(u) for u in event.user_ids)
            elif isinstance(event, client.ClientDisconnected):
                self.dave.client_disconnected(int(event.user_id))
                if self.receiver is not None:
                    self.receiver.forget_user(int(event.user_id))
            elif isinstance(event, client.DaveBinary):
                await self._handle(ws, self._dave_out(self.dave.on_binary(event.op, event.payload)))
            elif isinstance(event, client.DaveJson):
                await self._handle(ws, self._dave_out(self.dave.on_json(event.op, event.payload.serialize())))
        return None


@asynccontextmanager
async def open_raw_client(
    config: client.VoiceGatewayConfig,
    endpoint: str,
    group_id: int,
    *,
    run: bool = True,
    net: FakeNet | None = None,
) -> AsyncIterator[RawVoiceClient]:
    """A RawVoiceClient with its UDP reader and video polling running (and its websocket
    passes, unless ``run`` is False: then the test calls ``connect()`` itself); on ``net``
    (the fake network) instead of sockets when given."""
    datagrams = open_udp_endpoint() if net is None else net.open_udp_endpoint()
    async with datagrams as udp, trio.open_nursery() as nursery:
        raw = RawVoiceClient(config, endpoint, group_id, udp, net)
        nursery.start_soon(raw.receive_media)
        nursery.start_soon(_poll, raw)
        if run:
            nursery.start_soon(raw.run)
        try:
            yield raw
        finally:
            with trio.move_on_after(1.0, shield=True):
                await raw.leave()
            nursery.cancel_scope.cancel()


async def _poll(raw: RawVoiceClient) -> None:
    while True:
        await trio.sleep(0.05)
        raw.poll()


# --------------------------------------------------------------------------- world-driven raw clients


async def _next_dispatch(
    updates: trio.MemoryReceiveChannel[Dispatch], name: str, match: Callable[[Any], bool]
) -> Any:
    async for dispatch in updates:
        if dispatch.name == name and match(dispatch.data):
            return dispatch.data
    raise AssertionError(f"gateway ended before {name}")


@asynccontextmanager
async def open_world_voice(
    sb: Sandbox, gateway: GatewayClient, net: FakeNet | None = None
) -> AsyncIterator[RawVoiceClient]:
    """Our user joins the sandbox's voice channel (op4 through the main gateway) and a raw client
    connects to the VOICE_SERVER_UPDATE endpoint with that token and voice session id."""
    names = {"VOICE_STATE_UPDATE", "VOICE_SERVER_UPDATE"}
    with gateway.subscribe(events=names) as updates:
        await gateway.update_voice_state(sb.guild_id, sb.voice_channel_id)
        state = VoiceState.parse(
            await _next_dispatch(updates, "VOICE_STATE_UPDATE", lambda d: d.get("user_id") == sb.our_user_id)
        )
        server = VoiceServerUpdate.parse(await _next_dispatch(updates, "VOICE_SERVER_UPDATE", lambda d: True))
    assert state.session_id is not None and server.endpoint is not None
    config = voice_config(
        None,
        sb.our_user_id,
        state.session_id,
        server_id=sb.guild_id,
        channel_id=sb.voice_channel_id,
        token=server.token,
    )
    async with open_raw_client(config, server.endpoint, int(sb.voice_channel_id), net=net) as raw:
        yield raw


@asynccontextmanager
async def open_world_watch(
    gateway: GatewayClient, stream_key: str, voice: RawVoiceClient, net: FakeNet | None = None
) -> AsyncIterator[RawVoiceClient]:
    """op20 for ``stream_key``; a raw stream_watch client on the STREAM_SERVER_UPDATE endpoint
    (server_id = rtc_server_id, our voice session id, DAVE group rtc_server_id - 1)."""
    with gateway.subscribe(events={"STREAM_CREATE", "STREAM_SERVER_UPDATE"}) as updates:
        await gateway.stream_watch(stream_key)
        create = StreamCreate.parse(await _next_dispatch(updates, "STREAM_CREATE", lambda d: True))
        server = StreamServerUpdate.parse(
            await _next_dispatch(updates, "STREAM_SERVER_UPDATE", lambda d: True)
        )
    assert create.rtc_server_id is not None and server.endpoint is not None and server.token is not None
    config = voice_config(
        None,
        voice.config.user_id,
        voice.config.session_id,
        server_id=create.rtc_server_id,
        channel_id=str(dave_group_id_for_stream(create.rtc_server_id)),
        token=server.token,
        role="stream_watch",
    )
    async with open_raw_client(
        config, server.endpoint, dave_group_id_for_stream(create.rtc_server_id), net=net
    ) as raw:
        yield raw


def user_named(sb: Sandbox, name: str) -> str:
    return sb.world.user_by_name(name).id
