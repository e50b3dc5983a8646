"""The ``voice`` transport role: audio send (mixer -> Opus -> DAVE -> RTP, paced) and receive.

Started by the voice session as a child nursery (``await nursery.start(run_role, handle,
voice_role, params)``); the handle's ``api`` is a :class:`VoiceRole`::

    voice role nursery
     ├─ media connection       WS + UDP (receive drains inline into _on_packet)
     ├─ send loop              mixes a frame 20 ms before each 20 ms slot (absolute: no drift)
     ├─ Opus encode thread     encodes it (io/audio_encode_worker); back in trio: DAVE, seal
     ├─ timed sender           puts each prepared frame on the wire at its slot: the audio send
     │                         process (its own interpreter), or a thread (io/timed_sender)
     ├─ speaking timer         silence timeouts of remote speakers
     ├─ listen timer           listeners' speaking_stopped after their silence (every 20 ms)
     └─ file feeders           speech/music files: PyAV decode on a worker thread, bounded prebuffer

Playback is :class:`~clank.session.voice_playback.SpeechPlayer` (``role.speech``) and
:class:`~clank.session.voice_music.MusicPlayer` (``role.music``) over ``role.mixer``; listeners
(:meth:`VoiceRole.open_listener`) are :class:`~clank.session.voice_listen.Listener`.

Send: when the mixer has audio we flag speaking (op5 1), encode, DAVE-encrypt and send one
packet per 20 ms; when it runs dry we send five Opus silence frames and clear speaking (op5 0).
Receive: Opus packets go through :class:`~clank.protocol.audio_receive.AudioReceiveCore`
(SSRC -> user, sequence, DAVE decrypt), are decoded only for users someone subscribed to (with
PLC for lost frames), converted to the subscriber's rate/channels and offered on its bounded
channel (full: dropped and counted). Packets with other payload types go to an attached video
receiver (``set_video_receiver``) — the webcam hook.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Final

import attrs
import trio

from clank.config import Settings
from clank.errors import DaveError, UsageError
from clank.io.audio_encode_worker import (
    AudioEncodeStatistics,
    AudioEncodeWorker,
    EncodedAudio,
    EncodePath,
    open_audio_encode_worker,
)
from clank.io.media_connection import (
    MediaConnection,
    MediaEvent,
    TransportStateChanged,
    open_media_connection,
)
from clank.io.media_connection_statistics import MediaConnectionStatistics
from clank.io.media_leg_params import MediaConnectionParams
from clank.io.timed_sender import TimedSender, open_timed_sender
from clank.logging import get_logger
from clank.media.audio import (
    CHANNELS,
    FRAME_SAMPLES,
    OPUS_SILENCE,
    SAMPLE_RATE,
    OpusEncoder,
    Pcm,
    PcmSource,
)
from clank.media.mixer import Mixer, MixerStatistics
from clank.protocol import voice_gateway as vgc
from clank.protocol.audio_receive import (
    AudioPacket,
    AudioReceiveCore,
    AudioReceiveStatistics,
    SpeakingStarted,
    SpeakingStopped,
)
from clank.session.frame_pacer import FramePacer
from clank.session.roles import RoleHandle, RoleState
from clank.session.voice_listen import (
    DEFAULT_LISTEN_BUFFER,
    DEFAULT_SILENCE_S,
    AudioSubscribers,
    Listener,
    ListenerSet,
    PacketDecoder,
    UserAudio,
)
from clank.session.voice_music import MusicPlayer
from clank.session.voice_playback import PlaybackEvents, SpeechPlayer
from clank.wire.rtp import RtpHeader
from clank.wire.voice_gateway import OPUS_PT

__all__ = [
    "AUDIO_SUBSCRIBER_BUFFER",
    "SILENCE_FRAMES_AFTER_AUDIO",
    "FramePacer",
    "Listener",
    "UserAudio",
    "VideoReceiver",
    "VoiceRole",
    "VoiceRoleStatistics",
    "voice_role",
]

log = get_logger("clank.voice")

#: Decoded 20 ms frames a subscriber may lag behind before new ones are dropped (1 s).
AUDIO_SUBSCRIBER_BUFFER: Final = 50
SILENCE_FRAMES_AFTER_AUDIO: Final = 5
SPEAKING_VOICE: Final = 1
SPEAKING_TIMER_S: Final = 0.1

VideoReceiver = Callable[[RtpHeader, bytes, float, "vgc.SsrcBinding | None"], None]
"""``(header, payload, now, binding)`` for every non-audio packet on the voice leg (webcam)."""


@attrs.frozen
class VoiceRoleStatistics:
    frames_sent: int
    silence_frames_sent: int
    send_failures: int
    dave_not_ready_drops: int
    encode: AudioEncodeStatistics | None  # the Opus encode thread (``dropped``: its queue was full)
    encode_fallbacks: int  # times a slow hand-off moved the encode inline (io/audio_encode_worker)
    late_frames: int
    max_lateness_s: float
    send_path: str  # who puts audio on the wire: "process", "process (realtime)", "thread", ...
    skipped_frames: int
    decoded_frames: int
    concealed_frames: int
    decode_errors: int
    subscriber_drops: int
    video_packets: int
    video_unhandled: int
    speaking_users: tuple[str, ...]
    audio_receive: AudioReceiveStatistics
    mixer: MixerStatistics
    connection: MediaConnectionStatistics | None


class VoiceRole:
    """The voice role's surface (``handle.api``). Methods are safe to call from any trio task."""

    def __init__(self, handle: RoleHandle[VoiceRole], user_id: str, settings: Settings) -> None:
        self._handle = handle
        self.user_id = user_id
        self.settings = settings
        self._conn: MediaConnection | None = None
        self._nursery: trio.Nursery | None = None
        self.mixer = Mixer()
        self.playback_events = PlaybackEvents()
        self.speech = SpeechPlayer(self.mixer, self.playback_events, self._wake_sender)
        self.music = MusicPlayer(self.mixer, self.playback_events, self._wake_sender)
        self.listening = ListenerSet()
        """Listeners and the Go Live stream audio of running watches (:mod:`clank.session.voice_listen`)."""
        self._encoder = OpusEncoder()
        self._audio_encoder: AudioEncodeWorker | None = None
        self._encode_path = EncodePath()
        self._audio_wake = trio.Event()
        self._receive = AudioReceiveCore(user_id, decrypt=self._dave_decrypt, trial=self._dave_trial)
        self._opus = PacketDecoder()
        self._subscribers = AudioSubscribers()
        self._speaking: set[str] = set()
        self._video_receiver: VideoReceiver | None = None
        self._frames_sent = 0
        self._silence_sent = 0
        self._send_failures = 0
        self._dave_not_ready = 0
        self._pacer = FramePacer()
        self._sender: TimedSender | None = None
        self._reannounce = False
        self._video_packets = 0
        self._video_unhandled = 0

    # ------------------------------------------------------------------ queries

    @property
    def connection(self) -> MediaConnection:
        if self._conn is None:
            raise UsageError("the voice connection is not established")
        return self._conn

    @property
    def pacer(self) -> FramePacer:
        """The send loop's pacer: when the trio loop woke to prepare each frame (benches)."""
        return self._pacer

    @property
    def sender(self) -> TimedSender | None:
        """Puts the frames on the wire: ``sender.recent`` is the send lateness (benches)."""
        return self._sender

    @property
    def ssrc(self) -> int | None:
        return None if self._conn is None else self._conn.ssrc

    def speaking_users(self) -> frozenset[str]:
        return frozenset(self._speaking)

    def ssrc_map(self) -> dict[int, vgc.SsrcBinding]:
        """Audio/video/RTX SSRC bindings from op5/op12 (for the webcam receiver)."""
        return {} if self._conn is None else self._conn.ssrc_map()

    def statistics(self) -> VoiceRoleStatistics:
        sender = self._sender
        return VoiceRoleStatistics(
            frames_sent=self._frames_sent,
            silence_frames_sent=self._silence_sent,
            send_failures=self._send_failures + (0 if sender is None else sender.failures),
            dave_not_ready_drops=self._dave_not_ready,
            encode=None if self._audio_encoder is None else self._audio_encoder.statistics(),
            encode_fallbacks=self._encode_path.fallbacks,
            late_frames=0 if sender is None else sender.late,  # as sent, not as prepared
            max_lateness_s=0.0 if sender is None else sender.max_lateness,
            send_path="none" if sender is None else sender.path_description(),
            skipped_frames=self._pacer.skipped,
            decoded_frames=self._opus.decoded,
            concealed_frames=self._opus.concealed,
            decode_errors=self._opus.errors,
            subscriber_drops=self._subscribers.dropped + self.listening.dropped,
            video_packets=self._video_packets,
            video_unhandled=self._video_unhandled,
            speaking_users=tuple(sorted(self._speaking)),
            audio_receive=self._receive.statistics(),
            mixer=self.mixer.statistics(),
            connection=None if self._conn is None else self._conn.statistics(),
        )

    # ------------------------------------------------------------------ playback

    def open_pcm_track(
        self,
        track: str = "speech",
        *,
        rate: int = SAMPLE_RATE,
        channels: int = CHANNELS,
        gain: float = 1.0,
        priority: bool = True,
        max_buffer_s: float = 30.0,
    ) -> PcmSource:
        """A track the caller pushes PCM into (streaming TTS); call ``end()`` on it when done."""
        source = PcmSource(rate, channels, max_buffer_s=max_buffer_s)
        self.mixer.play(track, source, gain=gain, priority=priority)
        self._wake_sender()
        return source

    def play_pcm(
        self,
        pcm: Pcm | bytes,
        *,
        rate: int = SAMPLE_RATE,
        channels: int = CHANNELS,
        track: str = "speech",
        gain: float = 1.0,
        priority: bool = True,
    ) -> PcmSource:
        """Play a whole clip (int16 ``(n, channels)`` or interleaved s16 bytes at any rate)."""
        source = self.open_pcm_track(track, rate=rate, channels=channels, gain=gain, priority=priority)
        source.push(pcm)
        source.end()
        return source

    def stop(self, track: str | None = None) -> None:
        """Fade out and remove ``track``; every track (speech and music) at once when None."""
        if track is None:
            self.speech.stop()
            self.music.stop(fade_s=0)
            self.mixer.stop_all(fade_s=0)
        elif track == "speech":
            self.speech.stop()
        else:
            self.mixer.stop(track)

    def pause(self, track: str) -> None:
        self.mixer.pause(track)

    def resume(self, track: str) -> None:
        self.mixer.resume(track)
        self._wake_sender()

    def set_gain(self, track: str, gain: float, *, fade_s: float = 0.0) -> None:
        self.mixer.set_gain(track, gain, fade_s=fade_s)

    # ------------------------------------------------------------------ receive surface

    @contextlib.contextmanager
    def subscribe_audio(
        self,
        user_id: str | None = None,
        *,
        rate: int = SAMPLE_RATE,
        channels: int = CHANNELS,
        buffer: int = AUDIO_SUBSCRIBER_BUFFER,
    ) -> Iterator[trio.MemoryReceiveChannel[UserAudio]]:
        """Decoded audio of ``user_id`` (everyone when None) while in the block; full = dropped."""
        with self._subscribers.subscribe(user_id, rate, channels, buffer) as receive:
            yield receive

    @contextlib.contextmanager
    def open_listener(
        self,
        users: frozenset[str] | None = None,
        *,
        rate: int = SAMPLE_RATE,
        channels: int = CHANNELS,
        silence_s: float = DEFAULT_SILENCE_S,
        buffer: int = DEFAULT_LISTEN_BUFFER,
        sources: frozenset[str] | None = None,
    ) -> Iterator[Listener]:
        """A :class:`Listener` of ``users`` (everyone when None) while in the block."""
        listener = Listener(
            users, rate=rate, channels=channels, silence_s=silence_s, buffer=buffer, sources=sources
        )
        with self.listening.attach(listener):
            yield listener

    def listeners(self) -> list[Listener]:
        return self.listening.all()

    def set_video_receiver(self, receiver: VideoReceiver | None) -> None:
        """Attach (or detach) the handler for non-audio packets on this leg (webcam video)."""
        self._video_receiver = receiver

    # ------------------------------------------------------------------ connection callbacks (sync)

    def _dave_decrypt(self, user_id: str, frame: bytes) -> bytes | None:
        conn = self._conn
        if conn is None:
            return None
        return conn.dave.decrypt_or_count(int(user_id), "audio", frame)

    def _dave_trial(self, user_id: str, frame: bytes) -> bytes | None:
        conn = self._conn
        return None if conn is None else conn.dave.trial_decrypt(int(user_id), "audio", frame)

    def _on_event(self, event: MediaEvent) -> None:
        if isinstance(event, vgc.ClientsConnected):
            self._receive.members_connected(event.user_ids)
        elif isinstance(event, vgc.VideoState):
            self._receive.members_connected((event.user_id,))
        if isinstance(event, vgc.Speaking):
            self._audio_events(self._receive.bind(event.ssrc, event.user_id))
        elif isinstance(event, vgc.VideoState) and event.audio_ssrc:
            self._audio_events(self._receive.bind(event.audio_ssrc, event.user_id))
        elif isinstance(event, vgc.ClientDisconnected):
            self._audio_events(self._receive.client_disconnected(event.user_id))
        elif isinstance(event, TransportStateChanged):
            if event.state == "ready" and self._conn is not None:  # the first READY: voice_role
                self._reannounce = True
                if self._nursery is not None:  # a fresh session after a reconnect: announce again
                    self._nursery.start_soon(self._conn.video_state, False)
                self._handle.set_state(RoleState.READY)
            elif event.state == "reconnecting":
                self._handle.set_state(RoleState.RECONNECTING, event.reason, event.close_code)

    def _on_packet(self, header: RtpHeader, payload: bytes, now: float) -> None:
        if header.payload_type == OPUS_PT:
            self._audio_events(
                self._receive.receive(header.ssrc, header.sequence, header.timestamp, payload, now)
            )
            return
        self._video_packets += 1
        receiver = self._video_receiver
        if receiver is None:
            self._video_unhandled += 1
            return
        conn = self._conn
        binding = None if conn is None else conn.core.ssrc_map().get(header.ssrc)
        receiver(header, payload, now, binding)

    def _audio_events(self, events: list[AudioPacket | SpeakingStarted | SpeakingStopped]) -> None:
        for event in events:
            if isinstance(event, AudioPacket):
                self._deliver(event)
            elif isinstance(event, SpeakingStarted):
                self._speaking.add(event.user_id)
            else:
                self._speaking.discard(event.user_id)
                if event.reason == "disconnected":
                    self._opus.forget(event.ssrc)
                    self.listening.stopped(event.user_id, "voice", "disconnected")

    def _deliver(self, packet: AudioPacket) -> None:
        wanted = self._subscribers.of(packet.user_id)
        listening = self.listening.of(packet.user_id, "voice")
        if not wanted and not listening:
            return
        frames = self._opus.frames(packet)
        self._subscribers.deliver(wanted, packet.user_id, packet.ssrc, frames)
        if listening:
            self.listening.deliver(packet.user_id, packet.ssrc, frames, listening, "voice")

    # ------------------------------------------------------------------ tasks

    def _wake_sender(self) -> None:
        self._audio_wake.set()

    async def _speaking_timer(self) -> None:
        while True:
            await trio.sleep(SPEAKING_TIMER_S)
            self._audio_events(self._receive.tick(trio.current_time()))

    async def _send_loop(self, conn: MediaConnection, sender: TimedSender) -> None:
        """One frame per 20 ms at absolute deadlines while there is audio (or trailing silence).

        Each frame is mixed ``sender.lead(conn)`` (20 ms) before its slot, Opus-encoded on the
        encode thread (``io/audio_encode_worker.py``: libopus was the largest part of this step,
        ~0.8 ms of the trio thread per frame), DAVE-encrypted and sealed when it comes back
        (:meth:`_on_encoded`) and put on the wire at the slot by the send process
        (``io/timed_sender.py``), so neither the hand-offs nor the trio steps ahead of them
        reach the wire unless they add up to the lead (then ``lateFrames`` counts it)."""
        speaking = False
        silence_left = 0
        pacer = self._pacer
        pacer.restart()
        while True:
            self.speech.before_mix()
            frame = self.mixer.mix()
            if frame is not None:
                if not speaking or self._reannounce:
                    # Also after a reconnect: a fresh voice session must see op5 before our RTP.
                    self._reannounce = False
                    await conn.speaking(SPEAKING_VOICE)
                    speaking = True
                self._prepare(frame)
                silence_left = SILENCE_FRAMES_AFTER_AUDIO
            elif silence_left:
                self._prepare(OPUS_SILENCE)
                silence_left -= 1
                if silence_left == 0 and speaking:
                    await trio.sleep_until(pacer.deadline)  # op5 0 after the last silence frame
                    await conn.speaking(0)
                    speaking = False
            elif not self.mixer.active:
                self._after_mix()
                # Idle: sleep until someone queues audio, then restart the clock.
                self._audio_wake = trio.Event()
                if not self.mixer.active:
                    await self._audio_wake.wait()
                pacer.restart()
                continue
            self._after_mix()
            await pacer.wait_next(sender.lead(conn))

    def _after_mix(self) -> None:
        self.speech.after_mix()
        self.music.after_mix()

    def _prepare(self, frame: Pcm | bytes) -> None:
        """To the encode thread for the pacer's slot, or inline (``EncodePath``) and on at once.
        ``bytes`` are already Opus (silence): not DAVE-encrypted, counted as silence."""
        encoder, now, slot = self._audio_encoder, trio.current_time(), self._pacer.deadline
        if encoder is not None and self._encode_path.use_thread(now):
            self._encode_path.submitted(now)
            if not encoder.submit(slot, frame):
                self._encode_path.not_taken()  # counted by the worker (its queue was full)
            return
        if isinstance(frame, bytes):  # inline from here: nothing is in flight on the thread
            self._on_encoded(EncodedAudio(slot, frame, voice=False))
            return
        opus = self._encoder.encode(frame)
        if opus is not None:
            self._on_encoded(EncodedAudio(slot, opus, voice=True))

    def _on_thread_encoded(self, item: EncodedAudio) -> None:
        self._encode_path.delivered(trio.current_time())
        if item.opus:  # empty: libopus held the frame back
            self._on_encoded(item)

    def _on_encoded(self, item: EncodedAudio) -> None:
        """Per packet, in order (from the encode thread or inline): DAVE, seal, to the sender."""
        conn, sender = self._conn, self._sender
        if conn is None or sender is None:
            return
        payload = item.opus
        if item.voice:
            try:
                payload = conn.dave.encrypt_opus(payload)
            except DaveError:
                self._dave_not_ready += 1  # never send clear audio into a DAVE call
                return
        packet = conn.seal_rtp(OPUS_PT, payload, timestamp_step=FRAME_SAMPLES)
        if packet is None:
            self._send_failures += 1
            return
        sender.submit(item.slot, packet, conn)
        if item.voice:
            self._frames_sent += 1
        else:
            self._silence_sent += 1


async def voice_role(
    handle: RoleHandle[VoiceRole],
    params: MediaConnectionParams,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the voice role until cancelled; expected failures propagate to ``run_role``'s boundary."""
    role = VoiceRole(handle, params.user_id, params.settings)
    handle.attach(role, role.statistics)
    task_status.started()
    async with (
        open_media_connection(params, packet_handler=role._on_packet, event_handler=role._on_event) as conn,
        open_timed_sender() as sender,
        open_audio_encode_worker(role._encoder, on_output=role._on_thread_encoded) as audio_encoder,
    ):
        role._conn = conn
        role._sender = sender
        role._audio_encoder = audio_encoder
        handle.set_state(RoleState.READY)
        # An op5 before any media (UDOC: "invalid SSRC" otherwise); DPY sends 0 right after op4.
        await conn.speaking(0)
        # Our (inactive) video state after op4, as clanky and Discord-video-stream send it: Discord
        # sends other users' webcam states (op12) to clients that announced theirs.
        await conn.video_state(False)
        async with trio.open_nursery() as nursery:
            role._nursery = nursery
            role.music.bind(nursery)
            role.speech.bind(nursery)
            nursery.start_soon(role._send_loop, conn, sender)
            nursery.start_soon(role._speaking_timer)
            nursery.start_soon(role.listening.run_timer)
            try:
                await trio.sleep_forever()
            finally:
                role._nursery = None
                role.music.bind(None)
                role.speech.bind(None)
                role.listening.end("voice role ended")
