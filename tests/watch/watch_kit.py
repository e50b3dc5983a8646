"""Test kit for the watch pipeline: a DAVE pair, a simulated streamer and a seeded lossy link.

Everything is real: PyAV encoders (clank.media.encoder) on synthetic screen content, our
packetizers, davey sessions joined through the sandbox's DAVE external sender, a retransmission
store answering NACK with RTX, and keyframes forced by PLI/FIR. Time is virtual (seconds).
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
import av

from clank.codecs.h264 import packetize_h264
from clank.codecs.rtx import RetransmissionStore
from clank.codecs.vp8 import packetize_vp8
from clank.crypto.dave import DaveBinary, DaveSessionCore
from clank.media.decoder import VideoCodec
from clank.media.encoder import VideoEncoder
from clank.media.synth import ScreenSynth
from clank.protocol.video_receive import EncodedVideoFrame, ReceiveEvent, VideoReceiver
from clank.sandbox.dave import DaveGroupServer
from clank.wire import voice_gateway as vg
from clank.wire.rtcp import FullIntraRequest, GenericNack, PictureLossIndication, parse_compound
from clank.wire.rtp import RtpHeader

STREAMER_ID = 444
WATCHER_ID = 333
GROUP_ID = 900000000000000122
MEDIA_SSRC = 11
RTX_SSRC = 12
LOCAL_SSRC = 20
PT = {"h264": vg.H264_PT, "vp8": vg.VP8_PT}
RTX_PT = {"h264": vg.H264_RTX_PT, "vp8": vg.VP8_RTX_PT}


def dave_pair(group_id: int = GROUP_ID) -> tuple[DaveSessionCore, DaveSessionCore]:
    """(streamer, watcher) DAVE sessions in one MLS group, settled (FIFO routing)."""
    server = DaveGroupServer(group_id, protocol_version=1)
    members = {
        STREAMER_ID: DaveSessionCore(STREAMER_ID, group_id),
        WATCHER_ID: DaveSessionCore(WATCHER_ID, group_id),
    }
    to_client: dict[int, deque[Any]] = {user: deque() for user in members}
    to_server: deque[tuple[int, Any]] = deque()

    def route(outgoing: list[tuple[int, Any]]) -> None:
        for user, frame in outgoing:
            to_client[user].append(frame)

    for user, member in members.items():
        member.clients_connected([u for u in members if u != user])
        to_server.extend((user, f) for f in member.on_session_description(1))
        route(server.connect(user, 0.0))
    now = 0.0
    for _ in range(2000):
        if to_server:
            user, frame = to_server.popleft()
            if isinstance(frame, DaveBinary):
                route(server.receive_binary(user, frame.op, frame.payload, now))
            else:
                route(server.receive_json(user, frame.op, frame.data, now))
            continue
        pending = [u for u, q in to_client.items() if q]
        if pending:
            user = pending[0]
            frame = to_client[user].popleft()
            member = members[user]
            replies = (
                member.on_binary(frame.op, frame.payload)
                if isinstance(frame, DaveBinary)
                else member.on_json(frame.op, frame.data)
            )
            to_server.extend((user, r) for r in replies)
            continue
        deadline = server.next_deadline()
        if deadline is None:
            break
        now = max(now, deadline)
        route(server.tick(now))
    streamer, watcher = members[STREAMER_ID], members[WATCHER_ID]
    assert streamer.ready and watcher.ready
    return streamer, watcher


@attrs.frozen
class Packet:
    header: RtpHeader
    payload: bytes


class Streamer:
    """Encodes synthetic screen frames, DAVE-encrypts, packetizes; answers NACK and PLI/FIR."""

    def __init__(
        self,
        codec: VideoCodec,
        *,
        width: int = 320,
        height: int = 180,
        dave: DaveSessionCore | None = None,
        keyframe_interval: float = 2.0,
        mtu: int = 1000,
        bitrate: int = 600_000,
    ) -> None:
        self.codec = codec
        self.synth = ScreenSynth(width, height, fps=30, scene_seconds=1.0)
        self.encoder = VideoEncoder(codec, width, height, 30, bitrate, keyframe_interval=keyframe_interval)
        self.dave = dave
        self.mtu = mtu
        self.store = RetransmissionStore(capacity=4096, min_resend_interval=0.0)
        self.seq = 1000
        self.rtx_seq = 5000
        self.picture_id = 0
        self.index = 0
        self.sources: dict[int, av.VideoFrame] = {}
        self.plain_frames: dict[int, bytes] = {}
        self.keyframes_forced = 0
        self.nacks = 0

    def next_frame(self) -> list[Packet]:
        """Encode frame ``index``; RTP timestamp = index * 3000."""
        source = self.synth.frame(self.index)
        timestamp = self.index * 3000
        self.sources[timestamp] = source
        self.index += 1
        packets: list[Packet] = []
        for encoded in self.encoder.encode(source):
            self.plain_frames[timestamp] = encoded.data
            data = encoded.data
            if self.dave is not None:
                data = self.dave.encrypt_video(self.codec, data)
            if self.codec == "h264":
                payloads = packetize_h264(data, self.mtu)
            else:
                payloads = packetize_vp8(data, self.picture_id, self.mtu)
                self.picture_id += 1
            for i, payload in enumerate(payloads):
                marker = i == len(payloads) - 1
                header = RtpHeader(PT[self.codec], self.seq, timestamp, MEDIA_SSRC, marker)
                self.store.remember(self.seq, timestamp, marker, payload)
                packets.append(Packet(header, payload))
                self.seq = (self.seq + 1) % 65536
        return packets

    def on_rtcp(self, datagram: bytes, now: float) -> list[Packet]:
        out: list[Packet] = []
        for packet in parse_compound(datagram):
            if isinstance(packet, GenericNack):
                self.nacks += 1
                for rtx in self.store.answer(packet.lost_sequences(), now):
                    header = RtpHeader(RTX_PT[self.codec], self.rtx_seq, rtx.timestamp, RTX_SSRC, rtx.marker)
                    self.rtx_seq = (self.rtx_seq + 1) % 65536
                    out.append(Packet(header, rtx.payload))
            elif isinstance(packet, PictureLossIndication | FullIntraRequest):
                self.keyframes_forced += 1
                self.encoder.force_keyframe()
        return out


class Link:
    """Seeded one-way link: loss, duplication, reordering (extra delay), fixed base delay."""

    def __init__(
        self,
        seed: int,
        *,
        loss: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        delay: float = 0.01,
        reorder_delay: float = 0.015,
        clean_start: int = 20,
    ) -> None:
        self.rng = random.Random(seed)
        self.loss, self.duplicate, self.reorder = loss, duplicate, reorder
        self.delay, self.reorder_delay = delay, reorder_delay
        # The first packets go through unharmed: a reorder buffer starts at the first packet it
        # sees, so a reordered start is a (harmless, join-time) loss rather than reordering.
        self.clean_start = clean_start
        self._queue: list[tuple[float, int, Any]] = []
        self._order = 0
        self.sent = 0
        self.lost = 0

    def send(self, item: Any, now: float) -> None:
        self.sent += 1
        if self.sent <= self.clean_start:
            self._order += 1
            heapq.heappush(self._queue, (now + self.delay, self._order, item))
            return
        if self.rng.random() < self.loss:
            self.lost += 1
            return
        copies = 2 if self.rng.random() < self.duplicate else 1
        for _ in range(copies):
            at = now + self.delay
            if self.rng.random() < self.reorder:
                at += self.rng.uniform(0.001, self.reorder_delay)
            self._order += 1
            heapq.heappush(self._queue, (at, self._order, item))

    def next_time(self) -> float | None:
        return self._queue[0][0] if self._queue else None

    def deliver(self, now: float) -> list[Any]:
        out = []
        while self._queue and self._queue[0][0] <= now:
            out.append(heapq.heappop(self._queue)[2])
        return out


@attrs.define
class WatchRun:
    frames: list[EncodedVideoFrame]
    events: list[ReceiveEvent]
    streamer: Streamer
    end_time: float
    first_bound_at: float


def run_watch(
    streamer: Streamer,
    receiver: VideoReceiver,
    *,
    frames: int,
    forward: Link,
    backward: Link | None = None,
    join_at_frame: int = 0,
    tail: float = 1.5,
    on_bind: Callable[[VideoReceiver, float], None] | None = None,
) -> WatchRun:
    """Stream ``frames`` frames at 30 fps through ``forward``; feedback flows through ``backward``.

    The receiver is bound (joins) at frame ``join_at_frame``; packets before that never reach it.
    """
    backward = backward or Link(99)
    out: list[EncodedVideoFrame] = []
    events: list[ReceiveEvent] = []
    now = 0.0
    frame_period = 1 / 30
    next_frame_at = 0.0
    bound = False
    bound_at = 0.0
    end = frames * frame_period + tail
    while now <= end:
        if streamer.index < frames and now >= next_frame_at - 1e-9:
            if streamer.index == join_at_frame and not bound:
                bound = True
                bound_at = now
                if on_bind is not None:
                    on_bind(receiver, now)
                else:
                    receiver.bind(MEDIA_SSRC, str(STREAMER_ID), now, rtx_ssrc=RTX_SSRC)
            for packet in streamer.next_frame():
                if bound:
                    forward.send(packet, now)
            next_frame_at += frame_period
        for packet in forward.deliver(now):
            events += receiver.receive(packet.header, packet.payload, now)
        events += receiver.tick(now)
        if bound:
            for datagram in receiver.poll(now):
                backward.send(datagram, now)
        for datagram in backward.deliver(now):
            for packet in streamer.on_rtcp(datagram, now):
                forward.send(packet, now)
        candidates = [t for t in (forward.next_time(), backward.next_time(), receiver.next_deadline()) if t]
        if streamer.index < frames:
            candidates.append(next_frame_at)
        later = [t for t in candidates if t > now]
        step = min(later) if later else now + 0.005
        now = min(max(step, now + 0.0005), now + 0.02)
    out = [e for e in events if isinstance(e, EncodedVideoFrame)]
    return WatchRun(out, events, streamer, now, bound_at)
