"""Sans-io client core for the main Discord gateway (user account).

The driver (``clank/io/gateway.py``) owns the socket; this core owns every decision:

    start()                          -> Connect(url, delay, resume)
    connection_made(now)             a websocket is open; wait for Hello
    receive_text/receive_bytes(...)  -> [SendFrame | Dispatch | Ready | Resumed | Close]
    tick(now)                        heartbeats, zombie and handshake deadlines (see next_deadline())
    connection_closed(code, now)     -> Connect | Stop   (the close-code policy, or our own plan)
    connect_failed(reason, now)      -> Connect | Stop   (bounded retries for the first connect)
    abort(reason, now)               -> [Close]          (the driver saw garbage: resume elsewhere)

When the core wants the connection gone (zombie, op7, op9, handshake timeout) it emits
``Close(code)`` and remembers what to do next; ``connection_closed`` then returns that plan
whatever code the socket reports. A close the core did not ask for goes through
``CLOSE_POLICY``. The tables and constants live in :mod:`~clank.protocol.gateway_policy`, the
returned values in :mod:`~clank.protocol.gateway_events`. Time is always an argument;
randomness comes from an injected ``random.Random`` so tests can pin jitter.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from typing import Any

from clank.errors import MalformedMessage, TransportError, UsageError
from clank.protocol.backoff import BackoffPolicy
from clank.protocol.gateway_events import (
    Close,
    Connect,
    CoreStatistics,
    Dispatch,
    Event,
    Ready,
    ReadyInfo,
    Resumed,
    SendFrame,
    Stop,
)
from clank.protocol.gateway_policy import (
    DEFAULT_CAPABILITIES,
    DEFAULT_MAX_INITIAL_ATTEMPTS,
    DEFAULT_PRESENCE,
    DEFAULT_PROPERTIES,
    HANDSHAKE_TIMEOUT,
    INVALID_SESSION_WAIT,
    MAX_HEARTBEAT_INTERVAL_MS,
    PASSIVE_GUILD_UPDATE_V2,
    RESUMABLE_CLOSE_CODE,
    TRANSITIONS,
    CloseAction,
    Phase,
    close_rule,
    gateway_url,
    stop_error,
)
from clank.wire.gateway import GatewayFrame, Op, ZlibStreamInflater


def _frame(op: Op, d: Any) -> SendFrame:
    return SendFrame(op=int(op), text=json.dumps({"op": int(op), "d": d}, separators=(",", ":")))


# --------------------------------------------------------------------------- the core


class GatewayCore:
    """Decisions of one main-gateway client across reconnects (one session at a time)."""

    def __init__(
        self,
        *,
        url: str,
        token: str,
        rng: random.Random,
        properties: Mapping[str, Any] = DEFAULT_PROPERTIES,
        capabilities: int = DEFAULT_CAPABILITIES,
        presence: Mapping[str, Any] | None = DEFAULT_PRESENCE,
        compress: bool = False,
        backoff: BackoffPolicy = BackoffPolicy(),  # noqa: B008 - frozen value, safe as default
        max_initial_attempts: int = DEFAULT_MAX_INITIAL_ATTEMPTS,
        max_attempts: int | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        if not token:
            raise UsageError("gateway token is empty")
        if max_initial_attempts < 1:
            raise UsageError("max_initial_attempts must be >= 1")
        self._base_url = gateway_url(url, compress=compress)  # validates early
        self._token = token
        self._rng = rng
        self._properties = dict(properties)
        self._capabilities = capabilities & ~PASSIVE_GUILD_UPDATE_V2  # see PASSIVE_GUILD_UPDATE_V2
        self._presence = dict(presence) if presence is not None else None
        self._compress = compress
        self._backoff = backoff
        self._max_initial_attempts = max_initial_attempts
        self._max_attempts = max_attempts
        self._handshake_timeout = handshake_timeout

        self._phase = Phase.IDLE
        self._ready: ReadyInfo | None = None  # the current session (None: must Identify)
        self._seq: int | None = None
        self._ever_connected = False
        self._attempt = 0  # consecutive connect attempts that did not reach CONNECTED
        self._plan: Connect | Stop | None = None  # decided when we asked for a close
        self._inflater: ZlibStreamInflater | None = None
        self._replayed = 0

        self._interval: float | None = None
        self._next_beat: float | None = None
        self._handshake_deadline: float | None = None
        self._acked = True
        self._beat_sent_at: float | None = None

        self._connects = 0
        self._identifies = 0
        self._resumes = 0
        self._heartbeats = 0
        self._acks = 0
        self._zombies = 0
        self._dispatches = 0
        self._duplicates = 0
        self._latency: float | None = None

    # ----------------------------------------------------------------- introspection

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def ready_info(self) -> ReadyInfo | None:
        return self._ready

    @property
    def last_seq(self) -> int | None:
        return self._seq

    def statistics(self) -> CoreStatistics:
        return CoreStatistics(
            phase=self._phase,
            connects=self._connects,
            identifies=self._identifies,
            resumes=self._resumes,
            heartbeats_sent=self._heartbeats,
            heartbeat_acks=self._acks,
            zombies=self._zombies,
            dispatches=self._dispatches,
            duplicates_dropped=self._duplicates,
            last_latency=self._latency,
            last_seq=self._seq,
        )

    def next_deadline(self) -> float | None:
        """When ``tick`` must next be called (``None``: nothing scheduled)."""
        candidates = [t for t in (self._next_beat, self._handshake_deadline) if t is not None]
        return min(candidates) if candidates else None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> Connect:
        self._enter(Phase.CONNECTING)
        return Connect(url=self._base_url, delay=0.0, resume=False, attempt=0, reason="start")

    def connection_made(self, now: float) -> None:
        self._require(Phase.CONNECTING)
        self._enter(Phase.AWAITING_HELLO)
        self._connects += 1
        self._plan = None
        self._inflater = ZlibStreamInflater() if self._compress else None
        self._interval = None
        self._next_beat = None
        self._acked = True
        self._beat_sent_at = None
        self._handshake_deadline = now + self._handshake_timeout

    def connect_failed(self, reason: str, now: float) -> Connect | Stop:
        """Opening the socket failed (DNS, TCP, TLS, HTTP upgrade, timeout)."""
        self._require(Phase.CONNECTING)
        plan = self._decide(resume=self._ready is not None, reason=f"connect failed: {reason}")
        return self._commit(plan)

    def connection_closed(self, code: int | None, now: float) -> Connect | Stop:
        """The socket is gone: closed by us after ``Close`` (plan applies) or by the server."""
        if self._phase in (Phase.STOPPED, Phase.IDLE, Phase.CONNECTING):
            raise UsageError(f"connection_closed while {self._phase.value}")
        self._clear_timers()
        if self._phase is Phase.CLOSING and self._plan is not None:
            plan, self._plan = self._plan, None
            return self._commit(plan)
        rule = close_rule(code)
        if rule.action is CloseAction.STOP:
            assert code is not None  # the default rule is never STOP
            return self._commit(Stop(stop_error(code, rule)))
        if rule.action is CloseAction.NEW_SESSION:
            self._forget_session()
        reason = f"server closed ({code}: {rule.meaning})"
        return self._commit(self._decide(resume=self._ready is not None, reason=reason))

    def abort(self, reason: str, now: float) -> list[Event]:
        """The driver could not use a frame (``MalformedMessage``): drop the socket, resume."""
        if self._phase in (Phase.CLOSING, Phase.STOPPED, Phase.CONNECTING):
            return []
        return self._close_then(resume=self._ready is not None, delay_kind="backoff", reason=reason)

    # ----------------------------------------------------------------- input

    def receive_bytes(self, data: bytes, now: float) -> list[Event]:
        """A binary frame: only valid with ``zlib-stream`` transport compression."""
        if self._inflater is None:
            raise MalformedMessage("gateway", "binary frame without zlib-stream compression")
        text = self._inflater.feed(data)
        return [] if text is None else self.receive_text(text, now)

    def receive_text(self, text: str, now: float) -> list[Event]:
        if self._phase in (Phase.CLOSING, Phase.STOPPED):
            return []  # the socket is on its way out; nothing it says matters now
        if self._phase in (Phase.IDLE, Phase.CONNECTING):
            raise UsageError("receive_text before connection_made")
        frame = GatewayFrame.parse(text)
        if frame.s is not None:
            if self._seq is not None and frame.op == Op.DISPATCH and frame.s <= self._seq:
                self._duplicates += 1  # a replay of something we already delivered
                return []
            self._seq = frame.s
        handler = self._HANDLERS.get(frame.op)
        if handler is None:
            return []  # unknown opcodes from Discord are tolerated
        return handler(self, frame, now)

    def tick(self, now: float) -> list[Event]:
        if self._phase in (Phase.CLOSING, Phase.STOPPED, Phase.CONNECTING, Phase.IDLE):
            return []
        if self._handshake_deadline is not None and now >= self._handshake_deadline:
            waiting_for = "Hello" if self._phase is Phase.AWAITING_HELLO else "READY/RESUMED"
            return self._close_then(
                resume=self._ready is not None, delay_kind="backoff", reason=f"no {waiting_for} in time"
            )
        if self._next_beat is not None and self._interval is not None and now >= self._next_beat:
            if not self._acked:
                self._zombies += 1
                return self._close_then(
                    resume=self._ready is not None,
                    delay_kind="backoff",
                    reason="heartbeat not acked (zombie)",
                )
            self._next_beat = now + self._interval
            return [self._heartbeat(now)]
        return []

    # ----------------------------------------------------------------- senders

    def voice_state_update(
        self,
        guild_id: str | None,
        channel_id: str | None,
        *,
        self_mute: bool = False,
        self_deaf: bool = False,
        self_video: bool = False,
    ) -> SendFrame:
        """op4: join (``channel_id`` set), move, or leave (``channel_id=None``)."""
        return _frame(
            Op.VOICE_STATE_UPDATE,
            {
                "guild_id": _snowflake(guild_id),
                "channel_id": _snowflake(channel_id),
                "self_mute": self_mute,
                "self_deaf": self_deaf,
                "self_video": self_video,
            },
        )

    def stream_create(
        self, guild_id: str | None, channel_id: str, *, preferred_region: str | None = None
    ) -> SendFrame:
        """op18: start our own Go Live (``guild_id=None``: a DM call)."""
        return _frame(
            Op.STREAM_CREATE,
            {
                "type": "guild" if guild_id is not None else "call",
                "guild_id": _snowflake(guild_id),
                "channel_id": _snowflake(channel_id),
                "preferred_region": preferred_region,
            },
        )

    def stream_delete(self, stream_key: str) -> SendFrame:
        return _frame(Op.STREAM_DELETE, {"stream_key": _key(stream_key)})

    def stream_watch(self, stream_key: str) -> SendFrame:
        return _frame(Op.STREAM_WATCH, {"stream_key": _key(stream_key)})

    def stream_ping(self, stream_key: str) -> SendFrame:
        return _frame(Op.STREAM_PING, {"stream_key": _key(stream_key)})

    def stream_set_paused(self, stream_key: str, paused: bool) -> SendFrame:
        return _frame(Op.STREAM_SET_PAUSED, {"stream_key": _key(stream_key), "paused": paused})

    # ----------------------------------------------------------------- opcode handlers

    def _on_hello(self, frame: GatewayFrame, now: float) -> list[Event]:
        if self._phase is not Phase.AWAITING_HELLO:
            return []  # a second Hello changes nothing
        d = frame.d
        interval_ms = d.get("heartbeat_interval") if isinstance(d, Mapping) else None
        if (
            not isinstance(interval_ms, int | float)
            or isinstance(interval_ms, bool)
            or not 0 < interval_ms <= MAX_HEARTBEAT_INTERVAL_MS
        ):
            raise MalformedMessage("gateway Hello", "missing or invalid heartbeat_interval")
        self._interval = interval_ms / 1000.0
        # The first beat is jittered so a fleet reconnecting together does not beat together.
        self._next_beat = now + self._interval * self._rng.random()
        self._acked = True
        self._handshake_deadline = now + self._handshake_timeout
        if self._ready is not None:
            self._enter(Phase.RESUMING)
            self._resumes += 1
            self._replayed = 0
            return [
                _frame(
                    Op.RESUME,
                    {"token": self._token, "session_id": self._ready.session_id, "seq": self._seq},
                )
            ]
        self._enter(Phase.IDENTIFYING)
        self._identifies += 1
        self._seq = None
        identify: dict[str, Any] = {
            "token": self._token,
            "capabilities": self._capabilities,
            "properties": self._properties,
            "compress": False,  # per-payload compression; zlib-stream is negotiated in the URL
            "client_state": {"guild_versions": {}},
        }
        if self._presence is not None:
            identify["presence"] = self._presence
        return [_frame(Op.IDENTIFY, identify)]

    def _on_dispatch(self, frame: GatewayFrame, now: float) -> list[Event]:
        assert frame.t is not None  # GatewayFrame.parse guarantees it for op 0
        self._dispatches += 1
        events: list[Event] = []
        if frame.t == "READY":
            info = ReadyInfo.parse(frame.d)
            self._ready = info
            self._connected()
            events.append(Ready(info))
        elif frame.t == "RESUMED":
            if self._phase is Phase.RESUMING:
                self._connected()
                events.append(Resumed(self._replayed))
        elif self._phase is Phase.RESUMING:
            self._replayed += 1
        events.append(Dispatch(frame.t, frame.d, frame.s))
        return events

    def _on_heartbeat_request(self, frame: GatewayFrame, now: float) -> list[Event]:
        return [self._heartbeat(now)]

    def _on_heartbeat_ack(self, frame: GatewayFrame, now: float) -> list[Event]:
        self._acks += 1
        self._acked = True
        if self._beat_sent_at is not None:
            self._latency = now - self._beat_sent_at
            self._beat_sent_at = None
        return []

    def _on_reconnect(self, frame: GatewayFrame, now: float) -> list[Event]:
        return self._close_then(resume=self._ready is not None, delay_kind="now", reason="server asked (op7)")

    def _on_invalid_session(self, frame: GatewayFrame, now: float) -> list[Event]:
        resumable = frame.d is True
        if not resumable:
            self._forget_session()
        reason = "invalid session (op9, resumable)" if resumable else "invalid session (op9)"
        return self._close_then(
            resume=resumable and self._ready is not None, delay_kind="invalid", reason=reason
        )

    _HANDLERS: Mapping[int, Callable[[GatewayCore, GatewayFrame, float], list[Event]]] = {
        Op.DISPATCH: _on_dispatch,
        Op.HEARTBEAT: _on_heartbeat_request,
        Op.HEARTBEAT_ACK: _on_heartbeat_ack,
        Op.RECONNECT: _on_reconnect,
        Op.INVALID_SESSION: _on_invalid_session,
        Op.HELLO: _on_hello,
    }

    # ----------------------------------------------------------------- internals

    def _heartbeat(self, now: float) -> SendFrame:
        self._heartbeats += 1
        self._acked = False
        self._beat_sent_at = now
        return _frame(Op.HEARTBEAT, self._seq)

    def _connected(self) -> None:
        if self._phase is not Phase.CONNECTED:
            self._enter(Phase.CONNECTED)
        self._handshake_deadline = None
        self._attempt = 0
        self._ever_connected = True

    def _forget_session(self) -> None:
        self._ready = None
        self._seq = None

    def _clear_timers(self) -> None:
        self._next_beat = None
        self._handshake_deadline = None
        self._interval = None

    def _close_then(self, *, resume: bool, delay_kind: str, reason: str) -> list[Event]:
        """Ask the driver to close (resumable code) and remember where to go next."""
        self._plan = self._decide(resume=resume, reason=reason, delay_kind=delay_kind)
        self._enter(Phase.CLOSING)
        self._clear_timers()
        return [Close(RESUMABLE_CLOSE_CODE, reason)]

    def _decide(self, *, resume: bool, reason: str, delay_kind: str = "backoff") -> Connect | Stop:
        """The next connection attempt (or giving up); pure apart from the attempt counter."""
        self._attempt += 1
        limit = self._max_attempts if self._ever_connected else self._max_initial_attempts
        # ``_attempt`` failures so far == connect attempts made; stop once the limit is used up.
        if delay_kind == "backoff" and limit is not None and self._attempt >= limit:
            url = self._base_url
            return Stop(TransportError(f"gateway {url} unreachable after {limit} attempts ({reason})"))
        if delay_kind == "now":
            delay = 0.0
        elif delay_kind == "invalid":
            delay = self._rng.uniform(*INVALID_SESSION_WAIT)
        else:
            delay = self._backoff.delay(self._attempt, self._rng)
        if resume and self._ready is not None:
            url = gateway_url(self._ready.resume_gateway_url, compress=self._compress)
        else:
            resume = False
            url = self._base_url
        return Connect(url=url, delay=delay, resume=resume, attempt=self._attempt, reason=reason)

    def _commit(self, plan: Connect | Stop) -> Connect | Stop:
        if isinstance(plan, Stop):
            self._enter(Phase.STOPPED)
            self._clear_timers()
            self._plan = None
        else:
            self._enter(Phase.CONNECTING)
        return plan

    def _require(self, phase: Phase) -> None:
        if self._phase is not phase:
            raise UsageError(f"gateway core is {self._phase.value}, expected {phase.value}")

    def _enter(self, phase: Phase) -> None:
        if phase not in TRANSITIONS[self._phase]:
            raise UsageError(f"gateway core cannot go from {self._phase.value} to {phase.value}")
        self._phase = phase


def _snowflake(value: str | int | None) -> str | None:
    return None if value is None else str(value)


def _key(stream_key: str) -> str:
    if not isinstance(stream_key, str) or not stream_key:
        raise UsageError(f"stream key must be a non-empty string, got {stream_key!r}")
    return stream_key
