"""Group formation and churn: real davey clients (our wrapper, a discord.py-style one) vs the server."""

from __future__ import annotations

import random

import pytest
from dave_net import DaveNet, Member, PlainDaveyClient

from clank.crypto.dave import DaveSessionCore
from clank.crypto.dave_stats import DaveState


def _member(net: DaveNet, user: int, ours: bool) -> Member:
    return DaveSessionCore(user, net.group_id) if ours else PlainDaveyClient(user, net.group_id)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_members_join_and_leave_in_random_order_and_always_decrypt_each_other(seed: int) -> None:
    rng = random.Random(seed)
    net = DaveNet(seed)
    ours = 1000  # the member under test is always our wrapper
    net.join(_member(net, ours, True))
    next_user = 2000
    for _ in range(8):
        others = [u for u in net.members if u != ours]
        if len(net.members) < 2 or (len(net.members) < 5 and rng.random() < 0.6):
            net.join(_member(net, next_user, rng.random() < 0.5))
            next_user += 1
            if rng.random() < 0.4 and len(net.members) < 5:  # a second joiner racing the first
                net.join(_member(net, next_user, False))
                next_user += 1
        else:
            net.leave(rng.choice(others))
        # Opus flows while the transition is in progress: failures allowed, never exceptions.
        for _ in range(rng.randrange(1, 6)):
            net.step()
        net.settle()
        net.assert_consistent()
        assert net.exchange_opus() == 0
    stats = net.server.statistics()
    assert stats.commits_accepted >= 4
    assert stats.open_transitions == 0


def test_two_pending_members_form_the_group_and_a_lone_member_stays_pending() -> None:
    net = DaveNet(7)
    alice = DaveSessionCore(1, net.group_id)
    net.join(alice)
    net.settle()
    assert alice.state is DaveState.PENDING and not alice.can_encrypt
    bob = DaveSessionCore(2, net.group_id)
    net.join(bob)
    net.settle()
    net.assert_consistent()
    assert alice.state is DaveState.ACTIVE and bob.epoch == 1
    assert alice.voice_privacy_code == bob.voice_privacy_code
    assert alice.voice_privacy_code
    assert alice.get_verification_code(2) == bob.get_verification_code(1)
    assert alice.get_verification_code(99) is None
    assert net.exchange_opus(5) == 0
    stats = alice.statistics()
    assert stats.decrypt_counters(2, "audio").ok == 5
    assert stats.encrypt["audio"].ok == 5
    assert stats.transitions_executed == 1


def test_three_members_pending_at_once_join_in_one_commit() -> None:
    net = DaveNet(11)
    members = [DaveSessionCore(u, net.group_id) for u in (5, 6, 7)]
    for member in members:
        net.join(member)  # nobody settles in between: all three are pending together
    net.settle()
    net.assert_consistent()
    assert net.exchange_opus() == 0
    assert sorted(net.server.roster().values()) == [0, 1, 2]


def test_joiner_leaving_before_the_commit_is_revoked_and_the_other_joiner_still_gets_in() -> None:
    net = DaveNet(5)
    for user in (1, 2):
        net.join(DaveSessionCore(user, net.group_id))
    net.settle()
    net.join(PlainDaveyClient(3, net.group_id))
    net.join(DaveSessionCore(4, net.group_id))
    for _ in range(4):  # let some op26/op27 through, then 3 leaves before anything is judged
        net.step()
    net.leave(3)
    net.settle()
    net.assert_consistent()
    assert set(net.server.roster()) == {1, 2, 4}
    assert net.exchange_opus() == 0
