"""Hypothesis: ``VideoReceiver.receive``'s short path (media of a bound stream in its codec, in
order) gives exactly what the general path gives, for any script of packets, runs of consecutive
packets (frames assemble), RTX, payload-type switches, bindings and feedback polls."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from clank.errors import DecryptionFailed
from clank.protocol.video_receive import ReceiveEvent, VideoReceiveConfig, VideoReceiver
from clank.protocol.voice_gateway import VideoState
from clank.wire import voice_gateway as vg
from clank.wire.rtp import RtpHeader

SSRCS = st.sampled_from([11, 12, 21])
PTS = st.sampled_from([vg.H264_PT, vg.H264_PT, vg.H264_RTX_PT, vg.VP8_PT, 96])
# H264 frames: an IDR start (FU-A S bit), continuation and end fragments, single NALs; VP8 descriptors.
PAYLOADS = st.one_of(
    st.sampled_from([b"\x7c\x85" + bytes(8), b"\x7c\x05" + bytes(8), b"\x7c\x45" + bytes(8)]),
    st.sampled_from([b"\x65\x88\x84", b"\x41\x9a\x00", b"\x67\x42\x00", b"\x68\xce"]),
    st.sampled_from([b"\x90\x80\x80\x01\x50", b"\x80\x80\x80\x01\x11", b"\x00\x01"]),
    st.binary(max_size=12),
)
run = st.tuples(
    st.just("run"),
    SSRCS,
    PTS,
    st.integers(0, 65535),
    st.integers(0, 3) | st.just(0),  # seq step to the run's first packet from the last one
    st.lists(PAYLOADS, min_size=1, max_size=8),
    st.floats(0, 0.1),
)
bind = st.tuples(st.just("bind"), SSRCS, st.sampled_from(["1", "2"]), st.booleans())
control = st.tuples(
    st.sampled_from(["poll", "tick", "dave_ready", "suppress", "unsuppress"]), st.floats(0, 1)
)
steps = st.lists(st.one_of(run, run, bind, control), max_size=40)


class GeneralPathOnly(VideoReceiver):
    """The receiver with every packet taking the general path (``_receive_other``)."""

    def receive(self, header: RtpHeader, payload: bytes, now: float) -> list[ReceiveEvent]:
        self._packets += 1
        return self._receive_other(header, payload, self._streams.get(header.ssrc), now)


def _decrypt(user: int, frame: bytes) -> bytes:
    if frame[-1:] == b"\xff":
        raise DecryptionFailed("dave", "no_valid_cryptor")
    return frame


def _config() -> VideoReceiveConfig:
    return VideoReceiveConfig(local_ssrc=5, reorder_capacity=32, reorder_delay=0.05)


@given(steps)
@example(  # a keyframe, then a frame lost in the short path: the keyframe request must follow
    [
        ("run", 11, vg.H264_PT, 100, 0, [b"\x65\x88\x84"], 0.01),
        ("run", 11, vg.H264_PT, 0, 0, [b"\x7c\x05" + bytes(8)], 0.01),
        ("poll", 0.01),
    ]
)
@example(  # the codec changes through an RTX packet: the media PT must not keep the short path
    [
        ("run", 11, vg.VP8_PT, 0, 0, [b"\x7c\x85" + bytes(8)], 0.0),
        ("run", 12, vg.H264_PT, 0, 0, [b"\x7c\x85" + bytes(8)], 0.0),
        ("run", 11, vg.VP8_PT, 0, 0, [b"\x7c\x85" + bytes(8)], 0.0),
    ]
)
def test_short_path_is_the_general_path(script: list[tuple[object, ...]]) -> None:
    fast, general = VideoReceiver(_config(), _decrypt), GeneralPathOnly(_config(), _decrypt)
    for receiver in (fast, general):
        receiver.bind(11, "1", 0.0, rtx_ssrc=12)
    now = 0.0
    seqs: dict[int, int] = {}
    for step in script:
        kind = step[0]
        if kind == "run":
            _, ssrc, pt, first, skip, payloads, dt = step
            now += float(dt)  # type: ignore[arg-type]
            ssrc, pt = int(ssrc), int(pt)  # type: ignore[call-overload]
            # Mostly continue the SSRC's sequence (the short path), sometimes jump anywhere.
            seq = (seqs[ssrc] + int(skip)) % 65536 if ssrc in seqs and int(skip) < 3 else int(first)  # type: ignore[call-overload]
            items = list(payloads)  # type: ignore[call-overload]
            for i, payload in enumerate(items):
                header = RtpHeader(pt, (seq + i) % 65536, int(now * 90_000), ssrc, i == len(items) - 1)
                assert fast.receive(header, payload, now) == general.receive(header, payload, now)
            seqs[ssrc] = (seq + len(items)) % 65536
        elif kind == "bind":
            _, ssrc, user, active = step
            ssrc = int(ssrc)  # type: ignore[call-overload]
            layer = vg.VideoStream(ssrc=ssrc, rtx_ssrc=ssrc + 1, type="screen", active=bool(active))
            state = VideoState(str(user), 1, ssrc, ssrc + 1, (layer,))
            assert fast.on_video_state(state, now) == general.on_video_state(state, now)
        else:
            now += float(step[1])  # type: ignore[arg-type]
            if kind == "poll":
                assert fast.poll(now) == general.poll(now)
            elif kind == "tick":
                assert fast.tick(now) == general.tick(now)
            elif kind == "dave_ready":
                fast.dave_ready(now)
                general.dave_ready(now)
            elif kind == "suppress":
                fast.suppress("1", "screen")
                general.suppress("1", "screen")
            else:
                fast.unsuppress("1", "screen", now)
                general.unsuppress("1", "screen", now)
        assert fast.next_deadline() == general.next_deadline()
        assert fast.feedback_pending == general.feedback_pending
        fast.feedback_pending = general.feedback_pending = False  # as the driver does
    assert fast.statistics() == general.statistics()
