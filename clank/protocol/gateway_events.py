"""Main-gateway core events (sans-io values): what :class:`~clank.protocol.gateway.GatewayCore` returns.

Split from :mod:`clank.protocol.gateway` (the core).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from clank.errors import ClankError, MalformedMessage
from clank.protocol.gateway_policy import Phase


@attrs.frozen
class SendFrame:
    """Send this text frame. ``text`` may hold the token (Identify/Resume): never logged."""

    op: int
    text: str = attrs.field(repr=False)


@attrs.frozen
class Dispatch:
    name: str
    data: Any
    seq: int | None


@attrs.frozen
class ReadyInfo:
    user_id: str
    session_id: str = attrs.field(repr=False)
    resume_gateway_url: str
    user: Mapping[str, Any] = attrs.field(eq=False, repr=False)
    guilds: tuple[Any, ...] = attrs.field(eq=False, repr=False)

    @property
    def guild_ids(self) -> tuple[str, ...]:
        return tuple(str(g["id"]) for g in self.guilds if isinstance(g, Mapping) and "id" in g)

    @classmethod
    def parse(cls, data: Any) -> ReadyInfo:
        if not isinstance(data, Mapping):
            raise MalformedMessage("gateway READY", "payload is not an object")
        user = data.get("user")
        if not isinstance(user, Mapping) or not isinstance(user.get("id"), str):
            raise MalformedMessage("gateway READY", "missing user.id")
        session_id = data.get("session_id")
        if not isinstance(session_id, str) or not session_id:
            raise MalformedMessage("gateway READY", "missing session_id")
        resume_url = data.get("resume_gateway_url")
        if not isinstance(resume_url, str) or not resume_url:
            raise MalformedMessage("gateway READY", "missing resume_gateway_url")
        guilds = data.get("guilds", [])
        if not isinstance(guilds, list):
            raise MalformedMessage("gateway READY", "guilds is not a list")
        return cls(
            user_id=user["id"],
            session_id=session_id,
            resume_gateway_url=resume_url,
            user=user,
            guilds=tuple(guilds),
        )


@attrs.frozen
class Ready:
    info: ReadyInfo


@attrs.frozen
class Resumed:
    replayed: int  # dispatches the server replayed between our Resume and RESUMED


@attrs.frozen
class Close:
    """Close the current socket with ``code``; then call ``connection_closed``."""

    code: int
    reason: str


@attrs.frozen
class Connect:
    """Open a socket to ``url`` after sleeping ``delay`` seconds, then call ``connection_made``."""

    url: str
    delay: float
    resume: bool
    attempt: int  # consecutive attempts without reaching READY/RESUMED (0 = healthy)
    reason: str


@attrs.frozen
class Stop:
    error: ClankError


Event = SendFrame | Dispatch | Ready | Resumed | Close


@attrs.frozen
class CoreStatistics:
    phase: Phase
    connects: int
    identifies: int
    resumes: int
    heartbeats_sent: int
    heartbeat_acks: int
    zombies: int
    dispatches: int
    duplicates_dropped: int
    last_latency: float | None
    last_seq: int | None
