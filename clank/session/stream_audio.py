"""Go Live stream audio: Opus a streamer shares with their screen, received on the stream leg.

A stream watch's media connection carries the streamer's audio as ordinary Opus RTP on the
stream leg: its own SSRC (bound by op5/op12 on *that* leg), its own DAVE session (the leg's
group, ``rtc_server_id - 1``) and its own transport key. :class:`StreamAudio` is the watch's
audio side: the watch hands it every packet with the Opus payload type (video goes on to the
video pipeline untouched) and its speaking/video events. It runs the same sans-io
:class:`~clank.protocol.audio_receive.AudioReceiveCore` as the voice leg, decodes only while a
listener wants ``stream:<user id>`` (with packet-loss concealment) and offers the PCM to the
voice role's listeners through the role's :class:`~clank.session.voice_listen.ListenerSet`.

Everything here runs synchronously on the stream leg's receive path (trio thread).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clank.errors import ClankError
from clank.protocol import voice_gateway as vgc
from clank.protocol.audio_receive import AudioPacket, AudioReceiveCore, SpeakingStarted, SpeakingStopped
from clank.session.voice_listen import PacketDecoder
from clank.wire.rtp import RtpHeader
from clank.wire.voice_gateway import OPUS_PT

__all__ = ["StreamAudio"]

PacketHandler = Callable[[RtpHeader, bytes, float], None]


class StreamAudio:
    """The audio side of one stream watch (see the module docstring)."""

    def __init__(self, session: Any, target_user_id: str, handle: Any = None) -> None:
        self._session = session
        self._handle = handle
        self.target_user_id = target_user_id
        self.source = f"stream:{target_user_id}"
        self.connection: Any = None
        self._core = AudioReceiveCore(str(session.user_id), decrypt=self._decrypt)
        self.opus = PacketDecoder()  # decoded / concealed / errors
        self.packets = 0
        self.unheard = 0  # packets nobody listened to (not decoded)
        self.speaking = False
        self.last_packet_at: float | None = None

    # ------------------------------------------------------------------ wiring

    def attach(self, connection: Any) -> None:
        """The stream leg is up: decrypt with its DAVE session; show us in the voice role's status."""
        self.connection = connection
        voice = self._voice()
        if voice is not None:
            voice.listening.register_stream_audio(self)

    @property
    def active(self) -> bool:
        return self._handle is None or not self._handle.stopped

    def wrap(self, video: PacketHandler) -> PacketHandler:
        """A packet handler: Opus to us, everything else to ``video``."""

        def handler(header: RtpHeader, payload: bytes, now: float) -> None:
            if header.payload_type == OPUS_PT:
                self.on_packet(header, payload, now)
            else:
                video(header, payload, now)

        return handler

    def on_event(self, event: object) -> None:
        if isinstance(event, vgc.Speaking):
            self._events(self._core.bind(event.ssrc, event.user_id))
        elif isinstance(event, vgc.VideoState) and event.audio_ssrc:
            self._events(self._core.bind(event.audio_ssrc, event.user_id))
        elif isinstance(event, vgc.ClientDisconnected):
            self._events(self._core.client_disconnected(event.user_id))

    def _decrypt(self, user_id: str, frame: bytes) -> bytes | None:
        conn = self.connection
        if conn is None:
            return None
        result: bytes | None = conn.dave.decrypt_or_count(int(user_id), "audio", frame)
        return result

    def _voice(self) -> Any:
        try:
            return self._session.voice.api
        except ClankError:
            return None

    # ------------------------------------------------------------------ receive

    def on_packet(self, header: RtpHeader, payload: bytes, now: float) -> None:
        self.packets += 1
        self.last_packet_at = now
        self._events(self._core.receive(header.ssrc, header.sequence, header.timestamp, payload, now))

    def tick(self, now: float) -> None:
        self._events(self._core.tick(now))

    def _events(self, events: list[AudioPacket | SpeakingStarted | SpeakingStopped]) -> None:
        for event in events:
            if isinstance(event, AudioPacket):
                self._deliver(event)
            elif isinstance(event, SpeakingStarted):
                self.speaking = True
            else:
                self.speaking = False
                voice = self._voice()
                if voice is not None:
                    voice.listening.stopped(event.user_id, self.source, event.reason)

    def _deliver(self, packet: AudioPacket) -> None:
        voice = self._voice()
        listeners = [] if voice is None else voice.listening.of(packet.user_id, self.source)
        if not listeners:
            self.unheard += 1
            return
        frames = self.opus.frames(packet)
        voice.listening.deliver(packet.user_id, packet.ssrc, frames, listeners, self.source)

    # ------------------------------------------------------------------ status

    def statistics(self) -> dict[str, Any]:
        stats = self._core.statistics()
        return {
            "source": self.source,
            "audioPackets": self.packets,
            "audioDecoded": self.opus.decoded,
            "audioConcealed": self.opus.concealed,
            "audioUnheard": self.unheard,
            "audioDecryptFailures": stats.drops.get("dave_decrypt", 0),
            "audioSpeaking": self.speaking,
            "active": self.active,
        }
