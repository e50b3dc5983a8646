from __future__ import annotations

import pytest

from clank.codecs.feedback import (
    KEYFRAME_REASONS,
    KeyframePolicy,
    KeyframeReason,
    KeyframeRequester,
    KeyframeRequestKind,
    NackPolicy,
    NackScheduler,
)
from clank.codecs.packet import MediaPacket
from clank.codecs.reorder import ReorderBuffer
from clank.errors import UsageError

POLICY = NackPolicy(
    first_delay=0.02, retry_interval=0.1, give_up_after=0.5, max_retries=10, max_packets_per_second=100
)


def test_first_nack_waits_the_first_delay() -> None:
    scheduler = NackScheduler(POLICY)
    assert scheduler.poll([5], now=1.0) == []
    assert scheduler.next_deadline() == pytest.approx(1.02)
    assert scheduler.poll([5], now=1.01) == []
    assert scheduler.poll([5], now=1.02) == [5]


def test_retries_every_interval_then_gives_up() -> None:
    # Binary fractions keep the float arithmetic exact.
    policy = NackPolicy(first_delay=1 / 32, retry_interval=1 / 8, give_up_after=0.5)
    scheduler = NackScheduler(policy)
    sent_at = [step / 64 for step in range(128) if scheduler.poll([7], step / 64)]
    assert sent_at == [1 / 32, 5 / 32, 9 / 32, 13 / 32]
    stats = scheduler.statistics()
    assert (stats.packets, stats.retries, stats.given_up, stats.tracked) == (4, 3, 1, 0)


def test_max_retries_limits_attempts() -> None:
    scheduler = NackScheduler(
        NackPolicy(first_delay=0.0, retry_interval=0.01, give_up_after=10, max_retries=2)
    )
    sent = [scheduler.poll([1], now=t / 100) for t in range(10)]
    assert sum(bool(s) for s in sent) == 2


def test_set_rtt_changes_retry_interval() -> None:
    scheduler = NackScheduler(POLICY)
    scheduler.set_rtt(0.3)
    assert scheduler.poll([1], 0.0) == []
    assert scheduler.poll([1], 0.02) == [1]
    assert scheduler.poll([1], 0.2) == []
    assert scheduler.poll([1], 0.32) == [1]


def test_seqs_that_stop_missing_are_forgotten() -> None:
    scheduler = NackScheduler(POLICY)
    scheduler.poll([1, 2], 0.0)
    assert scheduler.poll([2], 0.05) == [2]
    assert scheduler.statistics().resolved == 1


def test_rate_limit_caps_nack_packets_per_second() -> None:
    scheduler = NackScheduler(
        NackPolicy(
            first_delay=0.0, retry_interval=0.0, give_up_after=100, max_retries=1000, max_packets_per_second=5
        )
    )
    sent = sum(bool(scheduler.poll([1], now=t / 1000)) for t in range(0, 2000))
    # burst of 5 plus 5 per second for the remaining ~2 s
    assert 13 <= sent <= 16
    assert scheduler.statistics().rate_limited > 0


def test_one_nack_lists_at_most_max_seqs() -> None:
    scheduler = NackScheduler(NackPolicy(first_delay=0.0, max_seqs_per_packet=3))
    assert scheduler.poll(range(10), 0.0) == [0, 1, 2]


def test_nack_scheduler_driven_by_reorder_buffer_wraparound() -> None:
    buffer = ReorderBuffer()
    scheduler = NackScheduler(POLICY)
    buffer.insert(MediaPacket(65534, 0, False, b"a"), 0.0)
    buffer.insert(MediaPacket(1, 0, False, b"b"), 0.0)
    assert scheduler.poll(buffer.missing(0.03), 0.03) == []
    assert scheduler.poll(buffer.missing(0.05), 0.05) == [0, 65535]


def test_bad_nack_policy_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        NackScheduler(NackPolicy(max_packets_per_second=0))


# -- keyframe requests -------------------------------------------------------------------------


@pytest.mark.parametrize("reason", KEYFRAME_REASONS)
def test_every_reason_requests_a_keyframe_immediately(reason: KeyframeReason) -> None:
    requester = KeyframeRequester()
    assert requester.poll(5.0) is None
    requester.need(reason, now=5.0)
    request = requester.poll(5.0)
    assert request is not None and request.reason is reason and request.kind is KeyframeRequestKind.PLI


def test_re_request_every_repeat_interval_until_a_keyframe_arrives() -> None:
    requester = KeyframeRequester(KeyframePolicy(min_interval=1.0, repeat_interval=2.0))
    requester.need(KeyframeReason.JOIN, now=0.0)
    times = []
    for step in range(0, 70):
        now = step / 10
        requester.need(KeyframeReason.GAP, now)  # repeated needs during one outage change nothing
        if requester.poll(now):
            times.append(now)
    assert times == [0.0, 2.0, 4.0, 6.0]
    requester.keyframe_received()
    assert requester.poll(10.0) is None and not requester.waiting
    assert requester.statistics().needed == 1


def test_new_need_after_a_keyframe_respects_min_interval() -> None:
    requester = KeyframeRequester(KeyframePolicy(min_interval=1.0, repeat_interval=2.0))
    requester.need(KeyframeReason.JOIN, now=0.0)
    assert requester.poll(0.0)
    requester.keyframe_received()
    requester.need(KeyframeReason.DECODER_RESET, now=0.5)
    assert requester.poll(0.5) is None
    assert requester.next_deadline() == 1.0
    request = requester.poll(1.0)
    assert request is not None and request.reason is KeyframeReason.DECODER_RESET


def test_fir_sequence_numbers_increment_and_wrap() -> None:
    requester = KeyframeRequester(
        KeyframePolicy(kind=KeyframeRequestKind.FIR, min_interval=0, repeat_interval=0)
    )
    requester.need(KeyframeReason.GAP, 0.0)
    numbers = []
    for step in range(258):
        request = requester.poll(float(step))
        assert request is not None and request.kind is KeyframeRequestKind.FIR
        numbers.append(request.fir_seq)
    assert numbers[:3] == [0, 1, 2] and numbers[255:] == [255, 0, 1]


def test_bad_keyframe_policy_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        KeyframeRequester(KeyframePolicy(min_interval=3, repeat_interval=2))


def test_depacketizer_loss_drives_keyframe_requests() -> None:
    from clank.codecs.annexb import join_nals
    from clank.codecs.h264 import H264Depacketizer, packetize_h264
    from clank.codecs.packet import Gap

    idr = b"\x65\x88" + bytes(range(1, 200)) * 3
    payloads = packetize_h264(join_nals([idr]), mtu=100)
    depacketizer = H264Depacketizer()
    requester = KeyframeRequester()
    now = 0.0

    def deliver(seq0: int, ts: int, skip: int | None = None) -> None:
        for index, payload in enumerate(payloads):
            item = (
                Gap(seq0 + index, 1, "lost")
                if index == skip
                else MediaPacket(seq0 + index, ts, index == len(payloads) - 1, payload)
            )
            if depacketizer.push(item) and not depacketizer.keyframe_needed:
                requester.keyframe_received()
        if depacketizer.keyframe_needed:
            requester.need(KeyframeReason.GAP, now)

    assert depacketizer.keyframe_needed  # on join
    requester.need(KeyframeReason.JOIN, now)
    assert requester.poll(now) is not None
    deliver(0, 0)
    assert not requester.waiting
    now = 5.0
    deliver(len(payloads), 3000, skip=2)
    assert requester.waiting
    request = requester.poll(now)
    assert request is not None and request.reason is KeyframeReason.GAP


def test_an_unusable_answer_re_asks_after_min_interval_not_repeat_interval() -> None:
    requester = KeyframeRequester(KeyframePolicy(min_interval=1.0, repeat_interval=2.0))
    requester.need(KeyframeReason.JOIN, now=0.0)
    assert requester.poll(0.0)
    requester.answer_lost()  # the IDR that answered arrived undecryptable at 0.3 s
    assert requester.poll(0.9) is None  # the rate limit still holds
    assert requester.next_deadline() == 1.0
    request = requester.poll(1.0)
    assert request is not None and request.reason is KeyframeReason.JOIN
    assert requester.poll(2.5) is None  # that one is outstanding again: repeat_interval
    assert requester.poll(3.0)
