"""op27 failures are logged and left to the next commit/welcome; op31 only for a commit or welcome.

The DAVE spec (and discord.py) send op31 only for an op29/op30 they cannot process. A proposals
message we cannot use is counted and dropped: no op31, no re-init, no reconnect. If the winning
commit then needs those proposals, *that* commit fails and recovers through op31.
"""

from __future__ import annotations

from dave_net import DaveNet, PlainDaveyClient

from clank.crypto.dave import (
    OP_ANNOUNCE_COMMIT,
    OP_INVALID_COMMIT_WELCOME,
    OP_PROPOSALS,
    OP_WELCOME,
    DaveBinary,
    DaveFrame,
    DaveJson,
    DaveSessionCore,
)


def _corrupt_first(op: int) -> object:
    done: list[bool] = []

    def hook(frame: DaveFrame) -> DaveFrame:
        if isinstance(frame, DaveBinary) and frame.op == op and not done:
            done.append(True)
            body = bytearray(frame.payload)
            body[-3] ^= 0xFF  # inside the MLS message: the vector framing still parses
            return DaveBinary(frame.op, bytes(body))
        return frame

    return hook


def test_a_refused_op27_sends_no_op31_and_the_next_commit_settles_it() -> None:
    net = DaveNet(5)
    ours = DaveSessionCore(1, net.group_id)
    net.join(ours)
    net.join(PlainDaveyClient(2, net.group_id))
    net.settle()
    net.assert_consistent()
    # A third member joins; the op27 (Add proposals) reaching us is corrupted.
    net.tamper[1] = _corrupt_first(OP_PROPOSALS)
    net.join(PlainDaveyClient(3, net.group_id))
    net.settle()
    net.assert_consistent()
    assert net.exchange_opus() == 0
    stats = ours.statistics()
    assert stats.proposals_failed == 1
    # The op31 came from the commit that needed the dropped proposals (davey: MissingProposal),
    # not from the op27 itself (the old client sent op31 + re-init for it at once).
    assert stats.recoveries == 1 == net.server.statistics().invalid_commit_reports
    assert stats.last_error is not None and stats.last_error.startswith("process_commit")


def test_a_malformed_op27_is_counted_and_dropped_not_raised() -> None:
    core = DaveSessionCore(1, 42)
    core.on_session_description(1)
    for bad in (b"", b"\x02\x00", b"\x00", b"\x00\x05ab", b"\x00\xc0"):
        assert core.on_proposals(bad) == []
    stats = core.statistics()
    assert stats.proposals_failed == 5 and stats.recoveries == 0
    assert stats.last_error is not None and stats.last_error.startswith("proposals:")
    assert core.problems == 5


def test_a_refused_op27_alone_sends_nothing() -> None:
    core = DaveSessionCore(1, 42)
    core.on_session_description(1)
    # A well-framed vector whose content is not an MLS message: davey refuses it.
    frames = core.on_binary(OP_PROPOSALS, b"\x00\x04junk")
    assert frames == []
    assert not any(isinstance(f, DaveJson) and f.op == OP_INVALID_COMMIT_WELCOME for f in frames)
    stats = core.statistics()
    assert stats.proposals_failed == 1 and stats.recoveries == 0
    assert stats.last_error is not None and "process_proposals" in stats.last_error


def test_an_empty_commit_or_welcome_with_a_transition_id_is_answered_with_op31() -> None:
    for op in (OP_ANNOUNCE_COMMIT, OP_WELCOME):
        core = DaveSessionCore(1, 42)
        core.on_session_description(1)
        frames = core.on_binary(op, b"\x00\x07")  # transition 7, no body
        op31 = [f for f in frames if isinstance(f, DaveJson) and f.op == OP_INVALID_COMMIT_WELCOME]
        assert [f.data for f in op31] == [{"transition_id": 7}]
        assert core.statistics().recoveries == 1
