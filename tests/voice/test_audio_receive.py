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


def test_unknown_ssrc_is_dropped_until_op5_binds_it() -> None:
    core = AudioReceiveCore(ME)
    assert core.receive(11, 1, 960, OPUS, 0.0) == []
    assert core.statistics().drops["unknown_ssrc"] == 1
    core.bind(11, ALICE)
    events = core.receive(11, 2, 1920, OPUS, 0.02)
    assert events[0] == SpeakingStarted(ALICE, 11)
    assert packets(events) == [AudioPacket(ALICE, 11, 2, 1920, OPUS)]


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
