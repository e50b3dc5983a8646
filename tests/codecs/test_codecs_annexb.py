from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from clank.codecs.annexb import join_nals, nal_types, normalize_start_codes, split_nals

SPS = bytes.fromhex("6742c00dda0507e840000003004000000f23c50aa8")
PPS = bytes.fromhex("68ce0fc8")
IDR = bytes.fromhex("658884") + bytes(range(1, 40))


def test_split_accepts_three_and_four_byte_start_codes() -> None:
    data = b"\x00\x00\x00\x01" + SPS + b"\x00\x00\x01" + PPS + b"\x00\x00\x00\x01" + IDR
    assert split_nals(data) == [SPS, PPS, IDR]
    assert nal_types(data) == [7, 8, 5]


def test_normalize_rewrites_every_start_code_to_four_bytes() -> None:
    data = b"\x00\x00\x01" + SPS + b"\x00\x00\x01" + PPS
    assert normalize_start_codes(data) == b"\x00\x00\x00\x01" + SPS + b"\x00\x00\x00\x01" + PPS


def test_only_one_zero_is_absorbed_into_a_four_byte_start_code() -> None:
    # Ciphertext ending in 00 right before a 4-byte start code keeps its zero (libdave behaviour).
    nal = b"\x41\x9a\x00"
    data = b"\x00\x00\x00\x01" + nal + b"\x00\x00\x00\x01" + PPS
    assert split_nals(data) == [nal, PPS]


def test_leading_garbage_and_empty_nals_are_skipped() -> None:
    assert split_nals(b"\xff\xfe" + b"\x00\x00\x01" + b"\x00\x00\x01" + PPS) == [PPS]
    assert split_nals(b"") == []
    assert split_nals(b"\x00\x00\x01") == []


nal_bodies = st.binary(min_size=1, max_size=40).filter(lambda b: b"\x00\x00" not in b and b[-1] != 0)


@given(st.lists(nal_bodies, max_size=8))
def test_join_then_split_round_trips(nals: list[bytes]) -> None:
    assert split_nals(join_nals(nals)) == nals


@given(st.binary(max_size=200))
def test_split_never_raises(data: bytes) -> None:
    for nal in split_nals(data):
        assert nal
