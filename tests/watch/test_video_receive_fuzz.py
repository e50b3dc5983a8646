"""Hypothesis: arbitrary packet sequences, bindings and feedback polls never make the core raise."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from clank.errors import DecryptionFailed
from clank.protocol.video_receive import EncodedVideoFrame, VideoReceiveConfig, VideoReceiver
from clank.protocol.voice_gateway import VideoState
from clank.wire import voice_gateway as vg
from clank.wire.rtcp import SenderReport, parse_compound
from clank.wire.rtp import RtpHeader

SSRCS = st.sampled_from([11, 12, 13, 21, 99])
PTS = st.sampled_from([vg.H264_PT, vg.H264_RTX_PT, vg.VP8_PT, vg.VP8_RTX_PT, 96, 120, 0])
# Payloads biased towards interesting first bytes (H264 NAL types, FU-A, STAP-A, VP8 descriptors).
PAYLOADS = st.one_of(
    st.binary(max_size=40),
    st.tuples(
        st.sampled_from([0x65, 0x41, 0x67, 0x78, 0x7C, 0x18, 0x90, 0x10, 0x00]), st.binary(max_size=30)
    ).map(lambda t: bytes([t[0]]) + t[1]),
)

packet = st.tuples(
    st.just("packet"),
    SSRCS,
    PTS,
    st.integers(0, 65535),
    st.integers(0, 2**32 - 1),
    st.booleans(),
    PAYLOADS,
    st.floats(0, 0.5),
)
# A run of near-consecutive packets makes frames actually assemble.
run = st.tuples(
    st.just("run"), SSRCS, PTS, st.integers(0, 65535), st.lists(PAYLOADS, max_size=6), st.floats(0, 0.2)
)
bind = st.tuples(st.just("bind"), SSRCS, st.sampled_from(["1", "2", "x"]), st.booleans(), st.booleans())
clear = st.tuples(st.just("clear"), st.sampled_from(["1", "2"]))
control = st.tuples(
    st.sampled_from(["poll", "tick", "dave_ready", "suppress", "unsuppress", "sr"]), st.floats(0, 3)
)
steps = st.lists(st.one_of(packet, run, bind, clear, control), max_size=60)


def _decrypt(user: int, frame: bytes) -> bytes:
    if frame[:1] == b"\x00":
        raise DecryptionFailed("dave", "no_valid_cryptor")
    return frame


@given(steps)
def test_arbitrary_input_never_raises(script: list[tuple[object, ...]]) -> None:
    receiver = VideoReceiver(
        VideoReceiveConfig(local_ssrc=5, reorder_capacity=64, reorder_delay=0.05), _decrypt
    )
    now = 0.0
    for step in script:
        kind = step[0]
        if kind == "packet":
            _, ssrc, pt, seq, ts, marker, payload, dt = step
            now += float(dt)  # type: ignore[arg-type]
            header = RtpHeader(int(pt), int(seq), int(ts), int(ssrc), bool(marker))  # type: ignore[call-overload]
            events = receiver.receive(header, bytes(payload), now)  # type: ignore[arg-type]
            assert all(not isinstance(e, EncodedVideoFrame) or e.data for e in events)
        elif kind == "run":
            _, ssrc, pt, seq, payloads, dt = step
            now += float(dt)  # type: ignore[arg-type]
            items = list(payloads)  # type: ignore[call-overload]
            for i, payload in enumerate(items):
                header = RtpHeader(int(pt), (int(seq) + i) % 65536, 9000, int(ssrc), i == len(items) - 1)  # type: ignore[call-overload]
                receiver.receive(header, payload, now)
        elif kind == "bind":
            _, ssrc, user, screen, active = step
            stream = vg.VideoStream(
                ssrc=int(ssrc),  # type: ignore[call-overload]
                rtx_ssrc=int(ssrc) + 1,  # type: ignore[call-overload]
                type="screen" if screen else "video",
                active=bool(active),
            )
            receiver.on_video_state(VideoState(str(user), 1, int(ssrc), int(ssrc) + 1, (stream,)), now)  # type: ignore[call-overload]
        elif kind == "clear":
            receiver.on_video_state(VideoState(str(step[1]), 1, None, None, ()), now)
        else:
            now += float(step[1])  # type: ignore[arg-type]
            if kind == "poll":
                for datagram in receiver.poll(now):
                    assert parse_compound(datagram)
            elif kind == "tick":
                receiver.tick(now)
            elif kind == "dave_ready":
                receiver.dave_ready(now)
            elif kind == "suppress":
                receiver.suppress("1", "screen")
            elif kind == "unsuppress":
                receiver.unsuppress("1", "screen", now)
            else:
                receiver.on_rtcp([SenderReport(11, 2**63, 0, 0, 0)], now)
        deadline = receiver.next_deadline()
        assert deadline is None or not math.isnan(deadline)
    stats = receiver.statistics()
    for stream in stats.streams.values():
        assert stream.frames_emitted <= stream.frames_assembled
