"""DaveSessionCore behaviour that needs no server: buffering, op26 once, passthrough, failure reasons."""

from __future__ import annotations

import pytest
from dave_net import DaveNet

from clank.crypto.dave import (
    OP_KEY_PACKAGE,
    OP_TRANSITION_READY,
    OPUS_SILENCE,
    DaveBinary,
    DaveJson,
    DaveSessionCore,
)
from clank.crypto.dave_stats import DaveState
from clank.crypto.dave_wire import describe_frame
from clank.errors import DaveError, DecryptionFailed, MalformedMessage
from clank.sandbox.dave import ExternalSender

GROUP = 42
SENDER = ExternalSender.generate().serialize()


def _pair() -> tuple[DaveSessionCore, DaveSessionCore]:
    net = DaveNet(2, group_id=GROUP)
    alice, bob = DaveSessionCore(1, GROUP), DaveSessionCore(2, GROUP)
    net.join(alice)
    net.join(bob)
    net.settle()
    return alice, bob


def test_external_sender_before_session_description_is_buffered_and_op26_sent_once() -> None:
    core = DaveSessionCore(1, GROUP)
    assert core.state is DaveState.INACTIVE
    assert core.on_external_sender(SENDER) == []
    out = core.on_session_description(1)
    assert [type(f) for f in out] == [DaveBinary] and out[0].op == OP_KEY_PACKAGE
    assert core.state is DaveState.PENDING  # the buffered op25 was applied
    assert core.on_external_sender(SENDER) == []  # no duplicate op26


def test_protocol_0_disables_dave_and_media_passes_through() -> None:
    core = DaveSessionCore(1, GROUP)
    assert core.on_session_description(0) == []
    assert core.state is DaveState.DISABLED and not core.can_encrypt
    assert core.encrypt_opus(b"abc") == b"abc"
    assert core.decrypt(2, "video", b"xyz") == b"xyz"


def test_not_ready_session_refuses_to_encrypt_and_classifies_decrypt() -> None:
    core = DaveSessionCore(1, GROUP)
    core.on_session_description(1)
    with pytest.raises(DaveError):
        core.encrypt_opus(b"\x78" * 50)
    with pytest.raises(DecryptionFailed) as info:
        core.decrypt(2, "audio", b"\x78" * 50)
    assert info.value.reason == "not_ready"
    assert core.decrypt(2, "audio", OPUS_SILENCE) == OPUS_SILENCE


@pytest.mark.parametrize(
    ("sender", "frame_kind", "reason"),
    [
        (1, "plain", "unencrypted_passthrough_disabled"),
        (1, "replay", "no_valid_cryptor"),
        (77, "encrypted", "no_decryptor_for_user"),
    ],
)
def test_decrypt_failures_are_classified_and_counted(sender: int, frame_kind: str, reason: str) -> None:
    alice, bob = _pair()
    wire = alice.encrypt_opus(b"\x78\x01" + bytes(100))
    if frame_kind == "replay":
        bob.decrypt(1, "audio", wire)
    frame = b"\x78\x02" + bytes(100) if frame_kind == "plain" else wire
    with pytest.raises(DecryptionFailed) as info:
        bob.decrypt(sender, "audio", frame)
    assert info.value.reason == reason
    assert bob.decrypt_or_count(sender, "audio", frame) is None
    stats = bob.statistics()
    assert stats.decrypt_counters(sender, "audio").fail == 2
    assert stats.decrypt_failures[reason] == 2


def test_downgrade_prepare_enables_passthrough_and_tid_0_executes_now() -> None:
    alice, bob = _pair()
    out = bob.on_json(21, {"transition_id": 5, "protocol_version": 0})
    assert out == [DaveJson(OP_TRANSITION_READY, {"transition_id": 5})]
    plain = b"\x78\x03" + bytes(30)
    assert bob.decrypt(1, "audio", plain) == plain  # passthrough inside the window
    assert bob.statistics().decrypt_counters(1, "audio").passthrough == 1
    assert bob.decrypt(1, "audio", alice.encrypt_opus(plain)) == plain  # still decrypts E2EE frames
    assert bob.on_json(22, {"transition_id": 5}) == []
    assert bob.protocol_version == 0 and bob.state is DaveState.DISABLED
    assert alice.on_json(21, {"transition_id": 0, "protocol_version": 0}) == []
    assert alice.protocol_version == 0


def test_prepare_epoch_other_than_1_is_ignored_and_bad_json_is_malformed() -> None:
    alice, _ = _pair()
    assert alice.on_json(24, {"protocol_version": 1, "epoch": 7}) == []
    assert alice.ready
    for op, data in [(21, {"transition_id": 1}), (22, {}), (24, []), (23, {"transition_id": 1})]:
        with pytest.raises(MalformedMessage):
            alice.on_json(op, data)
    with pytest.raises(MalformedMessage):
        alice.on_binary(30, b"\x00")


def test_describe_frame_explains_a_real_frame_and_a_broken_one() -> None:
    alice, _ = _pair()
    wire = alice.encrypt_opus(b"\x78" * 120)
    info = describe_frame(wire)
    assert info["valid"] and info["ends_with_magic"] and info["supplemental_size"] == 12
    assert info["ranges"] == [] and info["payload_length"] == 120
    broken = describe_frame(wire + b"\x00" * 7)  # RTP padding left on the frame
    assert not broken["valid"] and broken["magic_count"] == 1 and broken["reason"]
