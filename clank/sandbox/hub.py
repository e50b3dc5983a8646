"""Fan-out of world events to gateway sessions, with replay buffers for resume.

A :class:`GatewaySession` is the *logical* session (it outlives websocket connections, so a
client can resume). Every dispatch gets the session's next ``s`` and is appended to its
bounded replay buffer; the connection currently attached (if any) is poked and its writer
task sends from the buffer at its own pace. The world therefore never waits for a client:
a slow client only falls behind, and one that falls further behind than the buffer holds
is disconnected (its session can no longer be resumed).

Fault rules (drop the next N dispatches of an event, delay an event) are applied here, once
per world event, before the fan-out.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Any, Protocol

import attrs
import trio

from clank.sandbox.model import User
from clank.wire.gateway import GatewayFrame

# How many dispatches a session keeps for resume and for a slow reader (per session).
REPLAY_BUFFER_SIZE = 2048
# Detached (resumable) sessions kept per user; the oldest is forgotten beyond this.
MAX_DETACHED_SESSIONS_PER_USER = 8


class ReplayGap(Exception):
    """A connection asked for dispatches that already left the replay buffer (internal signal)."""


class ConnectionSink(Protocol):
    """What the hub needs from a live gateway connection."""

    def poke(self) -> None:
        """New dispatches are buffered in the attached session."""

    def send_control(self, frame: GatewayFrame) -> None:
        """Queue a non-dispatch frame (op1/op7/op9/op11)."""

    def request_close(self, code: int, reason: str = "") -> None:
        """Close the websocket with ``code`` after the frames already queued."""

    def invalidate_session(self, resumable: bool) -> None:
        """Send op9; unless ``resumable``, forget the session and wait for a new identify."""


@attrs.frozen
class Outgoing:
    seq: int
    event: str
    release_at: float  # trio time; a delayed dispatch holds back everything after it, like a stall
    text: str


class GatewaySession:
    """A resumable gateway session of one user."""

    def __init__(self, session_id: str, user: User, capabilities: int) -> None:
        self.session_id = session_id
        self.user = user
        self.capabilities = capabilities
        self.connection: ConnectionSink | None = None
        self._seq = 0
        self._buffer: collections.deque[Outgoing] = collections.deque(maxlen=REPLAY_BUFFER_SIZE)

    def __repr__(self) -> str:
        return f"<GatewaySession {self.session_id} user={self.user.id} seq={self._seq}>"

    @property
    def seq(self) -> int:
        return self._seq

    def push(self, event: str, data: Any, release_at: float) -> int:
        self._seq += 1
        text = GatewayFrame.dispatch(event, data, self._seq).serialize()
        self._buffer.append(Outgoing(self._seq, event, release_at, text))
        if self.connection is not None:
            self.connection.poke()
        return self._seq

    def can_resume_from(self, seq: int) -> bool:
        """True if every dispatch after ``seq`` is still buffered."""
        if seq < 0 or seq > self._seq:
            return False
        if seq == self._seq:
            return True
        return bool(self._buffer) and self._buffer[0].seq <= seq + 1

    def next_after(self, seq: int) -> Outgoing | None:
        """The dispatch following ``seq``; ``None`` if caught up; :class:`ReplayGap` if it was evicted."""
        if seq >= self._seq:
            return None
        if not self._buffer or self._buffer[0].seq > seq + 1:
            raise ReplayGap(f"session {self.session_id}: seq {seq + 1} evicted")
        return self._buffer[seq + 1 - self._buffer[0].seq]


@attrs.frozen
class HubStatistics:
    sessions: int
    connected: int
    dispatched: int
    dropped: int


class DispatchHub:
    """All gateway sessions of a sandbox, and the fault rules applied to dispatches."""

    def __init__(self) -> None:
        self._sessions: dict[str, GatewaySession] = {}
        self._drop: dict[str, int] = {}
        self._delay: dict[str, float] = {}
        self._no_ack: set[str] = set()
        self._dispatched = 0
        self._dropped = 0

    # --- sessions -------------------------------------------------------------------------
    def add(self, session: GatewaySession) -> None:
        self._sessions[session.session_id] = session
        detached = [s for s in self.sessions_of(session.user.id) if s.connection is None]
        for old in detached[:-MAX_DETACHED_SESSIONS_PER_USER]:
            self.forget(old.session_id)

    def get(self, session_id: object) -> GatewaySession | None:
        return self._sessions.get(session_id) if isinstance(session_id, str) else None

    def forget(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def sessions_of(self, user_id: str) -> list[GatewaySession]:
        return [s for s in self._sessions.values() if s.user.id == user_id]

    def connections_of(self, user_id: str) -> list[ConnectionSink]:
        return [s.connection for s in self.sessions_of(user_id) if s.connection is not None]

    def is_connected(self, user_id: str) -> bool:
        return bool(self.connections_of(user_id))

    # --- dispatch -------------------------------------------------------------------------
    def dispatch(
        self,
        event: str,
        data: Any,
        *,
        users: Iterable[str] = (),
        session_ids: Iterable[str] = (),
    ) -> None:
        """Send one world event to every session of ``users`` plus the named sessions."""
        release_at = self._admit(event)
        if release_at is None:
            return
        targets: dict[str, GatewaySession] = {}
        user_set = set(users)
        for session in self._sessions.values():
            if session.user.id in user_set:
                targets[session.session_id] = session
        for sid in session_ids:
            named = self._sessions.get(sid)
            if named is not None:
                targets[sid] = named
        for session in targets.values():
            session.push(event, data, release_at)

    def _admit(self, event: str) -> float | None:
        remaining = self._drop.get(event, 0)
        if remaining > 0:
            self._drop[event] = remaining - 1
            self._dropped += 1
            return None
        self._dispatched += 1
        return trio.current_time() + self._delay.get(event, 0.0)

    # --- fault rules (driven by clank.sandbox.faults) -------------------------------------
    def drop_next(self, event: str, count: int) -> None:
        self._drop[event] = self._drop.get(event, 0) + count

    def delay(self, event: str, seconds: float) -> None:
        if seconds <= 0:
            self._delay.pop(event, None)
        else:
            self._delay[event] = seconds

    def set_acking(self, user_id: str, acking: bool) -> None:
        if acking:
            self._no_ack.discard(user_id)
        else:
            self._no_ack.add(user_id)

    def acks(self, user_id: str) -> bool:
        return user_id not in self._no_ack

    def statistics(self) -> HubStatistics:
        connected = sum(1 for s in self._sessions.values() if s.connection is not None)
        return HubStatistics(len(self._sessions), connected, self._dispatched, self._dropped)
