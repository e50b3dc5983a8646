"""One websocket client of a sandbox media server: its connection core, outbox and writer task.

The :class:`~clank.sandbox.rtc.server.MediaServer` accepts the websocket and hands it to a
:class:`MediaConnection`, which runs the voice protocol through a
:class:`~clank.sandbox.voice_gateway_core.VoiceServerConnectionCore` and reports every event it
does not handle itself back to the server. :class:`WsSink` is the real client's ``PeerSink``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio
import trio_websocket

from clank.crypto.dave import (
    OP_EXECUTE_TRANSITION,
    OP_PREPARE_EPOCH,
    OP_PREPARE_TRANSITION,
    DaveBinary,
    DaveFrame,
    DaveJson,
)
from clank.crypto.transport import TransportCipher
from clank.errors import MalformedMessage, SandboxError
from clank.logging import get_logger
from clank.protocol.voice_gateway import SendBinary, SendText
from clank.sandbox import voice_gateway_core as core_mod
from clank.sandbox.rtc.peer import Participant
from clank.wire import voice_gateway as vg
from clank.wire.voice_gateway import VoiceOp

if TYPE_CHECKING:
    from clank.sandbox.rtc.server import MediaServer

log = get_logger("clank.sandbox.rtc")

OUTBOX_SIZE: Final = 1024
"""Frames queued for one websocket; a client that falls this far behind is disconnected (1008)."""
CLOSE_POLICY_VIOLATION: Final = 1008
CLIENT_FLAGS: Final = 2
"""op18 ``flags`` the control noise sends for each other member (any value: clients ignore it)."""
CLIENT_PLATFORM: Final = 0
"""op20 ``platform`` (0: desktop)."""


def loose_video(video: vg.Video) -> dict[str, Any]:
    """op12 as Discord may shape it: integral numbers as floats (``max_framerate: 30.0``) and an
    inactive simulcast layer without ``ssrc`` (clients take every stream field as optional)."""
    d = video.serialize()
    streams: list[dict[str, Any]] = list(d.get("streams") or [])
    for stream in streams:
        for key in ("max_framerate", "quality"):
            if isinstance(stream.get(key), int):
                stream[key] = float(stream[key])
    if streams:
        streams.append({"type": "video", "rid": "50", "quality": 50.0, "active": False})
    d["streams"] = streams
    return d


@attrs.frozen
class _Close:
    code: int
    reason: str


class MediaConnection:
    """One websocket: a connection core, an outbox and a writer task."""

    def __init__(self, server: MediaServer, ws: trio_websocket.WebSocketConnection) -> None:
        self.server = server
        self.ws = ws
        self.core = server._new_core()
        self._send, self._receive = trio.open_memory_channel[str | bytes | _Close](OUTBOX_SIZE)
        self.sink = WsSink(self)
        self.ended = False

    @property
    def user_id(self) -> int | None:
        session = self.core.session
        return None if session is None else int(session.user_id)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer)
            try:
                self.handle(self.core.connection_opened(trio.current_time()))
                await self._reader()
            finally:
                self.ended = True
                self.core.connection_lost()
                self._send.close()
                nursery.cancel_scope.deadline = trio.current_time() + 1.0
                self.server._connection_ended(self, self.ws.closed.code if self.ws.closed else None)

    async def _reader(self) -> None:
        while True:
            deadline = self.core.next_deadline()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                try:
                    message = await self.ws.get_message()
                except trio_websocket.ConnectionClosed:
                    return
                now = trio.current_time()
                if isinstance(message, str):
                    self.handle(self.core.receive_text(message, now))
                else:
                    self.handle(self.core.receive_binary(message, now))
                continue
            self.handle(self.core.tick(trio.current_time()))

    async def _writer(self) -> None:
        async for item in self._receive:
            try:
                if isinstance(item, _Close):
                    await self.ws.aclose(item.code, item.reason)
                    return
                await self.ws.send_message(item)
            except trio_websocket.ConnectionClosed:
                return

    def participant(self) -> Participant | None:
        """The call member this connection currently speaks for (None before op4 or once replaced)."""
        user_id = self.user_id
        participant = None if user_id is None else self.server.participant(user_id)
        if participant is None or participant.sink is not self.sink:
            return None
        return participant

    def request_close(self, code: int, reason: str) -> None:
        self.handle(self.core.close(code, reason))

    def handle(self, events: list[core_mod.ServerEvent]) -> None:
        for event in events:
            if isinstance(event, SendText):
                self._enqueue(event.text)
            elif isinstance(event, SendBinary):
                self._enqueue(event.data)
            elif isinstance(event, core_mod.CloseConnection):
                self._enqueue(_Close(event.code, event.reason))
            else:
                self._dispatch(event)

    def _enqueue(self, item: str | bytes | _Close) -> None:
        if self.ended:
            return  # the replay buffer holds seq'd frames for a resume
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            log.warning("voice client too slow; disconnecting", user_id=self.user_id)
            self.core.close(CLOSE_POLICY_VIOLATION, "outbox overflow")
            self.ended = True
            self.server._nursery.start_soon(self._abort)

    async def _abort(self) -> None:
        with trio.move_on_after(1.0, shield=True):
            await self.ws.aclose(CLOSE_POLICY_VIOLATION, "outbox overflow")

    # ------------------------------------------------------------------ connection events

    def _dispatch(self, event: core_mod.ServerEvent) -> None:
        server = self.server
        if isinstance(event, core_mod.Identified):
            server.register_session(event.session)
            if server.acking_stopped(int(event.session.user_id)):
                self.core.stop_acking()
        elif isinstance(event, core_mod.SessionResumed):
            participant = server.participant(int(event.session.user_id))
            if participant is not None and not participant.internal:
                participant.sink = self.sink
            if server.acking_stopped(int(event.session.user_id)):
                self.core.stop_acking()
        elif isinstance(event, core_mod.SessionDescribed):
            self._described(event.session)
        elif isinstance(event, core_mod.ClientSpeaking | core_mod.ClientVideo | core_mod.ClientSinkWants):
            participant = self.participant()
            if participant is None:
                return
            if isinstance(event, core_mod.ClientSpeaking):
                server.speaking(participant, event.speaking.speaking)
            elif isinstance(event, core_mod.ClientVideo):
                server.set_video(participant, event.video)
            else:
                participant.wants = event.wants
        elif isinstance(event, core_mod.ClientSessionUpdate):
            participant = self.participant()
            if participant is not None and event.update.codecs is not None:
                participant.codecs = event.update.codecs
        elif isinstance(event, core_mod.ClientDaveBinary | core_mod.ClientDaveJson):
            user_id = self.user_id
            if user_id is None or server.participant(user_id) is None:
                return
            if isinstance(event, core_mod.ClientDaveBinary):
                server.dave_from(user_id, DaveBinary(event.op, event.payload))
            else:
                try:
                    server.dave_from(user_id, DaveJson(event.op, event.payload.serialize()))
                except MalformedMessage as exc:
                    self.request_close(core_mod.CLOSE_DECODE_FAILED, exc.reason)

    def _described(self, session: core_mod.VoiceServerSession) -> None:
        assert session.mode is not None and session.secret_key is not None and session.select is not None
        participant = Participant(
            user_id=int(session.user_id),
            sink=self.sink,
            audio_ssrc=session.audio_ssrc,
            streams=session.streams,
            cipher=TransportCipher(session.mode, session.secret_key),
            codecs=session.select.codecs or (vg.OPUS_CODEC,),
            internal=False,
            address=self.server.udp.discovered.get(session.audio_ssrc),
        )
        self.server.join(participant)


class WsSink:
    """PeerSink of a real client: JSON/DAVE through its connection core, UDP by the server."""

    def __init__(self, connection: MediaConnection) -> None:
        self.connection = connection

    def datagram(self, data: bytes) -> None:
        raise SandboxError("websocket participants receive datagrams on the server's UDP socket")

    def notify(self, payload: vg.Payload) -> None:
        delay = self.connection.server.config.fidelity.speaking_delay
        if isinstance(payload, vg.Speaking) and delay > 0:
            # Fidelity: Discord's op5 may trail the speaker's first packets (media before op5).
            self.connection.server._nursery.start_soon(self._notify_later, payload, delay)
            return
        self._notify(payload)

    async def _notify_later(self, payload: vg.Payload, delay: float) -> None:
        await trio.sleep(delay)
        user_id = self.connection.user_id
        participant = None if user_id is None else self.connection.server.participant(user_id)
        if participant is not None and isinstance(participant.sink, WsSink):
            participant.sink._notify(payload)  # the current connection (it may have resumed since)

    def _notify(self, payload: vg.Payload) -> None:
        core = self.connection.core
        noise = self.connection.server.config.fidelity.control_noise
        if isinstance(payload, vg.Speaking):
            events = core.send_speaking(payload.user_id or "0", payload.ssrc, payload.speaking)
        elif isinstance(payload, vg.ClientsConnect):
            events = core.send_clients_connect(payload.user_ids)
            for user_id in payload.user_ids if noise else ():  # Discord follows op11 with these
                events += core.send_client_flags(user_id, CLIENT_FLAGS)
                events += core.send_client_platform(user_id, CLIENT_PLATFORM)
        elif isinstance(payload, vg.ClientDisconnect):
            events = core.send_client_disconnect(payload.user_id)
        elif isinstance(payload, vg.Video) and noise:
            loose = loose_video(payload)
            events = core.send_message(VoiceOp.VIDEO, loose)
            events += core.send_message(VoiceOp.CLIENT_FLAGS, loose)  # op18 as video state (clankvox)
        elif isinstance(payload, vg.Video):
            events = core.send_video(payload)
        elif isinstance(payload, vg.SessionUpdate):
            events = core.send_session_update(payload)
        else:
            raise SandboxError(f"the server does not notify {type(payload).__name__}")
        self.connection.handle(events)

    def dave(self, frame: DaveFrame) -> None:
        core = self.connection.core
        if isinstance(frame, DaveBinary):
            events = core.send_dave_binary(frame.op, frame.payload)
        elif frame.op == OP_PREPARE_TRANSITION:
            events = core.send_prepare_transition(frame.data["transition_id"], frame.data["protocol_version"])
        elif frame.op == OP_EXECUTE_TRANSITION:
            events = core.send_execute_transition(frame.data["transition_id"])
        elif frame.op == OP_PREPARE_EPOCH:
            d = frame.data
            events = core.send_prepare_epoch(d["protocol_version"], d["epoch"], d.get("transition_id"))
        else:
            raise SandboxError(f"unexpected server DAVE op {frame.op}")
        self.connection.handle(events)

    def close(self, code: int, reason: str) -> None:
        self.connection.request_close(code, reason)
