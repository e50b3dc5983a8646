"""The voice role's Opus encode thread: packets come back in submit order (speech and the
silence frames behind it), on another thread, with their slots; a full queue drops and counts;
under a virtual clock the encode runs inline; a slow hand-off moves the encode inline."""

from __future__ import annotations

import threading

import numpy as np
import trio
import trio.testing

from clank.io.audio_encode_worker import (
    HANDOFF_BUDGET_S,
    INLINE_HOLD_S,
    AudioEncodeWorker,
    EncodedAudio,
    EncodePath,
    open_audio_encode_worker,
)
from clank.media.audio import FRAME_SAMPLES, OPUS_SILENCE, OpusDecoder, OpusEncoder

BOUND = 5.0


def _tone(index: int, hz: float = 440.0) -> np.ndarray:
    t = (np.arange(FRAME_SAMPLES) + index * FRAME_SAMPLES) / 48_000
    mono = (np.sin(2 * np.pi * hz * t) * 12_000).astype(np.int16)
    return np.stack([mono, mono], axis=1)


async def test_packets_come_back_in_order_with_their_slots() -> None:
    got: list[EncodedAudio] = []
    threads: set[int] = set()
    done = trio.Event()
    encoder = OpusEncoder()
    original = encoder.encode

    def encode(pcm: np.ndarray) -> bytes | None:
        threads.add(threading.get_ident())
        return original(pcm)

    encoder.encode = encode  # type: ignore[method-assign]

    def on_output(item: EncodedAudio) -> None:
        got.append(item)
        if len(got) == 8:
            done.set()

    with trio.fail_after(BOUND):
        async with open_audio_encode_worker(encoder, on_output=on_output, queue_size=8) as worker:
            for i in range(5):
                assert worker.submit(10.0 + i * 0.02, _tone(i))
            for i in range(5, 8):
                assert worker.submit(10.0 + i * 0.02, OPUS_SILENCE)
            await done.wait()
            stats = worker.statistics()
    assert [round(item.slot, 2) for item in got] == [round(10.0 + i * 0.02, 2) for i in range(8)]
    assert [item.voice for item in got] == [True] * 5 + [False] * 3
    assert all(item.opus == OPUS_SILENCE for item in got[5:])
    assert threads and threading.get_ident() not in threads
    assert stats.encoded == 5 and stats.dropped == 0 and stats.encode_p99_ms is not None
    decoder = OpusDecoder()
    pcm = np.concatenate([decoder.decode(item.opus) for item in got[:5]])
    assert np.abs(pcm[FRAME_SAMPLES:].astype(np.int32)).max() > 3_000  # the tone, not silence


async def test_a_full_queue_drops_the_new_frame_and_counts_it() -> None:
    release = threading.Event()
    encoder = OpusEncoder()
    original = encoder.encode

    def slow(pcm: np.ndarray) -> bytes | None:
        release.wait(BOUND)
        return original(pcm)

    encoder.encode = slow  # type: ignore[method-assign]
    got: list[EncodedAudio] = []
    with trio.fail_after(BOUND):
        async with open_audio_encode_worker(encoder, on_output=got.append, queue_size=2) as worker:
            accepted = [worker.submit(float(i), _tone(i)) for i in range(4)]
            # The thread holds one job (or none yet): at most queue_size + 1 are accepted.
            assert accepted[:2] == [True, True] and accepted[3] is False
            release.set()
            while len(got) < sum(accepted):  # noqa: ASYNC110 - delivered by the worker
                await trio.sleep(0.005)
            stats = worker.statistics()
    assert stats.dropped == 4 - sum(accepted) and stats.submitted == 4


async def test_under_a_virtual_clock_the_encode_is_inline(autojump_clock: trio.testing.MockClock) -> None:
    got: list[EncodedAudio] = []
    async with open_audio_encode_worker(OpusEncoder(), on_output=got.append) as worker:
        assert isinstance(worker, AudioEncodeWorker)
        worker.submit(1.0, _tone(0))
        assert worker.statistics().encoded == 1  # done inside submit
        await trio.testing.wait_all_tasks_blocked()  # delivered before any virtual time passes
        assert trio.current_time() == 0
    assert len(got) == 1 and got[0].voice


def test_a_slow_hand_off_moves_the_encode_inline_once_nothing_is_in_flight() -> None:
    path = EncodePath()
    path.submitted(0.0)
    path.delivered(0.004)  # quick: stays on the thread
    assert path.use_thread(0.02) and path.fallbacks == 0
    path.submitted(1.0)
    path.submitted(1.02)
    path.delivered(1.0 + HANDOFF_BUDGET_S + 0.005)  # slow: inline, but one frame is in flight
    assert path.fallbacks == 1
    assert path.use_thread(1.04)  # keeps order behind the frame still on the thread
    path.delivered(1.05)
    assert not path.use_thread(1.06)  # inline now, for the hold
    assert not path.use_thread(1.0 + INLINE_HOLD_S)
    assert path.use_thread(1.02 + INLINE_HOLD_S)  # the thread is tried again
    path.submitted(20.0)
    path.not_taken()  # a refused submit is not in flight
    assert path.use_thread(20.0) and path.fallbacks == 1
