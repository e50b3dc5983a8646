"""The selective forwarding unit: relay RTP between participants, route RTCP feedback (synchronous).

For each RTP packet from a sender (discord-protocol.md §8.2 step 9): decrypt with the sender's
transport key (padding and extension elements stripped), map its PT to a codec with the
*sender's* declared table, then for every other participant that can decode that codec and
wants that SSRC (op15): same SSRC, sequence number, timestamp and marker; the *receiver's* PT
(or RTX PT); a fresh extension block; encrypted with the receiver's key and the server's own
per-connection counter. The media payload (a DAVE frame or part of one) is never modified.

A sender's RTP padding is re-created (a seeded count of 1-32 bytes) so receivers exercise
padding strip; audio gets an audio-level element (ID 1) and video the usual ID 5 element,
like Discord's own packets.

Fidelity (clank.sandbox.fidelity, per receiver): ``video_padding_share`` of relayed video packets
carry RTP padding whatever the sender did (Chrome/Discord pad about half); ``unsolicited_rtx_share``
of them are followed by RTX nobody asked for (a copy of the packet, or a padding-only probe, as
Discord's SFU sends for bandwidth probing; every RTX the SFU sends uses its own per-receiver RTX
sequence numbers); and with ``stale_first_video_frame`` the first video frame a real client gets
on each SSRC cannot be decrypted (its DAVE tag is flipped, as a frame sealed before the receiver
had the key would fail). ``media_after_own_op12``: a real client gets no media before its op12.

RTCP: only the 8-byte-AAD framing Discord decrypts is accepted (others: ``rtcp_undecodable``,
tests/fidelity/test_fidelity_rtcp_framing.py); NACK/PLI/FIR go to the
participant that sends the named SSRC, re-sealed with its key (AAD 8); RR/SR are counted; REMB and
transport-cc feedback are parsed (``clank.wire.rtcp_feedback``) and counted, the latest REMB
bitrate kept per sender (there are no simulcast layers here to pick from it).
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable, Iterable

import attrs

from clank.errors import DecryptionFailed, MalformedPacket
from clank.sandbox.fidelity import STRICT, FidelityRules
from clank.sandbox.rtc.peer import Participant
from clank.wire import rtcp
from clank.wire import voice_gateway as vg
from clank.wire.rtcp_feedback import Remb, TransportCcFeedback, parse_feedback
from clank.wire.rtp import RtpExtension, RtpHeader, build_padding

# What Discord puts on audio packets (ID 1 audio level, "voice activity" bit + level 30 dBov).
# Discord's ids with their real sizes (clank.wire.rtp.DISCORD_EXTENSIONS): audio level + transport-cc
# on audio; abs-send-time, transport-cc, playout-delay, video-orientation, toffset on video.
AUDIO_EXTENSION = RtpExtension.one_byte([(1, b"\x9e"), (3, b"\x00\x01")])
RELAYED_VIDEO_EXTENSION = RtpExtension.one_byte(
    [(2, b"\x12\x34\x56"), (3, b"\x00\x01"), (5, b"\x00\x00\x00"), (13, b"\x00"), (14, b"\x00\x00\x00")]
)
MAX_RELAY_PADDING = 32
DAVE_MAGIC = b"\xfa\xfa"

Deliver = Callable[[Participant, bytes], None]


@attrs.frozen
class SfuStatistics:
    rtp_in: int
    rtp_relayed: int
    rtcp_in: int
    dropped: dict[str, int]
    nacks_forwarded: int
    keyframe_requests_forwarded: int
    receiver_reports: int
    video_padded: int = 0
    """Relayed video packets sent with RTP padding."""
    rtx_unsolicited: int = 0
    """RTX copies of packets nobody NACKed."""
    rtx_probes: int = 0
    """Padding-only RTX packets (bandwidth probes)."""
    stale_frames: int = 0
    """First video frames sent to a real client in a form it cannot decrypt."""
    remb_received: int = 0
    """REMBs from viewers (parsed and counted; this SFU has no layers to choose between)."""
    last_remb_bps: dict[int, int] = attrs.field(factory=dict)
    """The latest REMB bitrate per sender SSRC."""
    transport_cc_received: int = 0


class Sfu:
    """Relay logic of one call. ``deliver(receiver, datagram)`` sends a protected datagram."""

    def __init__(self, deliver: Deliver, seed: int = 0, fidelity: FidelityRules = STRICT) -> None:
        self._deliver = deliver
        self._rng = random.Random(seed)
        self._fidelity = fidelity
        self._rtx_seq: dict[tuple[int, int], int] = {}  # (receiver user id, rtx ssrc) -> next seq
        self._fresh_done: set[tuple[int, int]] = set()  # (receiver, primary ssrc): stale frame sent
        self._dropped: collections.Counter[str] = collections.Counter()
        self._rtp_in = 0
        self._relayed = 0
        self._rtcp_in = 0
        self._nacks = 0
        self._keyframe_requests = 0
        self._reports = 0
        self._counts: collections.Counter[str] = collections.Counter()
        self._remb = 0
        self._last_remb: dict[int, int] = {}
        self._transport_cc = 0

    def statistics(self) -> SfuStatistics:
        return SfuStatistics(
            rtp_in=self._rtp_in,
            rtp_relayed=self._relayed,
            rtcp_in=self._rtcp_in,
            dropped=dict(self._dropped),
            nacks_forwarded=self._nacks,
            keyframe_requests_forwarded=self._keyframe_requests,
            receiver_reports=self._reports,
            video_padded=self._counts["video_padded"],
            rtx_unsolicited=self._counts["rtx_unsolicited"],
            rtx_probes=self._counts["rtx_probes"],
            stale_frames=self._counts["stale_frames"],
            remb_received=self._remb,
            last_remb_bps=dict(self._last_remb),
            transport_cc_received=self._transport_cc,
        )

    # ------------------------------------------------------------------ RTP

    def relay_rtp(self, sender: Participant, packet: bytes, others: Iterable[Participant]) -> None:
        self._rtp_in += 1
        try:
            header, payload = sender.cipher.open_rtp(packet)
        except MalformedPacket:
            self._dropped["malformed"] += 1
            return
        except DecryptionFailed:
            self._dropped["decrypt_failed"] += 1
            return
        if not payload:
            self._dropped["probe"] += 1
            return
        if not sender.owns_ssrc(header.ssrc):
            self._dropped["unknown_ssrc"] += 1
            return
        codec = sender.codec_for_payload_type(header.payload_type)
        if codec is None:
            self._dropped["unknown_payload_type"] += 1
            return
        is_rtx = (
            header.payload_type == codec.rtx_payload_type and codec.payload_type != codec.rtx_payload_type
        )
        video = codec.type == "video"
        primary = sender.primary_ssrc(header.ssrc)
        extension = RELAYED_VIDEO_EXTENSION if video else AUDIO_EXTENSION
        for receiver in others:
            if self._fidelity.media_after_own_op12 and not receiver.internal and receiver.video is None:
                self._dropped["before_op12"] += 1  # Discord sends a client nothing before its op12
                continue
            if video and not receiver.wants_video(primary):
                self._dropped["not_wanted"] += 1
                continue
            theirs = receiver.codec_named(codec.name)
            pt = None if theirs is None else (theirs.rtx_payload_type if is_rtx else theirs.payload_type)
            if pt is None:
                self._dropped["receiver_cannot_decode"] += 1
                continue
            pad = header.padding or (video and self._rng.random() < self._fidelity.video_padding_share)
            padding = build_padding(self._rng.randint(1, MAX_RELAY_PADDING)) if pad else b""
            if video and pad:
                self._counts["video_padded"] += 1
            sequence = header.sequence
            media = payload
            if is_rtx and theirs is not None and theirs.rtx_payload_type is not None:
                sequence = self._next_rtx_seq(receiver, header.ssrc)
            elif video and not receiver.internal and self._fidelity.stale_first_video_frame:
                media = self._maybe_stale(receiver, primary, header.marker, payload)
            out = RtpHeader(
                payload_type=pt,
                sequence=sequence,
                timestamp=header.timestamp,
                ssrc=header.ssrc,
                marker=header.marker,
                padding=bool(padding),
                extension_profile=extension.profile,
                extension_words=extension.words,
            )
            sealed = receiver.cipher.seal_rtp(out.serialize(), extension.body + media + padding)
            self._relayed += 1
            self._deliver(receiver, sealed)
            if video and not is_rtx and theirs is not None:
                self._maybe_unsolicited_rtx(sender, receiver, theirs, header, payload)

    def _next_rtx_seq(self, receiver: Participant, rtx_ssrc: int) -> int:
        key = (receiver.user_id, rtx_ssrc)
        seq = self._rtx_seq.get(key)
        if seq is None:
            seq = self._rng.randrange(1 << 16)
        self._rtx_seq[key] = (seq + 1) & 0xFFFF
        return seq

    def _maybe_stale(self, receiver: Participant, primary: int, marker: bool, payload: bytes) -> bytes:
        """The first frame's last packet (its DAVE trailer) gets a flipped tag byte, once per SSRC."""
        key = (receiver.user_id, primary)
        if key in self._fresh_done or not marker:
            return payload
        self._fresh_done.add(key)
        if len(payload) < 12 or payload[-2:] != DAVE_MAGIC:
            return payload  # not a DAVE frame (DAVE off): nothing to make stale
        supplemental = payload[-3]  # tag + nonce + ranges + this size byte + magic
        if not 12 <= supplemental <= len(payload):
            return payload
        tag_at = len(payload) - supplemental
        self._counts["stale_frames"] += 1
        return payload[:tag_at] + bytes([payload[tag_at] ^ 0xFF]) + payload[tag_at + 1 :]

    def _maybe_unsolicited_rtx(
        self, sender: Participant, receiver: Participant, theirs: vg.Codec, header: RtpHeader, payload: bytes
    ) -> None:
        share = self._fidelity.unsolicited_rtx_share
        if share <= 0 or theirs.rtx_payload_type is None or self._rng.random() >= share:
            return
        rtx_ssrc = next((s.rtx_ssrc for s in sender.streams if s.ssrc == header.ssrc), None)
        if rtx_ssrc is None:
            return
        probe = self._rng.random() < 0.5
        body = (
            build_padding(self._rng.randint(1, 255))
            if probe
            else header.sequence.to_bytes(2, "big") + payload
        )
        out = RtpHeader(
            payload_type=theirs.rtx_payload_type,
            sequence=self._next_rtx_seq(receiver, rtx_ssrc),
            timestamp=header.timestamp,
            ssrc=rtx_ssrc,
            marker=header.marker and not probe,
            padding=probe,
            extension_profile=RELAYED_VIDEO_EXTENSION.profile,
            extension_words=RELAYED_VIDEO_EXTENSION.words,
        )
        self._counts["rtx_probes" if probe else "rtx_unsolicited"] += 1
        self._deliver(
            receiver, receiver.cipher.seal_rtp(out.serialize(), RELAYED_VIDEO_EXTENSION.body + body)
        )

    # ------------------------------------------------------------------ RTCP

    def handle_rtcp(self, sender: Participant, packet: bytes, everyone: Iterable[Participant]) -> None:
        self._rtcp_in += 1
        try:
            plain = sender.cipher.open_rtcp(packet)  # only the 8-byte-AAD framing
            packets = rtcp.parse_compound(plain)
        except (MalformedPacket, DecryptionFailed):
            self._dropped["rtcp_undecodable"] += 1
            return
        members = [p for p in everyone if p is not sender]
        for item in packets:
            if isinstance(item, rtcp.GenericNack | rtcp.PictureLossIndication):
                self._forward(item, item.media_ssrc, members)
            elif isinstance(item, rtcp.FullIntraRequest):
                for ssrc, _seq in item.entries:
                    self._forward(item, ssrc, members)
            elif isinstance(item, rtcp.ReceiverReport | rtcp.SenderReport):
                self._reports += 1
            elif isinstance(item, rtcp.UnknownRtcp):
                self._congestion_feedback(item)

    def _congestion_feedback(self, item: rtcp.UnknownRtcp) -> None:
        try:
            feedback = parse_feedback(item)
        except MalformedPacket:
            self._dropped["feedback_malformed"] += 1
            return
        if isinstance(feedback, Remb):
            self._remb += 1
            self._last_remb[feedback.sender_ssrc] = feedback.bitrate
        elif isinstance(feedback, TransportCcFeedback):
            self._transport_cc += 1

    def _forward(self, item: rtcp.RtcpPacket, media_ssrc: int, members: list[Participant]) -> None:
        target = next((p for p in members if p.owns_ssrc(media_ssrc)), None)
        if target is None:
            self._dropped["feedback_for_unknown_ssrc"] += 1
            return
        if isinstance(item, rtcp.GenericNack):
            self._nacks += 1
        else:
            self._keyframe_requests += 1
        self._deliver(target, target.cipher.seal_rtcp(item.serialize()))
