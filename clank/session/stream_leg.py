"""What the two Go Live legs (``stream_watch`` and ``stream_publish``) share: one registry flow.

Both roles drive the session's :class:`~clank.protocol.streams.StreamRegistry` the same way, one
flow per stream key::

    request      op20 (watch: registry.request_watch) or op18 + op22 (publish: request_go_live)
    credentials  STREAM_CREATE (rtc_server_id) + STREAM_SERVER_UPDATE (endpoint, token), taken
                 from the registry only when fresh: received after our request
                 (:func:`wait_fresh_credentials`)
    leg          :func:`stream_leg_params` -> one stream server WS + UDP
    follow       a new STREAM_SERVER_UPDATE mid-stream -> reconnect the leg on the new credentials
                 (:func:`moved_credentials`); STREAM_DELETE of the key ends the role
                 (:func:`deleted_reason`)
    end          op19 (registry.stop_watch / stop_go_live: nothing after a STREAM_DELETE)

Each dispatch is parsed once, by the registry; a role reads the registry's events from a
:class:`~clank.session.watches.WatchInbox` (the watches' own, or :func:`open_registry_inbox`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar

from clank.config import Settings
from clank.errors import WatchError
from clank.io.media_leg_params import MediaConnectionParams, MediaTransports
from clank.logging import get_logger, register_secret
from clank.protocol.stream_events import DeleteUnknownStream, StreamDeleted, StreamEvent, StreamInfo
from clank.protocol.streams import StreamRegistry
from clank.session.roles import RoleHandle, RoleState
from clank.session.watches import WatchInbox
from clank.wire import voice_gateway as vg
from clank.wire.gateway_events import StreamKey, dave_group_id_for_stream

__all__ = [
    "StreamLegSession",
    "deleted_reason",
    "moved_credentials",
    "open_registry_inbox",
    "stream_channel_id",
    "stream_leg_params",
    "wait_fresh_credentials",
    "wait_leg_ready",
]

log = get_logger("clank.stream_leg")

ApiT = TypeVar("ApiT")


class StreamLegSession(Protocol):
    """What a stream leg needs from the voice session (``clank.session.voice_session``)."""

    registry: StreamRegistry
    settings: Settings
    user_id: str
    transports: MediaTransports

    @property
    def session_id(self) -> str | None: ...


@contextmanager
def open_registry_inbox(registry: StreamRegistry) -> Iterator[WatchInbox]:
    """The registry's events (every dispatch's, in order) while in the block."""
    inbox = WatchInbox(lambda _inbox: unsubscribe())
    unsubscribe = registry.subscribe(inbox.put)
    try:
        yield inbox
    finally:
        inbox.close()


async def wait_fresh_credentials(
    registry: StreamRegistry,
    inbox: WatchInbox,
    key: StreamKey,
    on_events: Callable[[list[StreamEvent]], None],
) -> StreamInfo:
    """``key``'s credentials answering our request (the registry's fresh-credentials rule; callers
    bound the wait). ``on_events`` sees every registry event meanwhile and raises to end the wait
    (a STREAM_DELETE, the target leaving ...)."""
    while True:
        known = registry.fresh_credentials(key)
        if known is not None:
            assert known.token is not None
            register_secret(known.token)
            return known
        await inbox.wait()
        on_events(inbox.take())


def moved_credentials(registry: StreamRegistry, key: StreamKey, current: StreamInfo) -> StreamInfo | None:
    """New full credentials for ``key`` (a STREAM_SERVER_UPDATE mid-stream), else None."""
    known = registry.stream(key)
    if (
        known is None
        or not known.has_credentials
        or (known.endpoint, known.token)
        == (
            current.endpoint,
            current.token,
        )
    ):
        return None
    assert known.token is not None
    register_secret(known.token)
    return known


def deleted_reason(events: Iterable[StreamEvent], key: StreamKey) -> str | None:
    """The reason of a STREAM_DELETE of ``key`` among ``events`` ("" when it gave none), else None."""
    for event in events:
        if isinstance(event, StreamDeleted | DeleteUnknownStream) and event.stream_key == key:
            return event.reason or ""
    return None


def stream_channel_id(creds: StreamInfo) -> str:
    """``rtc_server_id - 1`` (the DAVE group id too); an unexpected ``rtc_channel_id`` is a warning.

    Discord's own documented STREAM_CREATE has ``rtc_channel_id = rtc_server_id + 1`` (and the
    sandbox copies it), so that value is expected and only logged at debug: a warning on every
    stream would be noise. Any other value means the layout changed and is worth a look.
    """
    assert creds.rtc_server_id is not None
    channel_id = str(dave_group_id_for_stream(creds.rtc_server_id))
    announced = creds.rtc_channel_id
    if announced is not None and announced != channel_id:
        server = creds.rtc_server_id
        expected = announced.isdigit() and server.isdigit() and int(announced) == int(server) + 1
        (log.debug if expected else log.warning)(
            "STREAM_CREATE rtc_channel_id differs from rtc_server_id - 1; using the latter",
            rtc_channel_id=announced,
            channel_id=channel_id,
        )
    return channel_id


def stream_leg_params(
    session: StreamLegSession,
    role: vg.Role,
    creds: StreamInfo,
    stream: vg.StreamRequest,
    *,
    sink_wants_format: vg.SinkWantsFormat = vg.SinkWantsFormat.NESTED,
) -> MediaConnectionParams:
    """The stream server leg on ``creds``: server_id = rtc_server_id, our voice session id, one
    stream channel id for identify and DAVE (rtc_server_id - 1: clankvox, worked live), video with
    ``stream``. Raises ``WatchError("not_in_voice")`` without a voice session id (a publish
    reports it as its own reason code, ``PublishError`` being a ``WatchError``)."""
    assert creds.rtc_server_id is not None and creds.endpoint is not None and creds.token is not None
    session_id = session.session_id
    if session_id is None:
        raise WatchError("not_in_voice", "no voice session id")
    return MediaConnectionParams(
        role=role,
        endpoint=creds.endpoint,
        server_id=creds.rtc_server_id,
        channel_id=stream_channel_id(creds),
        user_id=session.user_id,
        session_id=session_id,
        token=creds.token,
        dave_group_id=dave_group_id_for_stream(creds.rtc_server_id),
        settings=session.settings,
        video=True,
        streams=(stream,),
        sink_wants_format=sink_wants_format,
        transports=session.transports,
    )


async def wait_leg_ready(
    role: RoleHandle[ApiT], end_reason: Callable[[], str | None], error: type[WatchError] = WatchError
) -> None:
    """Wait until the role of a starting watch or publish is READY; else raise ``error`` with the
    role's own reason code (``end_reason()``, or ``transport``)."""
    state = await role.wait_state(RoleState.READY)
    if state is RoleState.READY:
        return
    failure = role.error
    if isinstance(failure, WatchError):
        raise error(failure.reason, failure.detail)
    raise error(end_reason() or "transport", role.reason or "")
