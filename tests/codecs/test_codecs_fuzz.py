"""Arbitrary packet sequences through reorder buffer + depacketizers: never raise, counters add up."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from clank.codecs.assembly import FrameAssembler
from clank.codecs.h264 import H264Depacketizer
from clank.codecs.packet import SEQ_MOD, AssembledFrame, Gap, MediaPacket
from clank.codecs.reorder import ReorderBuffer
from clank.codecs.vp8 import Vp8Depacketizer

# Payloads whose first byte is often a meaningful H264 type or VP8 descriptor.
payloads = st.one_of(
    st.binary(max_size=24),
    st.tuples(
        st.sampled_from([0x05, 0x07, 0x18, 0x1C, 0x19, 0x1F, 0x90, 0x10, 0x80]), st.binary(max_size=24)
    ).map(lambda t: bytes([t[0]]) + t[1]),
)
packets = st.builds(
    MediaPacket,
    seq=st.one_of(st.integers(0, 40), st.integers(65500, 65535), st.integers(0, 65535)),
    timestamp=st.sampled_from([0, 3000, 6000, 2**32 - 1]),
    marker=st.booleans(),
    payload=payloads,
)
steps = st.lists(st.tuples(packets, st.floats(0, 0.2)), max_size=60)


def check_assembler(assembler: FrameAssembler, frames: list[AssembledFrame]) -> None:
    frames += assembler.flush()
    stats = assembler.statistics()
    assert (
        stats.packets == stats.accepted + stats.malformed + stats.unsupported + stats.duplicates + stats.empty
    )
    assert stats.frames_started == stats.frames_complete + stats.frames_dropped
    assert all(f.complete for f in frames)
    assert len(frames) == stats.frames_complete
    assert stats.keyframes == sum(f.keyframe for f in frames)


@given(steps, st.integers(1, 64), st.floats(0, 0.5))
def test_reorder_buffer_and_depacketizers_never_raise(
    sequence: list[tuple[MediaPacket, float]], capacity: int, max_delay: float
) -> None:
    buffer = ReorderBuffer(capacity=capacity, max_delay=max_delay, max_jump=max(capacity, 100))
    h264, vp8 = H264Depacketizer(), Vp8Depacketizer()
    h264_frames: list[AssembledFrame] = []
    vp8_frames: list[AssembledFrame] = []
    released: list[MediaPacket | Gap] = []
    now = 0.0
    for packet, delay in sequence:
        now += delay
        buffer.insert(packet, now)
        for item in buffer.pop_ready(now):
            released.append(item)
            h264_frames += h264.push(item)
            vp8_frames += vp8.push(item)
        deadline = buffer.next_deadline()
        assert deadline is None or deadline > now
        for seq in buffer.missing(now):
            assert 0 <= seq < SEQ_MOD
    for item in buffer.pop_ready(now + 1000.0):
        released.append(item)
        h264_frames += h264.push(item)
        vp8_frames += vp8.push(item)

    stats = buffer.statistics()
    assert stats.buffered == 0
    assert stats.received == len(sequence)
    assert stats.received == stats.released + sum(stats.dropped.values())
    assert stats.released == sum(isinstance(item, MediaPacket) for item in released)
    assert stats.lost == sum(item.count for item in released if isinstance(item, Gap))
    # Released packets are contiguous in sequence order, holes are accounted for by Gaps.
    expected: int | None = None
    for item in released:
        if isinstance(item, Gap):
            expected = None if item.reason == "reset" else (item.first_seq + item.count) % SEQ_MOD
            if item.reason != "reset":
                assert item.count > 0
            continue
        if expected is not None:
            assert item.seq == expected
        expected = (item.seq + 1) % SEQ_MOD
    check_assembler(h264, h264_frames)
    check_assembler(vp8, vp8_frames)


@given(
    st.lists(st.one_of(packets, st.builds(Gap, st.integers(0, 65535), st.integers(0, 5), st.just("lost"))))
)
def test_depacketizers_accept_any_direct_input(items: list[MediaPacket | Gap]) -> None:
    for assembler in (H264Depacketizer(), Vp8Depacketizer(deliver_incomplete=True)):
        frames: list[AssembledFrame] = []
        for item in items:
            frames += assembler.push(item)
        frames += assembler.flush()
        stats = assembler.statistics()
        assert stats.packets == sum(isinstance(i, MediaPacket) for i in items)
        assert (
            stats.packets
            == stats.accepted + stats.malformed + stats.unsupported + stats.duplicates + stats.empty
        )
        assert stats.frames_started == stats.frames_complete + stats.frames_dropped


# Mostly in-order sequence steps (the receive path's short path), with the odd reorder, loss,
# duplicate and far jump: seq delta from the previous packet, and the time step.
near_in_order = st.lists(
    st.tuples(
        st.one_of(st.just(1), st.just(1), st.just(1), st.sampled_from([0, 2, 3, -1, -2, 5000])),
        st.floats(0, 0.2),
    ),
    max_size=80,
)


@given(near_in_order, st.integers(0, 65535), st.integers(1, 16), st.floats(0, 0.5))
def test_reorder_push_is_insert_then_pop_ready(
    steps: list[tuple[int, float]], first: int, capacity: int, max_delay: float
) -> None:
    """``push`` (with its in-order short path ``release_next``) == ``insert`` + ``pop_ready``."""
    fast = ReorderBuffer(capacity=capacity, max_delay=max_delay, max_jump=max(capacity, 100))
    slow = ReorderBuffer(capacity=capacity, max_delay=max_delay, max_jump=max(capacity, 100))
    seq, now = first, 0.0
    for delta, delay in steps:
        seq = (seq + delta) % SEQ_MOD
        now += delay
        packet = MediaPacket(seq, seq // 4, False, b"x")
        got = fast.push(packet, now)
        slow.insert(packet, now)
        assert got == slow.pop_ready(now)
        assert fast.missing(now) == slow.missing(now)
        assert fast.next_deadline() == slow.next_deadline()
        assert fast.statistics() == slow.statistics()
    assert fast.pop_ready(now + 1000.0) == slow.pop_ready(now + 1000.0)
    assert fast.statistics() == slow.statistics()
