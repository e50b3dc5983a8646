"""One SessionPort contract, checked against the test fake and the real LiveSessionPort.

The real port runs over a whole voice session on the fake network (sandbox, gateway, voice and
stream legs, autojump clock); the fake over a real StreamRegistry. Only what both can show is
asserted: the agent surface must not be able to tell them apart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from control_fakes import ALICE, RegistrySession
from fake_session import fake_session, user_id

from clank.control.service import ClankService, SessionPort
from clank.control.session_port import LiveSessionPort, MemberDirectory

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")

# (port, make alice go live) pairs
Opened = tuple[SessionPort, Callable[[], Awaitable[str]]]


@asynccontextmanager
async def fake_port() -> AsyncIterator[Opened]:
    session = RegistrySession()

    async def go_live() -> str:
        session.join(ALICE, stream=True)
        await trio.lowlevel.checkpoint()
        return ALICE

    yield session, go_live


@asynccontextmanager
async def live_port() -> AsyncIterator[Opened]:
    async with fake_session() as (_net, sb, session):
        port = LiveSessionPort(session, session.registry, MemberDirectory())
        alice = user_id(sb, "alice")

        async def go_live() -> str:
            await sb.world.join_voice(alice, sb.voice_channel_id)
            await sb.world.go_live(alice)
            while True:
                if any(s.user_id == alice for s in port.sharers()):
                    return alice
                await trio.sleep(0.05)

        yield port, go_live


PORTS = {"fake": fake_port, "live": live_port}


@pytest.fixture(params=sorted(PORTS))
def opened(request: pytest.FixtureRequest) -> Any:
    return PORTS[request.param]


async def test_identity_and_voice(opened: Any, autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(600):
        async with opened() as (port, _go_live):
            assert port.our_user_id
            assert port.in_voice()
            assert port.watches() == []
            assert port.status() is not None


async def test_a_live_user_is_a_sharer_and_can_be_watched_and_stopped(
    opened: Any, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(600):
        async with opened() as (port, go_live):
            user = await go_live()
            assert [s.user_id for s in port.sharers() if s.user_id == user] == [user]
            service = ClankService(port)
            result = await service.start_screen_watch()
            assert result.ok and result.target_user_id == user and result.kind == "go_live"
            assert [(w.user_id, w.kind) for w in port.watches()] == [(user, "go_live")]
            again = await service.start_screen_watch(target=user)
            assert again.ok and again.reused
            stopped = await service.stop_screen_watch(user)
            assert stopped.ok and stopped.stopped == ((user, "go_live"),)
            assert [w for w in port.watches() if w.user_id == user and w.state != "ended"] == []
