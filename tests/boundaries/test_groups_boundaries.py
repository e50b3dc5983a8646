"""One helper for exception groups at boundaries (clank/io/groups.py): a second simultaneous
failure is reported, never dropped — in a role (its log and statistics), at a public context
manager (one error comes out alone) and in the CLI (the first sets the exit code, the others are
named)."""

from __future__ import annotations

import pytest
import trio
from structlog.testing import capture_logs

from clank.cli import EXIT_AUTH, EXIT_TRANSPORT, exit_for
from clank.control.model import RoleStatus
from clank.errors import AuthenticationFailed, ConnectionClosed, TransportError
from clank.io.groups import describe, first_of, leaves, raise_single
from clank.session.roles import RoleHandle, RoleState, run_role


def test_leaves_are_distinct_real_errors_in_raise_order() -> None:
    a, b, c = TransportError("a"), ConnectionClosed(4014, "b"), KeyError("c")
    nested = BaseExceptionGroup("outer", [ExceptionGroup("inner", [a, b]), a, c])
    assert leaves(nested) == [a, b, c]  # ``a`` twice (a loop and its waiter) counts once
    assert leaves(a) == [a]
    assert first_of(nested, ConnectionClosed) is b and first_of(nested, OSError) is None


def test_raise_single_unwraps_one_error_and_keeps_a_group_of_several() -> None:
    one = TransportError("only")
    with pytest.raises(TransportError) as caught:
        raise_single(ExceptionGroup("g", [ExceptionGroup("h", [one])]))
    assert caught.value is one
    two = ExceptionGroup("g", [TransportError("x"), AuthenticationFailed("y")])
    with pytest.raises(ExceptionGroup) as kept:
        raise_single(two)
    assert kept.value is two


async def _two_failures(handle: RoleHandle[None], *, task_status: trio.TaskStatus[None]) -> None:
    """Two tasks of the role fail in the same instant: the ws reader and the UDP drain."""
    cut = trio.Event()  # one network cut wakes both (an event: a sleep's expiry would be cancelled)

    async def ws_reader() -> None:
        await cut.wait()
        raise ConnectionClosed(4014, "disconnected")

    async def udp_drain() -> None:
        await cut.wait()
        raise TransportError("udp socket closed")

    task_status.started()
    handle.set_state(RoleState.READY)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ws_reader)
        nursery.start_soon(udp_drain)
        await trio.sleep(1.0)
        cut.set()


async def test_two_simultaneous_failures_in_a_role_are_both_reported(autojump_clock: trio.abc.Clock) -> None:
    with trio.fail_after(10), capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            handle: RoleHandle[None] = RoleHandle("voice")
            await nursery.start(run_role, handle, _two_failures)
            await handle.wait_stopped()
    assert handle.state is RoleState.FAILED
    both = {describe(ConnectionClosed(4014, "disconnected")), "TransportError: udp socket closed"}
    # Which task raised first is the scheduler's choice: that one is the reason, the other is reported.
    stats = handle.statistics()
    assert stats.reason in both and len(stats.also_failed) == 1, stats
    (other,) = stats.also_failed
    assert {stats.reason, other} == both
    assert handle.also_failed == stats.also_failed  # what a watch's status entry reads
    also = [e for e in logs if e["event"] == "also failed"]
    assert len(also) == 1 and also[0]["error"] == other and also[0]["first"] == stats.reason
    assert also[0]["log_level"] == "warning" and also[0]["role"] == "voice"
    ended = next(e for e in logs if e["event"] == "role ended")
    assert ended["also_failed"] == [other]
    # ... and in the role's status entry (GET /api/status, the dashboard).
    status = RoleStatus(
        name="voice",
        kind="voice",
        state=stats.state.value,
        ended_reason=stats.reason,
        also_failed=stats.also_failed,
    )
    assert status.to_json()["alsoFailed"] == [other]


def test_the_cli_exits_with_the_first_errors_code_and_names_every_other() -> None:
    group = BaseExceptionGroup(
        "run",
        [
            ExceptionGroup("gateway", [AuthenticationFailed("the Discord token was refused (HTTP 401)")]),
            TransportError("voice leg unreachable"),
            trio.Cancelled._create(),  # the nursery's business: never reported
        ],
    )
    failure = exit_for(group)
    assert failure is not None
    code, lines = failure
    assert code == EXIT_AUTH
    assert lines == [
        "clank: authentication failed: the Discord token was refused (HTTP 401)",
        "clank: also: TransportError: voice leg unreachable",
    ]
    # The other order: the transport error is first, so exit 4 and the token line follows.
    code, lines = exit_for(ExceptionGroup("run", [TransportError("down"), AuthenticationFailed("no")])) or (
        0,
        [],
    )
    assert code == EXIT_TRANSPORT and lines == [
        "clank: connection failed: down",
        "clank: also: AuthenticationFailed: no",
    ]
    # One error alone: one line, as before; a bug (no error of ours): None, so it propagates.
    assert exit_for(TransportError("x")) == (EXIT_TRANSPORT, ["clank: connection failed: x"])
    assert exit_for(ExceptionGroup("bug", [KeyError("k")])) is None
