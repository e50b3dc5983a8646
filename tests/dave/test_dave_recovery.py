"""Recovery paths: op31 after a corrupted welcome, downgrade to protocol 0 and back, op24 group reset."""

from __future__ import annotations

from dave_net import DaveNet, PlainDaveyClient

from clank.crypto.dave import OP_WELCOME, DaveBinary, DaveFrame, DaveSessionCore
from clank.crypto.dave_stats import DaveState


def _corrupt_first_welcome() -> object:
    done = []

    def hook(frame: DaveFrame) -> DaveFrame:
        if isinstance(frame, DaveBinary) and frame.op == OP_WELCOME and not done:
            done.append(True)
            body = bytearray(frame.payload)
            body[-5] ^= 0xFF  # inside encrypted_group_info: the structure still parses
            return DaveBinary(frame.op, bytes(body))
        return frame

    return hook


def test_corrupted_welcome_sends_op31_and_the_member_is_re_added() -> None:
    net = DaveNet(3)
    for user in (1, 2):
        net.join(PlainDaveyClient(user, net.group_id))
    net.settle()
    joiner = DaveSessionCore(3, net.group_id)
    net.tamper[3] = _corrupt_first_welcome()
    net.join(joiner)
    net.settle()
    net.assert_consistent()
    assert net.exchange_opus() == 0
    stats = joiner.statistics()
    assert stats.recoveries == 1
    assert stats.last_error is not None and "process_welcome" in stats.last_error
    assert net.server.statistics().invalid_commit_reports == 1


def test_a_failing_member_does_not_stop_the_others() -> None:
    net = DaveNet(9)
    for user in (1, 2, 3):
        net.join(DaveSessionCore(user, net.group_id))
    net.settle()
    net.tamper[4] = _corrupt_first_welcome()
    net.join(DaveSessionCore(4, net.group_id))
    # Before the broken joiner is repaired, the original members keep talking.
    for _ in range(3):
        net.step()
    net.settle()
    net.assert_consistent()
    assert net.exchange_opus() == 0


def test_downgrade_to_protocol_0_and_upgrade_back() -> None:
    net = DaveNet(4)
    ours = DaveSessionCore(1, net.group_id)
    net.join(ours)
    net.join(PlainDaveyClient(2, net.group_id))
    net.settle()
    code_before = ours.voice_privacy_code
    net.route(net.server.set_protocol_version(0, net.now))
    net.settle()
    assert ours.protocol_version == 0 and ours.state is DaveState.DISABLED
    plain = b"\x78\x01hello"
    assert ours.encrypt_opus(plain) == plain
    assert ours.decrypt(2, "audio", plain) == plain
    assert ours.statistics().decrypt_counters(2, "audio").passthrough == 1
    net.route(net.server.set_protocol_version(1, net.now))
    net.settle()
    net.assert_consistent()
    assert ours.protocol_version == 1
    assert net.exchange_opus() == 0
    assert ours.voice_privacy_code != code_before


def test_prepare_epoch_resets_the_group() -> None:
    net = DaveNet(8)
    for user in (1, 2, 3):
        net.join(DaveSessionCore(user, net.group_id))
    net.settle()
    assert net.server.epoch >= 1
    net.route(net.server.reset_group(net.now))
    net.settle()
    net.assert_consistent()
    assert net.server.epoch in (1, 2)  # 1 if all three packages were pending together
    assert net.exchange_opus() == 0
