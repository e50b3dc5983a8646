"""The latest-frame store and the latest-wins frame channel."""

from __future__ import annotations

import pytest
import trio

from clank.errors import WatchError
from clank.watch.frames import FrameChannel, LatestFrameStore, ScreenFrame


def _frame(sequence: int) -> ScreenFrame:
    return ScreenFrame(
        jpeg=b"\xff\xd8" + bytes([sequence]),
        width=64,
        height=36,
        rtp_timestamp=sequence * 3000,
        user_id="444",
        ssrc=11,
        codec="h264",
        stream_type="screen",
        change_score=0.0,
        change_ema=0.0,
        scene_cut=False,
        wall_time=float(sequence),
        sequence=sequence,
    )


async def test_wait_frame_returns_the_next_newer_frame() -> None:
    store = LatestFrameStore()
    got: list[ScreenFrame] = []

    async def waiter() -> None:
        got.append(await store.wait_frame())
        got.append(await store.wait_frame(after_sequence=got[-1].sequence))

    with trio.fail_after(1):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert store.statistics().waiters == 1
            store.publish(_frame(1))
            await trio.testing.wait_all_tasks_blocked()
            store.publish(_frame(2))
    assert [f.sequence for f in got] == [1, 2]
    assert store.latest is not None and store.latest.sequence == 2
    # Already newer: no wait at all.
    assert (await store.wait_frame(after_sequence=1)).sequence == 2


async def test_closing_the_store_wakes_waiters_with_the_reason() -> None:
    store = LatestFrameStore()
    store.publish(_frame(1))
    with trio.fail_after(1):
        async with trio.open_nursery() as nursery:

            async def waiter() -> None:
                with pytest.raises(WatchError) as info:
                    await store.wait_frame(after_sequence=1)
                assert info.value.reason == "stream_deleted"

            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            store.close("stream_deleted")
    # The last frame stays readable after the end; asking for a newer one fails at once.
    assert (await store.wait_frame()).sequence == 1
    with pytest.raises(WatchError):
        await store.wait_frame(after_sequence=1)
    assert store.statistics().close_reason == "stream_deleted"


async def test_frame_channel_is_latest_wins() -> None:
    channel = FrameChannel(capacity=2)
    for i in range(1, 6):
        channel.send_nowait(_frame(i))
    stats = channel.statistics()
    assert stats.dropped == 3 and stats.buffered == 2
    with trio.fail_after(1):
        assert (await channel.receive()).sequence == 4
        channel.send_nowait(_frame(6))
        channel.close()
        assert [f.sequence async for f in channel] == [5, 6]
    with pytest.raises(trio.ClosedResourceError):
        channel.send_nowait(_frame(7))


async def test_frame_channel_receive_waits_for_a_sender() -> None:
    channel = FrameChannel()
    with trio.fail_after(1):
        async with trio.open_nursery() as nursery:

            async def later() -> None:
                await trio.sleep(0.01)
                channel.send_nowait(_frame(1))

            nursery.start_soon(later)
            assert (await channel.receive()).sequence == 1


async def test_a_reopened_store_continues_after_an_interruption() -> None:
    store = LatestFrameStore()
    store.publish(_frame(1))
    store.close("interrupted")
    with pytest.raises(WatchError):
        await store.wait_frame(after_sequence=1)
    store.reopen()
    assert not store.closed
    store.publish(_frame(2))
    with trio.fail_after(1):
        assert (await store.wait_frame(after_sequence=1)).sequence == 2
