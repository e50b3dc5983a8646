"""DAVE on the sandbox voice server while audio flows: seeded churn of 2-5 members, downgrade and back."""

from __future__ import annotations

import random

import trio
import trio.testing
from rtc_helpers import wait_until

from clank.sandbox.rtc.server import MediaServer, open_media_server
from clank.sandbox.rtc.users import SimulatedMember, open_simulated_member

GUILD = "111"
CHANNEL = 222000000000000001


def _settled(server: MediaServer, members: dict[int, SimulatedMember]) -> bool:
    stats = server.statistics().dave
    epochs = {m.dave_session.epoch for m in members.values()}
    return (
        all(m.dave_session.ready for m in members.values())
        and stats.open_transitions == 0
        and epochs == {stats.epoch}
        and set(stats.roster) == set(members)
    )


def _failures(members: dict[int, SimulatedMember]) -> int:
    return sum(sum(m.dave_session.statistics().decrypt_failures.values()) for m in members.values())


async def _audio_flows(members: dict[int, SimulatedMember]) -> None:
    """Every member hears every other member, with no new undecryptable frame."""
    before = _failures(members)
    for member in members.values():
        member.forget_audio()
    await wait_until(
        lambda: all(
            m.audio_packets[other] >= 5 for m in members.values() for other in members if other != m.user_id
        )
    )
    assert _failures(members) == before


async def _run_member(
    server: MediaServer,
    user: int,
    frequency: float,
    task_status: trio.TaskStatus[tuple[SimulatedMember, trio.CancelScope]] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.CancelScope() as scope:
        async with open_simulated_member(server, user, signal="tone", frequency=frequency, talking=True) as (
            m,
            _,
        ):
            task_status.started((m, scope))
            await trio.sleep_forever()


async def test_group_churn_keeps_audio_decryptable(autojump_clock: trio.testing.MockClock) -> None:
    rng = random.Random(7)
    with trio.fail_after(60):
        async with open_media_server("voice", GUILD, CHANNEL) as server, trio.open_nursery() as nursery:
            scopes: dict[int, trio.CancelScope] = {}
            members: dict[int, SimulatedMember] = {}
            pool = [2001, 2002, 2003, 2004, 2005]
            checked = 0
            for step in range(10):
                can_join = [u for u in pool if u not in members]
                if len(members) < 2 or (len(members) < 5 and rng.random() < 0.6):
                    user = rng.choice(can_join)
                    members[user], scopes[user] = await nursery.start(
                        _run_member, server, user, 200.0 + 40 * step
                    )
                else:
                    user = rng.choice(sorted(members))
                    del members[user]
                    scopes.pop(user).cancel()
                    await wait_until(lambda u=user: server.participant(u) is None)  # type: ignore[misc]
                if len(members) >= 2:  # a lone member has no group (DAVE pitfall 8)
                    await wait_until(lambda: _settled(server, members))
                    await _audio_flows(members)
                    checked += 1
            assert checked >= 5
            nursery.cancel_scope.cancel()


async def test_downgrade_to_protocol_0_and_back(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(30):
        async with open_media_server("voice", GUILD, CHANNEL) as server:
            async with (
                open_simulated_member(server, 3001, talking=True) as (a, _),
                open_simulated_member(server, 3002, talking=True) as (b, _),
            ):
                members = {3001: a, 3002: b}
                await wait_until(lambda: _settled(server, members))
                server.set_dave_protocol_version(0)
                await wait_until(lambda: all(m.dave_session.protocol_version == 0 for m in members.values()))
                await _audio_flows(members)
                passthrough = b.dave_session.statistics().decrypt_counters(3001, "audio").passthrough
                assert passthrough > 0
                server.set_dave_protocol_version(1)
                await wait_until(lambda: _settled(server, members))
                await _audio_flows(members)
                assert b.dave_session.statistics().decrypt_counters(3001, "audio").ok > 0
