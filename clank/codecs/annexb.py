"""H264 Annex-B byte-stream helpers: split on start codes, normalise to 4-byte start codes.

Splitting follows libwebrtc/libdave (``FindNaluIndices``): search for ``00 00 01``; if the byte before
it is ``00`` the start code is 4 bytes. Exactly one leading zero is absorbed, never more, so a
DAVE-encrypted NAL whose ciphertext happens to end in ``00`` keeps that byte.

NAL header byte: ``F(1) | NRI(2) | Type(5)``.
"""

from __future__ import annotations

START_CODE = b"\x00\x00\x00\x01"
_SHORT_START_CODE = b"\x00\x00\x01"

NAL_SLICE = 1
NAL_IDR = 5
NAL_SEI = 6
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9


def nal_type(nal: bytes) -> int:
    """The 5-bit type of a NAL unit (0 for an empty one)."""
    return nal[0] & 0x1F if nal else 0


def split_nals(data: bytes) -> list[bytes]:
    """NAL units of an Annex-B buffer (3- or 4-byte start codes), without their start codes.

    Bytes before the first start code are ignored; empty NALs (adjacent start codes) are skipped.
    """
    nals: list[bytes] = []
    start: int | None = None
    index = data.find(_SHORT_START_CODE)
    while index != -1:
        if start is not None:
            end = index - 1 if index > start and data[index - 1] == 0 else index
            if end > start:
                nals.append(data[start:end])
        start = index + len(_SHORT_START_CODE)
        index = data.find(_SHORT_START_CODE, start)
    if start is not None and start < len(data):
        nals.append(data[start:])
    return nals


def join_nals(nals: list[bytes]) -> bytes:
    """An Annex-B buffer with a 4-byte start code before every NAL."""
    return b"".join(START_CODE + nal for nal in nals)


def normalize_start_codes(data: bytes) -> bytes:
    """Rewrite every start code to 4 bytes (what DAVE's H264 transform and WebRTC receivers do)."""
    return join_nals(split_nals(data))


def nal_types(data: bytes) -> list[int]:
    """Types of the NAL units of an Annex-B buffer, in order."""
    return [nal_type(nal) for nal in split_nals(data)]
