"""The binary audio message of the listen WebSocket (``/api/voice/listen``): header + PCM.

Layout (little-endian), 16 bytes of header then the PCM::

    offset size field
    0      1    kind         1 = audio
    1      1    flags        bit 0: concealed (packet-loss concealment), bit 1: stream source
    2      1    channels     1 or 2
    3      1    reserved     0
    4      4    sample_rate  u32
    8      8    user_id      u64 (Discord snowflake)
    16     ...  pcm          s16le, interleaved when stereo

Speaking events and everything else travel as JSON text messages.
"""

from __future__ import annotations

import struct
from typing import Final

import attrs

from clank.errors import MalformedPacket

__all__ = ["AUDIO_KIND", "HEADER", "ListenAudioFrame"]

HEADER: Final = struct.Struct("<BBBBIQ")
AUDIO_KIND: Final = 1
FLAG_CONCEALED: Final = 0x01
FLAG_STREAM: Final = 0x02


@attrs.frozen
class ListenAudioFrame:
    user_id: int
    sample_rate: int
    channels: int
    pcm: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    concealed: bool = False
    stream: bool = False

    def serialize(self) -> bytes:
        flags = (FLAG_CONCEALED if self.concealed else 0) | (FLAG_STREAM if self.stream else 0)
        return HEADER.pack(AUDIO_KIND, flags, self.channels, 0, self.sample_rate, self.user_id) + self.pcm

    @classmethod
    def parse(cls, data: bytes) -> ListenAudioFrame:
        if len(data) < HEADER.size:
            raise MalformedPacket("listen_audio", f"{len(data)} bytes is shorter than the header")
        kind, flags, channels, _, rate, user_id = HEADER.unpack_from(data)
        if kind != AUDIO_KIND:
            raise MalformedPacket("listen_audio", f"unknown kind {kind}")
        if channels not in (1, 2):
            raise MalformedPacket("listen_audio", f"channels {channels}")
        pcm = data[HEADER.size :]
        if len(pcm) % (2 * channels):
            raise MalformedPacket("listen_audio", "PCM is not whole samples")
        return cls(user_id, rate, channels, pcm, bool(flags & FLAG_CONCEALED), bool(flags & FLAG_STREAM))
