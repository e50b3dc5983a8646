"""The voice send loop's clock: one slot every 20 ms at absolute deadlines (``session/voice_role.py``)."""

from __future__ import annotations

import collections
from typing import Final

import trio

from clank.io.timer import PreciseTimer
from clank.media.audio import FRAME_DURATION

__all__ = ["LATE_THRESHOLD_S", "MAX_SEND_LAG_S", "PACER_HISTORY", "FramePacer"]

#: If the send loop falls this far behind (a stall), it skips ahead instead of bursting.
MAX_SEND_LAG_S: Final = 0.2
#: A wake-up later than this counts as a late frame in the statistics.
LATE_THRESHOLD_S: Final = 0.005
PACER_HISTORY: Final = 3000  # 60 s of 20 ms frames


class FramePacer:
    """Absolute deadlines ``start + n * period``: no drift, lateness measured.

    Sleeps on a timerfd (``clank.io.timer``; trio's own timers wake up to 1 ms late), falling
    back to ``trio.sleep_until`` off Linux and under mock clocks.

    After a stall longer than ``max_lag`` the missed slots are skipped (counted) instead of sent
    in a burst.
    """

    def __init__(self, period: float = FRAME_DURATION, *, max_lag: float = MAX_SEND_LAG_S) -> None:
        self.period = period
        self.max_lag = max_lag
        self._deadline: float | None = None
        self.frames = 0
        self.late = 0
        self.skipped = 0
        self.max_lateness = 0.0
        self.recent: collections.deque[float] = collections.deque(maxlen=PACER_HISTORY)
        """Lateness of the last :data:`PACER_HISTORY` wake-ups (seconds; benches read percentiles)."""
        self._timer = PreciseTimer.create()  # timerfd: no ms rounding of the wake-up (io/timer.py)

    def restart(self) -> None:
        self._deadline = trio.current_time()

    @property
    def deadline(self) -> float:
        """The current slot's deadline (trio clock): ``restart`` time, then one period later each."""
        if self._deadline is None:
            self.restart()
        assert self._deadline is not None
        return self._deadline

    async def wait_next(self, lead: float = 0.0) -> float:
        """Sleep until ``lead`` seconds before the next slot (``io/timed_sender.py`` sends the
        packet prepared then at the slot itself); returns how late we woke (seconds)."""
        deadline = self.deadline + self.period
        now = trio.current_time()
        if now - deadline > self.max_lag:
            missed = int((now - deadline) / self.period)
            self.skipped += missed
            deadline += missed * self.period
        self._deadline = deadline
        await self._timer.sleep_until(deadline - lead)
        lateness = max(0.0, trio.current_time() - (deadline - lead))
        self.frames += 1
        if lateness > LATE_THRESHOLD_S:
            self.late += 1
        self.max_lateness = max(self.max_lateness, lateness)
        self.recent.append(lateness)
        return lateness
