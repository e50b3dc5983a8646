"""``watch.auto_watch``'s policy on a fake clock: it polls, starts a watch on the only sharer,
once per sharing session (stopped by hand it stays stopped), and several sharers start nothing.
tests/run/test_run_auto_watch.py shows the setting doing it against the sandbox."""

from __future__ import annotations

import trio
import trio.testing
from control_fakes import ALICE, BOB, RegistrySession

from clank.control.auto_watch import POLL_INTERVAL, run_auto_watch
from clank.control.service import ClankService


async def test_one_sharer_is_watched_once_per_sharing_session(autojump_clock: trio.testing.MockClock) -> None:
    session = RegistrySession()
    service = ClankService(session)
    with trio.fail_after(24 * 3600):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_auto_watch, service)
            await trio.sleep(60.5)  # nobody shares: nothing to start (between two polls)
            assert session.start_calls == []

            session.join(ALICE, stream=True)
            shared_at = trio.current_time()
            while not session.start_calls:  # noqa: ASYNC110 - the poll under test
                await trio.sleep(0.01)
            assert session.start_calls == [(ALICE, "go_live")]
            assert trio.current_time() - shared_at <= POLL_INTERVAL  # the next poll

            assert (await service.stop_screen_watch()).ok
            await trio.sleep(600)  # stopped by hand: ten minutes of polls leave it stopped
            assert len(session.start_calls) == 1 and session.watches() == []

            session.join(ALICE, stream=False)  # she stops sharing ...
            await trio.sleep(3 * POLL_INTERVAL)
            session.join(ALICE, stream=True)  # ... and shares again: a new sharing session
            await trio.sleep(3 * POLL_INTERVAL)
            assert session.start_calls == [(ALICE, "go_live")] * 2
            nursery.cancel_scope.cancel()


async def test_two_sharers_start_nothing(autojump_clock: trio.testing.MockClock) -> None:
    session = RegistrySession()
    service = ClankService(session)
    session.join(ALICE, stream=True)
    session.join(BOB, stream=True)
    with trio.fail_after(3600):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_auto_watch, service)
            await trio.sleep(300)  # ambiguous_target on every poll: the agent must pick
            assert session.start_calls == []
            session.join(BOB, stream=False)  # one sharer left: watched at the next poll
            await trio.sleep(POLL_INTERVAL + 0.01)
            assert session.start_calls == [(ALICE, "go_live")]
            nursery.cancel_scope.cancel()
