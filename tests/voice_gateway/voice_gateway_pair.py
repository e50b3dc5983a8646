"""In-memory pairing of the voice gateway client core and the sandbox server core (no sockets)."""

from __future__ import annotations

import collections
import itertools
import json
from typing import Any

from clank.protocol import voice_gateway as client
from clank.sandbox import voice_gateway_core as server
from clank.wire import voice_gateway as vg

SERVER_ID = "111"
CHANNEL_ID = "222"
USER_ID = "333"
SESSION_ID = "sess-333"
TOKEN = "tok-voice-333"
KEY = bytes(range(32))
DISCOVERED = ("203.0.113.5", 50123)


def client_config(**overrides: Any) -> client.VoiceGatewayConfig:
    fields: dict[str, Any] = {
        "role": "stream_watch",
        "server_id": SERVER_ID,
        "channel_id": CHANNEL_ID,
        "user_id": USER_ID,
        "session_id": SESSION_ID,
        "token": TOKEN,
    }
    fields.update(overrides)
    return client.VoiceGatewayConfig(**fields)


def validate_identify(identify: vg.Identify) -> int | None:
    if identify.token != TOKEN:
        return 4004
    if identify.session_id != SESSION_ID or identify.server_id != SERVER_ID:
        return 4006
    return None


class Pair:
    """Client core <-> server core, delivering frames synchronously in order.

    ``client_events`` collects everything the client core reported except frames it sent;
    ``server_events`` the same for the server core; ``sent_ops`` the ops the client sent.
    """

    def __init__(
        self,
        client_cfg: client.VoiceGatewayConfig | None = None,
        server_cfg: server.VoiceServerConfig | None = None,
    ) -> None:
        self.now = 100.0
        self.client = client.VoiceGatewayCore(client_cfg or client_config())
        self.server_cfg = server_cfg or server.VoiceServerConfig(port=7004)
        self.sessions: dict[str, server.VoiceServerSession] = {}
        self._ssrcs = itertools.count(20)
        self.server = self._new_server()
        self.client_events: list[client.Event] = []
        self.server_events: list[server.ServerEvent] = []
        self.sent_ops: list[int] = []
        self.sent_texts: list[dict[str, Any]] = []
        self.server_texts: list[dict[str, Any]] = []

    def _new_server(self) -> server.VoiceServerConnectionCore:
        return server.VoiceServerConnectionCore(
            self.server_cfg,
            validate_identify=validate_identify,
            find_session=self._find_session,
            allocate_ssrc=lambda: next(self._ssrcs),
            new_key=lambda: KEY,
            new_media_session_id=lambda: "89f1d62f",
        )

    def _find_session(self, resume: vg.Resume) -> server.VoiceServerSession | None:
        session = self.sessions.get(resume.session_id)
        if session is None or session.identify.token != resume.token:
            return None
        return session

    # -------------------------------------------------------------- pumping

    def to_client(self, events: list[server.ServerEvent]) -> None:
        self._pump(collections.deque(("c", e) for e in events))

    def to_server(self, events: list[client.Event]) -> None:
        self._pump(collections.deque(("s", e) for e in events))

    def _pump(self, queue: collections.deque[tuple[str, Any]]) -> None:
        while queue:
            direction, event = queue.popleft()
            if direction == "c":  # a server event: deliver frames to the client
                queue.extend(("s", e) for e in self._server_event(event))
            else:
                queue.extend(("c", e) for e in self._client_event(event))

    def _server_event(self, event: server.ServerEvent) -> list[client.Event]:
        if isinstance(event, server.SendText):
            self.server_texts.append(json.loads(event.text))
            return self.client.receive_text(event.text, self.now)
        if isinstance(event, server.SendBinary):
            return self.client.receive_binary(event.data, self.now)
        self.server_events.append(event)
        if isinstance(event, server.Identified):
            self.sessions[event.session.identify.session_id] = event.session
        if isinstance(event, server.CloseConnection):
            return self.client.connection_lost(event.code, event.reason, self.now)
        return []

    def _client_event(self, event: client.Event) -> list[server.ServerEvent]:
        if isinstance(event, client.SendText):
            self.sent_ops.append(event.op)
            self.sent_texts.append(json.loads(event.text))
            return self.server.receive_text(event.text, self.now)
        if isinstance(event, client.SendBinary):
            self.sent_ops.append(event.op)
            return self.server.receive_binary(event.data, self.now)
        self.client_events.append(event)
        if isinstance(event, client.Failed):
            self.server.connection_lost()
        return []

    # -------------------------------------------------------------- steps

    def open(self) -> None:
        self.to_server(self.client.connection_opened(self.now))
        self.to_client(self.server.connection_opened(self.now))

    def discover(self) -> None:
        self.to_server(self.client.ip_discovered(*DISCOVERED, now=self.now))

    def connect(self) -> None:
        self.open()
        self.discover()

    def drop(self, code: int | None = 1006) -> None:
        """The websocket breaks under both ends."""
        self.server.connection_lost()
        self.to_server(self.client.connection_lost(code, "dropped", self.now))

    def reconnect(self) -> None:
        self.server = self._new_server()
        self.open()

    def advance(self, seconds: float) -> None:
        """Move the clock, ticking both cores at each of their deadlines on the way."""
        end = self.now + seconds
        for _ in range(100_000):
            deadlines = [
                d for d in (self.client.next_deadline(), self.server.next_deadline()) if d is not None
            ]
            due = min(deadlines, default=None)
            if due is None or due > end:
                break
            self.now = max(self.now, due)
            self.to_server(self.client.tick(self.now))
            self.to_client(self.server.tick(self.now))
        self.now = end

    def of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.client_events if isinstance(e, kind)]

    def server_of(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.server_events if isinstance(e, kind)]
