"""The strict SFU's packets, byte by byte (no sockets, no time): what a receiver gets on the wire.

Discord's header extension ids with their real sizes on every relayed packet; about half the
video packets padded; unsolicited RTX that is either a copy of a relayed packet (its original
sequence number first) or a padding-only probe, on the RTX SSRC and PT, numbered per receiver;
one stale first frame per SSRC for a real client only, none for a simulated one.
"""

from __future__ import annotations

import secrets

import attrs

from clank.crypto.transport import AES256_GCM_RTPSIZE, TransportCipher
from clank.sandbox.fidelity import STRICT
from clank.sandbox.rtc.peer import SIMULATED_CODECS, Participant, PeerSink
from clank.sandbox.rtc.sfu import Sfu
from clank.wire import voice_gateway as vg
from clank.wire.rtp import (
    AUDIO_EXTENSION_IDS,
    VIDEO_EXTENSION,
    VIDEO_EXTENSION_IDS,
    RtpExtension,
    RtpHeader,
    discord_extension_elements,
    strip_padding,
)

DAVE_TRAILER = bytes(8) + b"\x01" + b"\x00\x02" + b"\x0e" + b"\xfa\xfa"  # tag, nonce, ranges, size, magic


class _Sink:
    def datagram(self, data: bytes) -> None: ...
    def notify(self, payload: vg.Payload) -> None: ...
    def dave(self, frame: object) -> None: ...
    def close(self, code: int, reason: str) -> None: ...


def participant(user_id: int, *, internal: bool, streams: int = 0) -> Participant:
    sink: PeerSink = _Sink()
    return Participant(
        user_id=user_id,
        sink=sink,
        audio_ssrc=user_id * 10,
        streams=tuple(
            vg.ReadyStream("video", "100", user_id * 10 + 1, user_id * 10 + 2) for _ in range(streams)
        ),
        cipher=TransportCipher(AES256_GCM_RTPSIZE, secrets.token_bytes(32)),
        codecs=SIMULATED_CODECS,
        internal=internal,
        video=vg.Video(audio_ssrc=user_id * 10),  # its op12 was seen
    )


def open_raw(receiver: Participant, packet: bytes) -> tuple[RtpHeader, RtpExtension, bytes]:
    """Header, extension block and payload (padding stripped) as the receiver decrypts them."""
    header, clear_len = RtpHeader.parse(packet)
    plain = receiver.cipher.open(packet, clear_len)
    if header.padding:
        plain = strip_padding(plain)
    assert header.extension_profile is not None
    body = plain[: 4 * header.extension_words]
    return header, RtpExtension(header.extension_profile, body), plain[len(body) :]


def relay(sfu: Sfu, sender: Participant, receivers: list[Participant], count: int, video: bool) -> None:
    stream = sender.streams[0] if video else None
    for seq in range(count):
        pt = vg.H264_PT if video else vg.OPUS_CODEC.payload_type
        ssrc = stream.ssrc if stream is not None else sender.audio_ssrc
        marker = seq % 4 == 3
        header = RtpHeader(
            pt, seq, 3000 * (seq // 4), ssrc, marker=marker, extension_profile=0xBEDE, extension_words=1
        )
        payload = bytes([0x41, seq & 0xFF]) * 20 + (DAVE_TRAILER if marker else b"")
        sfu.relay_rtp(
            sender, sender.cipher.seal_rtp(header.serialize(), VIDEO_EXTENSION.body + payload), receivers
        )


def test_what_a_receiver_gets_from_the_strict_sfu() -> None:
    out: list[tuple[Participant, bytes]] = []
    sfu = Sfu(lambda receiver, data: out.append((receiver, data)), seed=7, fidelity=STRICT)
    alice = participant(1, internal=True, streams=1)
    client, simulated = participant(2, internal=False), participant(3, internal=True)
    relay(sfu, alice, [client, simulated], 400, video=True)
    relay(sfu, alice, [client], 50, video=False)
    stream = alice.streams[0]
    video = audio = padded = 0
    sent: dict[int, bytes] = {}
    rtx_seqs: list[int] = []
    stale = {client.user_id: 0, simulated.user_id: 0}
    for receiver, packet in out:
        header, extension, payload = open_raw(receiver, packet)
        ids = tuple(i for i, _ in extension.elements())
        discord_extension_elements(extension)  # every id known, every size right
        if header.ssrc == alice.audio_ssrc:
            audio += 1
            assert ids == AUDIO_EXTENSION_IDS
            continue
        assert ids == VIDEO_EXTENSION_IDS
        if header.ssrc == stream.rtx_ssrc:
            assert header.payload_type == vg.H264_RTX_PT
            if receiver is client:
                rtx_seqs.append(header.sequence)
            if payload:  # a copy: original sequence number, then that packet's payload
                original = sent.get(int.from_bytes(payload[:2], "big"))
                assert original is None or original == payload[2:]  # None: the stale one's copy
            else:
                assert header.padding  # a padding-only probe
            continue
        video += 1
        padded += header.padding
        if header.marker and payload[-2:] == b"\xfa\xfa" and payload[-14] != 0:
            stale[receiver.user_id] += 1  # the tag's first byte was flipped
        elif receiver is client:
            sent[header.sequence] = payload
    assert audio == 50 and video == 800
    assert 0.4 <= padded / video <= 0.6, padded / video
    stats = sfu.statistics()
    assert stats.rtx_unsolicited + stats.rtx_probes >= 20 and stats.rtx_unsolicited >= 5
    assert len(set(rtx_seqs)) == len(rtx_seqs)  # the SFU's own RTX numbering, per receiver
    assert stale == {client.user_id: 1, simulated.user_id: 0} and stats.stale_frames == 1


def test_lenient_adds_nothing() -> None:
    out: list[tuple[Participant, bytes]] = []
    lenient = attrs.evolve(
        STRICT, video_padding_share=0.0, unsolicited_rtx_share=0.0, stale_first_video_frame=False
    )
    sfu = Sfu(lambda receiver, data: out.append((receiver, data)), seed=7, fidelity=lenient)
    alice, client = participant(1, internal=True, streams=1), participant(2, internal=False)
    relay(sfu, alice, [client], 100, video=True)
    assert len(out) == 100
    assert not any(open_raw(client, packet)[0].padding for _, packet in out)
    assert sfu.statistics().stale_frames == 0
