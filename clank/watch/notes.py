"""Rolling screen notes for one watch: a vision provider describes the screen now and then.

Frames arrive often (``watch.max_fps``); notes are rare and a provider call may take seconds. So
the two sides never wait for each other:

* :meth:`ScreenNotes.observe` (synchronous, cheap) records the newest frame and asks the trigger
  policy whether it calls for a note. A trigger sets the single *pending* slot; a trigger that
  arrives while one is already pending merges into it (``coalesced``; the higher-priority kind
  is kept). Frames are never blocked by a slow provider.
* One note-taking task takes the pending trigger when the rate limit allows, and describes the
  *newest* frame at that moment. At most one provider call is in flight.

Triggers (``TRIGGER_RULES``, data; :func:`decide_trigger` is pure and table-tested):

==============  ========  ============  ==================================================
trigger         priority  rate limited  fires when
==============  ========  ============  ==================================================
on_demand       0         no            :meth:`ScreenNotes.request_note` (agent, dashboard)
first_frame     1         yes           a frame arrives and no note was taken yet (retried
                                        after a failure, spaced by the min interval)
scene_cut       2         yes           the frame's change score crossed the scene-cut mark
periodic        3         yes           ``periodic_s`` since the last call while the screen
                                        keeps changing (``change_ema >= change_floor``) and
                                        no note is pending or in flight; or ``idle_s`` since
                                        the last call while it is still (if ``idle_s`` is set)
==============  ========  ============  ==================================================

Rate limit: a rate-limited trigger waits until ``min_interval_s`` after the start of the previous
provider call (counted in ``rate_limited``); meanwhile later triggers merge into it. A provider
failure (``VisionError`` or the per-call deadline) is counted and logged; it never ends the watch.
"""

from __future__ import annotations

import collections
import math
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from types import MappingProxyType
from typing import Any, Final

import attrs
import trio

from clank.errors import UsageError, VisionError, WatchError
from clank.logging import get_logger
from clank.watch.frames import LatestFrameStore, ScreenFrame
from clank.watch.vision import NoteContext, Trigger, VisionProvider

__all__ = [
    "TRIGGER_RULES",
    "FrameSource",
    "NotePolicy",
    "NotesStatistics",
    "ScreenNote",
    "ScreenNotes",
    "Trigger",
    "TriggerRule",
    "TriggerState",
    "decide_trigger",
    "open_screen_notes",
]

log = get_logger("clank.watch.notes")

FrameSource = LatestFrameStore | AsyncIterable[ScreenFrame]
"""Where :meth:`ScreenNotes.run` reads frames: a watch's store, a ``FrameChannel`` or a trio
receive channel (frames of *this* watch only; demultiplex first, or call ``observe`` yourself)."""


@attrs.frozen
class TriggerRule:
    priority: int  # lower wins when triggers merge
    rate_limited: bool


TRIGGER_RULES: Final[Mapping[Trigger, TriggerRule]] = MappingProxyType(
    {
        "on_demand": TriggerRule(priority=0, rate_limited=False),
        "first_frame": TriggerRule(priority=1, rate_limited=True),
        "scene_cut": TriggerRule(priority=2, rate_limited=True),
        "periodic": TriggerRule(priority=3, rate_limited=True),
    }
)


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise UsageError(f"NotePolicy.{attribute.name} must be positive, got {value!r}")


def _non_negative(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value >= 0:
        raise UsageError(f"NotePolicy.{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen
class NotePolicy:
    """When to take notes (settings ``notes.*``)."""

    min_interval_s: float = attrs.field(default=10.0, validator=_non_negative)
    periodic_s: float = attrs.field(default=30.0, validator=_positive)
    change_floor: float = attrs.field(default=0.02, validator=_non_negative)  # change_ema "changing"
    history: int = attrs.field(default=20, validator=_positive)  # notes kept
    context_notes: int = attrs.field(default=3, validator=_non_negative)  # earlier notes sent along
    call_timeout_s: float = attrs.field(default=60.0, validator=_positive)  # backstop per call
    idle_s: float | None = None  # a periodic note this often while the screen is static (None: never)


@attrs.frozen
class TriggerState:
    """What :func:`decide_trigger` needs to know about the notes so far."""

    notes_taken: int
    outstanding: bool  # a trigger is pending or a provider call is in flight
    last_call_at: float | None  # start of the previous provider call


def decide_trigger(
    policy: NotePolicy, state: TriggerState, *, scene_cut: bool, change_ema: float, now: float
) -> Trigger | None:
    """Which trigger (if any) a newly arrived frame fires. Pure; see the module table."""
    if state.notes_taken == 0 and not state.outstanding:
        return "first_frame"
    if scene_cut:
        return "scene_cut"
    if (
        not state.outstanding
        and change_ema >= policy.change_floor
        and (state.last_call_at is None or now - state.last_call_at >= policy.periodic_s)
    ):
        return "periodic"
    if (
        policy.idle_s is not None
        and not state.outstanding
        and change_ema < policy.change_floor
        and state.last_call_at is not None
        and now - state.last_call_at >= policy.idle_s
    ):
        return "periodic"  # the seed's idle interval: a slower look at a still screen
    return None


@attrs.frozen
class ScreenNote:
    number: int  # 1, 2, ... per watch
    text: str
    trigger: Trigger
    wall_time: float  # trio.current_time() when the note was ready
    rtp_timestamp: int  # of the frame described
    frame_sequence: int
    change_score: float
    user_id: str
    provider: str
    latency_s: float


@attrs.frozen
class NotesStatistics:
    frames_seen: int
    triggered: Mapping[str, int]  # per trigger kind, before merging
    taken: int
    failed: int
    rate_limited: int  # triggers that arrived while the min interval held notes back
    coalesced: int  # triggers merged into an already pending one
    in_flight: bool
    pending: Trigger | None
    last_error: str | None  # VisionError reason of the latest failure
    last_latency_s: float | None
    mean_latency_s: float | None
    max_latency_s: float | None
    closed: bool


class ScreenNotes:
    """The rolling notes of one watch. Feed it with :meth:`run` (or :meth:`observe`)."""

    def __init__(
        self,
        provider: VisionProvider,
        *,
        policy: NotePolicy | None = None,
        user_id: str = "",
        user_name: str = "",
        stream_type: str = "screen",
        on_frame: Callable[[ScreenFrame], None] | None = None,
    ) -> None:
        self._provider = provider
        self._on_frame = on_frame  # e.g. the watch's commentary gates (clank.watch.commentary)
        self._policy = policy if policy is not None else NotePolicy()
        self._user_id = user_id
        self._user_name = user_name
        self._stream_type = stream_type
        self._notes: collections.deque[ScreenNote] = collections.deque(maxlen=self._policy.history)
        self._latest_frame: ScreenFrame | None = None
        self._pending: Trigger | None = None
        self._in_flight = False
        self._last_call_at: float | None = None
        self._wake = trio.Event()  # a trigger or a frame arrived
        self._note_added = trio.Event()
        self._closed: WatchError | None = None
        self._frames_seen = 0
        self._triggered: dict[str, int] = dict.fromkeys(TRIGGER_RULES, 0)
        self._taken = 0
        self._failed = 0
        self._rate_limited = 0
        self._coalesced = 0
        self._last_error: str | None = None
        self._latency_count = 0  # successful calls only
        self._latency_total = 0.0
        self._latency_max = 0.0
        self._last_latency: float | None = None

    @property
    def policy(self) -> NotePolicy:
        return self._policy

    # -- feeding -----------------------------------------------------------------------------

    def observe(self, frame: ScreenFrame) -> None:
        """Record the newest frame and fire a trigger if the policy says so. Never blocks."""
        if self._closed is not None:
            return
        now = trio.current_time()
        self._frames_seen += 1
        self._latest_frame = frame
        if self._on_frame is not None:
            self._on_frame(frame)
        state = TriggerState(
            notes_taken=self._taken,
            outstanding=self._pending is not None or self._in_flight,
            last_call_at=self._last_call_at,
        )
        trigger = decide_trigger(
            self._policy, state, scene_cut=frame.scene_cut, change_ema=frame.change_ema, now=now
        )
        if trigger is not None:
            self._fire(trigger, now)
        self._wake.set()

    def request_note(self) -> None:
        """Ask for a note now (merges with a pending one; waits for the in-flight call, if any)."""
        if self._closed is not None:
            raise WatchError(self._closed.reason, self._closed.detail)
        self._fire("on_demand", trio.current_time())
        self._wake.set()

    def _fire(self, trigger: Trigger, now: float) -> None:
        self._triggered[trigger] += 1
        rule = TRIGGER_RULES[trigger]
        if now < self._ready_at(trigger):
            self._rate_limited += 1
        if self._pending is None:
            self._pending = trigger
            return
        self._coalesced += 1
        if rule.priority < TRIGGER_RULES[self._pending].priority:
            self._pending = trigger

    # -- reading -----------------------------------------------------------------------------

    def notes(self) -> tuple[ScreenNote, ...]:
        """The kept notes, oldest first."""
        return tuple(self._notes)

    @property
    def latest_note(self) -> ScreenNote | None:
        return self._notes[-1] if self._notes else None

    async def wait_note(self, after_number: int | None = None) -> ScreenNote:
        """The newest note numbered above ``after_number`` (any note if None); parks until one exists.

        Raises ``WatchError`` once the notes have stopped and no such note exists.
        """
        while True:
            latest = self.latest_note
            if latest is not None and (after_number is None or latest.number > after_number):
                await trio.lowlevel.checkpoint()
                return latest
            if self._closed is not None:
                raise WatchError(self._closed.reason, self._closed.detail)
            await self._note_added.wait()

    def statistics(self) -> NotesStatistics:
        count = self._latency_count
        return NotesStatistics(
            frames_seen=self._frames_seen,
            triggered=dict(self._triggered),
            taken=self._taken,
            failed=self._failed,
            rate_limited=self._rate_limited,
            coalesced=self._coalesced,
            in_flight=self._in_flight,
            pending=self._pending,
            last_error=self._last_error,
            last_latency_s=self._last_latency,
            mean_latency_s=self._latency_total / count if count else None,
            max_latency_s=self._latency_max if count else None,
            closed=self._closed is not None,
        )

    # -- lifetime ----------------------------------------------------------------------------

    def close(self, reason: str = "notes_stopped", detail: str = "") -> None:
        """No more notes: ``wait_note`` waiters get ``WatchError(reason)``. Idempotent."""
        if self._closed is None:
            self._closed = WatchError(reason, detail)
            self._note_added.set()
            self._wake.set()

    async def run(self, frames: FrameSource | None = None) -> None:
        """Take notes until cancelled or until ``frames`` ends (then the notes close with the
        watch's reason). Without ``frames``, feed it with :meth:`observe`."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._take_notes)
                if frames is None:
                    await trio.sleep_forever()
                reason, detail = await self._follow(frames)
                self.close(reason, detail)
                nursery.cancel_scope.cancel()
        finally:
            self.close()
            stats = self.statistics()
            log.info(
                "screen notes ended",
                user_id=self._user_id,
                provider=self._provider.name,
                taken=stats.taken,
                failed=stats.failed,
                rate_limited=stats.rate_limited,
                coalesced=stats.coalesced,
                frames_seen=stats.frames_seen,
            )

    async def _follow(self, frames: FrameSource) -> tuple[str, str]:
        if isinstance(frames, LatestFrameStore):
            after: int | None = None
            while True:
                try:
                    frame = await frames.wait_frame(after)
                except WatchError as exc:
                    return exc.reason, exc.detail
                after = frame.sequence
                self.observe(frame)
        async for frame in frames:
            self.observe(frame)
        return "watch_ended", ""

    async def _take_notes(self) -> None:
        while True:
            trigger = self._pending
            if trigger is None or self._latest_frame is None:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            ready_at = self._ready_at(trigger)
            if trio.current_time() < ready_at:
                # Wait for the window, but wake for a higher-priority (unlimited) trigger.
                with trio.move_on_at(ready_at):
                    self._wake = trio.Event()
                    await self._wake.wait()
                continue
            self._pending = None
            await self._take_note(trigger, self._latest_frame)

    def _ready_at(self, trigger: Trigger) -> float:
        if not TRIGGER_RULES[trigger].rate_limited or self._last_call_at is None:
            return -math.inf
        return self._last_call_at + self._policy.min_interval_s

    def _context(self, trigger: Trigger, frame: ScreenFrame, now: float) -> NoteContext:
        previous = tuple(note.text for note in self._notes)
        keep = self._policy.context_notes
        last = self.latest_note
        return NoteContext(
            trigger=trigger,
            user_id=self._user_id or frame.user_id,
            user_name=self._user_name,
            stream_type=self._stream_type,
            change_score=frame.change_score,
            change_ema=frame.change_ema,
            scene_cut=frame.scene_cut,
            previous_notes=previous[len(previous) - keep :] if keep else (),
            seconds_since_last_note=None if last is None else now - last.wall_time,
        )

    async def _take_note(self, trigger: Trigger, frame: ScreenFrame) -> None:
        started = trio.current_time()
        self._last_call_at = started
        self._in_flight = True
        context = self._context(trigger, frame, started)
        try:
            with trio.fail_after(self._policy.call_timeout_s):
                text = await self._provider.describe(frame.jpeg, context=context)
        except (VisionError, trio.TooSlowError) as exc:
            reason = exc.reason if isinstance(exc, VisionError) else "timeout"
            self._failed += 1
            self._last_error = reason
            log.warning(
                "screen note failed",
                provider=self._provider.name,
                trigger=trigger,
                reason=reason,
                detail=str(exc),
                failed=self._failed,
            )
            return
        finally:
            self._in_flight = False
        now = trio.current_time()
        latency = now - started
        self._record_latency(latency)
        self._taken += 1
        note = ScreenNote(
            number=self._taken,
            text=text,
            trigger=trigger,
            wall_time=now,
            rtp_timestamp=frame.rtp_timestamp,
            frame_sequence=frame.sequence,
            change_score=frame.change_score,
            user_id=frame.user_id,
            provider=self._provider.name,
            latency_s=latency,
        )
        self._notes.append(note)
        self._note_added.set()
        self._note_added = trio.Event()
        log.debug("screen note", trigger=trigger, number=note.number, latency_s=round(latency, 3))

    def _record_latency(self, latency: float) -> None:
        self._last_latency = latency
        self._latency_count += 1
        self._latency_total += latency
        self._latency_max = max(self._latency_max, latency)


@asynccontextmanager
async def open_screen_notes(
    provider: VisionProvider,
    frames: FrameSource | None = None,
    *,
    policy: NotePolicy | None = None,
    user_id: str = "",
    user_name: str = "",
    stream_type: str = "screen",
) -> AsyncIterator[ScreenNotes]:
    """Screen notes running in their own nursery for the duration of the block."""
    notes = ScreenNotes(
        provider, policy=policy, user_id=user_id, user_name=user_name, stream_type=stream_type
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(notes.run, frames)
        try:
            yield notes
        finally:
            nursery.cancel_scope.cancel()
