"""AudioReceiveCore: SSRC map, sequence tracking, DAVE decrypt hook, speaking state (sans-io)."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from clank.protocol.audio_receive import (
    DROP_REASONS,
    MAX_CONCEALED_FRAMES,
    OPUS_SILENCE,
    SILENCE_FRAMES_TO_STOP,
    AudioPacket,
    AudioReceiveCore,
    SpeakingStarted,
    SpeakingStopped,
)

ME = "100"
ALICE = "200"
BOB = "300"
OPUS = b"\x78\x01\x02\x03"


def packets(events: Sequence[object]) -> list[AudioPacket]:
    return [e for e in events if isinstance(e, AudioPacket)]


def test_unknown_ssrc_is_not_delivered_until_op5_binds_it() -> None:
    core = AudioReceiveCore(ME)
    assert core.receive(11, 1, 960, OPUS, 0.0) == []
    assert core.statistics().drops["unknown_ssrc"] == 1
    bound = core.bind(11, ALICE)  # the held packet comes out with the binding
    assert bound[0] == SpeakingStarted(ALICE, 11)
    assert packets(bound) == [AudioPacket(ALICE, 11, 1, 960, OPUS)]
    assert packets(core.receive(11, 2, 1920, OPUS, 0.02)) == [AudioPacket(ALICE, 11, 2, 1920, OPUS)]


def test_our_own_ssrc_is_never_bound() -> None:
    core = AudioReceiveCore(ME)
    core.bind(5, ME)
    assert core.user_for_ssrc(5) is None


def test_duplicates_stale_and_loss() -> None:
    core = AudioReceiveCore(ME)
    core.bind(11, ALICE)
    assert packets(core.receive(11, 10, 0, OPUS, 0.0))[0].lost_before == 0
    assert core.receive(11, 10, 0, OPUS, 0.0) == []  # duplicate
    got = packets(core.receive(11, 13, 0, OPUS, 0.0))  # 11 and 12 lost
    assert got[0].lost_before == 2
    assert core.receive(11, 12, 0, OPUS, 0.0) == []  # late: already concealed
    assert core.receive(11, 13, 0, OPUS, 0.0) == []  # duplicate of a recent one
    stats = core.statistics()
    assert stats.drops["duplicate"] == 2
    assert stats.drops["stale"] == 1
    user = stats.users[0]
    assert (user.lost, user.duplicates, user.stale, user.packets) == (2, 2, 1, 2)


def test_sequence_wraps_around() -> None:
    core = AudioReceiveCore(ME)
    core.bind(11, ALICE)
    core.receive(11, 0xFFFE, 0, OPUS, 0.0)
    got = packets(core.receive(11, 0x0001, 0, OPUS, 0.0))
    assert got[0].lost_before == 2  # 0xFFFF and 0x0000


def test_large_gap_is_a_discontinuity_not_concealed() -> None:
    core = AudioReceiveCore(ME)
    core.bind(11, ALICE)
    core.receive(11, 1, 0, OPUS, 0.0)
    got = packets(core.receive(11, 2 + MAX_CONCEALED_FRAMES + 5, 0, OPUS, 0.0))[0]
    assert got.discontinuity and got.lost_before == 0


def test_five_silence_frames_end_speaking() -> None:
    core = AudioReceiveCore(ME)
    core.bind(11, ALICE)
    core.receive(11, 1, 0, OPUS, 0.0)
    events: list[object] = []
    for i in range(SILENCE_FRAMES_TO_STOP):
        events += core.receive(11, 2 + i, 0, OPUS_SILENCE, 0.02 * i)
    assert events == [SpeakingStopped(ALICE, 11, "silence_frames")]
    assert not packets(events)


def test_silence_timeout_ends_speaking() -> None:
    core = AudioReceiveCore(ME, silence_timeout=0.5)
    core.bind(11, ALICE)
    core.receive(11, 1, 0, OPUS, 10.0)
    assert core.next_deadline() == 10.5
    assert core.tick(10.4) == []
    assert core.tick(10.5) == [SpeakingStopped(ALICE, 11, "timeout")]
    assert core.next_deadline() is None


def test_disconnect_and_rebind_clean_up() -> None:
    core = AudioReceiveCore(ME)
    core.bind(11, ALICE)
    core.receive(11, 1, 0, OPUS, 0.0)
    assert core.client_disconnected(ALICE) == [SpeakingStopped(ALICE, 11, "disconnected")]
    assert core.user_for_ssrc(11) is None
    core.bind(11, BOB)
    core.bind(12, BOB)  # Bob rejoined with a new SSRC: the old one is forgotten
    assert core.ssrc_map() == {12: BOB}


def test_dave_decrypt_is_applied_and_failures_counted() -> None:
    def decrypt(user_id: str, frame: bytes) -> bytes | None:
        assert user_id == ALICE
        return None if frame == b"bad" else frame[::-1]

    core = AudioReceiveCore(ME, decrypt=decrypt)
    core.bind(11, ALICE)
    assert packets(core.receive(11, 1, 0, b"abc", 0.0))[0].opus == b"cba"
    assert core.receive(11, 2, 0, b"bad", 0.0) == []
    # Silence frames are never DAVE-encrypted: they bypass the decrypt hook.
    assert core.receive(11, 3, 0, OPUS_SILENCE, 0.0) == []
    stats = core.statistics()
    assert stats.drops["dave_decrypt"] == 1
    assert stats.users[0].decrypt_failures == 1
    assert stats.users[0].silence_frames == 1


@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=8), st.booleans()), max_size=80))
def test_arbitrary_packet_streams_keep_counters_consistent(items: list[tuple[int, bytes, bool]]) -> None:
    core = AudioReceiveCore(ME)
    core.bind(11, ALICE)
    delivered = 0
    for i, (seq, payload, silent) in enumerate(items):
        events = core.receive(11, seq, 0, OPUS_SILENCE if silent else payload, i * 0.02)
        delivered += len(packets(events))
        core.tick(i * 0.02)
    stats = core.statistics()
    assert stats.packets == len(items)
    assert stats.delivered == delivered
    assert set(stats.drops) == set(DROP_REASONS)
    assert sum(stats.drops.values()) + delivered + sum(u.silence_frames for u in stats.users) == len(items)


def test_audio_before_op5_is_held_and_delivered_when_op5_arrives() -> None:
    core = AudioReceiveCore(ME)
    assert core.receive(11, 1, 960, OPUS, 0.0) == []
    assert core.receive(11, 2, 1920, OPUS, 0.02) == []
    events = core.bind(11, ALICE)
    assert [p.sequence for p in packets(events)] == [1, 2]
    assert events[0] == SpeakingStarted(ALICE, 11)
    early = core.statistics().early
    assert (early.held, early.delivered, early.bound_by_trial) == (2, 2, 0)


def test_held_audio_expires_after_a_second_and_is_bounded() -> None:
    core = AudioReceiveCore(ME)
    for i in range(200):
        core.receive(11, i, i * 960, OPUS, i * 0.02)
    core.tick(10.0)
    assert packets(core.bind(11, ALICE)) == []
    early = core.statistics().early
    assert early.held == 200 and early.expired == 200 and early.delivered == 0
    for ssrc in range(100, 140):  # more unannounced SSRCs than we hold
        core.receive(ssrc, 1, 0, OPUS, 20.0)
    assert core.statistics().early.expired == 200 + 40 - 16


def test_a_trial_decrypt_binds_the_ssrc_to_the_member_whose_key_opens_it() -> None:
    tried: list[str] = []

    def trial(user_id: str, frame: bytes) -> bytes | None:
        tried.append(user_id)
        return b"plain:" + frame if user_id == BOB and frame.startswith(b"bob") else None

    core = AudioReceiveCore(ME, decrypt=lambda user, frame: frame[3:], trial=trial)
    core.members_connected((ME, ALICE, BOB))
    core.bind(11, ALICE)
    assert core.receive(12, 1, 0, OPUS_SILENCE, 0.0) == []  # silence is never tried
    events = core.receive(12, 2, 960, b"bob" + OPUS, 0.02)
    assert tried == [BOB]  # unbound members first; never ourselves; alice has an SSRC
    assert core.user_for_ssrc(12) == BOB
    got = packets(events)
    assert [(p.user_id, p.sequence) for p in got] == [(BOB, 2)]
    assert got[0].opus == b"plain:bob" + OPUS
    # Later packets take the normal path (no more trials).
    assert packets(core.receive(12, 3, 1920, b"bob" + OPUS, 0.04))[0].opus == OPUS
    assert tried == [BOB]
    early = core.statistics().early
    assert early.bound_by_trial == 1 and early.trials == 1


def test_a_known_ssrc_never_waits_for_trials() -> None:
    core = AudioReceiveCore(ME, trial=lambda user, frame: None)
    core.members_connected((ALICE,))
    core.bind(11, ALICE)
    assert len(packets(core.receive(11, 1, 0, OPUS, 0.0))) == 1
    assert core.statistics().early.trials == 0


def test_nobody_is_bound_when_no_key_opens_it_and_op13_forgets_members() -> None:
    core = AudioReceiveCore(ME, trial=lambda user, frame: None)
    core.members_connected((ALICE,))
    core.client_disconnected(ALICE)
    core.members_connected((BOB,))
    for i in range(3):
        assert core.receive(12, i, 0, OPUS, i * 0.02) == []
    assert core.user_for_ssrc(12) is None
    assert core.statistics().early.trials == 3


def test_dave_encrypted_silence_frames_end_speaking() -> None:
    core = AudioReceiveCore(
        ME, decrypt=lambda user, frame: OPUS_SILENCE if frame == b"enc-silence" else frame
    )
    core.bind(11, ALICE)
    assert packets(core.receive(11, 1, 0, OPUS, 0.0))
    events: list[object] = []
    for i in range(SILENCE_FRAMES_TO_STOP):
        events += core.receive(11, 2 + i, 0, b"enc-silence", 0.02 * (i + 1))
    assert events == [SpeakingStopped(ALICE, 11, "silence_frames")]
    assert core.statistics().users[0].silence_frames == SILENCE_FRAMES_TO_STOP
