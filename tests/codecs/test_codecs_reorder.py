from __future__ import annotations

import pytest

from clank.codecs.packet import Gap, MediaPacket
from clank.codecs.reorder import ReorderBuffer
from clank.errors import UsageError


def pkt(seq: int) -> MediaPacket:
    return MediaPacket(seq=seq % 65536, timestamp=0, marker=False, payload=b"x")


def seqs(items: list[MediaPacket | Gap]) -> list[object]:
    return [
        item.seq if isinstance(item, MediaPacket) else (item.first_seq, item.count, item.reason)
        for item in items
    ]


def test_in_order_packets_are_released_immediately() -> None:
    buffer = ReorderBuffer()
    for seq in (10, 11, 12):
        buffer.insert(pkt(seq), 0.0)
    assert seqs(buffer.pop_ready(0.0)) == [10, 11, 12]
    assert buffer.next_deadline() is None


def test_in_order_packets_take_the_short_path_until_a_hole() -> None:
    buffer = ReorderBuffer(max_delay=0.1)
    assert not buffer.release_next(pkt(65535))  # the first packet starts the buffer via insert
    assert seqs(buffer.push(pkt(65535), 0.0)) == [65535]
    assert [buffer.release_next(pkt(seq)) for seq in (0, 1, 2)] == [True, True, True]  # across the wrap
    assert not buffer.release_next(pkt(4))  # 3 is missing: the buffer must hold 4
    assert seqs(buffer.push(pkt(4), 0.0)) == []
    assert not buffer.release_next(pkt(5))  # still holding
    assert seqs(buffer.push(pkt(3), 0.05)) == [3, 4]
    assert buffer.release_next(pkt(5))
    stats = buffer.statistics()
    assert (stats.received, stats.released, stats.reordered, stats.buffered) == (7, 7, 1, 0)


def test_reordered_packet_fills_its_hole_before_the_deadline() -> None:
    buffer = ReorderBuffer(max_delay=0.1)
    buffer.insert(pkt(1), 0.0)
    buffer.insert(pkt(3), 0.01)
    assert seqs(buffer.pop_ready(0.01)) == [1]
    assert buffer.missing(0.01) == [2]
    assert buffer.next_deadline() == pytest.approx(0.11)
    buffer.insert(pkt(2), 0.05)
    assert seqs(buffer.pop_ready(0.05)) == [2, 3]
    stats = buffer.statistics()
    assert (stats.reordered, stats.recovered, stats.lost) == (1, 1, 0)


def test_missing_packet_becomes_a_gap_after_max_delay_from_the_later_arrival() -> None:
    buffer = ReorderBuffer(max_delay=0.1)
    buffer.insert(pkt(1), 0.0)
    buffer.insert(pkt(4), 0.5)
    assert seqs(buffer.pop_ready(0.59)) == [1]
    assert seqs(buffer.pop_ready(0.6)) == [(2, 2, "lost"), 4]
    assert buffer.statistics().lost == 2
    # The late packet is dropped as too late, not delivered out of order.
    buffer.insert(pkt(2), 0.7)
    assert buffer.pop_ready(0.7) == []
    assert buffer.statistics().dropped == {"too_late": 1}


def test_holes_revealed_at_different_times_have_their_own_deadlines() -> None:
    buffer = ReorderBuffer(max_delay=0.125)
    buffer.insert(pkt(1), 0.0)
    buffer.insert(pkt(3), 0.0)  # 2 missing since 0.0
    buffer.insert(pkt(5), 0.0625)  # 4 missing since 0.0625
    assert seqs(buffer.pop_ready(0.125)) == [1, (2, 1, "lost"), 3]
    assert buffer.next_deadline() == 0.1875
    assert buffer.pop_ready(0.18) == []
    assert seqs(buffer.pop_ready(0.1875)) == [(4, 1, "lost"), 5]


def test_wraparound_at_65535_is_seamless() -> None:
    buffer = ReorderBuffer(max_delay=0.1)
    for seq in (65533, 65535, 0, 65534, 1):
        buffer.insert(pkt(seq), 0.0)
    assert seqs(buffer.pop_ready(0.0)) == [65533, 65534, 65535, 0, 1]
    buffer.insert(pkt(3), 0.0)
    assert buffer.missing(0.0) == [2]
    assert seqs(buffer.pop_ready(0.2)) == [(2, 1, "lost"), 3]


def test_gap_across_the_wrap_reports_u16_seqs() -> None:
    buffer = ReorderBuffer(max_delay=0.1)
    buffer.insert(pkt(65534), 0.0)
    buffer.insert(pkt(2), 0.0)
    assert buffer.missing(0.0) == [65535, 0, 1]
    assert seqs(buffer.pop_ready(1.0)) == [65534, (65535, 3, "lost"), 2]


def test_duplicates_are_dropped_and_counted() -> None:
    buffer = ReorderBuffer()
    buffer.insert(pkt(1), 0.0)
    buffer.insert(pkt(3), 0.0)
    buffer.insert(pkt(3), 0.0)  # duplicate while buffered
    buffer.pop_ready(0.0)
    buffer.insert(pkt(1), 0.0)  # duplicate after release
    stats = buffer.statistics()
    assert stats.duplicates == 2
    assert stats.dropped == {"duplicate": 2}
    assert stats.received == 4


def test_very_old_packets_are_stale() -> None:
    buffer = ReorderBuffer(capacity=16, max_delay=0.0)
    for seq in range(100, 200):
        buffer.insert(pkt(seq), 0.0)
    buffer.pop_ready(0.0)
    buffer.insert(pkt(20), 0.0)
    assert buffer.statistics().dropped == {"stale": 1}


def test_overflow_forces_release_with_a_gap() -> None:
    buffer = ReorderBuffer(capacity=8, max_delay=10.0)
    buffer.insert(pkt(0), 0.0)
    for seq in range(2, 12):
        buffer.insert(pkt(seq), 0.0)
    items = buffer.pop_ready(0.0)
    assert seqs(items)[:3] == [0, (1, 1, "overflow"), 2]
    assert seqs(items)[-1] == 11
    assert buffer.statistics().buffered == 0


def test_single_far_jump_is_a_stray_packet() -> None:
    buffer = ReorderBuffer(max_jump=3000)
    buffer.insert(pkt(10), 0.0)
    buffer.insert(pkt(20000), 0.0)
    buffer.insert(pkt(11), 0.0)
    assert seqs(buffer.pop_ready(0.0)) == [10, 11]
    assert buffer.statistics().dropped == {"jump": 1}


def test_two_consecutive_far_packets_reset_the_buffer() -> None:
    buffer = ReorderBuffer(max_jump=3000, max_delay=1.0)
    buffer.insert(pkt(10), 0.0)
    buffer.insert(pkt(12), 0.0)
    buffer.insert(pkt(20000), 0.1)
    buffer.insert(pkt(20001), 0.1)
    buffer.insert(pkt(20002), 0.1)
    assert seqs(buffer.pop_ready(0.1)) == [10, (11, 1, "lost"), 12, (20001, 0, "reset"), 20001, 20002]
    assert buffer.statistics().resets == 1


def test_bad_configuration_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        ReorderBuffer(capacity=0)
    with pytest.raises(UsageError):
        ReorderBuffer(capacity=100, max_jump=10)


def test_packet_older_than_the_first_one_is_stale_not_a_duplicate() -> None:
    buffer = ReorderBuffer()
    buffer.insert(pkt(500), 0.0)
    buffer.insert(pkt(499), 0.0)
    assert seqs(buffer.pop_ready(0.0)) == [500]
    assert buffer.statistics().dropped == {"stale": 1}
