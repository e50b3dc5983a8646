"""An in-memory voice server for DAVE tests: DaveGroupServer + real davey clients, no sockets.

Every direction of every connection is a FIFO link; a seeded RNG picks which link delivers next, so
commits race the way they do over real websockets while each connection keeps its order.
"""

from __future__ import annotations

import random
import struct
from collections import deque
from typing import Any, Protocol

import attrs
import davey

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
from clank.sandbox.dave import DaveGroupServer, Outgoing

GROUP_ID = 927310423890473011


class Member(Protocol):
    user_id: int

    def on_session_description(self, dave_protocol_version: int) -> list[DaveFrame]: ...
    def on_binary(self, op: int, payload: bytes) -> list[DaveFrame]: ...
    def on_json(self, op: int, d: object) -> list[DaveFrame]: ...
    def clients_connected(self, user_ids: list[int]) -> None: ...
    def client_disconnected(self, user_id: int) -> None: ...
    def encrypt_opus(self, frame: bytes) -> bytes: ...
    def decrypt(self, user_id: int, media: Any, frame: bytes) -> bytes: ...
    @property
    def ready(self) -> bool: ...
    @property
    def epoch(self) -> int | None: ...


class PlainDaveyClient:
    """A second, independent client: discord.py's opcode handling written directly on davey."""

    def __init__(self, user_id: int, group_id: int) -> None:
        self.user_id = user_id
        self.group_id = group_id
        self.session: davey.DaveSession | None = None
        self.protocol_version = 0
        self.pending: dict[int, int] = {}

    @property
    def ready(self) -> bool:
        return self.session is not None and self.session.ready

    @property
    def epoch(self) -> int | None:
        return None if self.session is None else self.session.epoch

    def _reinit(self) -> list[DaveFrame]:
        if self.session is None:
            self.session = davey.DaveSession(self.protocol_version, self.user_id, self.group_id)
        else:
            self.session.reinit(self.protocol_version, self.user_id, self.group_id)
        return [DaveBinary(OP_KEY_PACKAGE, self.session.get_serialized_key_package())]

    def on_session_description(self, dave_protocol_version: int) -> list[DaveFrame]:
        self.protocol_version = dave_protocol_version
        return self._reinit() if dave_protocol_version else []

    def clients_connected(self, user_ids: list[int]) -> None:
        pass

    def client_disconnected(self, user_id: int) -> None:
        pass

    def _recover(self, tid: int) -> list[DaveFrame]:
        return [DaveJson(OP_INVALID_COMMIT_WELCOME, {"transition_id": tid}), *self._reinit()]

    def on_binary(self, op: int, payload: bytes) -> list[DaveFrame]:
        if self.session is None:
            return []  # discord.py drops binary DAVE ops while it has no session
        if op == OP_EXTERNAL_SENDER:
            self.session.set_external_sender(payload)
            return []
        if op == OP_PROPOSALS:
            kind = (
                davey.ProposalsOperationType.append
                if payload[0] == 0
                else davey.ProposalsOperationType.revoke
            )
            result = self.session.process_proposals(kind, payload[1:])
            return (
                []
                if result is None
                else [DaveBinary(OP_COMMIT_WELCOME, result.commit + (result.welcome or b""))]
            )
        (tid,) = struct.unpack_from(">H", payload)
        try:
            if op == OP_ANNOUNCE_COMMIT:
                self.session.process_commit(payload[2:])
            else:
                assert op == OP_WELCOME
                self.session.process_welcome(payload[2:])
        except ValueError:
            return self._recover(tid)
        if tid == 0:
            return []
        self.pending[tid] = self.protocol_version
        return [DaveJson(OP_TRANSITION_READY, {"transition_id": tid})]

    def on_json(self, op: int, d: object) -> list[DaveFrame]:
        assert isinstance(d, dict)
        if op == OP_PREPARE_TRANSITION:
            self.pending[d["transition_id"]] = d["protocol_version"]
            if d["protocol_version"] == 0 and self.session is not None:
                self.session.set_passthrough_mode(True, 120)
            return [DaveJson(OP_TRANSITION_READY, {"transition_id": d["transition_id"]})]
        if op == OP_EXECUTE_TRANSITION:
            if d["transition_id"] in self.pending:
                self.protocol_version = self.pending.pop(d["transition_id"])
            return []
        if op == OP_PREPARE_EPOCH:
            if d["epoch"] == 1:
                self.protocol_version = d["protocol_version"]
                return self._reinit()
            return []
        raise AssertionError(op)

    def encrypt_opus(self, frame: bytes) -> bytes:
        assert self.session is not None
        if self.protocol_version == 0:
            return frame
        return self.session.encrypt_opus(frame)

    def decrypt(self, user_id: int, media: Any, frame: bytes) -> bytes:
        assert self.session is not None
        if self.protocol_version == 0:
            return frame
        return self.session.decrypt(user_id, davey.MediaType.audio, frame)


@attrs.frozen
class Announce:
    """op11 (connected=True) / op13 as the voice server sends them, in order with the DAVE frames."""

    user_ids: tuple[int, ...]
    connected: bool


class DaveNet:
    """The voice server's DAVE side plus the op11/op13 announcements, routed in memory."""

    def __init__(self, seed: int = 0, *, group_id: int = GROUP_ID, protocol_version: int = 1) -> None:
        self.rng = random.Random(seed)
        self.group_id = group_id
        self.server = DaveGroupServer(group_id, protocol_version=protocol_version)
        self.members: dict[int, Member] = {}
        self.to_client: dict[int, deque[DaveFrame | Announce]] = {}
        self.to_server: dict[int, deque[DaveFrame]] = {}
        self.now = 0.0
        self.delivered = 0
        # Hooks for fault injection: (user, frame) -> frame to deliver instead.
        self.tamper: dict[int, Any] = {}

    def join(self, member: Member) -> None:
        user = member.user_id
        others = list(self.members)
        self.members[user] = member
        self.to_client[user] = deque()
        self.to_server[user] = deque()
        self.to_client[user].append(Announce(tuple(others), True))
        for other in others:
            self.to_client[other].append(Announce((user,), True))
        self._to_server(user, member.on_session_description(self.server.protocol_version))
        self.route(self.server.connect(user, self.now))

    def leave(self, user: int) -> None:
        del self.members[user]
        del self.to_client[user]
        del self.to_server[user]
        for other in self.members:
            self.to_client[other].append(Announce((user,), False))
        self.route(self.server.disconnect(user, self.now))

    def route(self, outgoing: list[Outgoing]) -> None:
        for user, frame in outgoing:
            if user in self.to_client:
                self.to_client[user].append(frame)

    def _to_server(self, user: int, frames: list[DaveFrame]) -> None:
        self.to_server[user].extend(frames)

    def step(self) -> bool:
        links = [
            (d, u)
            for d in ("c", "s")
            for u, q in (self.to_client if d == "c" else self.to_server).items()
            if q
        ]
        if not links:
            return False
        direction, user = self.rng.choice(links)
        self.delivered += 1
        if direction == "c":
            frame = self.to_client[user].popleft()
            hook = self.tamper.get(user)
            if hook is not None:
                frame = hook(frame)
            member = self.members[user]
            if isinstance(frame, Announce):
                if frame.connected:
                    member.clients_connected(list(frame.user_ids))
                else:
                    member.client_disconnected(frame.user_ids[0])
            elif isinstance(frame, DaveBinary):
                self._to_server(user, member.on_binary(frame.op, frame.payload))
            else:
                self._to_server(user, member.on_json(frame.op, frame.data))
        else:
            frame = self.to_server[user].popleft()
            if isinstance(frame, DaveBinary):
                self.route(self.server.receive_binary(user, frame.op, frame.payload, self.now))
            else:
                self.route(self.server.receive_json(user, frame.op, frame.data, self.now))
        return True

    def settle(self, max_steps: int = 5000) -> None:
        for _ in range(max_steps):
            if not self.step():
                if self.server.next_deadline() is None:
                    return
                self.now = max(self.now, self.server.next_deadline() or self.now)
                self.route(self.server.tick(self.now))
        raise AssertionError("DAVE exchange did not settle")

    def assert_consistent(self) -> None:
        """Every member ready, at the server's epoch, with the server's roster."""
        if len(self.members) < 2:
            return
        stats = self.server.statistics()
        assert set(stats.roster) == set(self.members), (stats.roster, list(self.members))
        for user, member in self.members.items():
            assert member.ready, f"{user} not ready"
            assert member.epoch == stats.epoch, (user, member.epoch, stats.epoch)

    def exchange_opus(self, frames_per_member: int = 3) -> int:
        """Each member sends Opus frames to all others; returns how many failed to decrypt."""
        failures = 0
        if len(self.members) < 2:
            return 0
        for sender_id, sender in self.members.items():
            for i in range(frames_per_member):
                plain = bytes([0x78, i]) + self.rng.randbytes(118)
                wire = sender.encrypt_opus(plain)
                for receiver_id, receiver in self.members.items():
                    if receiver_id == sender_id:
                        continue
                    try:
                        got = receiver.decrypt(sender_id, "audio", wire)
                    except Exception:
                        failures += 1
                        continue
                    if got != plain:
                        failures += 1
        return failures
