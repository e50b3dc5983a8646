"""Transport AEAD (rtpsize modes): Appendix A vectors, both modes, RTCP framings, failure modes."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_encrypt

from clank.crypto.transport import (
    AES256_GCM_RTPSIZE,
    SUPPORTED_MODES,
    XCHACHA20_POLY1305_RTPSIZE,
    TransportCipher,
    choose_mode,
)
from clank.errors import DecryptionFailed, MalformedMessage, MalformedPacket, UsageError
from clank.wire.rtcp import (
    FullIntraRequest,
    PictureLossIndication,
    ReceiverReport,
    RtcpPacket,
    SenderReport,
    parse_compound,
    serialize_compound,
)
from clank.wire.rtp import VIDEO_EXTENSION, RtpExtension, RtpHeader, build_padding

KEY = bytes(range(32))
OPUS_PACKET = bytes.fromhex("80780001000003c000003249f2434bd7385628ce2af1db9eea5c2fa86a5f2c00000000")
VIDEO_PACKET = bytes.fromhex(
    "90e7000700000bb80000324abede000118bbac070cca3c5e8fa5cc160f3aa0864a2d2a2819a17f1600000005"
)
PLI_PACKET = bytes.fromhex("81ce000200003249b482650e20e321efc257d3e5c9f9653c42881af600000006")
XCHACHA_OPUS_PACKET = bytes.fromhex("80780001000003c00000324969f972d7bbbdf53210a0a20e31bd45c817ee9800000000")

modes = st.sampled_from(SUPPORTED_MODES)


def test_opus_vector() -> None:
    cipher = TransportCipher.create(AES256_GCM_RTPSIZE, KEY)
    header = RtpHeader(120, 1, 960, 12873)
    assert cipher.seal_rtp(header.serialize(), bytes.fromhex("fcfffe")) == OPUS_PACKET
    assert cipher.send_counter == 1
    assert cipher.open_rtp(OPUS_PACKET) == (header, bytes.fromhex("fcfffe"))


def test_video_vector_keeps_extension_elements_out_of_the_aad() -> None:
    cipher = TransportCipher.create(AES256_GCM_RTPSIZE, KEY, send_counter=5)
    header = RtpHeader(103, 7, 3000, 12874, marker=True, extension_profile=0xBEDE, extension_words=1)
    # The reference vector's element is id 5 with 2 data bytes (our senders now use 3: the
    # vector is about what the AAD covers, not about playout-delay's size).
    packet = cipher.seal_rtp(header.serialize(), bytes.fromhex("51000000") + bytes.fromhex("419a2000"))
    assert packet == VIDEO_PACKET
    assert len(packet) == 44
    # The visible parts quoted in discord-protocol.md Appendix A.
    assert packet.hex().startswith("90e7000700000bb80000324abede000118bbac070cca3c5e8fa5")
    assert packet.hex().endswith("a17f1600000005")
    assert cipher.open_rtp(packet) == (header, bytes.fromhex("419a2000"))


def test_video_vector_built_from_the_primitive() -> None:
    aad = VIDEO_PACKET[:16]
    nonce = (5).to_bytes(4, "big") + bytes(8)
    sealed = AESGCM(KEY).encrypt(nonce, bytes.fromhex("51000000419a2000"), aad)
    assert aad + sealed + nonce[:4] == VIDEO_PACKET


def test_pli_vector_aad_8() -> None:
    cipher = TransportCipher.create(AES256_GCM_RTPSIZE, KEY, send_counter=6)
    plain = PictureLossIndication(12873, 20000).serialize()
    assert cipher.seal_rtcp(plain) == PLI_PACKET
    assert cipher.open_rtcp(PLI_PACKET) == plain
    assert parse_compound(cipher.open_rtcp(PLI_PACKET)) == (PictureLossIndication(12873, 20000),)


def test_xchacha_vector_matches_libsodium_directly() -> None:
    header = RtpHeader(120, 1, 960, 12873).serialize()
    direct = crypto_aead_xchacha20poly1305_ietf_encrypt(bytes.fromhex("fcfffe"), header, bytes(24), KEY)
    assert header + direct + bytes(4) == XCHACHA_OPUS_PACKET
    cipher = TransportCipher.create(XCHACHA20_POLY1305_RTPSIZE, KEY)
    assert cipher.seal_rtp(header, bytes.fromhex("fcfffe")) == XCHACHA_OPUS_PACKET
    assert cipher.open_rtp(XCHACHA_OPUS_PACKET)[1] == bytes.fromhex("fcfffe")


def test_xchacha_nonce_is_counter_then_zeros() -> None:
    cipher = TransportCipher.create(XCHACHA20_POLY1305_RTPSIZE, KEY, send_counter=0x01020304)
    header = RtpHeader(120, 2, 1920, 1).serialize()
    nonce = bytes.fromhex("01020304") + bytes(20)
    expected = header + crypto_aead_xchacha20poly1305_ietf_encrypt(b"opus", header, nonce, KEY) + nonce[:4]
    assert cipher.seal_rtp(header, b"opus") == expected


def test_counter_wraps_at_2_32() -> None:
    cipher = TransportCipher.create(AES256_GCM_RTPSIZE, KEY, send_counter=2**32 - 1)
    first = cipher.seal_rtp(RtpHeader(120, 1, 0, 1).serialize(), b"a")
    second = cipher.seal_rtp(RtpHeader(120, 2, 0, 1).serialize(), b"b")
    assert first[-4:] == b"\xff\xff\xff\xff"
    assert second[-4:] == b"\x00\x00\x00\x00"


@given(
    modes,
    st.lists(st.integers(0, 0xFFFFFFFF), max_size=3).map(tuple),
    st.one_of(
        st.none(), st.lists(st.tuples(st.integers(1, 14), st.binary(min_size=1, max_size=4)), max_size=3)
    ),
    st.binary(max_size=64),
    st.one_of(st.none(), st.integers(1, 255)),
)
def test_rtp_round_trip(
    mode: str,
    csrcs: tuple[int, ...],
    elements: list[tuple[int, bytes]] | None,
    payload: bytes,
    pad: int | None,
) -> None:
    cipher = TransportCipher.create(mode, KEY)
    header = RtpHeader(103, 9, 90000, 77, padding=pad is not None, csrcs=csrcs)
    plaintext = payload + (build_padding(pad) if pad else b"")
    if elements is not None:
        ext = RtpExtension.one_byte(elements)
        header = header._replace(extension_profile=ext.profile, extension_words=ext.words)
        plaintext = ext.body + plaintext
    packet = cipher.seal_rtp(header.serialize(), plaintext)
    assert len(packet) == header.clear_len + len(plaintext) + 20
    assert cipher.open_rtp(packet) == (header, payload)


@pytest.mark.parametrize("mode", SUPPORTED_MODES)
def test_padding_only_probe_opens_to_empty(mode: str) -> None:
    cipher = TransportCipher.create(mode, KEY)
    header = RtpHeader(96, 1, 0, 5, padding=True)
    assert cipher.open_rtp(cipher.seal_rtp(header.serialize(), build_padding(200)))[1] == b""


@pytest.mark.parametrize("mode", SUPPORTED_MODES)
def test_tampering_fails_decryption(mode: str) -> None:
    cipher = TransportCipher.create(mode, KEY)
    header = RtpHeader(103, 7, 3000, 12874, extension_profile=0xBEDE, extension_words=1)
    packet = cipher.seal_rtp(header.serialize(), VIDEO_EXTENSION.body + b"frame")
    for index in range(len(packet)):
        tampered = bytearray(packet)
        tampered[index] ^= 0x01
        with pytest.raises((DecryptionFailed, MalformedPacket)):
            cipher.open_rtp(bytes(tampered))


@pytest.mark.parametrize("mode", SUPPORTED_MODES)
def test_wrong_key_fails_decryption(mode: str) -> None:
    packet = TransportCipher.create(mode, KEY).seal_rtp(RtpHeader(120, 1, 960, 1).serialize(), b"x")
    with pytest.raises(DecryptionFailed) as info:
        TransportCipher.create(mode, bytes(32)).open_rtp(packet)
    assert info.value.layer == "transport"


@pytest.mark.parametrize("packet", [OPUS_PACKET, VIDEO_PACKET, PLI_PACKET])
def test_every_truncation_fails_only_our_way(packet: bytes) -> None:
    cipher = TransportCipher.create(AES256_GCM_RTPSIZE, KEY)
    for cut in range(len(packet)):
        with pytest.raises((MalformedPacket, DecryptionFailed)):
            cipher.open_rtp(packet[:cut])
        with pytest.raises((MalformedPacket, DecryptionFailed)):
            cipher.open_rtcp(packet[:cut])


@given(modes, st.binary(max_size=120))
def test_open_raises_only_our_errors(mode: str, data: bytes) -> None:
    cipher = TransportCipher.create(mode, KEY)
    for opener in (cipher.open_rtp, cipher.open_rtcp):
        try:
            opener(data)
        except (MalformedPacket, DecryptionFailed):
            pass


def test_extension_longer_than_plaintext_is_malformed() -> None:
    cipher = TransportCipher.create(AES256_GCM_RTPSIZE, KEY)
    header = RtpHeader(103, 1, 1, 1, extension_profile=0xBEDE, extension_words=4)
    with pytest.raises(MalformedPacket):
        cipher.open_rtp(cipher.seal_rtp(header.serialize(), b"short"))


RTCP_SAMPLES: list[RtcpPacket] = [
    ReceiverReport(12873),
    PictureLossIndication(12873, 20000),
    FullIntraRequest(12873, ((20000, 1),)),
    SenderReport(30, 0x1234_5678_9ABC_DEF0, 90000, 10, 11000),
]


@pytest.mark.parametrize("mode", SUPPORTED_MODES)
@pytest.mark.parametrize("sample", RTCP_SAMPLES, ids=lambda p: type(p).__name__)
def test_rtcp_round_trip(mode: str, sample: RtcpPacket) -> None:
    sender = TransportCipher.create(mode, KEY)
    receiver = TransportCipher.create(mode, KEY)
    plain = sample.serialize()
    packet = sender.seal_rtcp(plain)
    assert receiver.open_rtcp(packet) == plain
    assert parse_compound(receiver.open_rtcp(packet)) == (sample,)


@pytest.mark.parametrize("mode", SUPPORTED_MODES)
def test_compound_rtcp_under_aad_8(mode: str) -> None:
    cipher = TransportCipher.create(mode, KEY)
    plain = serialize_compound(RTCP_SAMPLES)
    assert parse_compound(cipher.open_rtcp(cipher.seal_rtcp(plain))) == tuple(RTCP_SAMPLES)


def test_the_4_byte_aad_framing_does_not_open() -> None:
    """The replaced system's framing (header-only AAD, length rewritten) is not Discord's."""
    sender = TransportCipher.create(AES256_GCM_RTPSIZE, KEY)
    plain = PictureLossIndication(1, 2).serialize()
    body = sender.seal(plain[:4], plain[4:])  # AAD = the 4-byte header only
    with pytest.raises((DecryptionFailed, MalformedPacket)):
        TransportCipher.create(AES256_GCM_RTPSIZE, KEY).open_rtcp(body)


def test_aad_8_length_field_counts_the_plain_packet() -> None:
    sealed = TransportCipher.create(AES256_GCM_RTPSIZE, KEY).seal_rtcp(
        SenderReport(1, 0, 0, 0, 0).serialize()
    )
    assert sealed[:4] == bytes.fromhex("80c80006")
    assert len(sealed) == 48


def test_rtp_and_rtcp_share_the_send_counter() -> None:
    cipher = TransportCipher.create(AES256_GCM_RTPSIZE, KEY)
    cipher.seal_rtp(RtpHeader(120, 1, 0, 1).serialize(), b"a")
    assert cipher.seal_rtcp(ReceiverReport(1).serialize())[-4:] == (1).to_bytes(4, "big")
    assert cipher.send_counter == 2


def test_choose_mode_prefers_aes_gcm() -> None:
    assert choose_mode(
        ["aead_xchacha20_poly1305_rtpsize", "aead_aes256_gcm_rtpsize", "xsalsa20_poly1305"]
    ) == (AES256_GCM_RTPSIZE)
    assert choose_mode(["aead_xchacha20_poly1305_rtpsize"]) == XCHACHA20_POLY1305_RTPSIZE
    with pytest.raises(MalformedMessage):
        choose_mode(["xsalsa20_poly1305_lite"])


def test_bad_construction_is_usage_error_and_repr_hides_the_key() -> None:
    with pytest.raises(UsageError):
        TransportCipher.create("xsalsa20_poly1305", KEY)
    with pytest.raises(UsageError):
        TransportCipher.create(AES256_GCM_RTPSIZE, bytes(16))
    cipher = TransportCipher.create(AES256_GCM_RTPSIZE, list(KEY))
    assert KEY.hex() not in repr(cipher) and str(list(KEY)) not in repr(cipher)
    with pytest.raises(UsageError):
        cipher.seal_rtcp(ReceiverReport(1).serialize()[:6])
