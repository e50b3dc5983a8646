"""Audio for the voice role: Opus encode/decode (PyAV libopus), resampling, sources and a mixer.

Wire format (discord-protocol.md §5.1): Opus, 48 kHz, stereo, 20 ms frames (960 samples per
channel), RTP timestamp +960 per frame. PCM inside clank is ``int16`` numpy arrays shaped
``(samples, channels)`` (interleaved when flattened).

Packet-loss concealment: PyAV exposes no ``decode_fec``/PLC call, but libopus conceals when it is
given a packet whose frame is empty: a TOC-only packet (one byte, frame-count code 0) runs the
PLC for one frame of the previous configuration. :meth:`OpusDecoder.conceal` feeds one such
packet per missing frame. In-band FEC *decoding* needs ``opus_decode(..., decode_fec=1)`` on the
next packet, which FFmpeg's libopus wrapper does not offer, so the receiver relies on PLC; our
*encoder* still emits in-band FEC (``fec=1``) so receivers that can use it (Discord clients) do.

Everything here is CPU work without sockets or trio; the voice role calls it from its tasks
(Opus frames are tiny: encode about 0.1-0.3 ms, decode less) and decodes files on a worker thread.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Generator
from typing import Final

import av
import numpy as np
import numpy.typing as npt

from clank.errors import MalformedPacket, UsageError

__all__ = [
    "CHANNELS",
    "FRAME_DURATION",
    "FRAME_SAMPLES",
    "OPUS_SILENCE",
    "SAMPLE_RATE",
    "OpusDecoder",
    "OpusEncoder",
    "Pcm",
    "PcmConverter",
    "PcmSource",
    "SourceState",
    "dominant_frequency",
    "iter_file_pcm",
    "probe_audio",
    "silence",
    "tone",
]

Pcm = npt.NDArray[np.int16]

SAMPLE_RATE: Final = 48_000
CHANNELS: Final = 2
FRAME_SAMPLES: Final = 960
FRAME_DURATION: Final = FRAME_SAMPLES / SAMPLE_RATE  # 0.02 s
OPUS_SILENCE: Final = b"\xf8\xff\xfe"
DEFAULT_BITRATE: Final = 64_000
_LAYOUTS: Final = {1: "mono", 2: "stereo"}


def _layout(channels: int) -> str:
    layout = _LAYOUTS.get(channels)
    if layout is None:
        raise UsageError(f"only mono or stereo PCM is supported, got {channels} channels")
    return layout


def silence(samples: int = FRAME_SAMPLES, channels: int = CHANNELS) -> Pcm:
    return np.zeros((samples, channels), dtype=np.int16)


# --------------------------------------------------------------------------- Opus


class OpusEncoder:
    """48 kHz stereo, 20 ms frames -> one Opus packet each (libopus, VOIP, in-band FEC on)."""

    def __init__(self, bitrate: int = DEFAULT_BITRATE, *, expected_loss_percent: int = 10) -> None:
        ctx = av.CodecContext.create("libopus", "w")
        assert isinstance(ctx, av.AudioCodecContext)
        ctx.sample_rate = SAMPLE_RATE
        ctx.layout = "stereo"
        ctx.format = "s16"
        ctx.bit_rate = bitrate
        ctx.options = {
            "application": "voip",
            "frame_duration": "20",
            "fec": "1",
            "packet_loss": str(expected_loss_percent),
        }
        ctx.open()
        self._ctx = ctx
        self._pts = 0
        self.frames = 0

    def encode(self, pcm: Pcm) -> bytes | None:
        """Encode one frame (``(960, 2)`` int16); None if libopus held it back (rare)."""
        if pcm.shape != (FRAME_SAMPLES, CHANNELS):
            raise UsageError(f"an Opus frame is ({FRAME_SAMPLES}, {CHANNELS}) samples, got {pcm.shape}")
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(pcm, dtype=np.int16).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        self._pts += FRAME_SAMPLES
        packets = self._ctx.encode(frame)
        self.frames += 1
        if not packets:
            return None
        return b"".join(bytes(p) for p in packets)


class OpusDecoder:
    """Opus -> ``(960, 2)`` int16 frames, with packet-loss concealment. One per remote SSRC."""

    def __init__(self) -> None:
        self._ctx = self._open()
        self._last_toc: int | None = None
        self.decoded = 0
        self.concealed = 0
        self.errors = 0

    @staticmethod
    def _open() -> av.AudioCodecContext:
        ctx = av.CodecContext.create("libopus", "r")
        assert isinstance(ctx, av.AudioCodecContext)
        ctx.sample_rate = SAMPLE_RATE
        ctx.layout = "stereo"
        ctx.open()
        return ctx

    def reset(self) -> None:
        """Forget the decoder state (after a discontinuity)."""
        self._ctx = self._open()
        self._last_toc = None

    def decode(self, packet: bytes) -> Pcm:
        """Decode one packet; raises ``MalformedPacket`` when libopus refuses it (state is reset)."""
        if not packet:
            raise MalformedPacket("opus", "empty packet")
        try:
            frames = self._ctx.decode(av.Packet(packet))
        except av.FFmpegError as exc:
            self.errors += 1
            self.reset()
            raise MalformedPacket("opus", f"libopus refused the packet: {exc}") from exc
        self._last_toc = packet[0]
        self.decoded += 1
        return _frames_to_pcm(frames)

    def conceal(self, count: int = 1) -> list[Pcm]:
        """``count`` concealment frames (libopus PLC via TOC-only packets; silence before any packet)."""
        out: list[Pcm] = []
        for _ in range(count):
            self.concealed += 1
            if self._last_toc is None:
                out.append(silence())
                continue
            try:
                frames = self._ctx.decode(av.Packet(bytes([self._last_toc & 0xFC])))
            except av.FFmpegError:
                self.errors += 1
                out.append(silence())
                continue
            out.append(_frames_to_pcm(frames))
        return out


def _frames_to_pcm(frames: list[av.AudioFrame]) -> Pcm:
    if not frames:
        return silence(0)
    parts = [_frame_to_pcm(f) for f in frames]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _frame_to_pcm(frame: av.AudioFrame) -> Pcm:
    channels = frame.layout.nb_channels
    array: npt.NDArray[np.generic] = frame.to_ndarray()
    out = np.ascontiguousarray(array.T) if frame.format.is_planar else array.reshape(-1, channels)
    if out.dtype == np.int16:
        return out.astype(np.int16, copy=False)
    if np.issubdtype(out.dtype, np.floating):
        return np.clip(out.astype(np.float64) * 32767.0, -32768, 32767).astype(np.int16)
    return out.astype(np.int16)


# --------------------------------------------------------------------------- resampling


class PcmConverter:
    """Resample/remix int16 PCM between rates and mono/stereo (PyAV ``AudioResampler``)."""

    def __init__(
        self, in_rate: int, in_channels: int, out_rate: int = SAMPLE_RATE, out_channels: int = CHANNELS
    ):
        if in_rate <= 0 or out_rate <= 0:
            raise UsageError("sample rates must be positive")
        self.in_rate = in_rate
        self.in_channels = in_channels
        self.out_rate = out_rate
        self.out_channels = out_channels
        self._in_layout = _layout(in_channels)
        self._identity = in_rate == out_rate and in_channels == out_channels
        self._resampler = av.AudioResampler(format="s16", layout=_layout(out_channels), rate=out_rate)
        self._pts = 0

    def convert(self, pcm: Pcm | bytes) -> Pcm:
        """Convert a chunk (``(n, in_channels)`` int16 or interleaved s16 bytes); may buffer a few samples."""
        array = _as_pcm(pcm, self.in_channels)
        if self._identity:
            return array
        if len(array) == 0:
            return silence(0, self.out_channels)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(array).reshape(1, -1), format="s16", layout=self._in_layout
        )
        frame.sample_rate = self.in_rate
        frame.pts = self._pts
        self._pts += len(array)
        return self._collect(self._resampler.resample(frame))

    def flush(self) -> Pcm:
        if self._identity:
            return silence(0, self.out_channels)
        return self._collect(self._resampler.resample(None))

    def _collect(self, frames: list[av.AudioFrame]) -> Pcm:
        if not frames:
            return silence(0, self.out_channels)
        parts = [_frame_to_pcm(f) for f in frames]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _as_pcm(pcm: Pcm | bytes, channels: int) -> Pcm:
    if isinstance(pcm, bytes | bytearray | memoryview):
        data = bytes(pcm)
        usable = len(data) - len(data) % (2 * channels)
        return np.frombuffer(data[:usable], dtype=np.int16).reshape(-1, channels)
    array = np.asarray(pcm)
    if array.dtype != np.int16:
        raise UsageError(f"PCM must be int16, got {array.dtype}")
    if array.ndim == 1:
        return array.reshape(-1, channels)
    if array.ndim != 2 or array.shape[1] != channels:
        raise UsageError(f"PCM must be shaped (samples, {channels}), got {array.shape}")
    return array


# --------------------------------------------------------------------------- sources


class SourceState(enum.Enum):
    PLAYING = "playing"
    PAUSED = "paused"
    ENDED = "ended"


class PcmSource:
    """PCM pushed by the caller (TTS, a file feeder), resampled to 48 kHz stereo, read in frames.

    Buffer semantics (the seed's TTS/music buffers): ``push`` appends; when more than
    ``max_buffer_s`` is queued the oldest audio is discarded (counted in ``overflow_s``) so a
    runaway producer adds latency of at most ``max_buffer_s``. ``end()`` marks the end of input:
    the source finishes once drained. An empty, not-ended source underruns (counted).
    """

    def __init__(
        self, rate: int = SAMPLE_RATE, channels: int = CHANNELS, *, max_buffer_s: float = 30.0
    ) -> None:
        self._converter = PcmConverter(rate, channels)
        self._chunks: collections.deque[Pcm] = collections.deque()
        self._offset = 0  # samples already consumed of _chunks[0]
        self._buffered = 0
        self._max = int(max_buffer_s * SAMPLE_RATE)
        self.ended = False
        self.pushed_s = 0.0
        self.played_s = 0.0
        self.overflow_s = 0.0
        self.underruns = 0

    @property
    def buffered_s(self) -> float:
        return self._buffered / SAMPLE_RATE

    @property
    def finished(self) -> bool:
        return self.ended and self._buffered == 0

    def push(self, pcm: Pcm | bytes) -> None:
        if self.ended:
            raise UsageError("push after end()")
        out = self._converter.convert(pcm)
        self._append(out)

    def push_converted(self, pcm: Pcm) -> None:
        """Append 48 kHz stereo PCM as is (already converted, e.g. by :func:`iter_file_pcm`)."""
        if self.ended:
            raise UsageError("push after end()")
        self._append(pcm)

    def end(self) -> None:
        if not self.ended:
            self._append(self._converter.flush())
            self.ended = True

    def clear(self) -> None:
        self._chunks.clear()
        self._offset = 0
        self._buffered = 0

    def _append(self, pcm: Pcm) -> None:
        if len(pcm) == 0:
            return
        self._chunks.append(pcm)
        self._buffered += len(pcm)
        self.pushed_s += len(pcm) / SAMPLE_RATE
        while self._buffered > self._max and self._chunks:
            excess = self._buffered - self._max
            head = self._chunks[0]
            available = len(head) - self._offset
            take = min(excess, available)
            self._offset += take
            self._buffered -= take
            self.overflow_s += take / SAMPLE_RATE
            if self._offset >= len(head):
                self._chunks.popleft()
                self._offset = 0

    def read_frame(self) -> Pcm | None:
        """The next 20 ms (padded with silence at the very end), or None if nothing is buffered."""
        if self._buffered == 0:
            if not self.ended:
                self.underruns += 1
            return None
        out = np.zeros((FRAME_SAMPLES, CHANNELS), dtype=np.int16)
        filled = 0
        while filled < FRAME_SAMPLES and self._chunks:
            head = self._chunks[0]
            take = min(FRAME_SAMPLES - filled, len(head) - self._offset)
            out[filled : filled + take] = head[self._offset : self._offset + take]
            filled += take
            self._offset += take
            if self._offset >= len(head):
                self._chunks.popleft()
                self._offset = 0
        if filled < FRAME_SAMPLES and not self.ended:
            # Not enough for a whole frame yet: keep what we took for the next read.
            self._chunks.appendleft(out[:filled].copy())
            self._offset = 0
            self.underruns += 1
            return None
        self._buffered -= filled
        self.played_s += FRAME_SAMPLES / SAMPLE_RATE
        return out


#: Seconds PyAV waits for a URL to connect or deliver data before the source fails.
OPEN_TIMEOUT_S: Final = 10.0


def _open_audio(source: str) -> av.container.InputContainer:
    if not source or len(source) > 4096:
        raise UsageError("an audio source is a path or URL of 1..4096 characters")
    try:
        return av.open(source, timeout=OPEN_TIMEOUT_S)
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise UsageError(f"cannot open audio source: {exc}") from exc


def probe_audio(source: str) -> float | None:
    """Open ``source`` (file or URL), check it has audio; its duration in seconds when known.

    Blocking (run it on a thread); raises :class:`UsageError` when PyAV cannot open it.
    """
    container = _open_audio(source)
    with container:
        if not container.streams.audio:
            raise UsageError("the source has no audio stream")
        stream = container.streams.audio[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return container.duration / 1_000_000
        return None


def iter_file_pcm(source: str, *, chunk_s: float = 0.5) -> Generator[Pcm, None, None]:
    """Decode an audio file or URL with PyAV into 48 kHz stereo int16 chunks (blocking: run on a thread)."""
    container = _open_audio(source)
    with container:
        if not container.streams.audio:
            raise UsageError("the source has no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="stereo", rate=SAMPLE_RATE)
        pending: list[Pcm] = []
        pending_samples = 0
        target = int(chunk_s * SAMPLE_RATE)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    pcm = _frame_to_pcm(out)
                    pending.append(pcm)
                    pending_samples += len(pcm)
                if pending_samples >= target:
                    yield np.concatenate(pending)
                    pending, pending_samples = [], 0
            for out in resampler.resample(None):
                pending.append(_frame_to_pcm(out))
        except av.FFmpegError as exc:
            raise UsageError(f"audio source failed while decoding: {exc}") from exc
        if pending:
            yield np.concatenate(pending)


# --------------------------------------------------------------------------- test helpers


def tone(
    frequency: float = 440.0,
    seconds: float = 1.0,
    *,
    rate: int = SAMPLE_RATE,
    channels: int = CHANNELS,
    amplitude: float = 0.3,
    phase_samples: int = 0,
) -> Pcm:
    """A sine tone as int16 ``(samples, channels)``; ``phase_samples`` continues an earlier tone."""
    n = round(seconds * rate)
    t = (np.arange(n) + phase_samples) / rate
    mono = (np.sin(2 * np.pi * frequency * t) * amplitude * 32767).astype(np.int16)
    return np.repeat(mono[:, None], channels, axis=1)


def dominant_frequency(pcm: Pcm, rate: int = SAMPLE_RATE) -> float:
    """The strongest frequency (Hz) of the mono downmix (Hann window, parabolic peak refinement)."""
    array = np.asarray(pcm, dtype=np.float64)
    mono = array.mean(axis=1) if array.ndim == 2 else array
    if len(mono) < 16:
        return 0.0
    spectrum = np.abs(np.fft.rfft(mono * np.hanning(len(mono))))
    spectrum[0] = 0.0
    k = int(np.argmax(spectrum))
    if 0 < k < len(spectrum) - 1:
        a, b, c = spectrum[k - 1], spectrum[k], spectrum[k + 1]
        denominator = a - 2 * b + c
        offset = 0.5 * (a - c) / denominator if denominator else 0.0
    else:
        offset = 0.0
    return float((k + offset) * rate / len(mono))
