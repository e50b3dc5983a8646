"""Music playback of the voice role: named file/URL tracks with a queue, fades, gain ramps, taps.

One track plays at a time (mixer track ``music:<name>:<n>``); ``play`` without ``queue`` fades
the current one out and replaces the queue. A track is decoded by PyAV on a worker thread with a
bounded prebuffer (:data:`FILE_PREBUFFER_S`); pause/resume/stop fade; ``set_gain`` is the seed's
``music_set_gain{target, fadeMs}`` (a linear ramp; later tracks keep the gain). Position and
duration are in :meth:`MusicPlayer.status`; ``add_tap`` hands the Go Live visualizer the music
PCM block by block. Events go to :class:`~clank.session.voice_playback.PlaybackEvents`.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable
from typing import Any, Final, Literal

import attrs
import trio

from clank.errors import InvalidArgument, UsageError
from clank.io.offload import run_cpu
from clank.logging import get_logger
from clank.media.audio import Pcm, PcmSource, iter_file_pcm, probe_audio
from clank.media.mixer import Mixer
from clank.session.voice_playback import MUSIC_PREFIX, SPEECH_TRACK, PlaybackEvents

__all__ = ["DEFAULT_MUSIC_FADE_S", "FILE_PREBUFFER_S", "MusicPlayer"]

log = get_logger("clank.voice.music")

FILE_PREBUFFER_S: Final = 2.0
FILE_POLL_S: Final = 0.05
DEFAULT_MUSIC_FADE_S: Final = 0.25

MusicState = Literal["idle", "loading", "playing", "paused"]
Tap = Callable[[Pcm, int], None]


@attrs.define(eq=False)
class _MusicItem:
    name: str
    source: str
    duration_s: float | None
    gain: float | None
    fade_in_s: float


class MusicPlayer:
    """Named music tracks from files/URLs with a queue; see the module docstring."""

    def __init__(self, mixer: Mixer, events: PlaybackEvents, wake: Callable[[], None]) -> None:
        self._mixer = mixer
        self._events = events
        self._wake = wake
        self._nursery: trio.Nursery | None = None
        self._queue: collections.deque[_MusicItem] = collections.deque()
        self._current: _MusicItem | None = None
        self._track: str | None = None
        self._taps: list[Tap] = []
        self._numbers = itertools.count(1)
        self._gain_target: float | None = None
        self._gain_pending = False
        self.tap_errors = 0
        self.errors = 0

    def bind(self, nursery: trio.Nursery | None) -> None:
        self._nursery = nursery

    # ------------------------------------------------------------------ taps (Go Live visualizer)

    def add_tap(self, callback: Tap) -> Callable[[], None]:
        """Call ``callback(pcm, sample_position)`` for every 20 ms block of music.

        ``pcm`` is ``(960, 2)`` int16, 48 kHz stereo: the music track as listeners hear it (after
        its gain, fades and ducking under speech); ``sample_position`` is the track's sample index
        of the block's first sample (0 at the start of each track). Blocks come only while music
        plays (not when paused or idle). Runs on the voice send task every 20 ms: keep it
        cheap (copy and hand off). Returns a function that removes the tap.
        """
        self._taps.append(callback)

        def remove() -> None:
            if callback in self._taps:
                self._taps.remove(callback)

        return remove

    def _tap(self, pcm: Pcm, position: int) -> None:
        for tap in list(self._taps):
            try:
                tap(pcm, position)
            except Exception:  # a broken visualizer must not stop the voice send loop
                self.tap_errors += 1
                log.exception("music tap failed; removed")
                if tap in self._taps:
                    self._taps.remove(tap)

    # ------------------------------------------------------------------ control

    async def play(
        self,
        source: str,
        *,
        name: str | None = None,
        queue: bool = False,
        gain: float | None = None,
        fade_in_s: float = 0.0,
    ) -> dict[str, Any]:
        """Probe ``source`` (on a thread) and play it now, or after the queue when ``queue``.

        Returns the seed-style result ``{ok, reason, name, durationS, queued}``; a source PyAV
        cannot open answers ``ok: false, reason: "source_failed"`` (never raises for it).
        """
        if self._nursery is None:
            raise UsageError("the voice role is not running")
        if gain is not None and not 0.0 <= gain <= 4.0:
            raise InvalidArgument("gain", "must be between 0 and 4")
        try:
            duration = await run_cpu(probe_audio, source, abandon_on_cancel=True)
        except UsageError as exc:
            self.errors += 1
            self._events.publish("music_error", source=_redact(source), message=str(exc))
            return {"ok": False, "reason": "source_failed", "detail": str(exc)}
        item = _MusicItem(name or f"track-{next(self._numbers)}", source, duration, gain, fade_in_s)
        if queue and (self._current is not None or self._queue):
            self._queue.append(item)
            return {"ok": True, "reason": "queued", "name": item.name, "durationS": duration, "queued": True}
        self._queue.clear()
        self._start(item)
        return {"ok": True, "reason": "playing", "name": item.name, "durationS": duration, "queued": False}

    def _start(self, item: _MusicItem) -> None:
        assert self._nursery is not None
        if self._track is not None:
            self._mixer.stop(self._track, fade_s=DEFAULT_MUSIC_FADE_S)
        track = f"{MUSIC_PREFIX}{item.name}:{next(self._numbers)}"
        pcm_source = PcmSource(max_buffer_s=FILE_PREBUFFER_S * 4)
        # An explicit gain wins; else the last music_set_gain target; else 1.
        saved = 1.0 if self._gain_target is None else self._gain_target
        gain = item.gain if item.gain is not None else saved
        if item.gain is not None:
            self._gain_target = item.gain
        self._mixer.play(track, pcm_source, gain=gain, fade_in_s=item.fade_in_s, on_frame=self._tap)
        self._current, self._track = item, track
        self._nursery.start_soon(self._feed, item, track, pcm_source)
        self._events.publish("music_state", status="playing", name=item.name)
        self._wake()

    def pause(self, *, fade_s: float = DEFAULT_MUSIC_FADE_S) -> bool:
        if self._track is None or not self._mixer.has(self._track):
            return False
        self._mixer.pause(self._track, fade_s=fade_s)
        self._events.publish("music_state", status="paused", name=self._current_name())
        return True

    def resume(self, *, fade_s: float = DEFAULT_MUSIC_FADE_S) -> bool:
        if self._track is None or not self._mixer.has(self._track):
            return False
        self._mixer.resume(self._track, fade_s=fade_s)
        self._events.publish("music_state", status="playing", name=self._current_name())
        self._wake()
        return True

    def stop(self, *, fade_s: float = DEFAULT_MUSIC_FADE_S) -> bool:
        """Fade the current track out and drop the queue."""
        self._queue.clear()
        track, self._track, item, self._current = self._track, None, self._current, None
        if track is None:
            return False
        self._mixer.stop(track, fade_s=fade_s)
        self._events.publish("music_state", status="idle", name=None if item is None else item.name)
        return True

    def set_gain(self, target: float, *, fade_s: float = 0.0) -> bool:
        """The seed's ``music_set_gain{target, fadeMs}``; also the gain of later tracks."""
        if not 0.0 <= target <= 4.0:
            raise InvalidArgument("target", "must be between 0 and 4")
        if fade_s < 0 or fade_s > 60:
            raise InvalidArgument("fadeMs", "must be 0..60000")
        self._gain_target = target
        if self._track is None or not self._mixer.has(self._track):
            return False
        self._mixer.set_gain(self._track, target, fade_s=fade_s)
        self._gain_pending = True
        return True

    def _current_name(self) -> str | None:
        return None if self._current is None else self._current.name

    # ------------------------------------------------------------------ per frame

    def after_mix(self) -> None:
        track = self._track
        if track is not None and not self._mixer.has(track):
            finished = self._current
            self._track, self._current = None, None
            if self._queue and self._nursery is not None:
                self._start(self._queue.popleft())
            else:
                self._events.publish(
                    "music_state", status="idle", name=None if finished is None else finished.name
                )
        track = self._track
        if self._gain_pending and track is not None:
            stats = next((t for t in self._mixer.statistics().tracks if t.name == track), None)
            if stats is not None and stats.gain == stats.gain_target:
                self._gain_pending = False
                self._events.publish("music_gain_reached", gain=stats.gain)

    async def _feed(self, item: _MusicItem, track: str, pcm_source: PcmSource) -> None:
        chunks = iter_file_pcm(item.source)
        # A cancelled read is abandoned on its thread (a URL may block); the generator is still
        # executing there, so it must not be closed from another thread (ValueError) — it is
        # left to the garbage collector once that read returns.
        reading = False
        try:
            while self._mixer.has(track):
                try:
                    reading = True
                    chunk = await run_cpu(next, chunks, None, abandon_on_cancel=True)
                    reading = False
                except UsageError as exc:
                    self.errors += 1
                    log.warning("music source failed", track=item.name, error=str(exc))
                    self._events.publish("music_error", name=item.name, message=str(exc))
                    break
                if chunk is None:
                    break
                pcm_source.push_converted(chunk)
                self._wake()
                # Polling is deliberate: the consumer is the 20 ms send loop, not a task to signal.
                while self._mixer.has(track) and pcm_source.buffered_s > FILE_PREBUFFER_S:  # noqa: ASYNC110
                    await trio.sleep(FILE_POLL_S)
        finally:
            if not pcm_source.ended:
                pcm_source.end()
            if not reading:
                with trio.move_on_after(1.0, shield=True):
                    await run_cpu(chunks.close, abandon_on_cancel=True)

    def status(self) -> dict[str, Any]:
        current = None
        state: MusicState = "idle"
        if self._current is not None and self._track is not None:
            mixer_state = self._mixer.state(self._track)
            stats = next((t for t in self._mixer.statistics().tracks if t.name == self._track), None)
            position = self._mixer.position_s(self._track)
            state = "paused" if mixer_state is not None and mixer_state.value == "paused" else "playing"
            if position == 0 and stats is not None and stats.buffered_s == 0:
                state = "loading"
            current = {
                "name": self._current.name,
                "source": _redact(self._current.source),
                "positionS": round(position, 3),
                "durationS": None if self._current.duration_s is None else round(self._current.duration_s, 3),
                "gain": None if stats is None else round(stats.gain, 4),
                "gainTarget": None if stats is None else round(stats.gain_target, 4),
                "bufferedS": None if stats is None else round(stats.buffered_s, 3),
            }
        return {
            "state": state,
            "track": current,
            "queue": [
                {"name": q.name, "source": _redact(q.source), "durationS": q.duration_s} for q in self._queue
            ],
            "taps": len(self._taps),
            "errors": self.errors,
            "otherAudio": self._other_audio(),
        }

    def _other_audio(self) -> list[dict[str, Any]]:
        """Mixer tracks that are neither speech nor this player's, e.g. the song of our own Go Live
        (its visualizer plays into track ``golive-music``): without them a caller asking "is music
        playing?" would read ``idle`` while the channel hears a song."""
        return [
            {
                "name": t.name,
                "state": t.state.value,
                "positionS": round(t.played_s, 3),
                "gain": round(t.gain, 4),
            }
            for t in self._mixer.statistics().tracks
            if t.name != SPEECH_TRACK and not t.name.startswith(MUSIC_PREFIX)
        ]


def _redact(source: str) -> str:
    """A URL without its query string (signed URLs carry credentials there)."""
    return source.split("?", 1)[0]
