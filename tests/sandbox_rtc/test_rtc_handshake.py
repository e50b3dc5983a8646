"""A raw client built from our own cores (VoiceGatewayCore + UDP + TransportCipher + DaveSessionCore)
against the sandbox voice server: handshake, IP discovery, session description in both AEAD modes,
then DAVE-encrypted audio from a simulated member, relayed and re-encrypted for the client."""

from __future__ import annotations

import pytest
import trio
from rtc_helpers import wait_until
from trio_websocket import WebSocketConnection, open_websocket_url

from clank.crypto.dave import DaveBinary, DaveFrame, DaveSessionCore
from clank.crypto.transport import TransportCipher
from clank.errors import ConnectionClosed
from clank.io.udp import UdpEndpoint, open_udp_endpoint
from clank.io.websocket import open_websocket
from clank.protocol import voice_gateway as client
from clank.sandbox.rtc.receiver import MediaReceiver, ReceivedAudio
from clank.sandbox.rtc.server import open_media_server
from clank.sandbox.rtc.users import open_simulated_member
from clank.wire import voice_gateway as vg
from clank.wire.ip_discovery import DiscoveryResponse, build_request
from clank.wire.rtp import PacketKind, classify

GUILD = "111"
CHANNEL = 222000000000000001
ME = "333"
SESSION = "f00dfeed"


class RawClient:
    """Drives a VoiceGatewayCore over a real websocket and UDP socket (test scaffolding)."""

    def __init__(self, config: client.VoiceGatewayConfig, ws: WebSocketConnection, udp: UdpEndpoint) -> None:
        self.core = client.VoiceGatewayCore(config)
        self.config = config
        self.ws = ws
        self.udp = udp
        self.dave = DaveSessionCore(int(config.user_id), CHANNEL)
        self.session: client.SessionEstablished | None = None
        self.receiver: MediaReceiver | None = None
        self.audio: list[ReceivedAudio] = []

    async def run(self) -> None:
        await self._handle(self.core.connection_opened(trio.current_time()))
        while True:
            message = await self.ws.get_message()
            now = trio.current_time()
            if isinstance(message, str):
                await self._handle(self.core.receive_text(message, now))
            else:
                await self._handle(self.core.receive_binary(message, now))

    async def receive_media(self) -> None:
        await wait_until(lambda: self.receiver is not None)  # discovery reads the socket until then
        while True:
            data, _ = await self.udp.receive()
            if self.receiver is not None:
                for item in self.receiver.receive(data, trio.current_time()):
                    if isinstance(item, ReceivedAudio):
                        self.audio.append(item)

    async def _discover(self, ip: str, port: int, ssrc: int) -> tuple[str, int]:
        await self.udp.sendto(build_request(ssrc), (ip, port))
        while True:
            data, _ = await self.udp.receive()
            if classify(data) is PacketKind.IP_DISCOVERY_RESPONSE:
                response = DiscoveryResponse.parse(data)
                return response.ip, response.port

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

    async def _handle(self, events: list[client.Event]) -> None:
        for event in events:
            if isinstance(event, client.SendText):
                await self.ws.send_message(event.text)
            elif isinstance(event, client.SendBinary):
                await self.ws.send_message(event.data)
            elif isinstance(event, client.NeedIpDiscovery):
                ip, port = await self._discover(event.ip, event.port, event.ssrc)
                await self._handle(self.core.ip_discovered(ip, port, trio.current_time()))
            elif isinstance(event, client.SessionEstablished):
                self.session = event
                cipher = TransportCipher(event.mode, event.secret_key)
                self.receiver = MediaReceiver(cipher, self.dave, self.config.effective_codecs)
                frames = self.dave.on_session_description(event.dave_protocol_version)
                await self._handle(self._dave_out(frames))
                # Our inactive op12: the strict server forwards no media before it (media_after_own_op12).
                await self._handle(self.core.video_state_announcement(False))
            elif isinstance(event, client.Speaking) and self.receiver is not None:
                self.receiver.bind_audio(event.ssrc, int(event.user_id))
            elif isinstance(event, client.ClientsConnected):
                self.dave.clients_connected(int(u) for u in event.user_ids)
            elif isinstance(event, client.DaveBinary):
                await self._handle(self._dave_out(self.dave.on_binary(event.op, event.payload)))
            elif isinstance(event, client.DaveJson):
                await self._handle(self._dave_out(self.dave.on_json(event.op, event.payload.serialize())))


@pytest.mark.parametrize("mode", [vg.MODE_AES256_GCM, vg.MODE_XCHACHA20])
async def test_raw_client_handshake_and_dave_audio(mode: str) -> None:
    with trio.fail_after(20):
        async with open_media_server("voice", GUILD, CHANNEL) as server:
            config = client.VoiceGatewayConfig(
                role="voice",
                server_id=GUILD,
                channel_id=str(CHANNEL),
                user_id=ME,
                session_id=SESSION,
                token=server.grant(ME, SESSION),
                mode_preference=(mode,),
            )
            url = vg.voice_gateway_url(server.endpoint, scheme="ws")
            async with (
                open_simulated_member(server, 1001, signal="tone", frequency=330.0, talking=True) as (
                    alice,
                    _,
                ),
                open_websocket_url(url) as ws,
                open_udp_endpoint() as udp,
                trio.open_nursery() as nursery,
            ):
                raw = RawClient(config, ws, udp)
                nursery.start_soon(raw.run)
                nursery.start_soon(raw.receive_media)
                await wait_until(lambda: len(raw.audio) >= 10)
                nursery.cancel_scope.cancel()
            assert raw.session is not None and raw.session.mode == mode
            assert raw.session.dave_protocol_version == 1
            assert raw.core.phase is client.Phase.CONNECTED
            assert {a.user_id for a in raw.audio} == {alice.user_id}
            assert raw.dave.ready
            assert alice.dave_session.ready


async def test_bad_token_is_refused_with_4004() -> None:
    with trio.fail_after(10):
        async with open_media_server("voice", GUILD, CHANNEL) as server:
            server.grant(ME, SESSION)
            config = client.VoiceGatewayConfig(
                role="voice",
                server_id=GUILD,
                channel_id=str(CHANNEL),
                user_id=ME,
                session_id=SESSION,
                token="nope",
            )
            core = client.VoiceGatewayCore(config)
            url = vg.voice_gateway_url(server.endpoint, scheme="ws")
            async with open_websocket(url) as ws:
                core.connection_opened(trio.current_time())
                hello = await ws.receive()
                for event in core.receive_text(hello, trio.current_time()):
                    if isinstance(event, client.SendText):
                        await ws.send(event.text)
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.receive()
            assert closed.value.code == 4004
