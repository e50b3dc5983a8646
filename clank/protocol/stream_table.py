"""The Go Live streams one registry knows, and credentials waiting for their stream (sans-io).

:class:`StreamTable` is the state half of :class:`clank.protocol.streams.StreamRegistry`: other
users' streams by key (oldest first), our own Go Live kept apart, the owner most recently upserted
(the implicit primary preference, see the registry's docstring) and STREAM_SERVER_UPDATEs kept
for streams not created yet (at most :data:`PENDING_CREDENTIALS_LIMIT`, each for
:data:`PENDING_CREDENTIALS_TTL` s). The registry interprets dispatches and tells the table what
changed; changes worth reporting come back as events. Values are replaced, never mutated.
"""

from __future__ import annotations

from typing import Final

import attrs

from clank.protocol.stream_events import (
    CredentialsReceived,
    PendingCredentialsDropped,
    ServerUpdateNoStream,
    StreamEvent,
    StreamInfo,
    UserGoLiveEnded,
    primary_order_key,
)
from clank.wire.gateway_events import StreamKey, StreamServerUpdate, VoiceState

__all__ = ["PENDING_CREDENTIALS_LIMIT", "PENDING_CREDENTIALS_TTL", "StreamTable", "elapsed_ms"]

PENDING_CREDENTIALS_LIMIT: Final = 16
"""STREAM_SERVER_UPDATEs kept for streams not created yet; the oldest is dropped beyond this."""

PENDING_CREDENTIALS_TTL: Final = 60.0
"""Seconds a pending STREAM_SERVER_UPDATE waits for its STREAM_CREATE before it is dropped."""


@attrs.frozen
class _PendingCredentials:
    update: StreamServerUpdate
    received_at: float


def _short_endpoint(endpoint: str | None) -> str | None:
    return None if endpoint is None else f"{endpoint.split('.')[0]}..."


def elapsed_ms(since: float, now: float) -> int:
    """Whole milliseconds from ``since`` to ``now`` (the events' latency and age fields)."""
    return round((now - since) * 1000)


class StreamTable:
    """Known streams of one voice session of ``user_id`` (ours apart), plus pending credentials."""

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self._streams: dict[str, StreamInfo] = {}
        self._own: StreamInfo | None = None
        self._pending: dict[str, _PendingCredentials] = {}
        self._serial = 0
        self.touched_owner: str | None = None
        """The owner of the stream most recently seeded/created/credentialed (None after a removal)."""

    # --- streams -------------------------------------------------------------------------------

    def is_own(self, key: StreamKey) -> bool:
        return key.owner_id == self.user_id

    @property
    def own(self) -> StreamInfo | None:
        return self._own

    def lookup(self, key: StreamKey) -> StreamInfo | None:
        if self.is_own(key):
            own = self._own
            return own if own is not None and own.key == key else None
        return self._streams.get(str(key))

    def store(self, info: StreamInfo, *, touch: bool = True) -> None:
        """Save ``info``; ``touch`` makes its owner the implicit primary preference (an upsert)."""
        if self.is_own(info.key):
            self._own = info
        else:
            self._streams[str(info.key)] = info
            if touch:
                self.touched_owner = info.owner_id

    def remove(self, key: StreamKey) -> None:
        if self.is_own(key):
            self._own = None
        elif self._streams.pop(str(key), None) is not None:
            self.touched_owner = None

    def forget_own(self) -> None:
        self._own = None

    def end_user_streams(
        self, user_id: str, reason: str, *, keep: StreamKey | None = None, announce: VoiceState | None = None
    ) -> list[StreamEvent]:
        """Remove every stream of ``user_id`` except ``keep``; one event per removed stream, or one
        without a key (placed at the ``announce`` voice state) when the user had none."""
        ended = [s for s in self._streams.values() if s.owner_id == user_id and s.key != keep]
        events: list[StreamEvent] = []
        for stream in ended:
            del self._streams[str(stream.key)]
            events.append(
                UserGoLiveEnded(
                    user_id=user_id,
                    guild_id=stream.guild_id,
                    channel_id=stream.channel_id,
                    stream_key=stream.key,
                    reason=reason,
                )
            )
        if ended:
            self.touched_owner = None
        elif announce is not None:
            events.append(
                UserGoLiveEnded(
                    user_id=user_id,
                    guild_id=announce.guild_id,
                    channel_id=announce.channel_id,
                    stream_key=None,
                    reason=reason,
                )
            )
        return events

    def streams(self) -> tuple[StreamInfo, ...]:
        """Every known stream of other users (provisional ones included), oldest first."""
        return tuple(self._streams.values())

    def for_user(self, user_id: str, guild_id: str | None = None) -> StreamInfo | None:
        for stream in self._streams.values():
            if stream.owner_id == user_id and (guild_id is None or stream.guild_id == guild_id):
                return stream
        return None

    def primary(self, preferred_owner_id: str | None) -> StreamInfo | None:
        if not self._streams:
            return None
        return min(self._streams.values(), key=lambda s: primary_order_key(s, preferred_owner_id))

    # --- credentials ---------------------------------------------------------------------------

    def next_serial(self) -> int:
        """The next number in the order of requests and credentials (times can be equal: a
        virtual clock, or one dispatch batch; this order cannot)."""
        self._serial += 1
        return self._serial

    def set_credentials(
        self, info: StreamInfo, update: StreamServerUpdate, now: float, *, from_pending: bool
    ) -> CredentialsReceived:
        self.store(
            attrs.evolve(
                info,
                endpoint=update.endpoint,
                token=update.token,
                credentials_received_at=now,
                credentials_serial=self.next_serial(),
            )
        )
        return CredentialsReceived(
            stream_key=info.key,
            user_id=info.owner_id,
            endpoint=_short_endpoint(update.endpoint),
            has_token=bool(update.token),
            rtc_server_id=info.rtc_server_id,
            latency_ms=elapsed_ms(info.discovered_at, now),
            own=self.is_own(info.key),
            from_pending=from_pending,
        )

    def clear_credentials(self, key: StreamKey) -> bool:
        """Reallocation (``endpoint: null``): the stream's credentials are gone; False if unknown."""
        self._pending.pop(str(key), None)
        info = self.lookup(key)
        if info is None:
            return False
        self.store(attrs.evolve(info, endpoint=None, token=None, credentials_received_at=None), touch=False)
        return True

    def keep_pending(self, update: StreamServerUpdate, now: float) -> list[StreamEvent]:
        """Credentials for a stream not created yet: kept (bounded) until its STREAM_CREATE."""
        events: list[StreamEvent] = [ServerUpdateNoStream(stream_key=update.stream_key)]
        name = str(update.stream_key)
        self._pending.pop(name, None)
        self._pending[name] = _PendingCredentials(update=update, received_at=now)
        while len(self._pending) > PENDING_CREDENTIALS_LIMIT:
            oldest = next(iter(self._pending))
            dropped = self._pending.pop(oldest)
            events.append(PendingCredentialsDropped(stream_key=dropped.update.stream_key, reason="overflow"))
        return events

    def apply_pending(self, key: StreamKey, now: float) -> list[StreamEvent]:
        pending = self._pending.pop(str(key), None)
        info = self.lookup(key)
        if pending is None or info is None:
            return []
        return [self.set_credentials(info, pending.update, now, from_pending=True)]

    def drop_pending(self, key: StreamKey) -> None:
        self._pending.pop(str(key), None)

    def expire_pending(self, now: float) -> list[StreamEvent]:
        expired = [p for p in self._pending.values() if now - p.received_at >= PENDING_CREDENTIALS_TTL]
        for pending in expired:
            del self._pending[str(pending.update.stream_key)]
        return [PendingCredentialsDropped(stream_key=p.update.stream_key, reason="expired") for p in expired]

    @property
    def pending_count(self) -> int:
        return len(self._pending)
