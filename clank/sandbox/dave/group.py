"""Server-side DAVE group bookkeeping: the voice server's MLS external sender, sans-io.

One ``DaveGroupServer`` per voice/stream "call" (its group id). The voice server feeds it
connections, client DAVE frames and the time; it returns ``(recipient_user_id, frame)`` pairs where
frame is a ``DaveBinary`` (server -> client binary op, payload after the op byte; the voice server
adds ``[seq u16]``) or a ``DaveJson``. Rules and pitfalls: docs/dave.md (server side) and the pitfalls below.

Proposal distribution is computed, not scripted: after every event the server derives the set of
proposals each recipient *should* hold (``_desired``) and brings what it holds in line. A recipient
whose set changes while it still holds proposals gets "revoke all + re-append the survivors" (freshly
signed): a partial revoke makes davey commit without a Welcome (pitfall 1), and identical bytes go to
every member (pitfall 3). A commit is accepted only as its sender's latest (pitfall 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import attrs

from clank.crypto.dave import (
    OP_ANNOUNCE_COMMIT,
    OP_COMMIT_WELCOME,
    OP_EXECUTE_TRANSITION,
    OP_EXTERNAL_SENDER,
    OP_INVALID_COMMIT_WELCOME,
    OP_KEY_PACKAGE,
    OP_PREPARE_EPOCH,
    OP_PREPARE_TRANSITION,
    OP_PROPOSALS,
    OP_TRANSITION_READY,
    OP_WELCOME,
    DaveBinary,
    DaveFrame,
    DaveJson,
)
from clank.errors import MalformedMessage
from clank.sandbox.dave.mls import (
    ExternalSender,
    KeyPackage,
    SignedProposal,
    add_proposal,
    append_payload,
    remove_proposal,
    revoke_payload,
    sign_proposal,
    split_commit_welcome,
)
from clank.wire.voice_gateway import TransitionPayload

Outgoing = tuple[int, DaveFrame]

TRANSITION_TIMEOUT_S: Final = 10.0
_TID_MODULUS: Final = 1 << 16


@attrs.frozen
class _Key:
    """What a proposal does: ``add`` (subject = user id, with that user's package) or ``remove`` (leaf)."""

    kind: str
    subject: int
    package_ref: bytes = b""


@attrs.frozen
class _Held:
    key: _Key
    proposal: SignedProposal


@attrs.define
class _Transition:
    participants: frozenset[int]
    outstanding: set[int]
    deadline: float


@attrs.frozen
class DaveGroupStatistics:
    group_id: int
    protocol_version: int
    epoch: int
    roster: Mapping[int, int]
    pending_key_packages: frozenset[int]
    commits_accepted: int
    commits_dropped: Mapping[str, int]
    key_packages_rejected: int
    open_transitions: int
    invalid_commit_reports: int


class DaveGroupServer:
    """The external sender and group bookkeeping for one call."""

    def __init__(
        self,
        group_id: int,
        *,
        protocol_version: int = 1,
        transition_timeout: float = TRANSITION_TIMEOUT_S,
        external_sender: ExternalSender | None = None,
    ) -> None:
        self.group_id = group_id
        self.protocol_version = protocol_version
        self.transition_timeout = transition_timeout
        self.external_sender = external_sender or ExternalSender.generate()
        self._op25 = self.external_sender.serialize()
        self._connected: dict[int, None] = {}  # insertion-ordered set
        self._got_op25: set[int] = set()
        self._packages: dict[int, KeyPackage] = {}
        self._roster: dict[int, int] = {}  # user -> leaf; empty while no group exists (epoch 0)
        self._broken: set[int] = set()  # roster members that re-initialised (op31 / new op26)
        self._epoch = 0
        self._held: dict[int, list[_Held]] = {}
        self._expect_commits: dict[int, int] = {}
        self._transitions: dict[int, _Transition] = {}
        self._next_tid = 1
        self._accepted = 0
        self._dropped: dict[str, int] = {}
        self._rejected_packages = 0
        self._op31s = 0

    # ------------------------------------------------------------------ views

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def external_sender_payload(self) -> bytes:
        """The op25 payload: identical bytes for every member for the life of the call."""
        return self._op25

    def roster(self) -> dict[int, int]:
        return dict(self._roster)

    def statistics(self) -> DaveGroupStatistics:
        return DaveGroupStatistics(
            group_id=self.group_id,
            protocol_version=self.protocol_version,
            epoch=self._epoch,
            roster=dict(self._roster),
            pending_key_packages=frozenset(self._packages),
            commits_accepted=self._accepted,
            commits_dropped=dict(self._dropped),
            key_packages_rejected=self._rejected_packages,
            open_transitions=len(self._transitions),
            invalid_commit_reports=self._op31s,
        )

    def next_deadline(self) -> float | None:
        return min((t.deadline for t in self._transitions.values()), default=None)

    # ------------------------------------------------------------------ connections

    def connect(self, user_id: int, now: float) -> list[Outgoing]:
        """A participant's voice connection is up (after op4): send op25 if DAVE is on."""
        self._connected[user_id] = None
        if self.protocol_version == 0:
            return []
        self._got_op25.add(user_id)
        return [(user_id, DaveBinary(OP_EXTERNAL_SENDER, self._op25))]

    def disconnect(self, user_id: int, now: float) -> list[Outgoing]:
        self._connected.pop(user_id, None)
        self._got_op25.discard(user_id)
        self._packages.pop(user_id, None)
        self._held.pop(user_id, None)
        self._expect_commits.pop(user_id, None)
        out = self._answer_all(user_id)
        return out + self._sync()

    # ------------------------------------------------------------------ client frames

    def receive_binary(self, user_id: int, op: int, payload: bytes, now: float) -> list[Outgoing]:
        """A client binary frame (payload after its op byte). Bad frames are dropped and counted."""
        if user_id not in self._connected or self.protocol_version == 0:
            return []
        if op == OP_KEY_PACKAGE:
            return self._on_key_package(user_id, payload)
        if op == OP_COMMIT_WELCOME:
            return self._on_commit_welcome(user_id, payload, now)
        self._drop("unexpected_op")
        return []

    def receive_json(self, user_id: int, op: int, data: object, now: float) -> list[Outgoing]:
        """A client JSON DAVE op (23 or 31)."""
        if not isinstance(data, dict) or not isinstance(data.get("transition_id"), int):
            raise MalformedMessage("dave", f"op {op} without an integer transition_id")
        tid: int = data["transition_id"]
        if op == OP_TRANSITION_READY:
            return self._answer(user_id, tid)
        if op == OP_INVALID_COMMIT_WELCOME:
            self._op31s += 1
            out = self._answer(user_id, tid)
            # The client re-inits and sends a new op26; until then it is removed (if in the group).
            self._packages.pop(user_id, None)
            self._reinitialised(user_id)
            return out + self._sync()
        raise MalformedMessage("dave", f"unexpected JSON op {op}")

    def tick(self, now: float) -> list[Outgoing]:
        """Execute transitions whose op23s did not all arrive in time."""
        out: list[Outgoing] = []
        for tid, transition in list(self._transitions.items()):
            if transition.deadline <= now:
                out += self._execute(tid)
        return out

    # ------------------------------------------------------------------ protocol version

    def set_protocol_version(self, protocol_version: int, now: float) -> list[Outgoing]:
        """Downgrade to 0 (op21 -> op23s -> op22) or upgrade from 0 (op24 epoch 1 + op25)."""
        if protocol_version == self.protocol_version:
            return []
        old = self.protocol_version
        self.protocol_version = protocol_version
        self._reset_group()
        if protocol_version == 0:
            tid = self._new_transition(frozenset(self._connected), now)
            body = {"transition_id": tid, "protocol_version": 0}
            return [(u, DaveJson(OP_PREPARE_TRANSITION, dict(body))) for u in self._connected]
        assert old == 0
        return self.reset_group(now)

    def reset_group(self, now: float) -> list[Outgoing]:
        """op24 epoch 1: every client re-creates its group and sends a new op26."""
        self._reset_group()
        out: list[Outgoing] = []
        for user in self._connected:
            body = {"protocol_version": self.protocol_version, "epoch": 1}
            out.append((user, DaveJson(OP_PREPARE_EPOCH, body)))
            if user not in self._got_op25:
                self._got_op25.add(user)
                out.append((user, DaveBinary(OP_EXTERNAL_SENDER, self._op25)))
        return out

    # ------------------------------------------------------------------ internals: inputs

    def _on_key_package(self, user_id: int, payload: bytes) -> list[Outgoing]:
        try:
            package = KeyPackage.parse(payload)
        except MalformedMessage:
            self._rejected_packages += 1
            return []
        if package.user_id != user_id:
            self._rejected_packages += 1
            return []
        self._packages[user_id] = package
        self._reinitialised(user_id)
        return self._sync()

    def _reinitialised(self, user_id: int) -> None:
        """The client's davey state was reset: it holds no proposals and leaves the group."""
        self._held.pop(user_id, None)
        self._expect_commits.pop(user_id, None)
        if user_id in self._roster:
            self._broken.add(user_id)

    def _on_commit_welcome(self, user_id: int, payload: bytes, now: float) -> list[Outgoing]:
        expected = self._expect_commits.get(user_id, 0)
        if expected == 0:
            return self._drop("stale_or_unexpected_commit")
        self._expect_commits[user_id] = expected - 1
        if expected != 1:
            return self._drop("superseded_commit")
        try:
            commit, welcome = split_commit_welcome(payload)
        except MalformedMessage:
            return self._drop("malformed_commit")
        if commit.group_id != self.group_id:
            return self._drop("wrong_group")
        if commit.epoch != self._epoch:
            return self._drop("stale_epoch")
        held = self._held.get(user_id, [])
        by_ref = {h.proposal.ref: h for h in held}
        if not held or len(commit.proposal_refs) != len(by_ref) or set(commit.proposal_refs) != set(by_ref):
            return self._drop("proposal_set")
        expected_leaf = 0 if not self._roster else self._roster.get(user_id)
        if expected_leaf is None or user_id in self._broken or commit.sender_leaf != expected_leaf:
            return self._drop("not_a_member")
        ordered = [by_ref[ref] for ref in commit.proposal_refs]
        adds = [h.key for h in ordered if h.key.kind == "add"]
        if adds:
            if welcome is None or set(welcome.new_members) != {k.package_ref for k in adds}:
                return self._drop("welcome_mismatch")
        elif welcome is not None:
            return self._drop("unexpected_welcome")
        return self._accept(user_id, commit.raw, welcome.raw if welcome else None, ordered, now)

    # ------------------------------------------------------------------ internals: commits

    def _accept(
        self, committer: int, commit: bytes, welcome: bytes | None, ordered: list[_Held], now: float
    ) -> list[Outgoing]:
        if not self._roster:
            self._roster = {committer: 0}
            self._packages.pop(committer, None)
        before = [u for u in self._roster if u in self._connected and u not in self._broken]
        leaf_owner = {leaf: user for user, leaf in self._roster.items()}
        removed: set[int] = set()
        for held in ordered:  # RFC 9420 §12.3: removes first, then adds in commit order
            if held.key.kind == "remove" and held.key.subject in leaf_owner:
                user = leaf_owner.pop(held.key.subject)
                removed.add(user)
                del self._roster[user]
                self._broken.discard(user)
        added: list[int] = []
        for held in ordered:
            if held.key.kind == "add":
                occupied = set(self._roster.values())
                leaf = next(i for i in range(len(occupied) + 1) if i not in occupied)
                self._roster[held.key.subject] = leaf
                self._packages.pop(held.key.subject, None)
                added.append(held.key.subject)
        self._epoch += 1
        self._accepted += 1
        self._held.clear()
        self._expect_commits.clear()
        announce = [u for u in before if u not in removed]
        tid = self._new_transition(frozenset(announce) | frozenset(added), now)
        out: list[Outgoing] = [
            (u, DaveBinary(OP_ANNOUNCE_COMMIT, TransitionPayload(tid, commit).serialize())) for u in announce
        ]
        if welcome is not None:
            body = TransitionPayload(tid, welcome).serialize()
            out += [(u, DaveBinary(OP_WELCOME, body)) for u in added if u in self._connected]
        return out + self._sync()

    # ------------------------------------------------------------------ internals: proposals

    def _desired(self) -> dict[int, list[_Key]]:
        if not self._roster:
            pending = [u for u in self._connected if u in self._packages]
            if len(pending) < 2:
                return {}
            return {r: [_Key("add", u, self._packages[u].ref) for u in pending if u != r] for r in pending}
        committers = [u for u in self._roster if u in self._connected and u not in self._broken]
        keys = [
            _Key("remove", leaf)
            for user, leaf in sorted(self._roster.items(), key=lambda item: item[1])
            if user not in self._connected or user in self._broken
        ]
        keys += [
            _Key("add", u, self._packages[u].ref)
            for u in self._connected
            if u in self._packages and (u not in self._roster or u in self._broken)
        ]
        return {r: list(keys) for r in committers} if keys else {}

    def _sync(self) -> list[Outgoing]:
        if self._roster and not any(u in self._connected and u not in self._broken for u in self._roster):
            # Nobody left who could commit: back to the pending state (each client alone at epoch 0).
            self._reset_group(keep_packages=True)
        desired = self._desired()
        for user in self._held:
            # Still holding proposals that are no longer wanted (e.g. the only joiner left): revoke.
            desired.setdefault(user, [])
        changed = [r for r, keys in desired.items() if [h.key for h in self._held.get(r, [])] != keys]
        # Recipients that keep their proposals pin the bytes everyone else must get (pitfall 3).
        signed: dict[_Key, SignedProposal] = {
            h.key: h.proposal for r in desired if r not in changed for h in self._held.get(r, [])
        }
        out: list[Outgoing] = []
        for recipient in changed:
            held = self._held.get(recipient, [])
            if held:
                payload = revoke_payload([h.proposal.ref for h in held])
                out.append((recipient, DaveBinary(OP_PROPOSALS, payload)))
            if not desired[recipient]:
                del self._held[recipient]
                continue
            fresh = [_Held(key, signed.get(key) or self._sign(key, signed)) for key in desired[recipient]]
            self._held[recipient] = fresh
            out.append(
                (recipient, DaveBinary(OP_PROPOSALS, append_payload([h.proposal.message for h in fresh])))
            )
            self._expect_commits[recipient] = self._expect_commits.get(recipient, 0) + 1
        return out

    def _sign(self, key: _Key, cache: dict[_Key, SignedProposal]) -> SignedProposal:
        if key.kind == "add":
            body = add_proposal(self._packages[key.subject])
        else:
            body = remove_proposal(key.subject)
        proposal = sign_proposal(self.external_sender, self.group_id, self._epoch, body)
        cache[key] = proposal
        return proposal

    def _reset_group(self, *, keep_packages: bool = False) -> None:
        self._epoch = 0
        self._roster.clear()
        self._broken.clear()
        self._held.clear()
        self._expect_commits.clear()
        if not keep_packages:
            # After op24/op21 clients re-init: davey dropped the private keys of old packages.
            self._packages.clear()

    # ------------------------------------------------------------------ internals: transitions

    def _new_transition(self, participants: frozenset[int], now: float) -> int:
        tid = self._next_tid
        self._next_tid = tid % (_TID_MODULUS - 1) + 1  # u16, never 0 (0 = "execute now")
        self._transitions[tid] = _Transition(participants, set(participants), now + self.transition_timeout)
        if not participants:
            del self._transitions[tid]
        return tid

    def _answer(self, user_id: int, tid: int) -> list[Outgoing]:
        transition = self._transitions.get(tid)
        if transition is None:
            return []
        transition.outstanding.discard(user_id)
        return [] if transition.outstanding else self._execute(tid)

    def _answer_all(self, user_id: int) -> list[Outgoing]:
        out: list[Outgoing] = []
        for tid in list(self._transitions):
            out += self._answer(user_id, tid)
        return out

    def _execute(self, tid: int) -> list[Outgoing]:
        transition = self._transitions.pop(tid)
        return [
            (u, DaveJson(OP_EXECUTE_TRANSITION, {"transition_id": tid}))
            for u in transition.participants
            if u in self._connected
        ]

    def _drop(self, reason: str) -> list[Outgoing]:
        self._dropped[reason] = self._dropped.get(reason, 0) + 1
        return []
