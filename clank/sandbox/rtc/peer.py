"""Server-side state of one participant of a call, and the sink the server talks to it through.

A participant is either a real client (websocket + UDP; its sink feeds the connection core and
the UDP socket) or a simulated user attached in-process (its sink is the simulated user). Both
take exactly the same path through the server: RTP/RTCP sealed with the participant's own
transport key, DAVE frames from the same ``DaveGroupServer``, the same op5/op11/op12/op13.
"""

from __future__ import annotations

from typing import Final, Protocol

import attrs

from clank.crypto.dave import DaveFrame
from clank.crypto.transport import TransportCipher
from clank.io.lossy import LossySender
from clank.io.udp import Address
from clank.wire import voice_gateway as vg

# Simulated users declare the same PTs clankvox/our client use, and can send every codec.
SIMULATED_CODECS: Final = (
    vg.OPUS_CODEC,
    vg.Codec("H264", "video", 1000, vg.H264_PT, vg.H264_RTX_PT, encode=True, decode=True),
    vg.Codec("VP8", "video", 2000, vg.VP8_PT, vg.VP8_RTX_PT, encode=True, decode=True),
)


class PeerSink(Protocol):
    """How the server reaches a participant."""

    def datagram(self, data: bytes) -> None:
        """One protected RTP/RTCP datagram from the server."""
        ...

    def notify(self, payload: vg.Payload) -> None:
        """A seq-numbered JSON message (op5, op11, op12, op13, op14)."""
        ...

    def dave(self, frame: DaveFrame) -> None:
        """A DAVE message from the call's external sender (ops 21, 22, 24, 25, 27, 29, 30)."""
        ...

    def close(self, code: int, reason: str) -> None:
        """The server ends this participant's connection."""
        ...


@attrs.define(eq=False)
class Participant:
    """One member of a call after its session description (op4)."""

    user_id: int
    sink: PeerSink
    audio_ssrc: int
    streams: tuple[vg.ReadyStream, ...]
    cipher: TransportCipher = attrs.field(repr=False)
    codecs: tuple[vg.Codec, ...]
    internal: bool
    address: Address | None = None
    speaking: int = 0
    video: vg.Video | None = None
    wants: vg.MediaSinkWants | None = None
    uplink: LossySender | None = attrs.field(default=None, repr=False)
    downlink: LossySender | None = attrs.field(default=None, repr=False)
    drop_udp: bool = False
    packets_in: int = 0
    packets_out: int = 0

    def codec_for_payload_type(self, payload_type: int) -> vg.Codec | None:
        for codec in self.codecs:
            if payload_type in (codec.payload_type, codec.rtx_payload_type):
                return codec
        return None

    def codec_named(self, name: str) -> vg.Codec | None:
        for codec in self.codecs:
            if codec.name.lower() == name.lower():
                return codec
        return None

    def owns_ssrc(self, ssrc: int) -> bool:
        return ssrc == self.audio_ssrc or any(ssrc in (s.ssrc, s.rtx_ssrc) for s in self.streams)

    def primary_ssrc(self, ssrc: int) -> int:
        """The media SSRC an RTX SSRC repairs (itself otherwise)."""
        for stream in self.streams:
            if ssrc == stream.rtx_ssrc:
                return stream.ssrc
        return ssrc

    def wants_video(self, ssrc: int) -> bool:
        """op15: quality > 0 for this SSRC, else ``any``; no op15 yet means "send everything"."""
        wants = self.wants
        if wants is None:
            return True
        quality = wants.streams.get(ssrc)
        if quality is None:
            quality = 100 if wants.any is None else wants.any
        return quality > 0
