"""Simulated call members: real DAVE (``DaveSessionCore`` on davey), real RTP + transport AEAD.

A :class:`SimulatedMember` attaches to a :class:`~.server.MediaServer` in-process (no websocket:
the server hands it the key and DAVE version that Ready + Session Description would carry) and
is then an ordinary participant: it hears everyone (the listener part: per-sender Opus decode,
the last few seconds of PCM, a dominant-frequency helper) and talks when asked (the speaker
part: a tone or a speech-like signal, Opus via PyAV libopus, 20 ms frames on absolute
deadlines, DAVE-encrypted, five silence frames when it stops).

Opus encode/decode of one 20 ms frame costs tens of microseconds, so audio runs on the trio
thread; video encoding does not (see :mod:`.streamer`).
"""

from __future__ import annotations

import collections
import math
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Final, Literal

import av
import numpy as np
import numpy.typing as npt
import trio

from clank.crypto.dave import OPUS_SILENCE, DaveBinary, DaveFrame, DaveSessionCore
from clank.crypto.transport import TransportCipher
from clank.errors import DaveError, MalformedMessage
from clank.logging import get_logger
from clank.sandbox.rtc.peer import SIMULATED_CODECS, Participant
from clank.sandbox.rtc.receiver import MediaReceiver, ReceivedAudio, ReceivedFrame
from clank.sandbox.rtc.server import MediaServer
from clank.wire import rtcp
from clank.wire import voice_gateway as vg
from clank.wire.rtp import RtpHeader

log = get_logger("clank.sandbox.rtc.users")

SAMPLE_RATE: Final = 48000
FRAME_SAMPLES: Final = 960  # 20 ms
FRAME_SECONDS: Final = FRAME_SAMPLES / SAMPLE_RATE
SILENCE_FRAMES: Final = 5
LISTEN_SECONDS: Final = 5.0
"""PCM kept per sender."""
FRAMES_KEPT: Final = 64
REPLAY_FRAMES_KEPT: Final = 500
"""Encoded frames a speaker keeps for replay (50 per signal and frequency)."""
"""Decrypted video frames kept per member (tests compare them with what the sender encrypted)."""

Signal = Literal["tone", "speech"]
Pcm = npt.NDArray[np.int16]
FeedbackHandler = Callable[[rtcp.RtcpPacket], None]


def synth_audio(signal: Signal, frequency: float, start: int, count: int) -> Pcm:
    """Mono int16 samples ``start .. start+count`` of a tone, or of a speech-like signal
    (a tone at ``frequency`` with a 3-harmonic timbre and a 4 Hz syllable envelope)."""
    t = (np.arange(count) + start) / SAMPLE_RATE
    if signal == "tone":
        wave = np.sin(2 * np.pi * frequency * t)
    else:
        harmonics = sum(np.sin(2 * np.pi * frequency * k * t) / k for k in (1, 2, 3))
        envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t)
        wave = harmonics * envelope / 1.8
    pcm: Pcm = (wave * 12000).astype(np.int16)
    return pcm


def dominant_frequency(pcm: Pcm, sample_rate: int = SAMPLE_RATE) -> float:
    """The strongest frequency (Hz) in ``pcm`` (0.0 for silence or nothing)."""
    if len(pcm) < 64 or not np.any(pcm):
        return 0.0
    samples = pcm.astype(np.float64) * np.hanning(len(pcm))
    spectrum = np.abs(np.fft.rfft(samples))
    spectrum[0] = 0.0
    return float(np.argmax(spectrum)) * sample_rate / len(pcm)


class _OpusDecoder:
    def __init__(self) -> None:
        self._context = av.CodecContext.create("libopus", "r")
        self._context.sample_rate = SAMPLE_RATE
        self._context.layout = "stereo"

    def decode(self, opus: bytes) -> Pcm:
        chunks = []
        try:
            frames = self._context.decode(av.Packet(opus))
        except av.FFmpegError:
            return np.zeros(0, dtype=np.int16)
        for frame in frames:
            array = frame.to_ndarray()
            if array.dtype != np.int16:
                array = (np.clip(array, -1.0, 1.0) * 32767).astype(np.int16)
            channels = len(frame.layout.channels)
            chunks.append(array.reshape(-1)[::channels] if array.shape[0] == 1 else array[0])
        return np.concatenate(chunks).astype(np.int16) if chunks else np.zeros(0, dtype=np.int16)


class _OpusEncoder:
    def __init__(self) -> None:
        context = av.CodecContext.create("libopus", "w")
        context.sample_rate = SAMPLE_RATE
        context.layout = "stereo"
        context.format = "s16"
        context.bit_rate = 64000
        self._context = context
        self._pts = 0

    def encode(self, mono: Pcm) -> list[bytes]:
        stereo = np.repeat(mono[:, None], 2, axis=1).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        self._pts += len(mono)
        return [bytes(p) for p in self._context.encode(frame)]


class SimulatedMember:
    """One simulated user in one call (a PeerSink). Use :func:`open_simulated_member`."""

    def __init__(self, server: MediaServer, user_id: int, *, video_streams: int = 1) -> None:
        self.server = server
        self.user_id = user_id
        attachment = server.attach(user_id, self, video_streams=video_streams)
        self.participant: Participant = attachment.participant
        self.cipher = TransportCipher(attachment.mode, attachment.secret_key)
        self.dave_session = DaveSessionCore(user_id, server.group_id)
        self.receiver = MediaReceiver(self.cipher, self.dave_session, SIMULATED_CODECS)
        self.closed_with: int | None = None
        self.feedback_handler: FeedbackHandler | None = None
        self.frame_handler: Callable[[ReceivedFrame], None] | None = None
        """Called for every decrypted video frame (a stream viewer decodes them)."""
        self.frames: collections.deque[ReceivedFrame] = collections.deque(maxlen=FRAMES_KEPT)
        self.audio_packets: collections.Counter[int] = collections.Counter()
        self._pcm: dict[int, collections.deque[Pcm]] = {}
        self._decoders: dict[int, _OpusDecoder] = {}
        self.dave_errors = 0
        self._seq = 0
        self._timestamp = 0
        frames = self.dave_session.on_session_description(attachment.dave_protocol_version)
        server.join(self.participant, frames)

    def __repr__(self) -> str:
        return f"<SimulatedMember {self.user_id} on {self.server!r}>"

    @property
    def audio_ssrc(self) -> int:
        return self.participant.audio_ssrc

    @property
    def joined(self) -> bool:
        return self.closed_with is None and self.server.participant(self.user_id) is self.participant

    # ------------------------------------------------------------------ PeerSink

    def datagram(self, data: bytes) -> None:
        self._handle(self.receiver.receive(data, trio.current_time()))

    def notify(self, payload: vg.Payload) -> None:
        if isinstance(payload, vg.ClientsConnect):
            self.dave_session.clients_connected(int(u) for u in payload.user_ids)
        elif isinstance(payload, vg.ClientDisconnect):
            self.dave_session.client_disconnected(int(payload.user_id))
            self.receiver.forget_user(int(payload.user_id))
        elif isinstance(payload, vg.Speaking) and payload.user_id is not None:
            self.receiver.bind_audio(payload.ssrc, int(payload.user_id))
        elif isinstance(payload, vg.Video):
            self.receiver.bind_video(payload)

    def dave(self, frame: DaveFrame) -> None:
        try:
            if isinstance(frame, DaveBinary):
                answers = self.dave_session.on_binary(frame.op, frame.payload)
            else:
                answers = self.dave_session.on_json(frame.op, frame.data)
        except MalformedMessage:
            self.dave_errors += 1
            return
        for answer in answers:
            self.server.dave_from(self.user_id, answer)

    def close(self, code: int, reason: str) -> None:
        self.closed_with = code

    # ------------------------------------------------------------------ receiving

    def poll(self) -> None:
        """Release video frames whose reorder deadline passed."""
        self._handle(self.receiver.poll(trio.current_time()))

    def _handle(self, items: Sequence[object]) -> None:
        for item in items:
            if isinstance(item, ReceivedAudio):
                self._on_audio(item)
            elif isinstance(item, ReceivedFrame):
                self.frames.append(item)
                if self.frame_handler is not None:
                    self.frame_handler(item)
            elif self.feedback_handler is not None and isinstance(
                item, rtcp.GenericNack | rtcp.PictureLossIndication | rtcp.FullIntraRequest
            ):
                self.feedback_handler(item)

    def _on_audio(self, audio: ReceivedAudio) -> None:
        self.audio_packets[audio.user_id] += 1
        if audio.opus == OPUS_SILENCE:
            return
        decoder = self._decoders.get(audio.user_id)
        if decoder is None:
            decoder = self._decoders[audio.user_id] = _OpusDecoder()
        pcm = decoder.decode(audio.opus)
        kept = self._pcm.get(audio.user_id)
        if kept is None:
            kept = self._pcm[audio.user_id] = collections.deque(maxlen=int(LISTEN_SECONDS / FRAME_SECONDS))
        kept.append(pcm)

    def received_pcm(self, user_id: int) -> Pcm:
        """Mono 48 kHz PCM heard from ``user_id`` (the last few seconds)."""
        kept = self._pcm.get(user_id)
        if not kept:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(list(kept)).astype(np.int16)

    def heard_frequency(self, user_id: int, seconds: float = 1.0) -> float:
        """Dominant frequency of the last ``seconds`` heard from ``user_id``."""
        pcm = self.received_pcm(user_id)
        return dominant_frequency(pcm[-int(seconds * SAMPLE_RATE) :])

    def forget_audio(self) -> None:
        self._pcm.clear()
        self.audio_packets.clear()

    # ------------------------------------------------------------------ sending

    def send_rtp(self, header: RtpHeader, plaintext: bytes) -> None:
        """Seal and send one RTP packet to the server (``plaintext``: extension elements + payload)."""
        if self.joined:
            self.server.receive_from(self.participant, self.cipher.seal_rtp(header.serialize(), plaintext))

    def send_rtcp(self, packet: rtcp.RtcpPacket) -> None:
        if self.joined:
            self.server.receive_from(self.participant, self.cipher.seal_rtcp(packet.serialize()))

    def send_opus(self, opus: bytes) -> bool:
        """DAVE-encrypt (unless silence or DAVE is off) and send one Opus frame; False if DAVE isn't ready."""
        try:
            frame = opus if opus == OPUS_SILENCE else self.dave_session.encrypt_opus(opus)
        except DaveError:
            return False
        header = RtpHeader(vg.OPUS_PT, self._seq & 0xFFFF, self._timestamp & 0xFFFFFFFF, self.audio_ssrc)
        self._seq += 1
        self._timestamp += FRAME_SAMPLES
        self.send_rtp(header, frame)
        return True


class Speaker:
    """Talks for a member while ``talking``; see the module docstring."""

    def __init__(
        self, member: SimulatedMember, *, signal: Signal = "speech", frequency: float = 220.0
    ) -> None:
        self.member = member
        self.signal: Signal = signal
        self.frequency = frequency
        self.talking = False
        self.frames_sent = 0
        self.frames_not_ready = 0
        self._encoder = _OpusEncoder()
        self._sample = 0
        self._started_talking = trio.Event()
        self._replay: dict[tuple[Signal, float, int], list[bytes]] = {}

    def set_talking(self, on: bool) -> None:
        if on != self.talking:
            self.talking = on
            self.member.server.speaking(self.member.participant, vg.Speaking.VOICE if on else 0)
            if on:
                self._started_talking.set()

    async def run(self) -> None:
        """20 ms frames on absolute deadlines while talking (and the trailing silence), forever
        (cancel to stop); between talk spurts it sleeps until the next one."""
        silence_left = 0
        deadline = trio.current_time()
        while True:
            if not self.talking and not silence_left:
                self._started_talking = trio.Event()
                await self._started_talking.wait()
                deadline = trio.current_time()
            deadline += FRAME_SECONDS
            now = trio.current_time()
            if deadline < now - 1.0:  # fell far behind (a stalled loop): skip ahead, don't burst
                deadline = now
            await trio.sleep_until(deadline)
            if self.talking:
                silence_left = SILENCE_FRAMES
                for opus in self._next_packets():
                    if self.member.send_opus(opus):
                        self.frames_sent += 1
                    else:
                        self.frames_not_ready += 1
            elif silence_left:
                silence_left -= 1
                self.member.send_opus(OPUS_SILENCE)

    def _next_packets(self) -> list[bytes]:
        """The Opus packets of the next 20 ms. With an integer frequency the signal repeats every
        second (50 frames): the second second's packets (the encoder settled) are kept and
        replayed from then on, instead of ~0.4 ms of libopus per frame on the trio thread, which
        an in-process demo shares with clank."""
        start = self._sample
        self._sample += FRAME_SAMPLES
        key = None
        if float(self.frequency).is_integer() and start >= SAMPLE_RATE:
            key = (self.signal, self.frequency, (start % SAMPLE_RATE) // FRAME_SAMPLES)
            cached = self._replay.get(key)
            if cached is not None and start >= 2 * SAMPLE_RATE:
                return cached
        packets = self._encoder.encode(synth_audio(self.signal, self.frequency, start, FRAME_SAMPLES))
        if key is not None:
            if len(self._replay) >= REPLAY_FRAMES_KEPT:
                self._replay.clear()
            self._replay[key] = packets
        return packets


@asynccontextmanager
async def open_simulated_member(
    server: MediaServer,
    user_id: int,
    *,
    signal: Signal = "speech",
    frequency: float = 220.0,
    talking: bool = False,
) -> AsyncIterator[tuple[SimulatedMember, Speaker]]:
    """A member with its speaker loop (silent until ``talking``) and video reorder polling."""
    member = SimulatedMember(server, user_id)
    speaker = Speaker(member, signal=signal, frequency=frequency)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(speaker.run)
        nursery.start_soon(_poll_video, member)
        speaker.set_talking(talking)
        try:
            yield member, speaker
        finally:
            nursery.cancel_scope.cancel()
            if member.joined:
                server.remove(user_id)


async def _poll_video(member: SimulatedMember) -> None:
    while True:
        await trio.sleep(0.05)
        member.poll()


def rounded(frequency: float, step: float = 10.0) -> float:
    return step * math.floor(frequency / step + 0.5)
