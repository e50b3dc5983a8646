"""One PyAV decode of an audio or video file/URL feeding both the voice mixer and our Go Live.

:class:`AvPipeline` opens the media once and yields :class:`MediaChunk` values in media order:
48 kHz stereo int16 PCM for the voice role's music track, and yuv420p pictures at the stream
size with their media time in seconds. The pictures are either a rendering of that same audio
through an FFmpeg filter graph (``showcqt`` by default, ``showwaves``, ``showspectrum``) or the
file's own video, decoded and scaled (the media relay). Audio and video come from one decode,
so they share one clock: a picture with media time ``t`` belongs with the audio sample at
``t * 48000``. ``off`` renders nothing (audio only). With ``loop`` the media restarts at its end
and media time keeps increasing.

Everything here is CPU work: iterate :meth:`AvPipeline.chunks` on a worker thread.
"""

from __future__ import annotations

import fractions
from collections.abc import Iterator
from typing import Any, Final, Literal

import attrs
import av
import numpy as np
import numpy.typing as npt

from clank.errors import InvalidArgument

__all__ = [
    "VISUALIZERS",
    "AvPipeline",
    "MediaChunk",
    "VideoMode",
    "probe_media",
    "write_demo_music",
    "write_wav",
]

SAMPLE_RATE: Final = 48_000
VISUALIZERS: Final = ("showcqt", "showwaves", "showspectrum")
VideoMode = Literal["showcqt", "showwaves", "showspectrum", "off", "file"]
#: Seconds of PCM per yielded chunk (video pictures of the same span ride along).
CHUNK_SECONDS: Final = 0.2
OPEN_TIMEOUT_S: Final = 10.0

Pcm = npt.NDArray[np.int16]


@attrs.frozen
class MediaChunk:
    pcm: Pcm = attrs.field(repr=lambda p: f"<{len(p)} samples>", eq=False)
    """(n, 2) int16 at 48 kHz; may be empty (video-only media)."""
    start_s: float
    """Media time of the first sample."""
    frames: tuple[tuple[float, av.VideoFrame], ...] = attrs.field(
        repr=lambda f: f"<{len(f)} frames>", eq=False
    )


def _filter_chain(mode: VideoMode, width: int, height: int, fps: int) -> list[tuple[str, str]]:
    size = f"{width}x{height}"
    if mode == "showcqt":
        return [("showcqt", f"s={size}:r={fps}:count=2")]  # 2 transforms per frame: -40% CPU
    if mode == "showwaves":
        return [("showwaves", f"s={size}:r={fps}:mode=cline"), ("format", "yuv420p")]
    if mode == "showspectrum":
        return [
            ("showspectrum", f"s={size}:slide=scroll:color=intensity"),
            ("fps", str(fps)),
            ("format", "yuv420p"),
        ]
    raise InvalidArgument("visualizer", f"expected one of {', '.join(VISUALIZERS)} or off, got {mode!r}")


def _open(url: str) -> Any:
    try:
        return av.open(url, "r", timeout=OPEN_TIMEOUT_S)
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise InvalidArgument("url", f"cannot open {url!r}: {exc}") from exc


def probe_media(url: str, *, need_video: bool = False) -> tuple[bool, bool]:
    """(has audio, has video) of ``url``; ``InvalidArgument('url')`` if unreachable/undecodable."""
    container = _open(url)
    try:
        audio = bool(container.streams.audio)
        video = bool(container.streams.video)
    finally:
        container.close()
    if need_video and not video:
        raise InvalidArgument("url", f"{url!r} has no video stream")
    if not audio and not video:
        raise InvalidArgument("url", f"{url!r} has neither audio nor video")
    return audio, video


class AvPipeline:
    """See the module docstring."""

    def __init__(
        self, url: str, *, video: VideoMode, width: int, height: int, fps: int, loop: bool = False
    ) -> None:
        if video not in (*VISUALIZERS, "off", "file"):
            raise InvalidArgument(
                "visualizer", f"expected one of {', '.join(VISUALIZERS)} or off, got {video!r}"
            )
        self.url = url
        self.video: VideoMode = video
        self.width, self.height, self.fps = width, height, fps
        self.loop = loop
        self.has_audio, self.has_video = probe_media(url, need_video=video == "file")
        if not self.has_audio and video in VISUALIZERS:
            raise InvalidArgument("url", f"{url!r} has no audio to visualize")
        self.passes = 0

    def chunks(self) -> Iterator[MediaChunk]:
        """The media as chunks of ~``CHUNK_SECONDS``, forever with ``loop`` (worker thread)."""
        offset = 0.0
        while True:
            end = offset
            for chunk in self._one_pass(offset):
                end = max(end, chunk.start_s + len(chunk.pcm) / SAMPLE_RATE, *(t for t, _ in chunk.frames))
                yield chunk
            self.passes += 1
            if not self.loop or end <= offset:
                return
            offset = end + 1 / self.fps

    def _one_pass(self, offset: float) -> Iterator[MediaChunk]:
        container = _open(self.url)
        try:
            yield from self._decode(container, offset)
        finally:
            container.close()

    def _decode(self, container: Any, offset: float) -> Iterator[MediaChunk]:
        audio_stream = container.streams.audio[0] if container.streams.audio else None
        video_stream = (
            container.streams.video[0] if container.streams.video and self.video == "file" else None
        )
        streams = [s for s in (audio_stream, video_stream) if s is not None]
        resampler = av.AudioResampler(format="s16", layout="stereo", rate=SAMPLE_RATE)
        graph, source, sink = self._graph() if self.video in VISUALIZERS else (None, None, None)
        pcm_parts: list[Pcm] = []
        pcm_len = 0
        samples = 0  # PCM samples emitted in this pass
        frames: list[tuple[float, av.VideoFrame]] = []
        try:
            packets = container.demux(*streams)
            for packet in packets:
                try:
                    decoded = packet.decode()
                except av.FFmpegError:
                    continue  # a damaged packet: skip it, as players do
                for frame in decoded:
                    if isinstance(frame, av.AudioFrame):
                        for out in resampler.resample(frame):
                            pcm = _pcm(out)
                            if source is not None and sink is not None:
                                out.pts = samples + pcm_len  # one clock: samples of this pass
                                out.time_base = fractions.Fraction(1, SAMPLE_RATE)
                                source.push(out)
                                frames += self._pull(sink, offset)
                            pcm_parts.append(pcm)
                            pcm_len += len(pcm)
                    elif isinstance(frame, av.VideoFrame) and frame.time is not None:
                        scaled = frame.reformat(width=self.width, height=self.height, format="yuv420p")
                        frames.append((offset + float(frame.time), scaled))
                if pcm_len >= CHUNK_SECONDS * SAMPLE_RATE or (audio_stream is None and len(frames) >= 6):
                    yield self._chunk(pcm_parts, offset + samples / SAMPLE_RATE, frames)
                    samples += pcm_len
                    pcm_parts, pcm_len, frames = [], 0, []
            for out in resampler.resample(None):
                pcm_parts.append(_pcm(out))
            if source is not None and sink is not None:
                source.push(None)
                frames += self._pull(sink, offset, flushing=True)
            if pcm_parts or frames:
                yield self._chunk(pcm_parts, offset + samples / SAMPLE_RATE, frames)
        finally:
            del graph

    def _graph(self) -> tuple[Any, Any, Any]:
        graph = av.filter.Graph()
        source = graph.add_abuffer(
            format="s16",
            sample_rate=SAMPLE_RATE,
            layout="stereo",
            time_base=fractions.Fraction(1, SAMPLE_RATE),
        )
        previous = source
        for name, args in _filter_chain(self.video, self.width, self.height, self.fps):
            node = graph.add(name, args)
            previous.link_to(node)
            previous = node
        sink = graph.add("buffersink")
        previous.link_to(sink)
        graph.configure()
        return graph, source, sink

    def _pull(self, sink: Any, offset: float, *, flushing: bool = False) -> list[tuple[float, av.VideoFrame]]:
        out: list[tuple[float, av.VideoFrame]] = []
        while True:
            try:
                picture = sink.pull()
            except (av.BlockingIOError, av.EOFError):
                return out
            except av.FFmpegError:
                if flushing:
                    return out
                raise
            when = float(picture.pts * picture.time_base) if picture.pts is not None else 0.0
            if picture.format.name != "yuv420p" or (picture.width, picture.height) != (
                self.width,
                self.height,
            ):
                picture = picture.reformat(width=self.width, height=self.height, format="yuv420p")
            out.append((offset + when, picture))

    @staticmethod
    def _chunk(parts: list[Pcm], start: float, frames: list[tuple[float, av.VideoFrame]]) -> MediaChunk:
        pcm = np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int16)
        return MediaChunk(pcm=pcm, start_s=start, frames=tuple(frames))


def _pcm(frame: av.AudioFrame) -> Pcm:
    """Interleaved s16 stereo frame -> (n, 2) int16."""
    array = frame.to_ndarray()
    out: Pcm = np.ascontiguousarray(array.reshape(-1, 2), dtype=np.int16)
    return out


def write_demo_music(path: str, seconds: float = 20.0) -> str:
    """A short generated "song" (WAV): a chord progression with a kick on every beat."""
    rate = SAMPLE_RATE
    t = np.arange(int(seconds * rate)) / rate
    chords = ((220.0, 277.2, 329.6), (196.0, 246.9, 293.7), (174.6, 220.0, 261.6), (196.0, 246.9, 329.6))
    bar = (t // 2.0).astype(int) % len(chords)
    wave = np.zeros_like(t)
    for index, chord in enumerate(chords):
        mask = bar == index
        wave[mask] = sum(np.sin(2 * np.pi * f * t[mask]) for f in chord) / 3
    beat = t % 0.5
    wave += 0.8 * np.sin(2 * np.pi * 60 * t) * np.exp(-beat * 18)
    mono = (np.clip(wave * 0.35, -1, 1) * 32767).astype(np.int16)
    return write_wav(path, mono, rate)


def write_wav(path: str, mono: npt.NDArray[np.int16], rate: int = SAMPLE_RATE) -> str:
    """Write 16-bit ``mono`` samples as a stereo WAV at ``path`` (both channels the same)."""
    with av.open(path, "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=rate)
        stream.layout = "stereo"
        for start in range(0, len(mono), 9600):
            chunk = np.repeat(mono[start : start + 9600, None], 2, axis=1).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="s16", layout="stereo")
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path
