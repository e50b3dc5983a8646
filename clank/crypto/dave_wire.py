"""DAVE byte formats checked before davey sees them, and why a media frame does not decrypt.

* The media frame trailer (§7.6; ``clank.crypto.dave`` decrypts the frame with davey)::

    [frame with ciphertext in place][tag 8][ULEB128 nonce][ULEB128 (offset, size)*][u8 supp size][FA FA]

* op27's MLS ``<V>`` proposals vector and op29/op30's transition payload (their bodies go to davey).
* davey's decrypt error text -> our stable failure reason; ``describe_frame`` for the logs (§7.7).

Pure functions over bytes: no davey, no keys.
"""

from __future__ import annotations

from typing import Final

import attrs

from clank.errors import MalformedMessage, MalformedPacket
from clank.wire.voice_gateway import TransitionPayload

MAGIC_MARKER: Final = b"\xfa\xfa"
# davey error text -> our stable decrypt failure reason (first match wins).
DECRYPT_FAILURE_REASONS: Final[tuple[tuple[str, str], ...]] = (
    ("UnencryptedWhenPassthroughDisabled", "unencrypted_passthrough_disabled"),
    ("NoValidCryptorFound", "no_valid_cryptor"),
    ("NoDecryptorForUser", "no_decryptor_for_user"),
    ("NotReady", "not_ready"),
)


def classify_decrypt_error(message: str) -> str:
    for needle, reason in DECRYPT_FAILURE_REASONS:
        if needle in message:
            return reason
    return "other"


def parse_transition(payload: bytes) -> TransitionPayload:
    """op29 / op30: ``[transition_id u16]`` then a commit or Welcome, which must not be empty."""
    message = TransitionPayload.parse(payload)
    if not message.body:
        raise MalformedMessage("dave", f"transition payload of {len(payload)} bytes has no body")
    return message


def check_mls_vector(buf: bytes) -> None:
    """The op27 body must be exactly one MLS ``<V>`` vector (varint length + bytes)."""
    if not buf:
        raise MalformedMessage("dave", "proposals payload has no vector")
    prefix = buf[0] >> 6
    if prefix == 3:
        raise MalformedMessage("dave", "proposals vector length with 8-byte varint")
    width = 1 << prefix
    if len(buf) < width:
        raise MalformedMessage("dave", "truncated proposals vector length")
    length = int.from_bytes(buf[:width], "big") & ((1 << (8 * width - 2)) - 1)
    if len(buf) - width != length:
        raise MalformedMessage("dave", f"proposals vector says {length} bytes, has {len(buf) - width}")


@attrs.frozen
class DaveTrailer:
    """The parsed supplemental data at the end of a DAVE media frame."""

    tag: bytes
    nonce: int
    ranges: tuple[tuple[int, int], ...]
    supplemental_size: int

    @property
    def generation(self) -> int:
        return self.nonce >> 24

    @classmethod
    def parse(cls, frame: bytes) -> DaveTrailer:
        """Validate like davey's ``parse_frame``; any violation means "not a DAVE frame"."""
        n = len(frame)
        if n < 11:
            raise MalformedPacket("dave", "frame shorter than the minimal trailer")
        if frame[-2:] != MAGIC_MARKER:
            raise MalformedPacket("dave", "no FA FA marker at the end")
        supp = frame[-3]
        if supp < 11 or supp > n:
            raise MalformedPacket("dave", f"supplemental size {supp} out of range")
        start = n - supp
        tag = bytes(frame[start : start + 8])
        pos = start + 8
        end = n - 3
        nonce, pos = _uleb128(frame, pos, end)
        if nonce > 0xFFFF_FFFF:
            raise MalformedPacket("dave", "nonce wider than 32 bits")
        ranges: list[tuple[int, int]] = []
        previous_end = 0
        while pos < end:
            offset, pos = _uleb128(frame, pos, end)
            size, pos = _uleb128(frame, pos, end)
            if offset < previous_end:
                raise MalformedPacket("dave", "unencrypted ranges overlap or are unordered")
            previous_end = offset + size
            if previous_end > start:
                raise MalformedPacket("dave", "unencrypted range past the frame")
            ranges.append((offset, size))
        return cls(tag, nonce, tuple(ranges), supp)


def _uleb128(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if pos >= end:
            raise MalformedPacket("dave", "truncated ULEB128")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise MalformedPacket("dave", "ULEB128 too long")


def describe_frame(frame: bytes) -> dict[str, object]:
    """Why a frame does (not) parse as DAVE — for logs when decrypt fails (§7.7). Never raises."""
    info: dict[str, object] = {
        "length": len(frame),
        "tail_hex": bytes(frame[-16:]).hex(),
        "ends_with_magic": frame.endswith(MAGIC_MARKER),
        "magic_count": bytes(frame).count(MAGIC_MARKER),
        "supplemental_size": frame[-3] if len(frame) >= 3 else None,
    }
    try:
        trailer = DaveTrailer.parse(frame)
    except MalformedPacket as exc:
        info["valid"] = False
        info["reason"] = exc.reason
        return info
    info.update(
        valid=True,
        reason=None,
        nonce=trailer.nonce,
        generation=trailer.generation,
        ranges=[list(r) for r in trailer.ranges],
        ranges_fit=True,
        payload_length=len(frame) - trailer.supplemental_size,
    )
    return info
