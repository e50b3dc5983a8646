"""The sandbox main gateway: websocket sessions speaking Discord's gateway protocol (§2, §8.1).

One :class:`GatewayConnection` per websocket, with two tasks: the *reader* parses frames and
applies them (identify, resume, heartbeats, voice/stream ops -> world actions) and watches the
heartbeat deadline; the *writer* is the only task that sends, draining control frames
(op1/op7/op9/op10/op11, close) first and then dispatches from the attached session's replay
buffer. Policies (what each opcode needs, what each close code does to the session) are
tables below that the tests iterate over.
"""

from __future__ import annotations

import collections
from typing import Any

import attrs
import trio
from starlette.websockets import WebSocket

from clank.errors import MalformedMessage, SandboxError
from clank.logging import bound, get_logger
from clank.sandbox.hub import DispatchHub, GatewaySession, ReplayGap
from clank.sandbox.ids import IdFactory
from clank.sandbox.model import User
from clank.sandbox.payloads import me_json, user_json, voice_state_json
from clank.sandbox.stream_moves import health_check
from clank.sandbox.world import World
from clank.wire.gateway import GatewayFrame, Op, ZlibStreamDeflater

log = get_logger("clank.sandbox.gateway")

SUPPORTED_VERSIONS = frozenset({"9", "10"})
PRIORITIZED_READY_PAYLOAD = 1 << 5
# Heartbeats may be this late (relative to the interval) before the session is timed out.
HEARTBEAT_GRACE = 1.5
# Control frames a connection may have queued (ACKs for a client that sends but never reads).
CONTROL_BUFFER_SIZE = 64
CLOSE_TIMEOUT = 2.0


@attrs.frozen
class CloseCode:
    code: int
    name: str
    keeps_session: bool  # may the client resume afterwards?


# Server-sent close codes (discord-protocol.md §2.4).
CLOSE_CODES: dict[str, CloseCode] = {
    c.name: c
    for c in (
        CloseCode(4000, "unknown_error", True),
        CloseCode(4001, "unknown_opcode", True),
        CloseCode(4002, "decode_error", True),
        CloseCode(4003, "not_authenticated", False),
        CloseCode(4004, "authentication_failed", False),
        CloseCode(4005, "already_authenticated", True),
        CloseCode(4007, "invalid_seq", False),
        CloseCode(4008, "rate_limited", True),
        CloseCode(4009, "session_timed_out", False),
        CloseCode(4012, "invalid_api_version", False),
        CloseCode(1001, "going_away", True),
    )
}
# Client-sent codes that end the session (Discord: 1000/1001 mark the user offline).
CLIENT_CLOSES_ENDING_SESSION = frozenset({1000, 1001})


def close_code(name: str) -> int:
    return CLOSE_CODES[name].code


def keeps_session(code: int) -> bool:
    for entry in CLOSE_CODES.values():
        if entry.code == code:
            return entry.keeps_session
    return True  # codes a fault control picks freely (e.g. 4000-like) keep the session


@attrs.frozen
class OpRule:
    needs_session: bool
    handler: str  # name of the GatewayConnection method


# What the server accepts from a client. Anything else closes with 4001; ops needing a session
# before identify/resume close with 4003. Ops a real client sends that the sandbox has no use
# for are accepted and ignored.
OP_RULES: dict[int, OpRule] = {
    Op.HEARTBEAT: OpRule(False, "_on_heartbeat"),
    Op.IDENTIFY: OpRule(False, "_on_identify"),
    Op.RESUME: OpRule(False, "_on_resume"),
    Op.PRESENCE_UPDATE: OpRule(True, "_ignore"),
    Op.VOICE_STATE_UPDATE: OpRule(True, "_on_voice_state_update"),
    Op.VOICE_SERVER_PING: OpRule(True, "_ignore"),
    Op.REQUEST_GUILD_MEMBERS: OpRule(True, "_on_request_guild_members"),
    Op.CALL_CONNECT: OpRule(True, "_ignore"),
    14: OpRule(True, "_ignore"),  # lazy guild subscriptions (user clients)
    Op.STREAM_CREATE: OpRule(True, "_on_stream_create"),
    Op.STREAM_DELETE: OpRule(True, "_on_stream_delete"),
    Op.STREAM_WATCH: OpRule(True, "_on_stream_watch"),
    Op.STREAM_PING: OpRule(True, "_on_stream_ping"),
    Op.STREAM_SET_PAUSED: OpRule(True, "_on_stream_set_paused"),
}


@attrs.frozen
class _Close:
    code: int
    reason: str


class GatewayServer:
    """Accepts gateway websockets for one world. ``public_url`` is set once the port is known."""

    def __init__(self, world: World, hub: DispatchHub, ids: IdFactory, heartbeat_interval_ms: int) -> None:
        self.world = world
        self.hub = hub
        self.ids = ids
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.public_url = "ws://127.0.0.1/"
        self._shutdown = trio.Event()
        self._connection_ids = 0

    def shutdown(self) -> None:
        """Close every connection (1001) so the HTTP server can stop promptly."""
        self._shutdown.set()

    async def handle(self, websocket: WebSocket) -> None:
        """ASGI websocket endpoint."""
        self._connection_ids += 1
        connection = GatewayConnection(self, websocket, self._connection_ids)
        with bound(gateway_conn=self._connection_ids):
            await connection.run()

    async def wait_shutdown(self) -> None:
        await self._shutdown.wait()


class GatewayConnection:
    def __init__(self, server: GatewayServer, websocket: WebSocket, conn_id: int) -> None:
        self._server = server
        self._world = server.world
        self._hub = server.hub
        self._ws = websocket
        self.conn_id = conn_id
        self.session: GatewaySession | None = None
        self._control: collections.deque[GatewayFrame | _Close] = collections.deque()
        self._wake = trio.Event()
        self._sent_seq = 0
        self._closing = False
        self._close_code: int | None = None
        self._deflater: ZlibStreamDeflater | None = None
        self._interval = server.heartbeat_interval_ms / 1000
        self._heartbeat_deadline = 0.0
        self._version = "9"

    def __repr__(self) -> str:
        return f"<GatewayConnection {self.conn_id} session={self.session!r}>"

    # --- ConnectionSink -------------------------------------------------------------------
    def poke(self) -> None:
        self._wake.set()

    def send_control(self, frame: GatewayFrame) -> None:
        if self._closing:
            return
        if len(self._control) >= CONTROL_BUFFER_SIZE:
            self.request_close(close_code("rate_limited"), "control buffer full")
            return
        self._control.append(frame)
        self.poke()

    def request_close(self, code: int, reason: str = "") -> None:
        if self._closing:
            return
        self._closing = True
        self._close_code = code
        self._control.append(_Close(code, reason))
        self.poke()

    def invalidate_session(self, resumable: bool) -> None:
        self.send_control(GatewayFrame(op=Op.INVALID_SESSION, d=resumable))
        session = self.session
        if not resumable and session is not None:
            self._hub.forget(session.session_id)
            session.connection = None
            self.session = None

    # --- lifetime -------------------------------------------------------------------------
    async def run(self) -> None:
        params = self._ws.query_params
        await self._ws.accept()
        if params.get("compress") == "zlib-stream":
            self._deflater = ZlibStreamDeflater()
        self._version = params.get("v", "9")
        log.info("gateway connected", version=self._version, compressed=self._deflater is not None)
        if self._version not in SUPPORTED_VERSIONS or params.get("encoding", "json") != "json":
            self.request_close(close_code("invalid_api_version"), "invalid API version or encoding")
        else:
            self.send_control(
                GatewayFrame(op=Op.HELLO, d={"heartbeat_interval": self._server.heartbeat_interval_ms})
            )
            self._heartbeat_deadline = trio.current_time() + self._interval * HEARTBEAT_GRACE
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, nursery.cancel_scope)
                nursery.start_soon(self._reader, nursery.cancel_scope)
                nursery.start_soon(self._watch_shutdown)
        finally:
            self._detach()

    def _detach(self) -> None:
        session = self.session
        if session is None:
            return
        if session.connection is self:
            session.connection = None
        code = self._close_code
        if code is not None and (not keeps_session(code) or code in CLIENT_CLOSES_ENDING_SESSION):
            self._hub.forget(session.session_id)
        log.info("gateway disconnected", session_id=session.session_id, close_code=self._close_code)
        self.session = None

    async def _watch_shutdown(self) -> None:
        await self._server.wait_shutdown()
        self.request_close(close_code("going_away"), "sandbox shutting down")

    async def _wait_wake(self) -> None:
        await self._wake.wait()
        self._wake = trio.Event()

    async def _send(self, text: str) -> None:
        if self._deflater is not None:
            await self._ws.send_bytes(self._deflater.compress(text))
        else:
            await self._ws.send_text(text)

    async def _writer(self, scope: trio.CancelScope) -> None:
        while True:
            while self._control:
                item = self._control.popleft()
                if isinstance(item, _Close):
                    with trio.move_on_after(CLOSE_TIMEOUT, shield=True):
                        await self._ws.close(item.code, item.reason)
                    log.info("gateway closing", close_code=item.code, reason=item.reason)
                    scope.cancel()
                    return
                await self._send(item.serialize())
            session = self.session
            if session is not None and not self._closing:
                try:
                    entry = session.next_after(self._sent_seq)
                except ReplayGap:
                    self.request_close(close_code("unknown_error"), "client fell behind the replay buffer")
                    self._hub.forget(session.session_id)
                    continue
                if entry is not None:
                    if entry.release_at <= trio.current_time():
                        await self._send(entry.text)
                        self._sent_seq = entry.seq
                        continue
                    with trio.move_on_at(entry.release_at):
                        await self._wait_wake()
                    continue
            await self._wait_wake()

    async def _reader(self, scope: trio.CancelScope) -> None:
        while not self._closing:
            with trio.move_on_at(self._heartbeat_deadline) as timer:
                message = await self._ws.receive()
            if timer.cancelled_caught:
                log.info("heartbeat timeout")
                self.request_close(close_code("session_timed_out"), "heartbeat timeout")
                return
            if message["type"] == "websocket.disconnect":
                self._close_code = message.get("code")
                self._closing = True
                scope.cancel()
                return
            raw = message.get("text")
            if raw is None:
                raw = message.get("bytes") or b""
            try:
                frame = GatewayFrame.parse(raw)
                await self._apply(frame)
            except MalformedMessage as exc:
                log.info("bad client frame", reason=exc.reason)
                self.request_close(exc.close_code or close_code("decode_error"), exc.reason)

    async def _apply(self, frame: GatewayFrame) -> None:
        rule = OP_RULES.get(frame.op)
        if rule is None:
            self.request_close(close_code("unknown_opcode"), f"unknown opcode {frame.op}")
            return
        if rule.needs_session and self.session is None:
            self.request_close(close_code("not_authenticated"), "not authenticated")
            return
        await getattr(self, rule.handler)(frame.d)

    # --- op handlers ----------------------------------------------------------------------
    async def _ignore(self, data: Any) -> None:
        return None

    async def _on_heartbeat(self, data: Any) -> None:
        self._heartbeat_deadline = trio.current_time() + self._interval * HEARTBEAT_GRACE
        session = self.session
        if session is None or self._hub.acks(session.user.id):
            self.send_control(GatewayFrame(op=Op.HEARTBEAT_ACK))

    def _require_object(self, data: Any, what: str) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise MalformedMessage("gateway", f"{what} payload is not an object", close_code=4002)
        return data

    async def _on_identify(self, data: Any) -> None:
        if self.session is not None:
            self.request_close(close_code("already_authenticated"), "already authenticated")
            return
        payload = self._require_object(data, "identify")
        user = self._world.user_by_token(payload.get("token"))
        if user is None:
            self.request_close(close_code("authentication_failed"), "authentication failed")
            return
        capabilities = payload.get("capabilities", 0)
        if not isinstance(capabilities, int):
            capabilities = 0
        session = GatewaySession(self._server.ids.hex_id(), user, capabilities)
        self._hub.add(session)
        self._attach(session, 0)
        with bound(session_id=session.session_id, user_id=user.id):
            log.info("identified", user=user.name, bot=user.is_bot)
        self._send_ready(session, payload.get("shard"))

    def _attach(self, session: GatewaySession, sent_seq: int) -> None:
        previous = session.connection
        if previous is not None and previous is not self:
            previous.request_close(close_code("unknown_error"), "session resumed elsewhere")
        session.connection = self
        self.session = session
        self._sent_seq = sent_seq
        self.poke()

    def _send_ready(self, session: GatewaySession, shard: Any) -> None:
        user = session.user
        guilds = self._world.guilds_of(user.id)
        ready: dict[str, Any] = {
            "v": int(self._version),
            "user": me_json(user),
            "session_id": session.session_id,
            "resume_gateway_url": self._server.public_url,
            "session_type": "normal",
            # A user session gets its guilds inline (members, channels, voice states) and no
            # GUILD_CREATE per guild, as Discord does for user accounts; bots get stubs + GUILD_CREATE.
            "guilds": (
                [{"id": g.id, "unavailable": True} for g in guilds]
                if user.is_bot
                else [self._world.guild_create(g.id) for g in guilds]
            ),
            "users": [] if user.is_bot else self._ready_users(user, guilds),
            "sessions": [],
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "geo_ordered_rtc_regions": ["local"],
        }
        if user.is_bot:
            ready["application"] = {"id": user.id, "flags": 0}
        if isinstance(shard, list) and len(shard) == 2:
            ready["shard"] = shard
        only_me = {"session_ids": [session.session_id]}
        self._hub.dispatch("READY", ready, **only_me)
        if session.capabilities & PRIORITIZED_READY_PAYLOAD:
            supplemental = {
                "guilds": [
                    {
                        "id": g.id,
                        "voice_states": [
                            voice_state_json(s, with_guild=False) for s in self._world.voice_states(g.id)
                        ],
                        "embedded_activities": [],
                    }
                    for g in guilds
                ],
                "merged_members": [[] for _ in guilds],
                "merged_presences": {"guilds": [[] for _ in guilds], "friends": []},
                "lazy_private_channels": [],
                "disclose": [],
            }
            self._hub.dispatch("READY_SUPPLEMENTAL", supplemental, **only_me)
        if user.is_bot:
            for guild in guilds:
                self._hub.dispatch("GUILD_CREATE", self._world.guild_create(guild.id), **only_me)

    def _ready_users(self, me: Any, guilds: Any) -> list[dict[str, Any]]:
        """READY ``users``: every other member of our guilds, once (user READY dedupes user objects)."""
        seen: dict[str, dict[str, Any]] = {}
        for guild in guilds:
            for member_id in guild.member_ids:
                if member_id != me.id and member_id not in seen:
                    seen[member_id] = user_json(self._world.user(member_id))
        return list(seen.values())

    async def _on_resume(self, data: Any) -> None:
        if self.session is not None:
            self.request_close(close_code("already_authenticated"), "already authenticated")
            return
        payload = self._require_object(data, "resume")
        session = self._hub.get(payload.get("session_id"))
        seq = payload.get("seq")
        user = self._world.user_by_token(payload.get("token"))
        if user is None:
            self.request_close(close_code("authentication_failed"), "authentication failed")
            return
        if (
            session is None
            or session.user.id != user.id
            or not isinstance(seq, int)
            or not session.can_resume_from(seq)
        ):
            log.info("resume refused", user_id=user.id)
            self.send_control(GatewayFrame(op=Op.INVALID_SESSION, d=False))
            return
        self._attach(session, seq)
        with bound(session_id=session.session_id, user_id=user.id):
            log.info("resumed", replayed=session.seq - seq)
        self._hub.dispatch("RESUMED", {}, session_ids=[session.session_id])

    def _user(self) -> tuple[User, str]:
        assert self.session is not None  # guaranteed by OP_RULES.needs_session
        return self.session.user, self.session.session_id

    async def _on_voice_state_update(self, data: Any) -> None:
        payload = self._require_object(data, "voice state update")
        user, sid = self._user()
        channel_id = payload.get("channel_id")
        try:
            if channel_id is None:
                await self._world.leave_voice(user.id, via_session=sid)
            else:
                channel = self._world.channel(str(channel_id))
                if channel is None or str(payload.get("guild_id")) != channel.guild_id:
                    log.info("op4 for unknown channel ignored", channel_id=channel_id)
                    return
                await self._world.join_voice(
                    user.id,
                    channel.id,
                    self_mute=bool(payload.get("self_mute", False)),
                    self_deaf=bool(payload.get("self_deaf", False)),
                    self_video=bool(payload.get("self_video", False)),
                    via_session=sid,
                )
        except SandboxError as exc:
            log.info("op4 ignored", reason=str(exc))

    async def _on_request_guild_members(self, data: Any) -> None:
        payload = self._require_object(data, "request guild members")
        user, sid = self._user()
        requested = payload.get("guild_id")
        guild_ids = requested if isinstance(requested, list) else [requested]
        for guild in self._world.guilds_of(user.id):
            if guild.id in guild_ids:
                members = self._world.guild_create(guild.id)["members"]
                chunk = {
                    "guild_id": guild.id,
                    "members": members,
                    "chunk_index": 0,
                    "chunk_count": 1,
                    "not_found": [],
                    "nonce": payload.get("nonce"),
                }
                self._hub.dispatch("GUILD_MEMBERS_CHUNK", chunk, session_ids=[sid])

    async def _on_stream_create(self, data: Any) -> None:
        payload = self._require_object(data, "stream create")
        user, sid = self._user()
        await self._world.request_stream(
            user.id, payload.get("guild_id"), payload.get("channel_id"), via_session=sid
        )

    async def _on_stream_delete(self, data: Any) -> None:
        payload = self._require_object(data, "stream delete")
        user, sid = self._user()
        await self._world.delete_stream(user.id, payload.get("stream_key"), via_session=sid)

    async def _on_stream_watch(self, data: Any) -> None:
        payload = self._require_object(data, "stream watch")
        user, sid = self._user()
        await self._world.watch_stream(user.id, payload.get("stream_key"), via_session=sid)

    async def _on_stream_ping(self, data: Any) -> None:
        """op21: a health check of the stream server; it may be reallocated (fresh credentials)."""
        payload = self._require_object(data, "stream ping")
        user, sid = self._user()
        await health_check(self._world, user.id, payload.get("stream_key"), via_session=sid)

    async def _on_stream_set_paused(self, data: Any) -> None:
        payload = self._require_object(data, "stream set paused")
        user, _ = self._user()
        await self._world.set_stream_paused(user.id, payload.get("stream_key"), bool(payload.get("paused")))
