"""The decode worker: a real thread end to end, overflow policy, and the synchronous mode."""

from __future__ import annotations

import functools
import io
import os
import threading
from collections.abc import Callable

import pytest
import trio
import trio.testing
from PIL import Image

from clank.errors import UsageError
from clank.io.decode_worker import DECODE_THREAD_NICE, DecodedImage, DecodeWorker, open_decode_worker
from clank.media.decoder import VideoCodec
from clank.media.encoder import EncodedFrame, VideoEncoder
from clank.media.synth import ScreenSynth

FPS = 30
TICKS_PER_FRAME = 90_000 // FPS


def _stream(codec: VideoCodec, count: int, *, width: int = 640, height: int = 360) -> list[EncodedFrame]:
    synth = ScreenSynth(width, height, fps=FPS, scene_seconds=1.0)
    encoder = VideoEncoder(codec, width, height, FPS, 1_000_000)
    out: list[EncodedFrame] = []
    for index in range(count):
        out += encoder.encode(synth.frame(index))
    return out


def _decoded_more_than(worker: DecodeWorker, count: int) -> bool:
    return worker.statistics().decoded_frames > count


async def _wait_until(predicate: Callable[[], bool]) -> None:
    """Poll state owned by the worker thread (no trio event exists for it); callers bound it."""
    while not predicate():  # noqa: ASYNC110
        await trio.sleep(0.002)


@pytest.fixture(scope="module")
def h264_stream() -> list[EncodedFrame]:
    return _stream("h264", 45)


@pytest.mark.parametrize("codec", ["h264", "vp8"])
async def test_real_thread_end_to_end(codec: VideoCodec) -> None:
    stream = _stream(codec, 45)
    received: list[DecodedImage] = []
    with trio.fail_after(20):
        async with open_decode_worker(
            codec, on_output=received.append, max_fps=2.0, max_pixels=320 * 180
        ) as worker:
            for index, frame in enumerate(stream):
                assert worker.submit(frame.data, index * TICKS_PER_FRAME)
                # One at a time, so which pictures are due does not depend on thread timing.
                await _wait_until(functools.partial(_decoded_more_than, worker, index))
            await _wait_until(
                lambda: worker.statistics().emitted == len(received) + worker.statistics().superseded
            )
            stats = worker.statistics()
    assert stats.decoded_frames == 45 and stats.dropped == 0 and stats.decode_errors == 0
    # 45 frames at 30 fps is 1.5 s: pictures due at 0, 0.5 and 1.0 s (later ones if the queue lagged).
    assert stats.emitted == 3 == len(received) + stats.superseded
    assert [image.sequence for image in received] == sorted(image.sequence for image in received)
    first = received[0]
    assert (first.jpeg.width, first.jpeg.height) == (320, 180)
    assert (first.source_width, first.source_height) == (640, 360)
    with Image.open(io.BytesIO(first.jpeg.data)) as image:
        assert image.size == (320, 180)
    assert first.timestamp == 0 and first.keyframe and first.decode_delay > 0
    # The synthetic screen cuts to another scene after 1 s: the third picture is a scene cut.
    assert any(image.change.scene_cut for image in received)
    assert stats.delay_p50 is not None and stats.delay_p99 is not None
    assert (stats.width, stats.height) == (640, 360)
    assert stats.worker_cpu_seconds > 0 and not stats.keyframe_wanted


async def test_queue_overflow_is_counted_and_a_keyframe_flushes(h264_stream: list[EncodedFrame]) -> None:
    received: list[DecodedImage] = []
    with trio.fail_after(20):
        async with open_decode_worker("h264", on_output=received.append, queue_size=1) as worker:
            # Submitted back to back: the thread cannot decode 640x360 in the microseconds between.
            accepted = [worker.submit(f.data, i * TICKS_PER_FRAME) for i, f in enumerate(h264_stream)]
            stats = worker.statistics()
            assert stats.dropped > 0 and accepted.count(False) == stats.dropped
            assert worker.keyframe_wanted
            # A keyframe is always accepted: it supersedes whatever is still queued.
            keyframe = _stream("h264", 1)[0]
            assert keyframe.keyframe
            assert worker.submit(keyframe.data, 10_000_000)
            await _wait_until(
                lambda: worker.statistics().decoded_frames + worker.statistics().dropped == len(accepted) + 1
            )
            final = worker.statistics()
    assert final.submitted == len(h264_stream) + 1
    assert final.decoded_frames + final.dropped == final.submitted
    assert not final.keyframe_wanted  # the keyframe was decoded


async def test_submit_after_close_is_a_usage_error(h264_stream: list[EncodedFrame]) -> None:
    with trio.fail_after(10):
        async with open_decode_worker("h264", on_output=lambda image: None) as worker:
            worker.submit(h264_stream[0].data, 0)
    with pytest.raises(UsageError):
        worker.submit(h264_stream[1].data, TICKS_PER_FRAME)


async def test_synchronous_mode_under_autojump_clock(
    autojump_clock: trio.testing.MockClock, h264_stream: list[EncodedFrame]
) -> None:
    received: list[DecodedImage] = []
    with trio.fail_after(30):
        async with open_decode_worker(
            "h264", on_output=received.append, max_fps=4.0, synchronous=True
        ) as worker:
            for index, frame in enumerate(h264_stream[:30]):
                worker.submit(frame.data, index * TICKS_PER_FRAME)
                await trio.sleep(1 / FPS)
            stats = worker.statistics()
    # 30 frames (1 s) at 4 fps: frames 0, 8, 16 and 24 (7.5 frames apart, rounded up).
    assert [image.timestamp // TICKS_PER_FRAME for image in received] == [0, 8, 16, 24]
    assert stats.emitted == 4 and stats.superseded == 0 and stats.decoded_frames == 30


async def test_output_callback_errors_propagate(h264_stream: list[EncodedFrame]) -> None:
    def explode(image: DecodedImage) -> None:
        raise RuntimeError("consumer bug")

    with (
        trio.fail_after(10),
        pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="consumer bug"), flatten_subgroups=True),
    ):
        async with open_decode_worker("h264", on_output=explode) as worker:
            worker.submit(h264_stream[0].data, 0)
            await trio.sleep_forever()


async def test_timestamp_wrap_is_forward_time_and_a_jump_back_emits(h264_stream: list[EncodedFrame]) -> None:
    received: list[DecodedImage] = []
    with trio.fail_after(10):
        async with open_decode_worker("h264", on_output=received.append, synchronous=True) as worker:
            base = 2**32 - 2 * TICKS_PER_FRAME  # wraps around after two frames
            for index, frame in enumerate(h264_stream[:4]):
                worker.submit(frame.data, (base + index * TICKS_PER_FRAME) % 2**32)
                await trio.lowlevel.checkpoint()
            # The wrap is forward time, not a restart: only the first picture was due.
            assert [image.sequence for image in received] == [1]
            worker.submit(h264_stream[4].data, base - 10 * TICKS_PER_FRAME)  # a restarted sender
            await trio.lowlevel.checkpoint()
    assert [image.sequence for image in received] == [1, 2]


async def test_rates_are_over_a_window_ending_now_and_decay_when_frozen(
    autojump_clock: trio.testing.MockClock, h264_stream: list[EncodedFrame]
) -> None:
    with trio.fail_after(30):
        async with open_decode_worker(
            "h264", on_output=lambda image: None, max_fps=2.0, synchronous=True
        ) as worker:
            assert worker.statistics().last_output_age is None
            # A burst first: 10 frames at once must not read as a huge rate.
            for index, frame in enumerate(h264_stream[:10]):
                worker.submit(frame.data, index * TICKS_PER_FRAME)
            await trio.lowlevel.checkpoint()
            assert worker.statistics().fps_in <= 10 / 0.5  # at most count / the minimum span
            await trio.sleep(2.0)  # the burst leaves the window
            for index in range(10, 70):  # 2 s paced at 30 fps (the stream repeats from its IDR)
                await trio.sleep(1 / FPS)
                worker.submit(h264_stream[index % 45].data, index * TICKS_PER_FRAME)
            await trio.lowlevel.checkpoint()
            steady = worker.statistics()
            assert 29 <= steady.fps_in <= 31, steady.fps_in
            assert 1.5 <= steady.fps_out <= 2.5, steady.fps_out  # the 2 fps cap, +-1/window
            assert steady.last_output_age is not None and steady.last_output_age < 0.6
            await trio.sleep(1.0)
            half = worker.statistics()
            assert 0 < half.fps_in < steady.fps_in  # decaying, not stuck
            await trio.sleep(1.1)
            frozen = worker.statistics()
            assert frozen.fps_in == 0 and frozen.fps_out == 0
            assert frozen.last_output_age is not None and frozen.last_output_age >= 2.1


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="per-thread niceness is Linux-only")
async def test_the_decode_thread_is_niced_and_not_from_the_trio_cache(
    h264_stream: list[EncodedFrame],
) -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    with trio.fail_after(10):
        async with open_decode_worker("h264", on_output=lambda image: None) as worker:
            worker.submit(h264_stream[0].data, 0)
            await _wait_until(functools.partial(_decoded_more_than, worker, 0))
            (thread,) = [t for t in threading.enumerate() if t.name == "clank decode h264"]
            assert thread.native_id is not None
            assert os.getpriority(os.PRIO_PROCESS, thread.native_id) == min(19, base + DECODE_THREAD_NICE)
        thread.join(timeout=2)
        assert not thread.is_alive()  # the thread ends with the worker; nothing niced is reused
    assert os.getpriority(os.PRIO_PROCESS, 0) == base  # the trio thread keeps its priority
