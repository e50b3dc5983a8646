"""The voice mixer: named tracks summed into 20 ms frames with gain ramps, fades, ducking and taps.

Every track is a :class:`~clank.media.audio.PcmSource` (48 kHz stereo int16) with

- a **gain** that moves linearly to a target over a fade time (the seed's
  ``music_set_gain{target, fadeMs}``), sample-accurately inside each 20 ms block;
- a **fade** multiplier for play/pause/resume/stop (0 -> 1 -> 0), also a per-sample ramp;
- **ducking**: while a ``priority`` track (speech) has audio, the other tracks are attenuated
  to ``duck_gain``; the duck level itself ramps over ``duck_fade_s`` so music never clicks;
- a **tap** (``on_frame``), called once per 20 ms block in which the track produced audio, with
  the track's contribution after gain, fade and duck (``(960, 2)`` int16) and the sample
  position of the block's first sample in the track (the Go Live visualizer reads it).

Not thread-safe: the voice role's send task owns it (taps run on that task: keep them cheap).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import attrs
import numpy as np
import numpy.typing as npt

from clank.errors import UsageError
from clank.media.audio import FRAME_DURATION, FRAME_SAMPLES, SAMPLE_RATE, Pcm, PcmSource, SourceState

__all__ = [
    "DEFAULT_DUCK_FADE_S",
    "DEFAULT_DUCK_GAIN",
    "DEFAULT_FADE_S",
    "FrameTap",
    "Mixer",
    "MixerStatistics",
    "TrackStatistics",
]

DEFAULT_FADE_S: Final = 0.05
DEFAULT_DUCK_GAIN: Final = 0.3
DEFAULT_DUCK_FADE_S: Final = 0.1
MAX_GAIN: Final = 4.0

FrameTap = Callable[[Pcm, int], None]
"""``(pcm (960, 2) int16 after gain, sample position in the track)``, once per 20 ms block."""


@attrs.frozen
class TrackStatistics:
    name: str
    state: SourceState
    gain: float
    gain_target: float
    fade: float
    buffered_s: float
    played_s: float
    underruns: int
    overflow_s: float
    priority: bool


@attrs.frozen
class MixerStatistics:
    frames: int
    silent_frames: int
    clipped_samples: int
    duck_level: float
    tracks: tuple[TrackStatistics, ...]


def _ramp_step(seconds: float) -> float:
    return 1.0 / max(1.0, seconds / FRAME_DURATION)


def _approach(value: float, target: float, step: float) -> float:
    if value < target:
        return min(target, value + step)
    if value > target:
        return max(target, value - step)
    return value


@attrs.define(eq=False)
class _Track:
    name: str
    source: PcmSource
    gain: float
    priority: bool
    on_frame: FrameTap | None = None
    state: SourceState = SourceState.PLAYING
    gain_target: float = 1.0
    gain_step: float = 0.0  # gain units per frame; 0: jump
    fade_gain: float = 1.0  # fade multiplier, ramps towards fade_target
    fade_target: float = 1.0
    fade_step: float = 1.0  # per frame
    stop_after_fade: bool = False
    position: int = 0  # samples of this track mixed so far


def _check_gain(gain: float) -> float:
    if not 0.0 <= gain <= MAX_GAIN:
        raise UsageError(f"gain must be between 0 and {MAX_GAIN}, got {gain}")
    return float(gain)


class Mixer:
    """Sums named tracks into 20 ms frames; see the module docstring."""

    def __init__(
        self,
        *,
        duck_gain: float = DEFAULT_DUCK_GAIN,
        fade_s: float = DEFAULT_FADE_S,
        duck_fade_s: float = DEFAULT_DUCK_FADE_S,
    ) -> None:
        self.duck_gain = duck_gain
        self.fade_s = fade_s
        self.duck_fade_s = duck_fade_s
        self._duck = 1.0
        self._tracks: dict[str, _Track] = {}
        self._frames = 0
        self._silent = 0
        self._clipped = 0

    def _fade_step(self, seconds: float | None) -> float:
        return _ramp_step(self.fade_s if seconds is None else seconds)

    # ------------------------------------------------------------------ control

    def play(
        self,
        name: str,
        source: PcmSource,
        *,
        gain: float = 1.0,
        priority: bool = False,
        fade_in_s: float | None = 0.0,
        on_frame: FrameTap | None = None,
    ) -> None:
        """Add (or replace) track ``name``; ``fade_in_s`` > 0 fades it in."""
        gain = _check_gain(gain)
        fading = bool(fade_in_s)
        self._tracks[name] = _Track(
            name,
            source,
            gain,
            priority,
            on_frame=on_frame,
            gain_target=gain,
            fade_gain=0.0 if fading else 1.0,
            fade_step=self._fade_step(fade_in_s) if fading else 1.0,
        )

    def set_gain(self, name: str, gain: float, *, fade_s: float = 0.0) -> None:
        """Move the track's gain to ``gain`` linearly over ``fade_s`` seconds (0: at once)."""
        track = self._track(name)
        track.gain_target = _check_gain(gain)
        if fade_s <= 0:
            track.gain = track.gain_target
            track.gain_step = 0.0
        else:
            track.gain_step = abs(track.gain_target - track.gain) * FRAME_DURATION / fade_s

    def pause(self, name: str, *, fade_s: float | None = None) -> None:
        track = self._track(name)
        track.state = SourceState.PAUSED
        track.fade_target = 0.0
        track.fade_step = self._fade_step(fade_s)

    def resume(self, name: str, *, fade_s: float | None = None) -> None:
        track = self._track(name)
        if track.state is SourceState.PAUSED:
            track.state = SourceState.PLAYING
        track.fade_target = 1.0
        track.fade_step = self._fade_step(fade_s)
        track.stop_after_fade = False

    def stop(self, name: str, *, fade_s: float | None = None) -> None:
        """Fade ``name`` out and remove it (at once, from the next frame, when ``fade_s`` is 0)."""
        track = self._tracks.get(name)
        if track is None:
            return
        if fade_s == 0 or (track.state is SourceState.PAUSED and track.fade_gain <= 0.0):
            del self._tracks[name]
            return
        track.fade_target = 0.0
        track.fade_step = self._fade_step(fade_s)
        track.stop_after_fade = True

    def stop_all(self, *, fade_s: float | None = None) -> None:
        for name in list(self._tracks):
            self.stop(name, fade_s=fade_s)

    # ------------------------------------------------------------------ queries

    def has(self, name: str) -> bool:
        return name in self._tracks

    def source(self, name: str) -> PcmSource | None:
        track = self._tracks.get(name)
        return None if track is None else track.source

    def position_s(self, name: str) -> float:
        """Seconds of ``name`` mixed so far (0 for an unknown track)."""
        track = self._tracks.get(name)
        return 0.0 if track is None else track.position / SAMPLE_RATE

    def state(self, name: str) -> SourceState | None:
        track = self._tracks.get(name)
        if track is None:
            return None
        return SourceState.ENDED if track.source.finished else track.state

    @property
    def active(self) -> bool:
        """True while some track may still produce audio."""
        return any(not t.source.finished for t in self._tracks.values())

    @property
    def buffered_s(self) -> float:
        return max((t.source.buffered_s for t in self._tracks.values()), default=0.0)

    def _track(self, name: str) -> _Track:
        track = self._tracks.get(name)
        if track is None:
            raise UsageError(f"no track named {name!r}")
        return track

    # ------------------------------------------------------------------ mixing

    def mix(self) -> Pcm | None:
        """The next 20 ms of the mix, or None when no track produced audio (speaking may stop)."""
        self._frames += 1
        ducking = any(
            t.priority and t.source.buffered_s > 0 and t.fade_target > 0 for t in self._tracks.values()
        )
        duck_start = self._duck
        duck_end = _approach(duck_start, self.duck_gain if ducking else 1.0, _ramp_step(self.duck_fade_s))
        self._duck = duck_end
        acc: npt.NDArray[np.float32] | None = None
        for track in list(self._tracks.values()):
            if track.state is SourceState.PAUSED and track.fade_gain <= 0.0:
                continue
            frame = track.source.read_frame()
            fade_start = track.fade_gain
            fade_end = _approach(fade_start, track.fade_target, track.fade_step)
            track.fade_gain = fade_end
            gain_start = track.gain
            if track.gain_step:
                track.gain = _approach(gain_start, track.gain_target, track.gain_step)
                if track.gain == track.gain_target:
                    track.gain_step = 0.0
            gain_end = track.gain
            if frame is None:
                if track.source.finished or (track.stop_after_fade and fade_end <= 0.0):
                    del self._tracks[track.name]
                continue
            start, end = fade_start * gain_start, fade_end * gain_end
            if not track.priority:
                start, end = start * duck_start, end * duck_end
            if start == end:
                contribution = frame.astype(np.float32) * np.float32(start)
            else:
                ramp = np.linspace(start, end, FRAME_SAMPLES, endpoint=False, dtype=np.float32)
                contribution = frame.astype(np.float32) * ramp[:, None]
            if track.on_frame is not None:
                track.on_frame(np.clip(contribution, -32768, 32767).astype(np.int16), track.position)
            track.position += FRAME_SAMPLES
            acc = contribution if acc is None else acc + contribution
            if track.stop_after_fade and fade_end <= 0.0:
                del self._tracks[track.name]
        if acc is None:
            self._silent += 1
            return None
        clipped = np.count_nonzero((acc > 32767) | (acc < -32768))
        self._clipped += int(clipped)
        return np.clip(acc, -32768, 32767).astype(np.int16)

    def statistics(self) -> MixerStatistics:
        return MixerStatistics(
            frames=self._frames,
            silent_frames=self._silent,
            clipped_samples=self._clipped,
            duck_level=self._duck,
            tracks=tuple(
                TrackStatistics(
                    name=t.name,
                    state=SourceState.ENDED if t.source.finished else t.state,
                    gain=t.gain,
                    gain_target=t.gain_target,
                    fade=t.fade_gain,
                    buffered_s=t.source.buffered_s,
                    played_s=t.position / SAMPLE_RATE,
                    underruns=t.source.underruns,
                    overflow_s=t.source.overflow_s,
                    priority=t.priority,
                )
                for t in self._tracks.values()
            ),
        )
