"""The slice of RFC 9420 (MLS) TLS encoding that a DAVE external sender needs.

Only ``cryptography`` is used: P-256 ECDSA for the external sender's signatures and for verifying
key packages, SHA-256 for the reference hashes. Commits and Welcomes are parsed for structure and
bookkeeping only (the server cannot verify them without the GroupContext; the clients do).

Encoding (all integers big-endian); ``<V>`` is an MLS variable-length vector: a QUIC-style varint
length (prefix ``00`` = 1 byte/6 bits, ``01`` = 2 bytes/14 bits, ``10`` = 4 bytes/30 bits; the
shortest form is mandatory) followed by that many bytes.

    ExternalSender (op25)  = signature_key<V> (65-byte SEC1 point 04||X||Y) || u16 credential_type (1)
                             || identity<V>
    KeyPackage (op26)      = u16 version (1) || u16 cipher_suite (2) || init_key<V> || LeafNode
                             || extensions<V> || signature<V>
    LeafNode               = encryption_key<V> || signature_key<V> || u16 credential_type || identity<V>
                             || 5 x <V> capabilities || u8 source (1: u64 not_before, u64 not_after;
                             2: -; 3: parent_hash<V>) || extensions<V> || signature<V>
    external proposal      = u16 1 || u16 1 (public_message) || FramedContent || signature<V>
    FramedContent          = group_id<V> || u64 epoch || u8 2 (external) || u32 0 (sender_index)
                             || authenticated_data<V> (empty) || u8 2 (proposal) || Proposal
    Proposal               = u16 1 (add) || KeyPackage   |   u16 3 (remove) || u32 leaf_index
    op27 payload           = u8 operation (0 append, 1 revoke) || <V>(messages | <V>refs)
    op28 payload           = MLSMessage(commit) || optional bare Welcome (no separator)
    Welcome                = u16 cipher_suite || secrets<V> (new_member<V> || kem_output<V> || ciphertext<V>)*
                             || encrypted_group_info<V>
"""

from __future__ import annotations

import hashlib
import struct

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from clank.errors import MalformedMessage

MLS_VERSION_10 = 1
CIPHER_SUITE_P256 = 2  # MLS_128_DHKEMP256_AES128GCM_SHA256_P256
WIRE_FORMAT_PUBLIC_MESSAGE = 1
CREDENTIAL_BASIC = 1
SENDER_MEMBER = 1
SENDER_EXTERNAL = 2
CONTENT_PROPOSAL = 2
CONTENT_COMMIT = 3
PROPOSAL_ADD = 1
PROPOSAL_REMOVE = 3
PROPOSAL_OR_REF_PROPOSAL = 1
PROPOSAL_OR_REF_REFERENCE = 2
LEAF_SOURCE_KEY_PACKAGE = 1
LEAF_SOURCE_UPDATE = 2
LEAF_SOURCE_COMMIT = 3
OP27_APPEND = 0
OP27_REVOKE = 1
# Discord's external sender identity is one zero byte (captured op25: ``... 00 01 01 00``).
DISCORD_EXTERNAL_SENDER_IDENTITY = b"\x00"

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_VARINT_1 = 1 << 6
_VARINT_2 = 1 << 14
_VARINT_4 = 1 << 30


def _fail(reason: str) -> MalformedMessage:
    return MalformedMessage("mls", reason)


def encode_varint(n: int) -> bytes:
    """Shortest QUIC-style varint, as tls_codec requires."""
    if n < 0 or n >= _VARINT_4:
        raise ValueError(f"varint out of range: {n}")
    if n < _VARINT_1:
        return bytes([n])
    if n < _VARINT_2:
        return _U16.pack(0x4000 | n)
    return _U32.pack(0x8000_0000 | n)


def vec(data: bytes) -> bytes:
    """``<V>`` encode ``data``."""
    return encode_varint(len(data)) + data


class Reader:
    """A cursor over untrusted bytes; every failure is a MalformedMessage."""

    __slots__ = ("_buf", "pos")

    def __init__(self, buf: bytes, pos: int = 0) -> None:
        self._buf = memoryview(buf)
        self.pos = pos

    @property
    def remaining(self) -> int:
        return len(self._buf) - self.pos

    def take(self, n: int) -> bytes:
        if n > self.remaining:
            raise _fail(f"truncated: need {n} bytes at {self.pos}, have {self.remaining}")
        out = bytes(self._buf[self.pos : self.pos + n])
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = _U16.unpack(self.take(2))[0]
        return value

    def u32(self) -> int:
        value: int = _U32.unpack(self.take(4))[0]
        return value

    def u64(self) -> int:
        value: int = _U64.unpack(self.take(8))[0]
        return value

    def varint(self) -> int:
        first = self.u8()
        prefix = first >> 6
        if prefix == 0:
            return first
        if prefix == 1:
            value = ((first & 0x3F) << 8) | self.u8()
            minimum = _VARINT_1
        elif prefix == 2:
            rest = self.take(3)
            value = ((first & 0x3F) << 24) | int.from_bytes(rest, "big")
            minimum = _VARINT_2
        else:
            raise _fail("varint with 8-byte prefix")
        if value < minimum:
            raise _fail("non-minimal varint")
        return value

    def vec(self) -> bytes:
        return self.take(self.varint())

    def end(self) -> None:
        if self.remaining:
            raise _fail(f"{self.remaining} trailing bytes")


def sign_content(label: str, content: bytes) -> bytes:
    """RFC 9420 SignContent: ``<V>"MLS 1.0 " + label || <V>content``."""
    return vec(b"MLS 1.0 " + label.encode()) + vec(content)


def ref_hash(label: str, value: bytes) -> bytes:
    """RFC 9420 RefHash with SHA-256."""
    return hashlib.sha256(vec(label.encode()) + vec(value)).digest()


def _load_p256_public(point: bytes) -> ec.EllipticCurvePublicKey:
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError as exc:
        raise _fail("invalid P-256 signature key") from exc


def _verify_with_label(point: bytes, label: str, content: bytes, signature: bytes) -> None:
    key = _load_p256_public(point)
    try:
        key.verify(signature, sign_content(label, content), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise _fail(f"bad {label} signature") from exc


@attrs.frozen(repr=False)
class ExternalSender:
    """The server's P-256 key and identity; ``serialize()`` is the op25 payload (same for everyone)."""

    private_key: ec.EllipticCurvePrivateKey
    identity: bytes = DISCORD_EXTERNAL_SENDER_IDENTITY

    @classmethod
    def generate(cls, identity: bytes = DISCORD_EXTERNAL_SENDER_IDENTITY) -> ExternalSender:
        return cls(ec.generate_private_key(ec.SECP256R1()), identity)

    @property
    def public_point(self) -> bytes:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        return self.private_key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)

    def serialize(self) -> bytes:
        return vec(self.public_point) + _U16.pack(CREDENTIAL_BASIC) + vec(self.identity)

    def sign_with_label(self, label: str, content: bytes) -> bytes:
        return self.private_key.sign(sign_content(label, content), ec.ECDSA(hashes.SHA256()))

    def __repr__(self) -> str:
        return f"ExternalSender(identity={self.identity.hex()})"


def _skip_credential(reader: Reader) -> bytes:
    """Read a Credential; only basic credentials (DAVE's) are accepted. Returns the identity."""
    credential_type = reader.u16()
    if credential_type != CREDENTIAL_BASIC:
        raise _fail(f"unsupported credential type {credential_type}")
    return reader.vec()


@attrs.frozen
class LeafNodeInfo:
    """What the server needs from a LeafNode: its identity and signature key, and where it ends."""

    signature_key: bytes
    identity: bytes
    source: int


def _read_leaf_node(reader: Reader) -> tuple[LeafNodeInfo, bytes, bytes]:
    """Parse a LeafNode at the cursor. Returns (info, bytes signed (TBS prefix), signature)."""
    start = reader.pos
    reader.vec()  # encryption_key
    signature_key = reader.vec()
    identity = _skip_credential(reader)
    for _ in range(5):  # capabilities: versions, cipher_suites, extensions, proposals, credentials
        reader.vec()
    source = reader.u8()
    if source == LEAF_SOURCE_KEY_PACKAGE:
        reader.take(16)  # lifetime: not_before, not_after
    elif source == LEAF_SOURCE_COMMIT:
        reader.vec()  # parent_hash
    elif source != LEAF_SOURCE_UPDATE:
        raise _fail(f"unknown leaf node source {source}")
    reader.vec()  # extensions
    tbs_end = reader.pos
    signature = reader.vec()
    tbs = bytes(reader._buf[start:tbs_end])
    return LeafNodeInfo(signature_key, identity, source), tbs, signature


@attrs.frozen
class KeyPackage:
    """A client's op26 KeyPackage, verified. ``raw`` is kept verbatim for Add proposals."""

    raw: bytes = attrs.field(repr=False)
    user_id: int
    signature_key: bytes = attrs.field(repr=False)

    @classmethod
    def parse(cls, buf: bytes, *, verify: bool = True) -> KeyPackage:
        reader = Reader(buf)
        version = reader.u16()
        suite = reader.u16()
        if version != MLS_VERSION_10:
            raise _fail(f"key package version {version}")
        if suite != CIPHER_SUITE_P256:
            raise _fail(f"key package cipher suite {suite}")
        reader.vec()  # init_key
        leaf, leaf_tbs, leaf_signature = _read_leaf_node(reader)
        if leaf.source != LEAF_SOURCE_KEY_PACKAGE:
            raise _fail("key package leaf node source is not key_package")
        reader.vec()  # extensions
        tbs_end = reader.pos
        signature = reader.vec()
        reader.end()
        if len(leaf.identity) != 8:
            raise _fail("credential identity is not a u64 user id")
        if verify:
            _verify_with_label(leaf.signature_key, "LeafNodeTBS", leaf_tbs, leaf_signature)
            _verify_with_label(leaf.signature_key, "KeyPackageTBS", buf[:tbs_end], signature)
        return cls(bytes(buf), int.from_bytes(leaf.identity, "big"), leaf.signature_key)

    @property
    def ref(self) -> bytes:
        """KeyPackageRef: how a Welcome names this joiner."""
        return ref_hash("MLS 1.0 KeyPackage Reference", self.raw)


@attrs.frozen
class SignedProposal:
    """One external-sender proposal MLSMessage and its ProposalRef."""

    message: bytes = attrs.field(repr=False)
    ref: bytes


def _framed_proposal(group_id: int, epoch: int, proposal: bytes) -> bytes:
    return (
        vec(_U64.pack(group_id))
        + _U64.pack(epoch)
        + bytes([SENDER_EXTERNAL])
        + _U32.pack(0)  # index into the group's ExternalSenders extension
        + vec(b"")  # authenticated_data
        + bytes([CONTENT_PROPOSAL])
        + proposal
    )


def sign_proposal(sender: ExternalSender, group_id: int, epoch: int, proposal: bytes) -> SignedProposal:
    """Frame and sign ``proposal`` (no GroupContext, membership or confirmation tag: external sender)."""
    content = _framed_proposal(group_id, epoch, proposal)
    header = _U16.pack(MLS_VERSION_10) + _U16.pack(WIRE_FORMAT_PUBLIC_MESSAGE)
    signature = sender.sign_with_label("FramedContentTBS", header + content)
    message = header + content + vec(signature)
    return SignedProposal(message, ref_hash("MLS 1.0 Proposal Reference", message[2:]))


def add_proposal(key_package: KeyPackage) -> bytes:
    return _U16.pack(PROPOSAL_ADD) + key_package.raw


def remove_proposal(leaf_index: int) -> bytes:
    return _U16.pack(PROPOSAL_REMOVE) + _U32.pack(leaf_index)


def append_payload(messages: list[bytes]) -> bytes:
    """op27 append payload (after the opcode byte)."""
    return bytes([OP27_APPEND]) + vec(b"".join(messages))


def revoke_payload(refs: list[bytes]) -> bytes:
    """op27 revoke payload (after the opcode byte)."""
    return bytes([OP27_REVOKE]) + vec(b"".join(vec(ref) for ref in refs))


@attrs.frozen
class ProposalsPayload:
    """A parsed op27 payload (used by tests and by diagnostics)."""

    operation: int
    items: tuple[bytes, ...]

    @classmethod
    def parse(cls, payload: bytes) -> ProposalsPayload:
        reader = Reader(payload)
        operation = reader.u8()
        inner = Reader(reader.vec())
        reader.end()
        items: list[bytes] = []
        if operation == OP27_APPEND:
            while inner.remaining:
                start = inner.pos
                _read_public_message(inner, expect_content=CONTENT_PROPOSAL)
                items.append(bytes(inner._buf[start : inner.pos]))
        elif operation == OP27_REVOKE:
            while inner.remaining:
                items.append(inner.vec())
        else:
            raise _fail(f"unknown proposals operation {operation}")
        return cls(operation, tuple(items))


@attrs.frozen
class CommitMessage:
    """The structural facts of an op28 commit that the server checks."""

    raw: bytes = attrs.field(repr=False)
    group_id: int
    epoch: int
    sender_leaf: int
    proposal_refs: tuple[bytes, ...]
    has_path: bool


def _read_proposal(reader: Reader) -> None:
    proposal_type = reader.u16()
    if proposal_type == PROPOSAL_REMOVE:
        reader.u32()
    elif proposal_type == PROPOSAL_ADD:
        reader.u16()
        reader.u16()
        reader.vec()
        _read_leaf_node(reader)
        reader.vec()
        reader.vec()
    else:
        raise _fail(f"unsupported proposal type {proposal_type}")


def _read_public_message(reader: Reader, *, expect_content: int) -> tuple[int, int, int, int, bytes, bool]:
    """Parse one PublicMessage; returns (group_id, epoch, sender_type, sender_index, body, has_path)."""
    if reader.u16() != MLS_VERSION_10:
        raise _fail("MLSMessage version is not mls10")
    if reader.u16() != WIRE_FORMAT_PUBLIC_MESSAGE:
        raise _fail("MLSMessage is not a PublicMessage")
    group_id_bytes = reader.vec()
    if len(group_id_bytes) != 8:
        raise _fail("group id is not 8 bytes")
    epoch = reader.u64()
    sender_type = reader.u8()
    if sender_type not in (SENDER_MEMBER, SENDER_EXTERNAL):
        raise _fail(f"unsupported sender type {sender_type}")
    sender_index = reader.u32()
    reader.vec()  # authenticated_data
    content_type = reader.u8()
    if content_type != expect_content:
        raise _fail(f"content type {content_type}, expected {expect_content}")
    has_path = False
    if content_type == CONTENT_COMMIT:
        body = reader.vec()  # proposals<V>
        present = reader.u8()
        if present == 1:
            has_path = True
            leaf, _, _ = _read_leaf_node(reader)
            if leaf.source != LEAF_SOURCE_COMMIT:
                raise _fail("update path leaf source is not commit")
            reader.vec()  # nodes
        elif present != 0:
            raise _fail("bad optional<UpdatePath> flag")
    else:
        start = reader.pos
        _read_proposal(reader)
        body = bytes(reader._buf[start : reader.pos])
    reader.vec()  # signature
    if content_type == CONTENT_COMMIT:
        reader.vec()  # confirmation_tag
    if sender_type == SENDER_MEMBER:
        reader.vec()  # membership_tag
    return int.from_bytes(group_id_bytes, "big"), epoch, sender_type, sender_index, body, has_path


def _parse_refs(proposals: bytes) -> tuple[bytes, ...]:
    reader = Reader(proposals)
    refs: list[bytes] = []
    while reader.remaining:
        kind = reader.u8()
        if kind != PROPOSAL_OR_REF_REFERENCE:
            raise _fail("commit carries an inline proposal")
        refs.append(reader.vec())
    return tuple(refs)


@attrs.frozen
class Welcome:
    """A bare Welcome; ``new_members`` are the KeyPackageRefs it holds secrets for."""

    raw: bytes = attrs.field(repr=False)
    new_members: tuple[bytes, ...]

    @classmethod
    def parse(cls, buf: bytes) -> Welcome:
        reader = Reader(buf)
        suite = reader.u16()
        if suite != CIPHER_SUITE_P256:
            raise _fail(f"welcome cipher suite {suite}")
        secrets = Reader(reader.vec())
        members: list[bytes] = []
        while secrets.remaining:
            members.append(secrets.vec())
            secrets.vec()  # kem_output
            secrets.vec()  # ciphertext
        reader.vec()  # encrypted_group_info
        reader.end()
        return cls(bytes(buf), tuple(members))


def split_commit_welcome(payload: bytes) -> tuple[CommitMessage, Welcome | None]:
    """Split an op28 payload: the commit has no outer length, so parse it to find the Welcome."""
    reader = Reader(payload)
    group_id, epoch, sender_type, sender_index, proposals, has_path = _read_public_message(
        reader, expect_content=CONTENT_COMMIT
    )
    if sender_type != SENDER_MEMBER:
        raise _fail("commit not sent by a member")
    commit = CommitMessage(
        payload[: reader.pos], group_id, epoch, sender_index, _parse_refs(proposals), has_path
    )
    welcome = Welcome.parse(payload[reader.pos :]) if reader.remaining else None
    return commit, welcome
