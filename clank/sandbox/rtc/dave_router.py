"""Routes a call's DAVE external-sender output to its participants, and runs its transition timer.

The :class:`~clank.sandbox.dave.DaveGroupServer` is sans-io: it returns ``(user_id, frame)``
pairs and a next deadline. :class:`DaveRouter` delivers the pairs to the participants' sinks
(queued, so an in-process member answering inside ``sink.dave`` does not recurse into the
group), re-arms the timer task whenever the deadline moves, and applies the one DAVE fault the
server has (a corrupted op30 Welcome).
"""

from __future__ import annotations

import math
from collections import deque

import trio

from clank.crypto.dave import OP_WELCOME, DaveBinary, DaveFrame
from clank.logging import get_logger
from clank.sandbox.dave import DaveGroupServer, Outgoing
from clank.sandbox.rtc.peer import Participant

log = get_logger("clank.sandbox.rtc")


class DaveRouter:
    """See the module docstring. ``participants`` is the server's live map (shared, not copied)."""

    def __init__(self, group: DaveGroupServer, participants: dict[int, Participant]) -> None:
        self.group = group
        self._participants = participants
        self._queue: deque[Outgoing] = deque()
        self._armed: float | None = None
        self._rearm = trio.Event()
        self._pumping = False
        self._corrupt_welcome: set[int] = set()
        self.routed = 0

    def corrupt_next_welcome(self, user_id: int) -> None:
        self._corrupt_welcome.add(user_id)

    def route(self, out: list[Outgoing]) -> None:
        """Deliver group output; answers from in-process members are queued, not recursed into."""
        self._queue.extend(out)
        if self._pumping:
            return
        self._pumping = True
        try:
            while self._queue:
                user_id, frame = self._queue.popleft()
                participant = self._participants.get(user_id)
                if participant is not None:
                    self.routed += 1
                    participant.sink.dave(self._maybe_corrupt(user_id, frame))
        finally:
            self._pumping = False
            if self.group.next_deadline() != self._armed:
                self._rearm.set()

    async def run_timer(self) -> None:
        """Transition timeouts, at their deadlines (re-armed whenever the group's deadline moves)."""
        while True:
            self._armed = deadline = self.group.next_deadline()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self._rearm.wait()
            self._rearm = trio.Event()
            self.route(self.group.tick(trio.current_time()))

    def _maybe_corrupt(self, user_id: int, frame: DaveFrame) -> DaveFrame:
        if not (
            isinstance(frame, DaveBinary) and frame.op == OP_WELCOME and user_id in self._corrupt_welcome
        ):
            return frame
        self._corrupt_welcome.discard(user_id)
        log.info("dave fault: corrupted welcome", user_id=user_id)
        return DaveBinary(frame.op, frame.payload[:-1] + bytes([frame.payload[-1] ^ 0xFF]))
