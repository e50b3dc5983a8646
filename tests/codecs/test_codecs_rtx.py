from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clank.codecs.packet import MediaPacket
from clank.codecs.rtx import RetransmissionStore, RtxPayload, RtxUnwrapper, wrap_rtx
from clank.errors import MalformedPacket, UsageError


def test_wrap_prefixes_the_original_sequence_number() -> None:
    assert wrap_rtx(0xABCD, b"\x65\x01") == b"\xab\xcd\x65\x01"
    assert wrap_rtx(65536 + 5, b"") == b"\x00\x05"


def test_unwrap_restores_seq_and_primary_ssrc_and_keeps_timestamp_and_marker() -> None:
    unwrapper = RtxUnwrapper()
    rtx = MediaPacket(seq=7, timestamp=123, marker=True, payload=wrap_rtx(65535, b"abc"), ssrc=2)
    restored = unwrapper.unwrap(rtx, primary_ssrc=1)
    assert restored == MediaPacket(seq=65535, timestamp=123, marker=True, payload=b"abc", ssrc=1)
    assert unwrapper.statistics().unwrapped == 1


def test_padding_only_probe_and_short_payloads_are_dropped_and_counted() -> None:
    unwrapper = RtxUnwrapper()
    assert unwrapper.unwrap(MediaPacket(1, 0, False, b"\x00\x01"), primary_ssrc=1) is None
    assert unwrapper.unwrap(MediaPacket(2, 0, False, b"\x00"), primary_ssrc=1) is None
    stats = unwrapper.statistics()
    assert (stats.probes, stats.malformed, stats.unwrapped) == (1, 1, 0)


@given(st.binary(max_size=10))
def test_parse_raises_only_malformed_packet(data: bytes) -> None:
    try:
        parsed = RtxPayload.parse(data)
    except MalformedPacket:
        assert len(data) < 2
    else:
        assert parsed.serialize() == data


def test_store_answers_known_seqs_and_counts_unknown() -> None:
    store = RetransmissionStore(capacity=4)
    for seq in range(65534, 65534 + 6):
        store.remember(seq, timestamp=seq * 10, marker=seq % 2 == 0, payload=bytes([seq % 256]))
    answers = store.answer([65534, 65535, 0, 3], now=0.0)
    assert [a.osn for a in answers] == [0, 3]
    assert answers[1].payload == wrap_rtx(3, bytes([(65534 + 5) % 256]))
    assert answers[1].marker is False and answers[0].marker is True
    stats = store.statistics()
    assert (stats.requested, stats.answered, stats.unknown) == (4, 2, 2)


def test_store_does_not_resend_a_packet_twice_within_the_interval() -> None:
    store = RetransmissionStore(min_resend_interval=0.05)
    store.remember(10, 0, False, b"p")
    assert len(store.answer([10], now=1.0)) == 1
    assert store.answer([10], now=1.01) == []
    assert len(store.answer([10], now=1.06)) == 1
    assert store.statistics().suppressed == 1


def test_store_capacity_must_be_positive() -> None:
    with pytest.raises(UsageError):
        RetransmissionStore(capacity=0)
