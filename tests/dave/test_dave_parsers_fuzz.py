"""Every DAVE parser of network bytes, client and server side, fails only with our Malformed* errors."""

from __future__ import annotations

import davey
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clank.crypto.dave import (
    OP_ANNOUNCE_COMMIT,
    OP_EXTERNAL_SENDER,
    OP_PROPOSALS,
    OP_WELCOME,
    DaveSessionCore,
)
from clank.crypto.dave_wire import DaveTrailer, describe_frame, parse_transition
from clank.errors import MalformedMessage, MalformedPacket
from clank.sandbox.dave import DaveGroupServer, ExternalSender, KeyPackage
from clank.sandbox.dave.mls import (
    ProposalsPayload,
    Welcome,
    add_proposal,
    append_payload,
    encode_varint,
    revoke_payload,
    sign_proposal,
    split_commit_welcome,
)

GROUP = 927310423890473011
SENDER = ExternalSender.generate()


def _key_package(user: int = 7) -> bytes:
    return davey.DaveSession(1, user, GROUP).get_serialized_key_package()


def _real_commit_welcome() -> bytes:
    session = davey.DaveSession(1, 1, GROUP)
    session.set_external_sender(SENDER.serialize())
    package = KeyPackage.parse(_key_package(2))
    proposal = sign_proposal(SENDER, GROUP, 0, add_proposal(package))
    result = session.process_proposals(
        davey.ProposalsOperationType.append, append_payload([proposal.message])[1:]
    )
    assert result is not None and result.welcome is not None
    return result.commit + result.welcome


KEY_PACKAGE = _key_package()
COMMIT_WELCOME = _real_commit_welcome()


def test_external_sender_payload_has_discords_layout() -> None:
    payload = SENDER.serialize()
    assert len(payload) == 71 and payload[:3] == b"\x40\x41\x04" and payload[-4:] == b"\x00\x01\x01\x00"


def test_varint_is_minimal() -> None:
    assert encode_varint(63) == b"\x3f" and encode_varint(496) == b"\x41\xf0"
    assert encode_varint(20000) == b"\x80\x00\x4e\x20"


def test_real_key_package_and_commit_parse() -> None:
    package = KeyPackage.parse(KEY_PACKAGE)
    assert package.user_id == 7 and len(package.ref) == 32
    commit, welcome = split_commit_welcome(COMMIT_WELCOME)
    assert commit.group_id == GROUP and commit.epoch == 0 and len(commit.proposal_refs) == 1
    assert welcome is not None and len(welcome.new_members) == 1


def test_tampered_key_package_signature_is_rejected() -> None:
    tampered = bytearray(KEY_PACKAGE)
    tampered[-10] ^= 1
    with pytest.raises(MalformedMessage):
        KeyPackage.parse(bytes(tampered))


@pytest.mark.parametrize("blob", [KEY_PACKAGE, COMMIT_WELCOME], ids=["key_package", "commit_welcome"])
def test_every_truncation_is_malformed(blob: bytes) -> None:
    parse = KeyPackage.parse if blob is KEY_PACKAGE else split_commit_welcome
    commit_only = len(split_commit_welcome(COMMIT_WELCOME)[0].raw)
    for cut in range(len(blob)):
        if blob is COMMIT_WELCOME and cut == commit_only:
            continue  # a commit without a Welcome is a valid op28
        with pytest.raises(MalformedMessage):
            parse(blob[:cut])


@given(st.binary(max_size=600))
def test_server_parsers_raise_only_malformed_message(data: bytes) -> None:
    for parse in (KeyPackage.parse, split_commit_welcome, Welcome.parse, ProposalsPayload.parse):
        try:
            parse(data)
        except MalformedMessage:
            pass


@given(st.integers(0, len(COMMIT_WELCOME) - 1), st.integers(0, 255))
def test_bit_flipped_commit_welcome_raises_only_malformed_message(index: int, value: int) -> None:
    mutated = bytearray(COMMIT_WELCOME)
    mutated[index] = value
    try:
        split_commit_welcome(bytes(mutated))
    except MalformedMessage:
        pass


@given(st.sampled_from([26, 28, 99]), st.binary(max_size=400))
def test_group_server_drops_garbage_from_clients(op: int, data: bytes) -> None:
    server = DaveGroupServer(GROUP, external_sender=SENDER)
    server.connect(1, 0.0)
    assert server.receive_binary(1, op, data, 0.0) == []


@given(
    st.sampled_from([OP_EXTERNAL_SENDER, OP_PROPOSALS, OP_ANNOUNCE_COMMIT, OP_WELCOME]),
    st.binary(max_size=300),
)
@settings(max_examples=60)
def test_client_binary_handlers_raise_only_malformed_message(op: int, data: bytes) -> None:
    core = DaveSessionCore(1, GROUP)
    core.on_session_description(1)
    core.on_external_sender(SENDER.serialize())
    try:
        core.on_binary(op, data)
    except MalformedMessage:
        pass


def test_client_proposals_vector_checks() -> None:
    core = DaveSessionCore(1, GROUP)
    core.on_session_description(1)
    core.on_external_sender(SENDER.serialize())
    for bad in (b"", b"\x02\x00", b"\x00", b"\x00\x05ab", b"\x00\xc0"):
        assert core.on_proposals(bad) == []  # counted and dropped (test_dave_proposals_failures.py)
    assert core.statistics().proposals_failed == 5
    assert core.on_proposals(revoke_payload([])) == []
    with pytest.raises(MalformedMessage):
        parse_transition(b"\x00\x01")


@given(st.binary(max_size=64))
def test_trailer_parser_raises_only_malformed_packet(data: bytes) -> None:
    try:
        DaveTrailer.parse(data)
    except MalformedPacket:
        pass
    info = describe_frame(data)
    assert info["length"] == len(data)


@given(st.binary(max_size=40), st.binary(min_size=1, max_size=12))
def test_trailer_suffix_fuzz(payload: bytes, trailer: bytes) -> None:
    describe_frame(payload + trailer + b"\xfa\xfa")
