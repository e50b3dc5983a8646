"""Opus encode/decode with PLC, resampling, PCM sources, the mixer and the tone helpers (real PyAV)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from clank.errors import MalformedPacket, UsageError
from clank.media.audio import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    OpusDecoder,
    OpusEncoder,
    PcmConverter,
    PcmSource,
    dominant_frequency,
    iter_file_pcm,
    tone,
)
from clank.media.mixer import Mixer


def frames_of(pcm: np.ndarray) -> list[np.ndarray]:
    return [pcm[i : i + FRAME_SAMPLES] for i in range(0, len(pcm) - FRAME_SAMPLES + 1, FRAME_SAMPLES)]


def test_tone_and_dominant_frequency() -> None:
    assert abs(dominant_frequency(tone(440.0, 0.5)) - 440.0) < 2.0
    assert abs(dominant_frequency(tone(1000.0, 0.2, rate=16000, channels=1), rate=16000) - 1000.0) < 5.0


def test_opus_round_trip_keeps_the_tone() -> None:
    encoder, decoder = OpusEncoder(), OpusDecoder()
    packets = [encoder.encode(f) for f in frames_of(tone(440.0, 1.0))]
    assert all(p is not None and 0 < len(p) < 400 for p in packets)
    decoded = np.concatenate([decoder.decode(p) for p in packets if p is not None])
    assert decoded.shape == (SAMPLE_RATE, 2)
    assert abs(dominant_frequency(decoded[4800:]) - 440.0) < 3.0


def test_concealment_continues_the_signal_through_loss() -> None:
    encoder, decoder = OpusEncoder(), OpusDecoder()
    packets = [encoder.encode(f) for f in frames_of(tone(440.0, 1.0))]
    out: list[np.ndarray] = []
    for i, packet in enumerate(packets):
        assert packet is not None
        if i % 10 == 5:  # 10% loss
            out += decoder.conceal(1)
        else:
            out.append(decoder.decode(packet))
    audio = np.concatenate(out)
    assert decoder.concealed == 5
    assert audio.shape == (SAMPLE_RATE, 2)
    concealed_frame = audio[15 * FRAME_SAMPLES : 16 * FRAME_SAMPLES]
    assert np.abs(concealed_frame).max() > 1000  # PLC, not silence
    assert abs(dominant_frequency(audio[4800:]) - 440.0) < 5.0


def test_conceal_before_any_packet_is_silence_and_bad_packets_raise() -> None:
    decoder = OpusDecoder()
    (frame,) = decoder.conceal(1)
    assert frame.shape == (FRAME_SAMPLES, 2) and not frame.any()
    with pytest.raises(MalformedPacket):
        decoder.decode(b"")


def test_encoder_rejects_wrong_frame_shape() -> None:
    with pytest.raises(UsageError):
        OpusEncoder().encode(tone(440.0, 0.01))


def test_converter_resamples_mono_16k_to_stereo_48k_and_back() -> None:
    up = PcmConverter(16000, 1)
    pcm = np.concatenate([up.convert(tone(300.0, 0.1, rate=16000, channels=1)) for _ in range(5)])
    pcm = np.concatenate([pcm, up.flush()])
    assert pcm.shape[1] == 2
    assert abs(len(pcm) - SAMPLE_RATE // 2) < 200
    assert abs(dominant_frequency(pcm) - 300.0) < 4.0
    down = PcmConverter(SAMPLE_RATE, 2, 24000, 1)
    mono = down.convert(pcm)
    assert mono.shape[1] == 1
    assert abs(dominant_frequency(mono, 24000) - 300.0) < 4.0


def test_converter_accepts_interleaved_bytes() -> None:
    converter = PcmConverter(SAMPLE_RATE, 2)
    raw = tone(440.0, 0.02).tobytes()
    assert converter.convert(raw).shape == (FRAME_SAMPLES, 2)
    with pytest.raises(UsageError):
        PcmConverter(SAMPLE_RATE, 6)


def test_pcm_source_frames_underruns_and_end_padding() -> None:
    source = PcmSource()
    assert source.read_frame() is None and source.underruns == 1
    source.push(tone(440.0, 0.03))  # 1.5 frames
    assert source.read_frame() is not None
    assert source.read_frame() is None  # half a frame: wait for more
    source.end()
    last = source.read_frame()
    assert last is not None and not last[FRAME_SAMPLES // 2 :].any()
    assert source.finished and source.read_frame() is None
    with pytest.raises(UsageError):
        source.push(tone(440.0, 0.02))


def test_pcm_source_overflow_discards_oldest() -> None:
    source = PcmSource(max_buffer_s=0.1)
    source.push(tone(440.0, 0.5))
    assert source.buffered_s == pytest.approx(0.1)
    assert source.overflow_s == pytest.approx(0.4)


def test_mixer_gain_duck_fade_and_stop() -> None:
    mixer = Mixer(duck_gain=0.25, fade_s=0.04, duck_fade_s=0.0)
    music = PcmSource()
    music.push(np.full((FRAME_SAMPLES * 20, 2), 8000, dtype=np.int16))
    mixer.play("music", music, gain=0.5)
    frame = mixer.mix()
    assert frame is not None and int(frame[0, 0]) == 4000
    speech = PcmSource()
    speech.push(np.full((FRAME_SAMPLES * 2, 2), 1000, dtype=np.int16))
    speech.end()
    mixer.play("speech", speech, priority=True)
    ducked = mixer.mix()  # the duck ramps within this frame
    assert ducked is not None and int(ducked[-1, 0]) == pytest.approx(8000 * 0.5 * 0.25 + 1000, abs=40)
    mixer.stop("music")
    first = mixer.mix()
    second = mixer.mix()
    assert first is not None and second is not None
    assert abs(int(first[-1, 0])) < abs(int(first[0, 0])) + 1  # fading out
    assert not mixer.has("music")
    assert mixer.mix() is None and not mixer.active
    assert mixer.statistics().frames == 5


def test_mixer_pause_and_resume() -> None:
    mixer = Mixer(fade_s=0.02)
    source = PcmSource()
    source.push(np.full((FRAME_SAMPLES * 10, 2), 1000, dtype=np.int16))
    mixer.play("a", source)
    mixer.pause("a")
    assert mixer.mix() is not None  # one fade-out frame
    assert mixer.mix() is None
    buffered = source.buffered_s
    mixer.resume("a")
    assert mixer.mix() is not None
    assert source.buffered_s < buffered
    with pytest.raises(UsageError):
        mixer.pause("missing")


def test_iter_file_pcm_decodes_and_resamples(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=22050, layout="mono")
        pcm = tone(550.0, 1.0, rate=22050, channels=1)
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 22050
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    chunks = list(iter_file_pcm(str(path), chunk_s=0.25))
    audio = np.concatenate(chunks)
    assert len(chunks) >= 3 and audio.shape[1] == 2
    assert abs(len(audio) - SAMPLE_RATE) < 300
    assert abs(dominant_frequency(audio) - 550.0) < 4.0
    with pytest.raises(UsageError):
        list(iter_file_pcm(str(tmp_path / "missing.wav")))
