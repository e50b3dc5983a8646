"""Fault controls for tests and demos: make the sandbox gateway misbehave on purpose.

Connection faults act on every live gateway connection of a user and raise
:class:`~clank.errors.SandboxError` if it has none (a test that injects a fault into nothing is
wrong). Dispatch faults (drop/delay) are rules applied to future world events, once per event
(not per receiving session). All methods are synchronous: they only queue frames or change rules;
the effect is observable on the wire right after the next checkpoint.
"""

from __future__ import annotations

from clank.errors import SandboxError
from clank.logging import get_logger
from clank.sandbox.hub import ConnectionSink, DispatchHub
from clank.wire.gateway import GatewayFrame, Op

log = get_logger("clank.sandbox.faults")


class Faults:
    def __init__(self, hub: DispatchHub) -> None:
        self._hub = hub

    def _connections(self, user_id: str) -> list[ConnectionSink]:
        connections = self._hub.connections_of(user_id)
        if not connections:
            raise SandboxError(f"user {user_id} has no gateway connection")
        return connections

    def close_client(self, user_id: str, code: int = 4000) -> None:
        """Close the user's connections with ``code`` (4000-class codes keep the session resumable)."""
        log.info("fault: close", user_id=user_id, close_code=code)
        for connection in self._connections(user_id):
            connection.request_close(code, "fault injected")

    def invalidate_session(self, user_id: str, resumable: bool) -> None:
        """Send op9 ``d=resumable``; unless resumable, the session is forgotten (re-identify needed)."""
        log.info("fault: invalid session", user_id=user_id, resumable=resumable)
        for connection in self._connections(user_id):
            connection.invalidate_session(resumable)

    def stop_acking(self, user_id: str, on: bool = True) -> None:
        """While on, heartbeats of this user get no op11 (the client should detect a zombie)."""
        log.info("fault: stop acking", user_id=user_id, on=on)
        self._hub.set_acking(user_id, not on)

    def send_reconnect(self, user_id: str) -> None:
        """Send op7: the client should reconnect and resume."""
        log.info("fault: reconnect", user_id=user_id)
        for connection in self._connections(user_id):
            connection.send_control(GatewayFrame(op=Op.RECONNECT))

    def request_heartbeat(self, user_id: str) -> None:
        """Send op1: the client must heartbeat immediately."""
        log.info("fault: heartbeat request", user_id=user_id)
        for connection in self._connections(user_id):
            connection.send_control(GatewayFrame(op=Op.HEARTBEAT))

    def delay_dispatch(self, event_name: str, seconds: float) -> None:
        """Hold every future ``event_name`` dispatch (and what follows it) for ``seconds``; 0 clears."""
        log.info("fault: delay dispatch", dispatch=event_name, seconds=seconds)
        self._hub.delay(event_name, seconds)

    def drop_dispatch(self, event_name: str, count: int = 1) -> None:
        """Never deliver the next ``count`` ``event_name`` events (to anyone)."""
        log.info("fault: drop dispatch", dispatch=event_name, count=count)
        self._hub.drop_next(event_name, count)
