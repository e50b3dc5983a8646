"""What one media leg needs: its parameters and where its sockets come from.

:class:`MediaConnectionParams` is everything :func:`clank.io.media_connection.open_media_connection`
needs for one leg (voice, stream_watch, stream_publish): endpoint, server and channel ids, our
session id and token, the DAVE group, the streams to request, settings. Its ``transports``
(:class:`MediaTransports`) are injected factories for the leg's websocket and datagram endpoint:
production uses trio-websocket and real UDP sockets (:data:`REAL_TRANSPORTS`); tests pass the
in-memory network of :mod:`clank.io.fakenet`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Final, Protocol

import attrs

from clank.config import Settings
from clank.io.udp import Address, DatagramEndpoint, open_udp_endpoint
from clank.io.websocket import open_websocket
from clank.protocol import voice_gateway as vgc
from clank.protocol.media_leg import MediaLegConfig
from clank.wire import voice_gateway as vg

__all__ = [
    "REAL_TRANSPORTS",
    "DatagramFactory",
    "MediaConnectionParams",
    "MediaTransports",
    "MessageSocket",
    "WebSocketFactory",
]

# --------------------------------------------------------------------------- transports


class MessageSocket(Protocol):
    """A websocket as the driver uses it (``clank.io.websocket.WebSocket`` and the fake net's)."""

    async def receive(self) -> str | bytes: ...
    async def send(self, message: str | bytes) -> None: ...
    async def aclose(self, code: int = 1000, reason: str = "", *, cancelled: bool | None = None) -> None:
        """``cancelled``: the caller's scope was cancelled (no close reply can be read then)."""


WebSocketFactory = Callable[[str], AbstractAsyncContextManager[MessageSocket]]
"""``url`` -> an open websocket (raises ``TransportError`` when it cannot connect)."""
DatagramFactory = Callable[[Address, int], AbstractAsyncContextManager[DatagramEndpoint]]
"""``(remote address, receive buffer bytes)`` -> an endpoint connected to the media server."""


def _local_host_for(remote_host: str) -> str:
    """Bind loopback for a loopback server (the sandbox), every interface otherwise."""
    return "127.0.0.1" if remote_host.startswith("127.") else "0.0.0.0"


def _open_real_datagram(remote: Address, rcvbuf: int) -> AbstractAsyncContextManager[DatagramEndpoint]:
    return open_udp_endpoint(remote, local_host=_local_host_for(remote[0]), rcvbuf=rcvbuf)


@attrs.frozen
class MediaTransports:
    """Where a leg's websocket and datagram endpoint come from."""

    open_websocket: WebSocketFactory
    open_datagram: DatagramFactory


REAL_TRANSPORTS: Final = MediaTransports(open_websocket=open_websocket, open_datagram=_open_real_datagram)


# --------------------------------------------------------------------------- parameters


@attrs.frozen
class MediaConnectionParams:
    """Everything one leg needs.

    ``dave_group_id``: ``dave_group_id_for_voice`` / ``dave_group_id_for_stream`` (wire.gateway_events).
    """

    role: vg.Role
    endpoint: str
    server_id: str
    channel_id: str | None
    user_id: str
    session_id: str = attrs.field(repr=False)
    token: str = attrs.field(repr=False)
    dave_group_id: int
    settings: Settings = attrs.field(factory=Settings, repr=False)
    video: bool = True
    streams: tuple[vg.StreamRequest, ...] = (vg.SCREEN_STREAM,)
    codecs: tuple[vg.Codec, ...] | None = None
    sink_wants_format: vg.SinkWantsFormat = vg.SinkWantsFormat.NESTED
    heartbeat_cap: float | None = None
    transports: MediaTransports = attrs.field(default=REAL_TRANSPORTS, repr=False, eq=False)

    def gateway_config(self) -> vgc.VoiceGatewayConfig:
        voice = self.settings.voice
        return vgc.VoiceGatewayConfig(
            role=self.role,
            server_id=self.server_id,
            channel_id=self.channel_id,
            user_id=self.user_id,
            session_id=self.session_id,
            token=self.token,
            max_dave_protocol_version=voice.max_dave_protocol_version,
            video=self.video,
            streams=self.streams,
            mode_preference=tuple(voice.mode_preference),
            codecs=self.codecs,
            sink_wants_format=self.sink_wants_format,
            heartbeat_cap=self.heartbeat_cap,
        )

    def leg_config(self) -> MediaLegConfig:
        voice = self.settings.voice
        return MediaLegConfig(
            gateway=self.gateway_config(),
            dave_group_id=self.dave_group_id,
            max_dave_protocol_version=voice.max_dave_protocol_version,
        )
