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

import random
import secrets
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Final, Literal, cast

import attrs
import trio
import trio_websocket

from clank.crypto.dave import (
    DaveBinary,
    DaveFrame,
)
from clank.crypto.transport import AES256_GCM_RTPSIZE, TransportCipher
from clank.errors import SandboxError
from clank.io.fakenet import FakeNet
from clank.io.lossy import LossyLink
from clank.io.udp import Address, open_udp_endpoint
from clank.logging import get_logger, register_secret
from clank.sandbox import voice_gateway_core as core_mod
from clank.sandbox.dave import DaveGroupServer
from clank.sandbox.dave.group import DaveGroupStatistics
from clank.sandbox.fidelity import STRICT, FidelityRules
from clank.sandbox.rtc.connection import MediaConnection
from clank.sandbox.rtc.dave_router import DaveRouter
from clank.sandbox.rtc.peer import SIMULATED_CODECS, Participant, PeerSink
from clank.sandbox.rtc.sfu import SfuStatistics
from clank.sandbox.rtc.udp_plane import Direction, UdpPlane
from clank.wire import voice_gateway as vg

log = get_logger("clank.sandbox.rtc")

Kind = Literal["voice", "stream"]

CLOSE_VOICE_SERVER_CRASHED: Final = 4015
CLOSE_DISCONNECTED: Final = 4014
CLOSE_CALL_TERMINATED: Final = 4022
BACKEND_VERSION: Final = {"voice": "0.9.1", "rtc_worker": "0.4.11"}  # op16 (only the shape matters)

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
        self._acking_stopped: set[int] = set()
        self._no_op5: set[int] = set()
        self.dave = DaveGroupServer(
            group_id,
            protocol_version=config.dave_protocol_version,
            transition_timeout=config.transition_timeout,
        )
        self._dave = DaveRouter(self.dave, self._participants)
        self.udp = UdpPlane(self._participants, config.fidelity, seed=self._rng.randrange(1 << 30))
        self.sfu = self.udp.sfu
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
        return self.udp.local_address

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
            udp_dropped=self.udp.dropped,
            dave_messages_routed=self._dave.routed,
            keepalives_in=self.udp.keepalives_in,
            silent_dropped=self.udp.silent_dropped,
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

    def register_session(self, session: core_mod.VoiceServerSession) -> None:
        """An identify was accepted: it replaces the user's earlier connection and session."""
        user_id = int(session.user_id)
        if user_id in self._participants:
            self.remove(user_id, core_mod.CLOSE_SESSION_INVALID, "replaced by a new connection")
        for old_id, old in list(self._sessions.items()):
            if old.user_id == session.user_id:
                del self._sessions[old_id]
        self._sessions[session.identify.session_id] = session

    def session_of(self, user_id: int) -> core_mod.VoiceServerSession | None:
        """The user's current voice-gateway session (seq, replay buffer, ``sent_ops``)."""
        return next((s for s in self._sessions.values() if s.user_id == str(user_id)), None)

    def acking_stopped(self, user_id: int) -> bool:
        return user_id in self._acking_stopped

    def _new_core(self) -> core_mod.VoiceServerConnectionCore:
        config = core_mod.VoiceServerConfig(
            heartbeat_interval_ms=self.config.heartbeat_interval_ms,
            modes=self.config.modes,
            dave_protocol_version=self.dave.protocol_version,
            ip=self.config.host,
            port=self.udp_address[1],
            heartbeat_ack_echo=self.config.fidelity.heartbeat_ack_echo,
            sink_wants_flat_only=self.config.fidelity.sink_wants_flat_only,
            backend_version=BACKEND_VERSION if self.config.fidelity.control_noise else None,
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
        self.udp.uplink(participant, data)

    def dave_from(self, user_id: int, frame: DaveFrame) -> None:
        """A DAVE message from a participant (binary op26/op28, JSON op23/op31)."""
        now = trio.current_time()
        if isinstance(frame, DaveBinary):
            out = self.dave.receive_binary(user_id, frame.op, frame.payload, now)
        else:
            out = self.dave.receive_json(user_id, frame.op, frame.data, now)
        self._dave.route(out)

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
        self.udp.clear_links(user_id)
        if participant is None:
            return
        if code is not None:
            participant.sink.close(code, reason)
        for other in self._participants.values():
            other.sink.notify(vg.ClientDisconnect(str(user_id)))
        self._dave.route(self.dave.disconnect(user_id, trio.current_time()))

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
        self._dave.corrupt_next_welcome(user_id)

    async def set_link(self, user_id: int, direction: Direction, link: LossyLink | None) -> None:
        """Impair one direction of one participant's media (None: back to a clean link)."""
        participant = self._require(user_id)
        await self.udp.set_link(participant, direction, link, self._nursery)

    def set_dave_protocol_version(self, protocol_version: int) -> None:
        """Downgrade to 0 (op21/op22) or upgrade back (op24 epoch 1 + op25)."""
        self._dave.route(self.dave.set_protocol_version(protocol_version, trio.current_time()))

    def _require(self, user_id: int) -> Participant:
        participant = self._participants.get(user_id)
        if participant is None:
            raise SandboxError(f"user {user_id} is not in {self!r}")
        return participant

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
            self.udp.endpoint = udp
            async with trio.open_nursery() as nursery:
                nursery.start_soon(udp.drain_loop, self.udp.on_datagram)
                server = await nursery.start(
                    serve,
                    self._handle_websocket,
                    self.config.host,
                    0,
                    self.config.ssl_context,
                )
                self.port = server.port
                nursery.start_soon(self._dave.run_timer)
                log.info("media server up", kind=self.kind, server_id=self.server_id, endpoint=self.endpoint)
                task_status.started()

    async def _handle_websocket(self, request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        connection = MediaConnection(self, ws)
        self._connections.add(connection)
        try:
            await connection.run()
        finally:
            self._connections.discard(connection)

    def _connection_ended(self, connection: MediaConnection, client_code: int | None) -> None:
        participant = connection.participant()
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
        self._dave.route(self.dave.connect(newcomer.user_id, trio.current_time()))

    def _broadcast(self, sender: Participant, payload: vg.Payload) -> None:
        for other in list(self._participants.values()):
            if other is not sender and not (isinstance(payload, vg.Video) and self._video_gated(other)):
                other.sink.notify(payload)


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
