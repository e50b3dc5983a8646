"""Publish sources backed by one PyAV decode: music with a visualizer, and the media relay.

An :class:`AvSource` runs :class:`~clank.media.visualizer.AvPipeline` on a worker thread (one
chunk of ~0.2 s per call), pushes its PCM into a track of the voice role's mixer (the pushed-
PCM source API, ``open_pcm_track``: the music track with its gain and fades) and queues its
pictures with their media time. The publisher's frame clock then asks for the picture that
belongs to the audio being sent *now*: the media clock is the track's ``played_s`` (20 ms
frames the voice sender has taken), so audio and video share one timeline and the skew stays
within a frame interval (measured: ``statistics().skew_p99_ms``). Media without audio runs on
trio's clock instead.

The feeder keeps at most ``AHEAD_S`` of media decoded ahead of the clock (bounded memory).
When the media ends (and is not looped) :meth:`AvSource.run` returns after the last audio was
played: the publish role then ends the stream (end of track stops it, as in the seed). A
decode error mid-way also ends it (logged).
"""

from __future__ import annotations

import collections
from typing import Any, Final, Literal

import attrs
import av
import trio

from clank.errors import ClankError
from clank.io.offload import run_cpu
from clank.logging import get_logger
from clank.media.audio import PcmSource
from clank.media.visualizer import AvPipeline, MediaChunk

__all__ = ["AHEAD_S", "AvSource", "AvSourceStatistics"]

log = get_logger("clank.publish.media")

AHEAD_S: Final = 0.6
POLL_S: Final = 0.02
MUSIC_TRACK: Final = "golive-music"
"""Our own mixer track (the voice role's music player keeps its own tracks)."""
SKEW_WINDOW: Final = 1024


@attrs.frozen
class AvSourceStatistics:
    name: str
    url: str
    video: str
    media_time_s: float
    frames_queued: int
    frames_shown: int
    frames_skipped: int
    passes: int
    skew_p99_ms: float | None
    skew_max_ms: float | None
    finished: bool
    error: str | None


class AvSource:
    """A publish source over an :class:`AvPipeline` (see the module docstring)."""

    def __init__(
        self,
        pipeline: AvPipeline,
        voice: Any | None,
        *,
        name: Literal["visualizer", "media"],
        gain: float = 1.0,
        track: str = MUSIC_TRACK,
    ) -> None:
        self.name: str = name
        self.pipeline = pipeline
        self._voice = voice
        self._gain = gain
        self._track = track
        self._audio: PcmSource | None = None
        self._frames: collections.deque[tuple[float, av.VideoFrame]] = collections.deque()
        self._last: tuple[float, av.VideoFrame] | None = None
        self._decoded_until = 0.0
        self._clock_origin: float | None = None
        self._paused_at: float | None = None
        self._skews: collections.deque[float] = collections.deque(maxlen=SKEW_WINDOW)
        self._shown = 0
        self._skipped = 0
        self._finished = False
        self._error: str | None = None
        self._limiter = trio.CapacityLimiter(1)

    # ------------------------------------------------------------------ clock

    def media_time(self, now: float) -> float:
        """Seconds of media sent so far: the music track's played audio, else trio time."""
        audio = self._audio
        if audio is not None:
            return audio.played_s
        if self._clock_origin is None:
            return 0.0
        end = self._paused_at if self._paused_at is not None else now
        return end - self._clock_origin

    # ------------------------------------------------------------------ PublishSource

    def next_frame(self, now: float) -> av.VideoFrame | None:
        position = self.media_time(now)
        interval = 1.0 / self.pipeline.fps
        frames = self._frames
        # One picture per tick, in order: the audio clock moves in 20 ms steps, so "newest due"
        # would skip pictures. Only when we fall a whole interval behind are pictures dropped.
        while len(frames) > 1 and frames[1][0] <= position - interval:
            frames.popleft()
            self._skipped += 1
        picked = None
        if frames and frames[0][0] <= position + interval / 2:
            picked = frames.popleft()
        if picked is not None:
            self._last = picked
            self._shown += 1
            self._skews.append(position - picked[0])
        return None if self._last is None else self._last[1]

    def pause(self) -> None:
        if self._voice is not None and self._audio is not None:
            self._voice.pause(self._track)
        if self._paused_at is None:
            self._paused_at = trio.current_time()

    def resume(self) -> None:
        if self._voice is not None and self._audio is not None:
            self._voice.resume(self._track)
        if self._paused_at is not None and self._clock_origin is not None:
            self._clock_origin += trio.current_time() - self._paused_at
        self._paused_at = None

    def close(self) -> None:
        """Stop the music track (the source was replaced or the publish ended)."""
        if self._voice is not None and self._audio is not None:
            try:
                self._voice.stop(self._track)
            except ClankError:
                pass  # the voice role is gone already

    async def run(self) -> None:
        """Decode and feed until the media ends (returns) or the caller cancels (track stopped)."""
        pipeline = self.pipeline
        if pipeline.has_audio and self._voice is not None:
            self._audio = self._voice.open_pcm_track(
                self._track, gain=self._gain, priority=False, max_buffer_s=4 * AHEAD_S + 2
            )
        self._clock_origin = trio.current_time()
        chunks = pipeline.chunks()
        try:
            while True:
                try:
                    chunk: MediaChunk | None = await run_cpu(next, chunks, None, limiter=self._limiter)
                except ClankError as exc:
                    self._error = str(exc)
                    log.warning("publish media failed", url=pipeline.url, error=str(exc))
                    break
                if chunk is None:
                    break
                self._feed(chunk)
                while self._ahead() > AHEAD_S:  # noqa: ASYNC110 - the consumer is the frame clock
                    await trio.sleep(POLL_S)
            audio = self._audio
            if audio is not None:
                audio.end()
                while not audio.finished:  # noqa: ASYNC110 - drained by the voice sender
                    await trio.sleep(POLL_S)
            else:
                while self._frames:  # noqa: ASYNC110 - drained by the frame clock
                    await trio.sleep(POLL_S)
            self._finished = True
        except BaseException:
            self.close()
            raise

    def _feed(self, chunk: MediaChunk) -> None:
        if self._audio is not None and len(chunk.pcm):
            self._audio.push_converted(chunk.pcm)
        self._frames.extend(chunk.frames)
        end = chunk.start_s + len(chunk.pcm) / 48_000
        if chunk.frames:
            end = max(end, chunk.frames[-1][0])
        self._decoded_until = max(self._decoded_until, end)

    def _ahead(self) -> float:
        return self._decoded_until - self.media_time(trio.current_time())

    def statistics(self) -> AvSourceStatistics:
        skews = sorted(abs(s) for s in self._skews)
        p99 = skews[min(len(skews) - 1, round(0.99 * (len(skews) - 1)))] if skews else None
        return AvSourceStatistics(
            name=self.name,
            url=self.pipeline.url,
            video=self.pipeline.video,
            media_time_s=round(self.media_time(trio.current_time()), 3),
            frames_queued=len(self._frames),
            frames_shown=self._shown,
            frames_skipped=self._skipped,
            passes=self.pipeline.passes,
            skew_p99_ms=None if p99 is None else round(p99 * 1000, 1),
            skew_max_ms=round(skews[-1] * 1000, 1) if skews else None,
            finished=self._finished,
            error=self._error,
        )
