"""The client side of media receive, synchronous: what simulated users (and test clients) run.

Transport decrypt (padding and extension elements stripped) -> audio: DAVE decrypt per packet;
video: RTX unwrap -> reorder buffer -> depacketize (H264/VP8 by the receiver's *own* PT table)
-> DAVE decrypt of the whole frame. RTCP is decrypted (AAD 8, then 4) and handed back parsed.
Failures are counted, never raised. SSRC bindings come from op5 (audio) and op12 (video).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

import attrs

from clank.codecs.assembly import FrameAssembler
from clank.codecs.h264 import H264Depacketizer
from clank.codecs.packet import Gap, MediaPacket
from clank.codecs.reorder import ReorderBuffer
from clank.codecs.rtx import RtxUnwrapper
from clank.codecs.vp8 import Vp8Depacketizer
from clank.crypto.dave import DaveSessionCore
from clank.crypto.transport import TransportCipher
from clank.errors import DecryptionFailed, MalformedPacket
from clank.wire import rtcp
from clank.wire import voice_gateway as vg
from clank.wire.rtp import PacketKind, RtpHeader, classify

RAW_PACKET_LOG = 2048
"""Transport-decrypted packets kept for inspection (tests: RTX answers, padding, PTs)."""
REORDER_DELAY = 0.2


@attrs.frozen
class ReceivedAudio:
    user_id: int
    ssrc: int
    sequence: int
    opus: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")


@attrs.frozen
class ReceivedFrame:
    user_id: int
    ssrc: int
    codec: str
    timestamp: int
    keyframe: bool
    data: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    """DAVE-decrypted access unit."""
    encrypted: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    """The frame as reassembled from RTP (what the sender's DAVE produced)."""


@attrs.frozen
class RawPacket:
    header: RtpHeader
    payload: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")


@attrs.frozen
class _VideoBinding:
    user_id: int
    ssrc: int
    rtx_ssrc: int | None


class _VideoTrack:
    def __init__(self, binding: _VideoBinding, codec: str) -> None:
        self.binding = binding
        self.codec = codec
        self.reorder = ReorderBuffer(max_delay=REORDER_DELAY)
        self.depacketizer: FrameAssembler = H264Depacketizer() if codec == "h264" else Vp8Depacketizer()


Received = ReceivedAudio | ReceivedFrame | rtcp.RtcpPacket


class MediaReceiver:
    def __init__(self, cipher: TransportCipher, dave: DaveSessionCore, codecs: Iterable[vg.Codec]) -> None:
        self.cipher = cipher
        self.dave = dave
        self.codecs = tuple(codecs)
        self._audio: dict[int, int] = {}  # ssrc -> user
        self._video: dict[int, _VideoBinding] = {}  # primary or RTX ssrc -> binding
        self._tracks: dict[int, _VideoTrack] = {}  # primary ssrc -> track
        self._rtx = RtxUnwrapper()
        self.raw: collections.deque[RawPacket] = collections.deque(maxlen=RAW_PACKET_LOG)
        self.dropped: collections.Counter[str] = collections.Counter()
        self.frames_decrypted = 0
        self.frames_undecryptable = 0

    # ------------------------------------------------------------------ bindings

    def bind_audio(self, ssrc: int, user_id: int) -> None:
        self._audio[ssrc] = user_id

    def bind_video(self, video: vg.Video) -> None:
        if video.user_id is None:
            return
        user_id = int(video.user_id)
        for stream in video.streams or ():
            binding = _VideoBinding(user_id, stream.ssrc, stream.rtx_ssrc)
            self._video[stream.ssrc] = binding
            if stream.rtx_ssrc:
                self._video[stream.rtx_ssrc] = binding

    def forget_user(self, user_id: int) -> None:
        self._audio = {s: u for s, u in self._audio.items() if u != user_id}
        self._video = {s: b for s, b in self._video.items() if b.user_id != user_id}
        self._tracks = {s: t for s, t in self._tracks.items() if t.binding.user_id != user_id}

    def video_ssrcs(self) -> list[int]:
        return sorted({b.ssrc for b in self._video.values()})

    def missing(self, ssrc: int, now: float) -> list[int]:
        track = self._tracks.get(ssrc)
        return [] if track is None else track.reorder.missing(now)

    # ------------------------------------------------------------------ input

    def receive(self, data: bytes, now: float) -> list[Received]:
        kind = classify(data)
        if kind is PacketKind.RTCP:
            try:
                plain = self.cipher.open_rtcp(data)
                return list(rtcp.parse_compound(plain))
            except (MalformedPacket, DecryptionFailed):
                self.dropped["rtcp"] += 1
                return []
        if kind is not PacketKind.RTP:
            self.dropped["not_rtp"] += 1
            return []
        try:
            header, payload = self.cipher.open_rtp(data)
        except (MalformedPacket, DecryptionFailed):
            self.dropped["transport"] += 1
            return []
        self.raw.append(RawPacket(header, payload))
        if not payload:
            self.dropped["probe"] += 1
            return []
        codec = next(
            (c for c in self.codecs if header.payload_type in (c.payload_type, c.rtx_payload_type)), None
        )
        if codec is None:
            self.dropped["unknown_payload_type"] += 1
            return []
        if codec.type == "audio":
            return self._audio_packet(header, payload)
        return self._video_packet(header, payload, codec, now)

    def poll(self, now: float) -> list[Received]:
        """Release frames whose reorder deadline passed."""
        out: list[Received] = []
        for track in list(self._tracks.values()):
            out += self._drain(track, now)
        return out

    def _audio_packet(self, header: RtpHeader, payload: bytes) -> list[Received]:
        user_id = self._audio.get(header.ssrc)
        if user_id is None:
            self.dropped["unknown_ssrc"] += 1
            return []
        plain = self.dave.decrypt_or_count(user_id, "audio", payload)
        if plain is None:
            self.dropped["dave"] += 1
            return []
        return [ReceivedAudio(user_id, header.ssrc, header.sequence, plain)]

    def _video_packet(self, header: RtpHeader, payload: bytes, codec: vg.Codec, now: float) -> list[Received]:
        binding = self._video.get(header.ssrc)
        if binding is None:
            self.dropped["unknown_ssrc"] += 1
            return []
        packet: MediaPacket | None = MediaPacket(
            header.sequence, header.timestamp, header.marker, payload, binding.ssrc, now
        )
        if header.payload_type == codec.rtx_payload_type or header.ssrc == binding.rtx_ssrc:
            assert packet is not None
            packet = self._rtx.unwrap(packet, binding.ssrc)
            if packet is None:
                self.dropped["rtx_probe"] += 1
                return []
        track = self._tracks.get(binding.ssrc)
        name = codec.name.lower()
        if track is None or track.codec != name:
            track = self._tracks[binding.ssrc] = _VideoTrack(binding, name)
        assert packet is not None
        track.reorder.insert(packet, now)
        return self._drain(track, now)

    def _drain(self, track: _VideoTrack, now: float) -> list[Received]:
        out: list[Received] = []
        items: list[MediaPacket | Gap] = track.reorder.pop_ready(now)
        for item in items:
            for frame in track.depacketizer.push(item):
                if not frame.complete:
                    continue
                plain = self.dave.decrypt_or_count(track.binding.user_id, "video", frame.data)
                if plain is None:
                    self.frames_undecryptable += 1
                    continue
                self.frames_decrypted += 1
                out.append(
                    ReceivedFrame(
                        track.binding.user_id,
                        track.binding.ssrc,
                        track.codec,
                        frame.timestamp,
                        frame.keyframe,
                        plain,
                        frame.data,
                    )
                )
        return out
