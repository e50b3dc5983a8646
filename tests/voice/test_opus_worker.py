"""The voice send loop's Opus encode thread (io/opus_worker.py): same packets as inline, in order."""

from __future__ import annotations

import threading

import trio

from clank.io.opus_worker import open_opus_encode_worker
from clank.media.audio import FRAME_SAMPLES, OpusEncoder, tone


def _frames(count: int) -> list:  # type: ignore[type-arg]
    pcm = tone(440.0, count * 0.02 + 0.1)
    return [pcm[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES] for i in range(count)]


async def test_thread_encodes_the_same_packets_as_inline_encoding() -> None:
    frames = _frames(30)
    inline = OpusEncoder()
    expected = [inline.encode(f) for f in frames]
    encoder = OpusEncoder()
    with trio.fail_after(10):
        async with open_opus_encode_worker(encoder) as worker:
            assert worker.threaded
            got = [await worker.encode(f) for f in frames]
            assert worker.threaded_frames == 30
            assert worker.cpu_seconds > 0.0
    assert got == expected
    assert not any(t.name == "clank-opus-encode" for t in threading.enumerate())


async def test_a_cancelled_wait_does_not_hand_its_packet_to_the_next_frame() -> None:
    frames = _frames(3)
    inline = OpusEncoder()
    expected = [inline.encode(f) for f in frames]
    with trio.fail_after(10):
        async with open_opus_encode_worker(OpusEncoder()) as worker:
            with trio.CancelScope() as scope:
                scope.cancel()
                await worker.encode(frames[0])  # submitted, then the wait is cancelled
            await trio.sleep(0.05)  # its packet arrives with nobody waiting
            second = await worker.encode(frames[1])
    assert second == expected[1]


async def test_mock_clock_encodes_inline(autojump_clock: trio.abc.Clock) -> None:
    frames = _frames(2)
    inline = OpusEncoder()
    expected = [inline.encode(f) for f in frames]
    async with open_opus_encode_worker(OpusEncoder()) as worker:
        assert not worker.threaded
        assert [await worker.encode(f) for f in frames] == expected
        assert worker.threaded_frames == 0
