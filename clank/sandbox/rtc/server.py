"""One call of the sandbox: a voice channel or a Go Live stream (websocket + UDP + SFU + DAVE).

    async with open_media_server("voice", server_id=guild_id, group_id=channel_id) as server:
        token = server.grant(user_id, session_id)   # what VOICE_SERVER_UPDATE hands out
        server.endpoint                              # "127.0.0.1:<port>" (no scheme; clients use ws://)

Real clients connect to ``ws://<endpoint>/?v=N`` and run the voice protocol against a
:class:`~clank.sandbox.voice_gateway_core.VoiceServerConnectionCore` (handshake, heartbeats,
resume, close codes); media goes over the server's one UDP socket (IP discovery answered there).
Simulated users attach in-process (:meth:`MediaServer.attach` + :meth:`MediaServer.join`) and
then take the same path: their RTP is sealed with their own key, their DAVE frames go through
the same :class:`~clank.sandbox.dave.DaveGroupServer`, they get the same op5/op11/op12/op13.

A stream server is the same thing with ``server_id = rtc_server_id`` and DAVE group
``rtc_server_id - 1``. Faults: per-participant lossy links in either direction, dropped UDP,
scripted closes, stopped heartbeat ACKs, and a crash that closes every connection.
"""

from __future__ import annotations

import math
import random
import secrets
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Final, Literal, cast

import attrs
import trio
import trio_websocket

from clank.crypto.dave import (
    OP_WELCOME,
    DaveBinary,
    DaveFrame,
    DaveJson,
)
from clank.crypto.transport import AES256_GCM_RTPSIZE, TransportCipher
from clank.errors import MalformedMessage, MalformedPacket, SandboxError
from clank.io.fakenet import FakeNet
from clank.io.lossy import LossyLink, open_lossy_sender
from clank.io.udp import Address, DatagramEndpoint, open_udp_endpoint
from clank.logging import get_logger, register_secret
from clank.sandbox import voice_gateway_core as core_mod
from clank.sandbox.dave import DaveGroupServer, Outgoing
from clank.sandbox.dave.group import DaveGroupStatistics
from clank.sandbox.fidelity import STRICT, FidelityRules
from clank.sandbox.rtc.connection import MediaConnection
from clank.sandbox.rtc.peer import Participant, PeerSink
from clank.sandbox.rtc.sfu import Sfu, SfuStatistics
from clank.wire import voice_gateway as vg
from clank.wire.ip_discovery import DiscoveryRequest, build_response
from clank.wire.rtp import PacketKind, classify

log = get_logger("clank.sandbox.rtc")

Kind = Literal["voice", "stream"]
Direction = Literal["uplink", "downlink"]

CLOSE_VOICE_SERVER_CRASHED: Final = 4015
CLOSE_DISCONNECTED: Final = 4014
CLOSE_CALL_TERMINATED: Final = 4022

# Server-initiated closes after which the client is expected to resume (participant kept).
KEEPS_SESSION: Final = frozenset({CLOSE_VOICE_SERVER_CRASHED})
# Client-initiated closes that mean "I am leaving" (anything else: a drop it may resume from).
CLIENT_LEAVES: Final = frozenset({1000, 1001})


@attrs.frozen
class MediaServerConfig:
    host: str = "127.0.0.1"
    heartbeat_interval_ms: float = 41250.0
    dave_protocol_version: int = 1
    """1: DAVE on (the default, like Discord since 2026-03); 0: a non-DAVE call."""
    modes: tuple[str, ...] = vg.SUPPORTED_MODES
    transition_timeout: float = 10.0
    seed: int = 0
    ssl_context: ssl.SSLContext | None = attrs.field(default=None, eq=False, repr=False)
    """Serve ``wss://`` with this context (clank.sandbox.tls); None serves plain ``ws://``."""
    net: FakeNet | None = attrs.field(default=None, eq=False, repr=False)
    """Listen on this in-memory network (clank.io.fakenet) instead of real sockets (tests)."""
    fidelity: FidelityRules = STRICT
    """Where the server is as unforgiving as Discord (clank.sandbox.fidelity)."""


@attrs.frozen
class Attachment:
    """What an in-process participant gets instead of Ready + Session Description."""

    participant: Participant
    mode: str
    secret_key: bytes = attrs.field(repr=False)
    dave_protocol_version: int


@attrs.frozen
class MediaServerStatistics:
    kind: Kind
    server_id: str
    group_id: int
    participants: tuple[int, ...]
    connections: int
    dave_protocol_version: int
    sfu: SfuStatistics
    dave: DaveGroupStatistics
    udp_dropped: int
    dave_messages_routed: int
    keepalives_in: int = 0
    silent_dropped: int = 0
    """Datagrams not sent to a client whose UDP socket was silent too long (fidelity rule)."""


class MediaServer:
    """See the module docstring. Create with :func:`open_media_server`."""

    def __init__(
        self, kind: Kind, server_id: str, group_id: int, config: MediaServerConfig, nursery: trio.Nursery
    ) -> None:
        self.kind: Kind = kind
        self.server_id = server_id
        self.group_id = group_id
        self.config = config
        self._nursery = nursery
        self._rng = random.Random(f"{config.seed}:{server_id}")
        self._next_ssrc = self._rng.randrange(1000, 60000)
        self._credentials: dict[str, tuple[str, str]] = {}  # user id -> (token, session id)
        self._sessions: dict[str, core_mod.VoiceServerSession] = {}  # voice session id -> session
        self._connections: set[MediaConnection] = set()
        self._participants: dict[int, Participant] = {}
        self._discovered: dict[int, Address] = {}  # SSRC -> address from IP discovery
        self._link_scopes: dict[tuple[int, Direction], trio.CancelScope] = {}
        self._acking_stopped: set[int] = set()
        self._corrupt_welcome: set[int] = set()
        self._no_op5: set[int] = set()
        self.dave = DaveGroupServer(
            group_id,
            protocol_version=config.dave_protocol_version,
            transition_timeout=config.transition_timeout,
        )
        self.sfu = Sfu(self._deliver, seed=self._rng.randrange(1 << 30))
        self._dave_queue: deque[Outgoing] = deque()
        self._dave_armed: float | None = None
        self._dave_rearm = trio.Event()
        self._pumping = False
        self._dave_routed = 0
        self._udp: DatagramEndpoint | None = None
        self._udp_dropped = 0
        self._keepalives_in = 0
        self._silent_dropped = 0
        self._heard: dict[Address, float] = {}  # client UDP address -> last datagram (trio time)
        self.port = 0
        self.closed = trio.Event()

    def __repr__(self) -> str:
        return f"<MediaServer {self.kind} {self.server_id} {self.endpoint}>"

    # ------------------------------------------------------------------ queries

    @property
    def endpoint(self) -> str:
        """``host:port`` without a scheme, as VOICE_SERVER_UPDATE / STREAM_SERVER_UPDATE carry it."""
        return f"{self.config.host}:{self.port}"

    @property
    def udp_address(self) -> Address:
        if self._udp is None:
            raise SandboxError("media server is not running")
        return self._udp.local_address

    @property
    def dave_protocol_version(self) -> int:
        return self.dave.protocol_version

    def participant(self, user_id: int) -> Participant | None:
        return self._participants.get(user_id)

    def participants(self) -> list[Participant]:
        return list(self._participants.values())

    def statistics(self) -> MediaServerStatistics:
        return MediaServerStatistics(
            kind=self.kind,
            server_id=self.server_id,
            group_id=self.group_id,
            participants=tuple(self._participants),
            connections=len(self._connections),
            dave_protocol_version=self.dave.protocol_version,
            sfu=self.sfu.statistics(),
            dave=self.dave.statistics(),
            udp_dropped=self._udp_dropped,
            dave_messages_routed=self._dave_routed,
            keepalives_in=self._keepalives_in,
            silent_dropped=self._silent_dropped,
        )

    # ------------------------------------------------------------------ credentials

    def grant(self, user_id: str, session_id: str) -> str:
        """A fresh token for ``user_id`` (replacing any earlier one) on this server."""
        token = secrets.token_hex(16)
        register_secret(token)
        self._credentials[user_id] = (token, session_id)
        return token

    def revoke(self, user_id: str) -> None:
        self._credentials.pop(user_id, None)

    def _validate_identify(self, identify: vg.Identify) -> int | None:
        if identify.server_id != self.server_id:
            return core_mod.CLOSE_AUTHENTICATION_FAILED
        if (
            self.kind == "stream"
            and self.config.fidelity.stream_channel_is_dave_group
            and identify.channel_id != str(self.group_id)
        ):
            log.warning("stream identify channel_id is not the DAVE group", channel_id=identify.channel_id)
            return core_mod.CLOSE_AUTHENTICATION_FAILED
        granted = self._credentials.get(identify.user_id)
        if granted is None or not secrets.compare_digest(granted[0], identify.token):
            return core_mod.CLOSE_AUTHENTICATION_FAILED
        if granted[1] != identify.session_id:
            return core_mod.CLOSE_SESSION_INVALID
        return None

    def _find_session(self, resume: vg.Resume) -> core_mod.VoiceServerSession | None:
        session = self._sessions.get(resume.session_id)
        if session is None or resume.server_id != self.server_id:
            return None
        granted = self._credentials.get(session.user_id)
        if granted is None or not secrets.compare_digest(granted[0], resume.token):
            return None
        return session

    def _allocate_ssrc(self) -> int:
        ssrc = self._next_ssrc
        self._next_ssrc += 1
        return ssrc

    def _new_core(self) -> core_mod.VoiceServerConnectionCore:
        config = core_mod.VoiceServerConfig(
            heartbeat_interval_ms=self.config.heartbeat_interval_ms,
            modes=self.config.modes,
            dave_protocol_version=self.dave.protocol_version,
            ip=self.config.host,
            port=self.udp_address[1],
            heartbeat_ack_echo=self.config.fidelity.heartbeat_ack_echo,
            sink_wants_flat_only=self.config.fidelity.sink_wants_flat_only,
        )
        return core_mod.VoiceServerConnectionCore(
            config,
            validate_identify=self._validate_identify,
            find_session=self._find_session,
            allocate_ssrc=self._allocate_ssrc,
        )

    # ------------------------------------------------------------------ in-process participants

    def attach(self, user_id: int, sink: PeerSink, *, video_streams: int = 0) -> Attachment:
        """Register a simulated participant; call :meth:`join` once it has set itself up."""
        if user_id in self._participants:
            self.remove(user_id)
        streams = tuple(
            vg.ReadyStream("video", "100", self._allocate_ssrc(), self._allocate_ssrc())
            for _ in range(video_streams)
        )
        key = secrets.token_bytes(vg.SECRET_KEY_SIZE)
        participant = Participant(
            user_id=user_id,
            sink=sink,
            audio_ssrc=self._allocate_ssrc(),
            streams=streams,
            cipher=TransportCipher(AES256_GCM_RTPSIZE, key),
            codecs=SIMULATED_CODECS,
            internal=True,
        )
        return Attachment(participant, AES256_GCM_RTPSIZE, key, self.dave.protocol_version)

    def join(self, participant: Participant, dave_frames: Sequence[DaveFrame] = ()) -> None:
        """The participant is described: announce everyone to it and it to everyone; DAVE op25."""
        self._participants[participant.user_id] = participant
        self._introduce(participant)
        for frame in dave_frames:
            self.dave_from(participant.user_id, frame)

    def receive_from(self, participant: Participant, data: bytes) -> None:
        """A datagram an in-process participant sends to the server (through its uplink faults)."""
        self._uplink(participant, data)

    def dave_from(self, user_id: int, frame: DaveFrame) -> None:
        """A DAVE message from a participant (binary op26/op28, JSON op23/op31)."""
        now = trio.current_time()
        if isinstance(frame, DaveBinary):
            out = self.dave.receive_binary(user_id, frame.op, frame.payload, now)
        else:
            out = self.dave.receive_json(user_id, frame.op, frame.data, now)
        self._route_dave(out)

    def speaking(self, participant: Participant, flags: int) -> None:
        participant.speaking = flags
        if participant.user_id in self._no_op5:
            return  # fault: this user's media arrives with no op5 naming its SSRC
        speaking = vg.Speaking(speaking=flags, ssrc=participant.audio_ssrc, user_id=str(participant.user_id))
        self._broadcast(participant, speaking)

    def set_video(self, participant: Participant, video: vg.Video) -> None:
        """op12 from a participant (``user_id`` is filled in here)."""
        first = participant.video is None
        participant.video = attrs.evolve(video, user_id=str(participant.user_id))
        self._broadcast(participant, participant.video)
        if first and not participant.internal and self.config.fidelity.video_after_own_op12:
            for other in self._participants.values():  # what it could not be told before its op12
                if other is not participant and other.video is not None:
                    participant.sink.notify(other.video)

    def _video_gated(self, receiver: Participant) -> bool:
        """Fidelity: no op12 of others reaches a real client before its own op12."""
        return self.config.fidelity.video_after_own_op12 and not receiver.internal and receiver.video is None

    def send_message(self, user_id: int, op: int, d: dict[str, object] | None) -> None:
        """Fault/fidelity: send any JSON message to the user's websocket connection(s)."""
        for connection in list(self._connections):
            if connection.user_id == user_id:
                connection.handle(connection.core.send_message(op, d))

    # ------------------------------------------------------------------ controls and faults

    def remove(self, user_id: int, code: int | None = None, reason: str = "removed") -> None:
        """Drop a participant (op13 to the others, DAVE remove); close its connection with ``code``."""
        participant = self._participants.pop(user_id, None)
        for direction in ("uplink", "downlink"):
            scope = self._link_scopes.pop((user_id, direction), None)
            if scope is not None:
                scope.cancel()
        if participant is None:
            return
        if code is not None:
            participant.sink.close(code, reason)
        for other in self._participants.values():
            other.sink.notify(vg.ClientDisconnect(str(user_id)))
        self._route_dave(self.dave.disconnect(user_id, trio.current_time()))

    def close_connection(self, user_id: int, code: int, reason: str = "fault injected") -> None:
        """Close the user's websocket with ``code`` (4015 keeps the session for a resume)."""
        for connection in list(self._connections):
            if connection.user_id == user_id:
                connection.request_close(code, reason)

    def close_stale(self, code: int, reason: str = "server moved") -> int:
        """Close every connection identified with a token that is no longer the user's current one
        (after a fresh grant: a moved server); how many were closed."""
        closed = 0
        for connection in list(self._connections):
            session = connection.core.session
            if session is None:
                continue
            granted = self._credentials.get(session.user_id)
            if granted is None or not secrets.compare_digest(granted[0], session.identify.token):
                connection.request_close(code, reason)
                closed += 1
        return closed

    def crash(self, code: int = CLOSE_VOICE_SERVER_CRASHED) -> None:
        """Close every websocket with ``code``; unless it is resumable (4015), drop everyone."""
        for connection in list(self._connections):
            connection.request_close(code, "voice server crashed")
        if code not in KEEPS_SESSION:
            for user_id in list(self._participants):
                self.remove(user_id, code, "call terminated")

    def stop_acking(self, user_id: int, on: bool = True) -> None:
        """Heartbeats of this user's (current and future) connections get no op6."""
        if on:
            self._acking_stopped.add(user_id)
        else:
            self._acking_stopped.discard(user_id)
        for connection in self._connections:
            if connection.user_id == user_id and on:
                connection.core.stop_acking()

    def drop_udp(self, user_id: int, on: bool = True) -> None:
        participant = self._require(user_id)
        participant.drop_udp = on

    def omit_speaking(self, user_id: int, on: bool = True) -> None:
        """Never send op5 for this user (Discord does not promise op5 before, or at all with, media)."""
        if on:
            self._no_op5.add(user_id)
        else:
            self._no_op5.discard(user_id)

    def corrupt_next_welcome(self, user_id: int) -> None:
        """The next op30 Welcome routed to this user has its last byte flipped (the AEAD tag of the
        encrypted GroupInfo), so its DAVE session fails to join and must recover with op31."""
        self._corrupt_welcome.add(user_id)

    async def set_link(self, user_id: int, direction: Direction, link: LossyLink | None) -> None:
        """Impair one direction of one participant's media (None: back to a clean link)."""
        participant = self._require(user_id)
        old = self._link_scopes.pop((user_id, direction), None)
        if old is not None:
            old.cancel()
        setattr(participant, direction, None)
        if link is not None:
            await self._nursery.start(self._run_link, participant, direction, link)

    def set_dave_protocol_version(self, protocol_version: int) -> None:
        """Downgrade to 0 (op21/op22) or upgrade back (op24 epoch 1 + op25)."""
        self._route_dave(self.dave.set_protocol_version(protocol_version, trio.current_time()))

    def _require(self, user_id: int) -> Participant:
        participant = self._participants.get(user_id)
        if participant is None:
            raise SandboxError(f"user {user_id} is not in {self!r}")
        return participant

    async def _run_link(
        self,
        participant: Participant,
        direction: Direction,
        link: LossyLink,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        if direction == "uplink":

            def deliver(data: bytes) -> None:
                self._ingest(participant, data)
        else:

            def deliver(data: bytes) -> None:
                self._deliver_now(participant, data)

        with trio.CancelScope() as scope:
            self._link_scopes[(participant.user_id, direction)] = scope
            async with open_lossy_sender(link, deliver) as sender:
                setattr(participant, direction, sender)
                task_status.started()
                await trio.sleep_forever()

    # ------------------------------------------------------------------ tasks

    async def _run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        net = self.config.net
        open_udp = open_udp_endpoint if net is None else net.open_udp_endpoint
        # cast: trio-websocket's serve_websocket is a plain function to mypy; the signatures match.
        serve = cast(
            Callable[..., Awaitable[object]],
            trio_websocket.serve_websocket if net is None else net.serve_websocket,
        )
        async with open_udp(local_host=self.config.host) as udp:
            self._udp = udp
            async with trio.open_nursery() as nursery:
                nursery.start_soon(udp.drain_loop, self._on_datagram)
                server = await nursery.start(
                    serve,
                    self._handle_websocket,
                    self.config.host,
                    0,
                    self.config.ssl_context,
                )
                self.port = server.port
                nursery.start_soon(self._tick_dave)
                log.info("media server up", kind=self.kind, server_id=self.server_id, endpoint=self.endpoint)
                task_status.started()

    async def _tick_dave(self) -> None:
        """Transition timeouts, at their deadlines (re-armed whenever the group's deadline moves)."""
        while True:
            self._dave_armed = deadline = self.dave.next_deadline()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self._dave_rearm.wait()
            self._dave_rearm = trio.Event()
            self._route_dave(self.dave.tick(trio.current_time()))

    async def _handle_websocket(self, request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        connection = MediaConnection(self, ws)
        self._connections.add(connection)
        try:
            await connection.run()
        finally:
            self._connections.discard(connection)

    # ------------------------------------------------------------------ connection events

    def _on_event(self, connection: MediaConnection, event: core_mod.ServerEvent) -> None:
        if isinstance(event, core_mod.Identified):
            self._on_identified(connection, event.session)
        elif isinstance(event, core_mod.SessionResumed):
            participant = self._participants.get(int(event.session.user_id))
            if participant is not None and not participant.internal:
                participant.sink = connection.sink
            if int(event.session.user_id) in self._acking_stopped:
                connection.core.stop_acking()
        elif isinstance(event, core_mod.SessionDescribed):
            self._on_described(connection, event.session)
        elif isinstance(event, core_mod.ClientSpeaking | core_mod.ClientVideo | core_mod.ClientSinkWants):
            participant = self._participant_of(connection)
            if participant is None:
                return
            if isinstance(event, core_mod.ClientSpeaking):
                self.speaking(participant, event.speaking.speaking)
            elif isinstance(event, core_mod.ClientVideo):
                self.set_video(participant, event.video)
            else:
                participant.wants = event.wants
        elif isinstance(event, core_mod.ClientSessionUpdate):
            participant = self._participant_of(connection)
            if participant is not None and event.update.codecs is not None:
                participant.codecs = event.update.codecs
        elif isinstance(event, core_mod.ClientDaveBinary | core_mod.ClientDaveJson):
            user_id = connection.user_id
            if user_id is None or user_id not in self._participants:
                return
            if isinstance(event, core_mod.ClientDaveBinary):
                self.dave_from(user_id, DaveBinary(event.op, event.payload))
            else:
                try:
                    self.dave_from(user_id, DaveJson(event.op, event.payload.serialize()))
                except MalformedMessage as exc:
                    connection.request_close(core_mod.CLOSE_DECODE_FAILED, exc.reason)

    def _on_identified(self, connection: MediaConnection, session: core_mod.VoiceServerSession) -> None:
        user_id = int(session.user_id)
        if user_id in self._participants:  # a fresh identify replaces the old connection
            self.remove(user_id, core_mod.CLOSE_SESSION_INVALID, "replaced by a new connection")
        for old_id, old in list(self._sessions.items()):
            if old.user_id == session.user_id:
                del self._sessions[old_id]
        self._sessions[session.identify.session_id] = session
        if user_id in self._acking_stopped:
            connection.core.stop_acking()

    def _on_described(self, connection: MediaConnection, session: core_mod.VoiceServerSession) -> None:
        assert session.mode is not None and session.secret_key is not None and session.select is not None
        participant = Participant(
            user_id=int(session.user_id),
            sink=connection.sink,
            audio_ssrc=session.audio_ssrc,
            streams=session.streams,
            cipher=TransportCipher(session.mode, session.secret_key),
            codecs=session.select.codecs or (vg.OPUS_CODEC,),
            internal=False,
            address=self._discovered.get(session.audio_ssrc),
        )
        self.join(participant)

    def _participant_of(self, connection: MediaConnection) -> Participant | None:
        user_id = connection.user_id
        participant = None if user_id is None else self._participants.get(user_id)
        if participant is None or participant.sink is not connection.sink:
            return None
        return participant

    def _connection_ended(self, connection: MediaConnection, client_code: int | None) -> None:
        participant = self._participant_of(connection)
        if participant is None:
            return
        server_code = connection.core.close_code
        if server_code is not None:
            leaving = server_code not in KEEPS_SESSION
        else:
            leaving = client_code in CLIENT_LEAVES
        if leaving:
            self.remove(participant.user_id)

    # ------------------------------------------------------------------ membership

    def _introduce(self, newcomer: Participant) -> None:
        others = [p for p in self._participants.values() if p is not newcomer]
        if others:
            newcomer.sink.notify(vg.ClientsConnect(tuple(str(p.user_id) for p in others)))
        for other in others:
            other.sink.notify(vg.ClientsConnect((str(newcomer.user_id),)))
            if other.speaking and other.user_id not in self._no_op5:
                newcomer.sink.notify(
                    vg.Speaking(speaking=other.speaking, ssrc=other.audio_ssrc, user_id=str(other.user_id))
                )
            if other.video is not None and not self._video_gated(newcomer):
                newcomer.sink.notify(other.video)
        self._route_dave(self.dave.connect(newcomer.user_id, trio.current_time()))

    def _broadcast(self, sender: Participant, payload: vg.Payload) -> None:
        for other in list(self._participants.values()):
            if other is not sender and not (isinstance(payload, vg.Video) and self._video_gated(other)):
                other.sink.notify(payload)

    def _route_dave(self, out: list[Outgoing]) -> None:
        """Deliver group output; answers from in-process members are queued, not recursed into."""
        self._dave_queue.extend(out)
        if self._pumping:
            return
        self._pumping = True
        try:
            while self._dave_queue:
                user_id, frame = self._dave_queue.popleft()
                participant = self._participants.get(user_id)
                if participant is not None:
                    self._dave_routed += 1
                    participant.sink.dave(self._maybe_corrupt(user_id, frame))
        finally:
            self._pumping = False
            if self.dave.next_deadline() != self._dave_armed:
                self._dave_rearm.set()

    def _maybe_corrupt(self, user_id: int, frame: DaveFrame) -> DaveFrame:
        if not (
            isinstance(frame, DaveBinary) and frame.op == OP_WELCOME and user_id in self._corrupt_welcome
        ):
            return frame
        self._corrupt_welcome.discard(user_id)
        log.info("dave fault: corrupted welcome", user_id=user_id)
        return DaveBinary(frame.op, frame.payload[:-1] + bytes([frame.payload[-1] ^ 0xFF]))

    # ------------------------------------------------------------------ UDP

    def _on_datagram(self, data: bytes, address: Address) -> None:
        self._heard[address] = trio.current_time()
        kind = classify(data)
        if kind is PacketKind.IP_DISCOVERY_REQUEST:
            self._on_discovery(data, address)
            return
        if kind is PacketKind.KEEPALIVE:
            self._keepalives_in += 1  # nothing is sent back (wire.udp_keepalive)
            return
        participant = self._participant_for(data, address, kind)
        if participant is None:
            self._udp_dropped += 1
            return
        participant.address = address
        self._uplink(participant, data)

    def _on_discovery(self, data: bytes, address: Address) -> None:
        try:
            request = DiscoveryRequest.parse(data)
        except MalformedPacket:
            self._udp_dropped += 1
            return
        self._discovered[request.ssrc] = address
        for participant in self._participants.values():
            if participant.audio_ssrc == request.ssrc and not participant.internal:
                participant.address = address
        self._send_udp(build_response(request.ssrc, address[0], address[1]), address)

    def _participant_for(self, data: bytes, address: Address, kind: PacketKind) -> Participant | None:
        for participant in self._participants.values():
            if participant.address == address and not participant.internal:
                return participant
        # Latch on the SSRC (RTP: bytes 8-11; RTCP: the sender SSRC at 4-7).
        offset = 8 if kind is PacketKind.RTP else 4
        if len(data) < offset + 4:
            return None
        ssrc = int.from_bytes(data[offset : offset + 4], "big")
        for participant in self._participants.values():
            if not participant.internal and participant.owns_ssrc(ssrc):
                return participant
        return None

    def _uplink(self, participant: Participant, data: bytes) -> None:
        if participant.drop_udp:
            self._udp_dropped += 1
            return
        if participant.uplink is not None:
            participant.uplink.send_nowait(data)
        else:
            self._ingest(participant, data)

    def _ingest(self, participant: Participant, data: bytes) -> None:
        if self._participants.get(participant.user_id) is not participant:
            return  # left while the packet was in a delay line
        participant.packets_in += 1
        kind = classify(data)
        if kind is PacketKind.RTP:
            others = [p for p in self._participants.values() if p is not participant]
            self.sfu.relay_rtp(participant, data, others)
        elif kind is PacketKind.RTCP:
            self.sfu.handle_rtcp(participant, data, list(self._participants.values()))
        else:
            self._udp_dropped += 1

    def _deliver(self, receiver: Participant, data: bytes) -> None:
        if receiver.drop_udp:
            self._udp_dropped += 1
            return
        if receiver.downlink is not None:
            receiver.downlink.send_nowait(data)
        else:
            self._deliver_now(receiver, data)

    def _deliver_now(self, receiver: Participant, data: bytes) -> None:
        if self._participants.get(receiver.user_id) is not receiver:
            return
        receiver.packets_out += 1
        if receiver.internal:
            receiver.sink.datagram(data)
        elif receiver.address is not None:
            if self._silent(receiver.address):
                self._silent_dropped += 1
                return
            self._send_udp(data, receiver.address)
        else:
            self._udp_dropped += 1

    def _silent(self, address: Address) -> bool:
        """Fidelity: Discord stops sending to a UDP client it has not heard from for a while."""
        timeout = self.config.fidelity.silent_client_timeout
        if timeout is None:
            return False
        heard = self._heard.get(address)
        return heard is None or trio.current_time() - heard > timeout

    def _send_udp(self, data: bytes, address: Address) -> None:
        if self._udp is not None:
            self._udp.send_nowait(data, address)


# Simulated users declare the same PTs clankvox/our client use, and can send every codec.
SIMULATED_CODECS: Final = (
    vg.OPUS_CODEC,
    vg.Codec("H264", "video", 1000, vg.H264_PT, vg.H264_RTX_PT, encode=True, decode=True),
    vg.Codec("VP8", "video", 2000, vg.VP8_PT, vg.VP8_RTX_PT, encode=True, decode=True),
)


@asynccontextmanager
async def open_media_server(
    kind: Kind,
    server_id: str,
    group_id: int,
    config: MediaServerConfig | None = None,
) -> AsyncIterator[MediaServer]:
    """Run one voice/stream server until the block exits (every connection is then closed)."""
    async with trio.open_nursery() as nursery:
        server = MediaServer(kind, server_id, group_id, config or MediaServerConfig(), nursery)
        await nursery.start(server._run)
        try:
            yield server
        finally:
            server.closed.set()
            nursery.cancel_scope.cancel()
