"""What several benches share: the voice send loop's paced tone, and sealed video datagrams.

Not a bench itself (``just bench`` runs ``bench/bench_*.py``); imported by them from this folder.
"""

from __future__ import annotations

from clank.codecs.h264 import packetize_h264
from clank.codecs.vp8 import packetize_vp8
from clank.crypto.dave import DaveSessionCore
from clank.crypto.transport import AES256_GCM_RTPSIZE, TransportCipher
from clank.media.audio import OpusEncoder, PcmSource, tone
from clank.media.decoder import VideoCodec
from clank.media.encoder import EncodedFrame
from clank.media.mixer import Mixer
from clank.session.frame_pacer import FramePacer
from clank.wire.rtp import VIDEO_EXTENSION, RtpHeader
from clank.wire.voice_gateway import H264_PT, VP8_PT

KEY = bytes(range(32))
FPS = 30
TICKS = 90_000 // FPS
MTU = 1100


async def paced_tone(seconds: float) -> list[float]:
    """The voice role's send loop for ``seconds``: mix a 440 Hz tone, Opus-encode, wait on a
    :class:`FramePacer`. Returns each wake-up's lateness (seconds)."""
    mixer = Mixer()
    source = PcmSource()
    source.push(tone(440.0, seconds + 1.0))
    mixer.play("tone", source)
    encoder = OpusEncoder()
    pacer = FramePacer()
    pacer.restart()
    lateness: list[float] = []
    for _ in range(int(seconds / 0.02)):
        frame = mixer.mix()
        if frame is not None:
            encoder.encode(frame)
        lateness.append(await pacer.wait_next())
    return lateness


def sealed_datagrams(
    aus: list[EncodedFrame], sender: DaveSessionCore, ssrc: int, codec: VideoCodec = "h264"
) -> list[list[bytes]]:
    """Per frame: the sealed RTP datagrams of the DAVE-encrypted, packetized access unit."""
    cipher = TransportCipher.create(AES256_GCM_RTPSIZE, KEY)
    pt = H264_PT if codec == "h264" else VP8_PT
    seq = 0
    out: list[list[bytes]] = []
    for index, au in enumerate(aus):
        encrypted = sender.encrypt_video(codec, au.data)
        payloads = packetize_h264(encrypted, MTU) if codec == "h264" else packetize_vp8(encrypted, index, MTU)
        frame: list[bytes] = []
        for i, payload in enumerate(payloads):
            header = RtpHeader(
                pt,
                seq & 0xFFFF,
                index * TICKS,
                ssrc,
                marker=i == len(payloads) - 1,
                extension_profile=VIDEO_EXTENSION.profile,
                extension_words=VIDEO_EXTENSION.words,
            )
            seq += 1
            frame.append(cipher.seal_rtp(header.serialize(), VIDEO_EXTENSION.body + payload))
        out.append(frame)
    return out
