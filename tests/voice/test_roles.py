"""RoleHandle / run_role: the catch boundary, states, events, stop and wait."""

from __future__ import annotations

import pytest
import trio

from clank.errors import ConnectionClosed, UsageError
from clank.session.roles import RoleEventBus, RoleHandle, RoleState, run_role


async def healthy_role(handle: RoleHandle[str], *, task_status: trio.TaskStatus[None]) -> None:
    handle.attach("api", lambda: {"frames": 3})
    task_status.started()
    handle.set_state(RoleState.READY)
    await trio.sleep_forever()


async def failing_role(handle: RoleHandle[str], delay: float, *, task_status: trio.TaskStatus[None]) -> None:
    task_status.started()
    handle.set_state(RoleState.READY)
    await trio.sleep(delay)
    raise ConnectionClosed(4014, "disconnected")


async def buggy_role(handle: RoleHandle[str], *, task_status: trio.TaskStatus[None]) -> None:
    task_status.started()
    raise KeyError("bug")


async def test_stop_ends_the_role_disconnected_with_one_event_per_state(
    autojump_clock: trio.abc.Clock,
) -> None:
    bus = RoleEventBus()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            handle: RoleHandle[str] = RoleHandle("voice", bus)
            assert await nursery.start(run_role, handle, healthy_role) is handle
            await handle.wait_ready()
            assert handle.api == "api"
            assert handle.statistics().detail == {"frames": 3}
            await handle.stop("leaving")
    assert handle.state is RoleState.DISCONNECTED and handle.reason == "leaving"
    assert handle.error is None and handle.stopped
    bus.close()
    states = [event.state async for event in bus.receive]
    assert states == [RoleState.READY, RoleState.DISCONNECTED]


async def test_expected_failure_ends_only_that_role(autojump_clock: trio.abc.Clock) -> None:
    bus = RoleEventBus()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            failing: RoleHandle[str] = RoleHandle("stream_watch", bus)
            healthy: RoleHandle[str] = RoleHandle("voice", bus)
            await nursery.start(run_role, failing, failing_role, 1.0)
            await nursery.start(run_role, healthy, healthy_role)
            await failing.wait_stopped()
            assert healthy.state is RoleState.READY  # the session and the other role carry on
            await healthy.stop()
    assert failing.state is RoleState.FAILED
    assert failing.close_code == 4014
    assert isinstance(failing.error, ConnectionClosed)
    assert failing.was_ready


async def test_wait_ready_raises_the_failure(autojump_clock: trio.abc.Clock) -> None:
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            handle: RoleHandle[str] = RoleHandle("x")

            async def never_ready(h: RoleHandle[str], *, task_status: trio.TaskStatus[None]) -> None:
                task_status.started()
                await trio.sleep(1)
                raise ConnectionClosed(4006, "gone")

            await nursery.start(run_role, handle, never_ready)
            with pytest.raises(ConnectionClosed):
                await handle.wait_ready()


async def test_a_bug_propagates_loudly() -> None:
    handle: RoleHandle[str] = RoleHandle("x")
    with trio.fail_after(5), pytest.raises(ExceptionGroup) as info:
        async with trio.open_nursery() as nursery:
            await nursery.start(run_role, handle, buggy_role)
    assert info.group_contains(KeyError)
    assert handle.state is RoleState.FAILED and isinstance(handle.error, KeyError)


async def test_api_without_attach_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        _ = RoleHandle[str]("x").api


async def test_full_event_bus_drops_and_counts() -> None:
    bus = RoleEventBus(buffer=1)
    handle: RoleHandle[str] = RoleHandle("x", bus)
    handle.set_state(RoleState.READY)
    handle.set_state(RoleState.RECONNECTING, "drop", 1006)
    assert bus.dropped == 1
