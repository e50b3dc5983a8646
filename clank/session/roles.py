"""Transport roles: the shared handle, states and events of every role nursery in a voice session.

A role (``voice``, ``stream_watch``, later ``stream_publish``) is a child nursery of the voice
session, started with ``await nursery.start(run_role, handle, role_fn, *args)``. The role
function has this shape::

    async def my_role(handle: RoleHandle, *args, task_status=trio.TASK_STATUS_IGNORED) -> None:
        handle.attach(api_object, statistics_fn)    # optional: what callers reach via handle.api
        task_status.started()                       # early: the caller gets the handle at once
        handle.set_state(RoleState.READY)           # when media flows
        ...

:func:`run_role` is the catch boundary (house-style §2): an expected failure of the role
(``TransportError``, ``ProtocolError``, ``CryptoError``, ``WatchError``) ends *that role* with
state ``FAILED`` and an event carrying the reason and close code; it never cancels the session
or another role. Anything else is a bug and propagates. ``stop(reason)`` cancels the role's
scope and ends it as ``DISCONNECTED``. Each role lifetime logs exactly one summary line.
When several tasks of a role fail at once, the first error is the reason and every other one is
reported (an ``also failed`` warning each, and ``statistics().also_failed``), never dropped
(:mod:`clank.io.groups`).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from typing import Concatenate, Final, Generic, Protocol, TypeAlias, TypeVar

import attrs
import trio

from clank.errors import (
    ClankError,
    ConnectionClosed,
    CryptoError,
    ProtocolError,
    TransportError,
    UsageError,
    WatchError,
)
from clank.io.groups import leaves, report_others
from clank.logging import bound, get_logger

__all__ = [
    "EXPECTED_ROLE_ERRORS",
    "ROLE_EVENT_BUFFER",
    "Role",
    "RoleEvent",
    "RoleEventBus",
    "RoleFn",
    "RoleHandle",
    "RoleState",
    "RoleStatistics",
    "run_role",
]

log = get_logger("clank.role")

#: Role events a dashboard may lag behind before new ones are dropped (and counted).
ROLE_EVENT_BUFFER: Final = 64

#: Failures that end a role (state FAILED) without touching the session or other roles.
EXPECTED_ROLE_ERRORS: Final = (TransportError, ProtocolError, CryptoError, WatchError)


class RoleState(enum.Enum):
    CONNECTING = "connecting"
    READY = "ready"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    DISCONNECTED = "disconnected"

    @property
    def final(self) -> bool:
        return self in (RoleState.FAILED, RoleState.DISCONNECTED)


@attrs.frozen
class RoleEvent:
    """A role changed state. ``close_code`` is the websocket close code when one ended it."""

    role: str
    state: RoleState
    reason: str | None = None
    close_code: int | None = None
    at: float = 0.0


@attrs.frozen
class RoleStatistics:
    name: str
    state: RoleState
    started_at: float
    ended_at: float | None
    reason: str | None
    close_code: int | None
    transitions: int
    detail: object = attrs.field(default=None, eq=False)
    """The role's own statistics value (e.g. ``VoiceRoleStatistics``), when it attached one."""
    also_failed: tuple[str, ...] = ()
    """Errors raised beside the one that ended the role (``Type: message``), in raise order."""


class RoleEventBus:
    """A bounded fan-in of role events; when the reader lags, new events are dropped and counted."""

    def __init__(self, buffer: int = ROLE_EVENT_BUFFER) -> None:
        self._send, self.receive = trio.open_memory_channel[RoleEvent](buffer)
        self.dropped = 0

    def publish(self, event: RoleEvent) -> None:
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self.dropped += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.dropped += 1

    def close(self) -> None:
        self._send.close()


ApiT = TypeVar("ApiT")


class RoleHandle(Generic[ApiT]):
    """What a started role hands back: name, cancel scope, state, statistics, stop/wait."""

    def __init__(self, name: str, bus: RoleEventBus | None = None) -> None:
        self.name = name
        self.cancel_scope = trio.CancelScope()
        self._bus = bus
        self._state = RoleState.CONNECTING
        self._reason: str | None = None
        self._close_code: int | None = None
        self._error: BaseException | None = None
        self._also_failed: tuple[str, ...] = ()
        self._stop_reason: str | None = None
        self._started_at = trio.current_time()
        self._ended_at: float | None = None
        self._transitions = 0
        self._was_ready = False
        self._changed = trio.Event()
        self._stopped = trio.Event()
        self._api: ApiT | None = None
        self._statistics_fn: Callable[[], object] | None = None

    def __repr__(self) -> str:
        return f"RoleHandle(name={self.name!r}, state={self._state.value})"

    # ------------------------------------------------------------------ queries

    @property
    def state(self) -> RoleState:
        return self._state

    @property
    def reason(self) -> str | None:
        return self._reason

    @property
    def also_failed(self) -> tuple[str, ...]:
        """Errors beside :attr:`reason` when several ended the role at once (cheap: no detail)."""
        return self._also_failed

    @property
    def close_code(self) -> int | None:
        return self._close_code

    @property
    def error(self) -> BaseException | None:
        """The expected failure that ended the role (None while running or after a clean stop)."""
        return self._error

    @property
    def was_ready(self) -> bool:
        """True once the role reached READY (at least once)."""
        return self._was_ready

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    @property
    def api(self) -> ApiT:
        """The object the role attached (e.g. the voice role's ``play_pcm`` surface)."""
        if self._api is None:
            raise UsageError(f"role {self.name!r} attached no API")
        return self._api

    def statistics(self) -> RoleStatistics:
        detail = self._statistics_fn() if self._statistics_fn is not None else None
        return RoleStatistics(
            name=self.name,
            state=self._state,
            started_at=self._started_at,
            ended_at=self._ended_at,
            reason=self._reason,
            close_code=self._close_code,
            transitions=self._transitions,
            detail=detail,
            also_failed=self._also_failed,
        )

    # ------------------------------------------------------------------ role side

    def attach(self, api: ApiT | None = None, statistics: Callable[[], object] | None = None) -> None:
        if api is not None:
            self._api = api
        if statistics is not None:
            self._statistics_fn = statistics

    def set_state(self, state: RoleState, reason: str | None = None, close_code: int | None = None) -> None:
        """Publish a state change (no-op when nothing changed; final states are sticky)."""
        if self._state.final:
            return
        if state is self._state and reason is None:
            return
        self._state = state
        self._was_ready = self._was_ready or state is RoleState.READY
        if reason is not None:
            self._reason = reason
        if close_code is not None:
            self._close_code = close_code
        self._transitions += 1
        now = trio.current_time()
        if state.final:
            self._ended_at = now
        if self._bus is not None:
            self._bus.publish(RoleEvent(self.name, state, reason, close_code, now))
        if not state.final:
            log.info("role state", role=self.name, state=state.value, reason=reason, close_code=close_code)
        self._changed.set()
        self._changed = trio.Event()

    # ------------------------------------------------------------------ caller side

    async def wait_state(self, *states: RoleState) -> RoleState:
        """Wait until the role is in one of ``states`` (or has ended); returns the state."""
        while self._state not in states and not self._state.final:
            await self._changed.wait()
        return self._state

    async def wait_ready(self) -> None:
        """Wait until READY; raise the role's failure (or ``UsageError``) if it ended first."""
        state = await self.wait_state(RoleState.READY)
        if state is RoleState.READY:
            return
        if isinstance(self._error, ClankError):
            raise self._error
        raise UsageError(f"role {self.name!r} ended ({state.value}: {self._reason}) before it was ready")

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    def stop_nowait(self, reason: str = "stopped") -> None:
        if self._stop_reason is None:
            self._stop_reason = reason
        self.cancel_scope.cancel()

    async def stop(self, reason: str = "stopped") -> None:
        """Cancel the role with ``reason`` and wait for it to finish (its cleanup is bounded)."""
        self.stop_nowait(reason)
        await self._stopped.wait()

    # ------------------------------------------------------------------ boundary

    def _summary(self) -> object:
        fn = self._statistics_fn
        if fn is None:
            return None
        try:
            return fn()
        except ClankError:
            return None

    def _finish(self, errors: list[BaseException]) -> None:
        """End the role: the first error is the reason; every other one is reported too."""
        error = errors[0] if errors else None
        if error is not None:
            self._error = error
            self._also_failed = report_others(errors, error, log.warning, role=self.name)
            code = error.code if isinstance(error, ConnectionClosed) else None
            self.set_state(RoleState.FAILED, f"{type(error).__name__}: {error}", code)
        else:
            self.set_state(RoleState.DISCONNECTED, self._stop_reason or "ended")
        if self._ended_at is None:
            self._ended_at = trio.current_time()
        log.info(
            "role ended",
            role=self.name,
            state=self._state.value,
            reason=self._reason,
            close_code=self._close_code,
            duration_s=round(self._ended_at - self._started_at, 3),
            transitions=self._transitions,
            also_failed=list(self._also_failed) or None,
            summary=self._summary(),
        )
        self._stopped.set()
        self._changed.set()


RoleFn: TypeAlias = Callable[Concatenate[RoleHandle[ApiT], ...], Awaitable[None]]
"""``async def role(handle: RoleHandle[Api], *args, task_status) -> None``: what a role runs."""


class Role(Protocol):
    """A running role whatever its API: what the voice session keeps, stops and reports.

    :class:`RoleHandle` of any API type is one; callers that need the API hold the typed handle
    (``VoiceSession.voice`` is a ``RoleHandle[VoiceRole]``).
    """

    @property
    def name(self) -> str: ...
    @property
    def state(self) -> RoleState: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def error(self) -> BaseException | None: ...
    @property
    def was_ready(self) -> bool: ...
    @property
    def stopped(self) -> bool: ...
    def statistics(self) -> RoleStatistics: ...
    async def wait_stopped(self) -> None: ...
    def stop_nowait(self, reason: str = "stopped") -> None: ...
    async def stop(self, reason: str = "stopped") -> None: ...


async def run_role(
    handle: RoleHandle[ApiT],
    role_fn: RoleFn[ApiT],
    *args: object,
    task_status: trio.TaskStatus[RoleHandle[ApiT]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run ``role_fn(handle, *args, task_status=...)`` inside the handle's scope and catch boundary.

    Use with ``await nursery.start(run_role, handle, role_fn, *args)``: it returns the handle once
    the role called ``task_status.started()`` — or ended before doing so (then already final).
    """
    started = False

    class _Status:
        def started(self, value: object = None) -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started(handle)

    errors: list[BaseException] = []
    with bound(role=handle.name):
        try:
            with handle.cancel_scope:
                await role_fn(handle, *args, task_status=_Status())
        except* EXPECTED_ROLE_ERRORS as group:
            errors += leaves(group)
        except* Exception as group:
            errors += leaves(group)  # a bug: record it, then let it propagate loudly
            raise
        finally:
            handle._finish(errors)
            if not started:
                started = True
                task_status.started(handle)
