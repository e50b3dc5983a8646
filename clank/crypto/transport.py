"""Transport encryption for voice UDP: the ``aead_*_rtpsize`` modes, for RTP and RTCP.

Sans-io (discord-protocol.md §4.4, §4.6). One :class:`TransportCipher` per transport role and
direction pair: it holds the Session Description ``secret_key`` and *our* send counter; the
receive side needs no state (the peer's counter travels in each packet).

On-wire RTP packet::

    [ AAD: fixed header (12) + CSRCs (4*CC) + extension preamble (4, only if X) ]
    [ ciphertext of: extension elements (4*ext_words) + payload + RTP padding    ]
    [ tag (16) ]
    [ nonce suffix: send counter u32 BE (4) ]

Nonce = the 4 counter bytes followed by zeros (12 bytes for AES-256-GCM, 24 for
XChaCha20-Poly1305). The AAD is *not* the whole header: the extension elements are ciphertext.
Getting that wrong makes every packet with an extension fail (the "bot is deaf" bug).

RTCP uses the same key and counter, in the one framing Discord decrypts: the RTCP header and sender
SSRC (8 bytes) are the AAD, the rest is ciphertext, and the length field counts the plain RTCP
packet only (SRTCP-like; compounds allowed). A 4-byte-AAD framing with a rewritten length field
(used by the replaced system, which likely explains why its PLIs "were ignored") is not
supported; the strict sandbox drops it and counts it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nacl.bindings import (
    crypto_aead_xchacha20poly1305_ietf_decrypt,
    crypto_aead_xchacha20poly1305_ietf_encrypt,
)
from nacl.exceptions import CryptoError as NaclCryptoError

from clank.errors import DecryptionFailed, MalformedMessage, MalformedPacket, UsageError
from clank.wire.rtp import RtpHeader, strip_padding

AES256_GCM_RTPSIZE = "aead_aes256_gcm_rtpsize"
XCHACHA20_POLY1305_RTPSIZE = "aead_xchacha20_poly1305_rtpsize"
# Our preference order: AES-GCM is ~3.5x cheaper per packet (performance-notes.md).
SUPPORTED_MODES = (AES256_GCM_RTPSIZE, XCHACHA20_POLY1305_RTPSIZE)

KEY_SIZE = 32
TAG_SIZE = 16
NONCE_SUFFIX_SIZE = 4
OVERHEAD = TAG_SIZE + NONCE_SUFFIX_SIZE
RTCP_AAD_SRTCP = 8

_COUNTER = struct.Struct("!I")
# RTP fixed header and extension preamble, as in clank.wire.rtp (inlined on the hot path)
_RTP_FIXED = struct.Struct("!BBHII")
_RTP_EXT_PREAMBLE = struct.Struct("!HH")
_new_tuple = tuple.__new__
_AES_NONCE_PAD = bytes(8)
_XCHACHA_NONCE_PAD = bytes(20)

# (nonce suffix, plaintext or ciphertext, aad) -> ciphertext or plaintext
_AeadFn = Callable[[bytes, bytes, bytes], bytes]


def choose_mode(offered: Iterable[str]) -> str:
    """Pick our most preferred mode among those the server offers (voice Ready ``modes``)."""
    offered_set = set(offered)
    for mode in SUPPORTED_MODES:
        if mode in offered_set:
            return mode
    raise MalformedMessage("voice_ready", f"no supported encryption mode in {sorted(offered_set)}")


def _aes_gcm(key: bytes) -> tuple[_AeadFn, _AeadFn]:
    aead = AESGCM(key)
    encrypt, decrypt = aead.encrypt, aead.decrypt

    def seal(suffix: bytes, data: bytes, aad: bytes) -> bytes:
        return encrypt(suffix + _AES_NONCE_PAD, data, aad)

    def open_(suffix: bytes, data: bytes, aad: bytes) -> bytes:
        try:
            return decrypt(suffix + _AES_NONCE_PAD, data, aad)
        except InvalidTag:
            raise DecryptionFailed("transport", "AES-GCM tag mismatch") from None

    return seal, open_


def _xchacha(key: bytes) -> tuple[_AeadFn, _AeadFn]:
    def seal(suffix: bytes, data: bytes, aad: bytes) -> bytes:
        result: bytes = crypto_aead_xchacha20poly1305_ietf_encrypt(
            data, aad, suffix + _XCHACHA_NONCE_PAD, key
        )
        return result

    def open_(suffix: bytes, data: bytes, aad: bytes) -> bytes:
        try:
            result: bytes = crypto_aead_xchacha20poly1305_ietf_decrypt(
                data, aad, suffix + _XCHACHA_NONCE_PAD, key
            )
        except NaclCryptoError:
            raise DecryptionFailed("transport", "XChaCha20-Poly1305 tag mismatch") from None
        return result

    return seal, open_


_BACKENDS: dict[str, Callable[[bytes], tuple[_AeadFn, _AeadFn]]] = {
    AES256_GCM_RTPSIZE: _aes_gcm,
    XCHACHA20_POLY1305_RTPSIZE: _xchacha,
}


class TransportCipher:
    """Seal/open RTP and RTCP for one transport session. Not thread-safe (owns a counter)."""

    __slots__ = ("_aes_decrypt", "_key", "_open", "_seal", "_send_counter", "mode")

    def __init__(self, mode: str, key: bytes, *, send_counter: int = 0) -> None:
        if mode not in _BACKENDS:
            raise UsageError(f"unsupported transport mode {mode!r}")
        if len(key) != KEY_SIZE:
            raise UsageError(f"transport key must be {KEY_SIZE} bytes, got {len(key)}")
        self.mode = mode
        self._key = bytes(key)
        self._seal, self._open = _BACKENDS[mode](self._key)
        # ``open_rtp`` calls AES-GCM directly (one Python call less per received packet).
        self._aes_decrypt = AESGCM(self._key).decrypt if mode == AES256_GCM_RTPSIZE else None
        self._send_counter = send_counter & 0xFFFFFFFF

    @classmethod
    def create(cls, mode: str, key: bytes | Iterable[int], *, send_counter: int = 0) -> TransportCipher:
        """Build from a mode name and the ``secret_key`` (bytes or the JSON list of ints)."""
        return cls(mode, bytes(key), send_counter=send_counter)

    def __repr__(self) -> str:  # never show the key
        return f"TransportCipher(mode={self.mode!r}, send_counter={self._send_counter})"

    @property
    def send_counter(self) -> int:
        """The counter the next sealed packet will carry."""
        return self._send_counter

    def _next_suffix(self) -> bytes:
        suffix = _COUNTER.pack(self._send_counter)
        self._send_counter = (self._send_counter + 1) & 0xFFFFFFFF
        return suffix

    # -- generic --------------------------------------------------------------------------

    def seal(self, aad: bytes, plaintext: bytes) -> bytes:
        """``aad || AEAD(plaintext) || tag || counter``; advances the send counter."""
        suffix = self._next_suffix()
        return aad + self._seal(suffix, plaintext, aad) + suffix

    def open(self, packet: bytes, aad_len: int) -> bytes:
        """Authenticate and decrypt ``packet[aad_len:-4]``; returns the plaintext."""
        if len(packet) < aad_len + OVERHEAD:
            raise MalformedPacket("transport", f"{len(packet)} bytes cannot hold AAD {aad_len} + tag + nonce")
        return self._open(packet[-NONCE_SUFFIX_SIZE:], packet[aad_len:-NONCE_SUFFIX_SIZE], packet[:aad_len])

    # -- RTP ------------------------------------------------------------------------------

    def seal_rtp(self, header_clear: bytes, plaintext: bytes) -> bytes:
        """Protect one RTP packet.

        ``header_clear`` is ``RtpHeader.serialize()`` (fixed header, CSRCs, extension preamble);
        ``plaintext`` is extension elements + payload + RTP padding.
        """
        return self.seal(header_clear, plaintext)

    def open_rtp(self, packet: bytes) -> tuple[RtpHeader, bytes]:
        """Parse, decrypt, strip padding, strip extension elements: ``(header, media payload)``.

        The payload is empty for padding-only probes (callers drop those). Raises
        ``MalformedPacket`` or ``DecryptionFailed`` only.
        """
        # Inlined header parse for the two shapes Discord sends (no CSRCs; extension or not):
        # this is the per-packet hot path (performance-notes.md budgets ~1 us for all of it).
        try:
            b0, b1, sequence, timestamp, ssrc = _RTP_FIXED.unpack_from(packet)
        except struct.error:
            raise MalformedPacket("rtp", f"{len(packet)} bytes is shorter than the fixed header") from None
        shape = b0 & 0xDF  # version, X and CC; P may vary
        if shape == 0x90:
            profile, words = _RTP_EXT_PREAMBLE.unpack_from(packet, 12) if len(packet) >= 16 else (0, 0)
            aad_len = 16
            header = _new_tuple(
                RtpHeader,
                (b1 & 0x7F, sequence, timestamp, ssrc, b1 >= 0x80, b0 & 0x20 != 0, (), profile, words),
            )
        elif shape == 0x80:
            aad_len = 12
            words = 0
            header = _new_tuple(
                RtpHeader, (b1 & 0x7F, sequence, timestamp, ssrc, b1 >= 0x80, b0 & 0x20 != 0, (), None, 0)
            )
        else:
            header, aad_len = RtpHeader.parse(packet)
            words = header.extension_words
        if len(packet) < aad_len + OVERHEAD:
            raise MalformedPacket("rtp", f"{len(packet)} bytes cannot hold header {aad_len} + tag + nonce")
        aes_decrypt = self._aes_decrypt
        if aes_decrypt is not None:
            try:
                payload = aes_decrypt(packet[-4:] + _AES_NONCE_PAD, packet[aad_len:-4], packet[:aad_len])
            except InvalidTag:
                raise DecryptionFailed("transport", "AES-GCM tag mismatch") from None
        else:
            payload = self._open(
                packet[-NONCE_SUFFIX_SIZE:], packet[aad_len:-NONCE_SUFFIX_SIZE], packet[:aad_len]
            )
        if b0 & 0x20:
            payload = strip_padding(payload)
        if words:
            if 4 * words > len(payload):
                raise MalformedPacket(
                    "rtp", f"extension of {4 * words} bytes overruns a {len(payload)}-byte payload"
                )
            payload = payload[4 * words :]
        return header, payload

    # -- RTCP -----------------------------------------------------------------------------

    def seal_rtcp(self, plain: bytes) -> bytes:
        """Protect one plain (possibly compound) RTCP datagram: header + sender SSRC as AAD."""
        if len(plain) < RTCP_AAD_SRTCP:
            raise UsageError("RTCP packet shorter than header + sender SSRC")
        return self.seal(plain[:RTCP_AAD_SRTCP], plain[RTCP_AAD_SRTCP:])

    def open_rtcp(self, packet: bytes) -> bytes:
        """Decrypt one protected RTCP datagram; returns the plain RTCP bytes for ``parse_compound``."""
        return packet[:RTCP_AAD_SRTCP] + self.open(packet, RTCP_AAD_SRTCP)
