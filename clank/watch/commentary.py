"""Commentary cues: the seed's proactive stream commentary, as ``commentary_due`` events an agent
consumes (it decides what to say; clank says when it is a good moment).

The gates (:func:`decide_commentary`, pure, table-tested) open when all of these hold:

==============  ==============================================================================
gate            holds when
==============  ==============================================================================
enabled         ``notes.commentary`` is on
quiet           nobody in the voice channel is speaking and nobody spoke for ``quiet_window_s``
                (inbound speaking state of the voice role; the seed's 2.2 s audio quiet window)
interval        ``commentary_interval_s`` passed since the previous cue (the first: since the
                watch started)
changed         the screen changed meaningfully since the previous cue: a scene cut, or a frame
                whose change score reached ``change_threshold`` — a static screen (every change
                below the threshold) never opens it
==============  ==============================================================================

:class:`CommentaryCues` (one per watch) is fed frames by the watch's screen notes, checks the gates
every :data:`CHECK_INTERVAL` and publishes a :class:`CommentaryCue` to the :class:`CommentaryHub`:
the latest note and a frame reference (sequence, RTP timestamp, ``imageUrl``), never the JPEG
unless a consumer asks for it (``to_json(include_image=True)``), as the seed attached raw frames
only to commentary turns. The hub fans out to Python callbacks, bounded subscriber channels (oldest
cue dropped when full, counted) and a numbered backlog the SSE stream and MCP read.
"""

from __future__ import annotations

import base64
import collections
import math
from collections.abc import AsyncIterator, Callable
from contextlib import contextmanager
from typing import Any, Final

import attrs
import trio

from clank.config import NotesSettings
from clank.errors import ClankError, UsageError
from clank.logging import get_logger
from clank.watch.frames import ScreenFrame
from clank.watch.notes import FrameSource, NotePolicy, ScreenNotes

log = get_logger("clank.watch.commentary")

CHECK_INTERVAL: Final = 0.1  # seconds between gate checks (and speaking polls)
BACKLOG: Final = 64  # cues kept for readers that poll (SSE, MCP)
SUBSCRIBER_BUFFER: Final = 16


@attrs.frozen
class CommentaryPolicy:
    """Settings ``notes.commentary*``, ``notes.change_threshold``, ``notes.quiet_window_s``."""

    enabled: bool = True
    interval_s: float = 15.0
    change_threshold: float = 0.01
    quiet_window_s: float = 2.2

    def __attrs_post_init__(self) -> None:
        for name in ("interval_s", "change_threshold", "quiet_window_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise UsageError(f"CommentaryPolicy.{name} must be a finite number >= 0, got {value!r}")


@attrs.frozen
class GateState:
    """What :func:`decide_commentary` needs to know at ``now``."""

    now: float
    since: float  # the previous cue, or the watch start
    max_change: float  # highest change score since ``since``
    scene_cut: bool  # a scene cut since ``since``
    speaking: bool  # somebody speaks right now
    last_speech_at: float | None  # when somebody was last heard speaking


@attrs.frozen
class GateDecision:
    open: bool
    reason: str  # open: scene_cut / changed; held: disabled / speaking / not_quiet / too_soon / static


def decide_commentary(policy: CommentaryPolicy, state: GateState) -> GateDecision:
    """Whether a commentary cue is due (pure; see the module table). Held reasons are checked in
    table order, so the reason names the first gate that is shut."""
    if not policy.enabled:
        return GateDecision(False, "disabled")
    if state.speaking:
        return GateDecision(False, "speaking")
    if state.last_speech_at is not None and state.now - state.last_speech_at < policy.quiet_window_s:
        return GateDecision(False, "not_quiet")
    if state.now - state.since < policy.interval_s:
        return GateDecision(False, "too_soon")
    if state.scene_cut:
        return GateDecision(True, "scene_cut")
    if state.max_change >= policy.change_threshold and state.max_change > 0:
        return GateDecision(True, "changed")
    return GateDecision(False, "static")


@attrs.frozen
class CommentaryCue:
    """``commentary_due``: a good moment to comment on ``target_user_id``'s screen."""

    number: int  # 1, 2, ... per hub
    target_user_id: str
    kind: str
    reason: str
    at: float  # trio.current_time()
    seconds_since_previous: float
    max_change: float
    frame_sequence: int
    rtp_timestamp: int
    note: dict[str, Any] | None  # the latest screen note (number, text, trigger, provider)
    jpeg: bytes = attrs.field(repr=False, eq=False)

    def to_json(self, *, include_image: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "commentary_due",
            "number": self.number,
            "targetUserId": self.target_user_id,
            "kind": self.kind,
            "reason": self.reason,
            "secondsSincePrevious": round(self.seconds_since_previous, 1),
            "maxChange": round(self.max_change, 4),
            "frame": {"sequence": self.frame_sequence, "rtpTimestamp": self.rtp_timestamp},
            "imageUrl": f"/api/screen/latest.jpg?target={self.target_user_id}",
            "note": self.note,
        }
        if include_image:
            out["image"] = {"mimeType": "image/jpeg", "dataBase64": base64.b64encode(self.jpeg).decode()}
        return out


class CommentaryHub:
    """Where cues go: callbacks, subscriber channels and a numbered backlog."""

    def __init__(self) -> None:
        self._backlog: collections.deque[CommentaryCue] = collections.deque(maxlen=BACKLOG)
        self._callbacks: list[Callable[[CommentaryCue], None]] = []
        self._subscribers: list[trio.MemorySendChannel[CommentaryCue]] = []
        self._count = 0
        self.dropped = 0

    def next_number(self) -> int:
        self._count += 1
        return self._count

    def publish(self, cue: CommentaryCue) -> None:
        self._backlog.append(cue)
        log.info("commentary due", target_user_id=cue.target_user_id, reason=cue.reason, number=cue.number)
        for callback in list(self._callbacks):
            callback(cue)
        for send in list(self._subscribers):
            try:
                send.send_nowait(cue)
            except trio.WouldBlock:
                self.dropped += 1  # a slow subscriber misses this cue; the backlog still has it
            except trio.BrokenResourceError:
                self._subscribers.remove(send)

    def since(self, number: int = 0) -> list[CommentaryCue]:
        """Kept cues numbered above ``number``, oldest first."""
        return [cue for cue in self._backlog if cue.number > number]

    @property
    def latest_number(self) -> int:
        return self._count

    @contextmanager
    def on_cue(self, callback: Callable[[CommentaryCue], None]) -> Any:
        """Call ``callback`` (synchronously, on the trio thread) for every cue inside the block."""
        self._callbacks.append(callback)
        try:
            yield
        finally:
            self._callbacks.remove(callback)

    @contextmanager
    def subscribe(self) -> Any:
        """A receive channel of cues (``SUBSCRIBER_BUFFER`` deep) for the block."""
        send, receive = trio.open_memory_channel[CommentaryCue](SUBSCRIBER_BUFFER)
        self._subscribers.append(send)
        try:
            yield receive
        finally:
            if send in self._subscribers:
                self._subscribers.remove(send)
            send.close()


SpeakingSource = Callable[[], frozenset[str]]


class CommentaryCues:
    """The gates of one watch. Feed frames with :meth:`observe`; :meth:`run` checks the gates."""

    def __init__(
        self,
        hub: CommentaryHub,
        policy: CommentaryPolicy,
        *,
        target_user_id: str,
        kind: str,
        speaking: SpeakingSource,
        notes: ScreenNotes | None = None,
    ) -> None:
        self._hub = hub
        self._policy = policy
        self._target = target_user_id
        self._kind = kind
        self._speaking = speaking
        self.notes = notes  # for the latest note; may be set after construction
        self._since = trio.current_time()
        self._max_change = 0.0
        self._scene_cut = False
        self._latest: ScreenFrame | None = None
        self._last_speech_at: float | None = None
        self.held: collections.Counter[str] = collections.Counter()
        self.cues = 0

    def observe(self, frame: ScreenFrame) -> None:
        """A new frame of this watch (synchronous, cheap)."""
        self._latest = frame
        self._max_change = max(self._max_change, frame.change_score)
        self._scene_cut = self._scene_cut or frame.scene_cut

    def _speaking_now(self, now: float) -> bool:
        try:
            speaking = bool(self._speaking())
        except ClankError:  # the voice role is not up (yet): nobody can be heard
            speaking = False
        if speaking:
            self._last_speech_at = now
        return speaking

    def check(self) -> CommentaryCue | None:
        """Check the gates now; publish and return a cue when they open."""
        now = trio.current_time()
        state = GateState(
            now=now,
            since=self._since,
            max_change=self._max_change,
            scene_cut=self._scene_cut,
            speaking=self._speaking_now(now),
            last_speech_at=self._last_speech_at,
        )
        decision = decide_commentary(self._policy, state)
        frame = self._latest
        if not decision.open or frame is None:
            self.held[decision.reason if frame is not None else "no_frame"] += 1
            return None
        latest = None if self.notes is None else self.notes.latest_note
        cue = CommentaryCue(
            number=self._hub.next_number(),
            target_user_id=self._target,
            kind=self._kind,
            reason=decision.reason,
            at=now,
            seconds_since_previous=now - self._since,
            max_change=self._max_change,
            frame_sequence=frame.sequence,
            rtp_timestamp=frame.rtp_timestamp,
            note=None
            if latest is None
            else {
                "number": latest.number,
                "text": latest.text,
                "trigger": latest.trigger,
                "provider": latest.provider,
            },
            jpeg=frame.jpeg,
        )
        self._since, self._max_change, self._scene_cut = now, 0.0, False
        self.cues += 1
        self._hub.publish(cue)
        return cue

    async def run(self) -> None:
        """Check the gates every :data:`CHECK_INTERVAL` until cancelled."""
        try:
            while True:
                await trio.sleep(CHECK_INTERVAL)
                self.check()
        finally:
            log.info(
                "commentary gates ended", target_user_id=self._target, cues=self.cues, held=dict(self.held)
            )


def note_policy(notes: NotesSettings) -> NotePolicy:
    """When a watch takes screen notes, from settings ``notes.*`` (the seed's names: docs/vision.md)."""
    return NotePolicy(
        min_interval_s=notes.min_interval_s,
        periodic_s=notes.periodic_s,
        change_floor=notes.change_floor,
        history=notes.history,
        context_notes=notes.context_notes,
        idle_s=notes.idle_interval_s,
    )


def commentary_policy(notes: NotesSettings) -> CommentaryPolicy:
    """The gate policy from settings ``notes.*``."""
    return CommentaryPolicy(
        enabled=notes.commentary,
        interval_s=notes.commentary_interval_s,
        change_threshold=notes.change_threshold,
        quiet_window_s=notes.quiet_window_s,
    )


async def run_notes_with_cues(notes: ScreenNotes, cues: CommentaryCues | None, frames: FrameSource) -> None:
    """A watch's notes and its commentary gates, for as long as the notes run (the watch)."""
    async with trio.open_nursery() as nursery:
        if cues is not None:
            nursery.start_soon(cues.run)
        await notes.run(frames)
        nursery.cancel_scope.cancel()


async def iterate_cues(hub: CommentaryHub, after: int = 0) -> AsyncIterator[CommentaryCue]:
    """Every cue numbered above ``after``, then new ones as they come (polls the backlog)."""
    while True:
        for cue in hub.since(after):
            after = cue.number
            yield cue
        await trio.sleep(CHECK_INTERVAL)
