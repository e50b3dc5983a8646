"""The voice session's watches: one :class:`Watches` per voice session (``session.watches``).

It owns what used to be module-level bookkeeping: the running watch handles by ``(user, kind)``,
the shared webcam role, and the session's op21 schedule. The Go Live registry
(:class:`~clank.protocol.streams.StreamRegistry`, also the session's) owns the per-stream-key
watch books; :class:`Watches` follows it through :meth:`StreamRegistry.subscribe`, so every
STREAM_* and VOICE_STATE dispatch is parsed once (by the registry) and each watch only reacts to
the registry's events. Tasks that share one watch's lifetime (its screen notes) run in the
watch's scope, a child of :meth:`Watches.run`: :meth:`Watches.start_soon` (``WatchHandle.start_soon``)
cancels them when that watch ends (its frame store closes: stopped, failed, STREAM_DELETE, target
left, a session rebuild) and with the session; other watches' tasks go on::

    voice session nursery
     └─ Watches.run            op21 per the registry's StreamPingPolicy (clank.protocol.stream_watches)
         └─ one scope per watch task (until its watch ends)
    registry.handle_dispatch -> Watches._on_events -> each watch's inbox + wake-up
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Final, NoReturn

import trio

from clank.errors import ClankError, UsageError
from clank.io.gateway import GatewayClient
from clank.logging import get_logger
from clank.protocol.stream_events import StreamEvent
from clank.protocol.streams import StreamRegistry

if TYPE_CHECKING:
    from clank.session.watch_handle import WatchHandle
    from clank.session.webcam_watch import WebcamRole

__all__ = ["WatchInbox", "Watches"]

log = get_logger("clank.watch")

INBOX_LIMIT: Final = 256
"""Registry events a watch holds before the oldest are dropped (a watch reads them at once)."""


class WatchInbox:
    """Registry events for one watch, with a wake-up; made by :meth:`Watches.open_inbox`."""

    def __init__(self, close: Callable[[WatchInbox], None]) -> None:
        self._events: deque[StreamEvent] = deque(maxlen=INBOX_LIMIT)
        self._event = trio.Event()
        self._close = close

    def put(self, events: Sequence[StreamEvent]) -> None:
        self._events.extend(events)
        self._event.set()

    def take(self) -> list[StreamEvent]:
        out = list(self._events)
        self._events.clear()
        return out

    async def wait(self) -> None:
        """Until new events arrive (returns at once when some are waiting)."""
        if not self._events:
            await self._event.wait()
        self._event = trio.Event()

    def close(self) -> None:
        self._close(self)


class Watches:
    """Watch handles, the webcam role and op21 for one voice session."""

    def __init__(self, registry: StreamRegistry, gateway: GatewayClient) -> None:
        self.registry = registry
        self.gateway = gateway
        self.handles: dict[tuple[str, str], WatchHandle] = {}
        """Running (and recently ended) watch handles by ``(user id, "screen" | "camera")``."""
        self.webcam: WebcamRole | None = None
        """The session's webcam role (``clank.session.webcam_watch``), when one runs."""
        self._inboxes: list[WatchInbox] = []
        self._rearm = trio.Event()
        self._unsubscribe = registry.subscribe(self._on_events)
        self._nursery: trio.Nursery | None = None
        self._tasks: Counter[int] = Counter()  # running watch tasks by id(handle)

    def open_inbox(self) -> WatchInbox:
        inbox = WatchInbox(self._inboxes.remove)
        self._inboxes.append(inbox)
        return inbox

    def schedule_changed(self) -> None:
        """A watch was requested or its leg changed state: re-read the op21 schedule."""
        self._rearm.set()

    def start_soon(self, handle: WatchHandle, fn: Callable[[], Awaitable[object]]) -> None:
        """Run ``fn()`` in ``handle``'s watch scope: cancelled when that watch ends (or the session)."""
        if self._nursery is None:
            raise UsageError("Watches.start_soon() before Watches.run() has started")
        if handle.frames.closed:
            raise UsageError(f"{handle!r} has ended: its tasks cannot start")
        self._tasks[id(handle)] += 1
        self._nursery.start_soon(self._run_for_watch, handle, fn)

    def running_tasks(self, handle: WatchHandle) -> int:
        """Tasks running in ``handle``'s watch scope."""
        return self._tasks[id(handle)]

    async def _run_for_watch(self, handle: WatchHandle, fn: Callable[[], Awaitable[object]]) -> None:
        try:
            async with trio.open_nursery() as nursery:

                async def task() -> None:
                    await fn()
                    nursery.cancel_scope.cancel()  # done early: stop waiting for the watch

                nursery.start_soon(task)
                await handle.wait_stopped()
                nursery.cancel_scope.cancel()
        finally:
            self._tasks[id(handle)] -= 1
            if not self._tasks[id(handle)]:
                del self._tasks[id(handle)]

    def _on_events(self, events: Sequence[StreamEvent]) -> None:
        for inbox in list(self._inboxes):
            inbox.put(events)
        self._rearm.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """op21 for every watch when the registry's policy says so, and the watches' own tasks
        (a task of the session)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await self._keepalives()
        finally:
            self._nursery = None
            self._unsubscribe()

    async def _keepalives(self) -> NoReturn:
        while True:
            self._rearm = trio.Event()
            at = self.registry.next_keepalive_at()
            with trio.move_on_at(math.inf if at is None else at):
                await self._rearm.wait()
            for frame in self.registry.keepalive_due(trio.current_time()):
                try:
                    await self.gateway.stream_ping(str(frame.d["stream_key"]))
                except ClankError as exc:  # the gateway is reconnecting: the next one will do
                    log.info("op21 not sent", error=str(exc))
