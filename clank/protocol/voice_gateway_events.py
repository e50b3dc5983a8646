"""Voice gateway client values (sans-io): the events the core returns, its config and statistics.

Split from :mod:`clank.protocol.voice_gateway` (the core); that module re-exports every name
here, so callers keep using ``vgc.SendText`` & co.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final, Literal

import attrs

from clank.errors import ClankError
from clank.protocol.voice_gateway_close import CLIENT_CLOSE_RESUMABLE, CloseAction
from clank.wire import voice_gateway as vg

__all__ = [
    "HANDSHAKE_BUFFER_LIMIT",
    "OUTBOX_LIMIT",
    "ClientDisconnected",
    "ClientFlags",
    "ClientPlatform",
    "ClientsConnected",
    "Closed",
    "DaveBinary",
    "DaveJson",
    "Event",
    "Failed",
    "HeartbeatAck",
    "MalformedDropped",
    "MediaSinkWants",
    "NeedIpDiscovery",
    "Phase",
    "Ready",
    "Resumed",
    "SendBinary",
    "SendText",
    "SessionEstablished",
    "SessionUpdate",
    "Speaking",
    "SsrcBinding",
    "VideoState",
    "VoiceGatewayConfig",
    "VoiceGatewayStatistics",
]

HANDSHAKE_BUFFER_LIMIT: Final = 512
"""Frames held while the handshake is in progress; overflowing it fails the connection."""

OUTBOX_LIMIT: Final = 64
"""Frames we hold while resuming; beyond it the oldest are dropped (and counted)."""


class Phase(enum.Enum):
    IDLE = "idle"
    HELLO_WAIT = "hello_wait"
    READY_WAIT = "ready_wait"
    RESUME_WAIT = "resume_wait"
    DISCOVERY = "discovery"
    SESSION_WAIT = "session_wait"
    CONNECTED = "connected"
    CLOSED = "closed"


# --------------------------------------------------------------------------- events


@attrs.frozen
class SendText:
    """A text frame for the driver to send. ``text`` may hold the token: not in the repr."""

    op: int
    text: str = attrs.field(repr=False)


@attrs.frozen
class SendBinary:
    op: int
    data: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")


@attrs.frozen
class Ready:
    ssrc: int
    ip: str
    port: int
    modes: tuple[str, ...]
    streams: tuple[vg.ReadyStream, ...]
    experiments: tuple[str, ...]


@attrs.frozen
class NeedIpDiscovery:
    """The driver must run UDP IP discovery against ``ip:port`` and call ``ip_discovered``."""

    ip: str
    port: int
    ssrc: int


@attrs.frozen
class SessionEstablished:
    mode: str
    secret_key: bytes = attrs.field(repr=False)
    audio_codec: str | None = None
    video_codec: str | None = None
    media_session_id: str | None = None
    dave_protocol_version: int = 0
    keyframe_interval: int | None = None
    ssrc: int = 0
    streams: tuple[vg.ReadyStream, ...] = ()


@attrs.frozen
class Resumed:
    """op9: UDP, keys and DAVE state stay as they were; no new op1."""


@attrs.frozen
class Speaking:
    user_id: str
    ssrc: int
    flags: int


@attrs.frozen
class ClientsConnected:
    user_ids: tuple[str, ...]


@attrs.frozen
class ClientDisconnected:
    user_id: str


@attrs.frozen
class VideoState:
    """A remote user's video state after merging a (possibly partial) op12 into what we knew."""

    user_id: str
    audio_ssrc: int | None
    video_ssrc: int | None
    rtx_ssrc: int | None
    streams: tuple[vg.VideoStream, ...]

    @property
    def has_video(self) -> bool:
        return bool(self.video_ssrc) or bool(self.streams)


@attrs.frozen
class SessionUpdate:
    update: vg.SessionUpdate


@attrs.frozen(eq=False)
class MediaSinkWants:
    wants: vg.MediaSinkWants


@attrs.frozen
class MalformedDropped:
    """A message of an established connection had an unexpected shape: logged, counted, dropped."""

    op: int
    reason: str


@attrs.frozen
class ClientFlags:
    user_id: str
    flags: int


@attrs.frozen
class ClientPlatform:
    user_id: str
    platform: int


@attrs.frozen
class DaveJson:
    op: int
    payload: vg.DaveJsonPayload


@attrs.frozen
class DaveBinary:
    op: int
    payload: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")


@attrs.frozen
class HeartbeatAck:
    latency: float
    """Seconds between our op3 and its op6."""


@attrs.frozen
class Closed:
    """The server closed the websocket (or it dropped); ``action`` says what to do next."""

    code: int | None
    reason: str
    action: CloseAction
    error: ClankError = attrs.field(eq=False)


@attrs.frozen
class Failed:
    """We give up on this websocket: close it with ``close_code``, then follow ``action``."""

    reason: str
    action: CloseAction
    error: ClankError = attrs.field(eq=False)
    close_code: int = CLIENT_CLOSE_RESUMABLE


Event = (
    SendText
    | SendBinary
    | Ready
    | NeedIpDiscovery
    | SessionEstablished
    | Resumed
    | Speaking
    | ClientsConnected
    | ClientDisconnected
    | VideoState
    | SessionUpdate
    | MediaSinkWants
    | ClientFlags
    | ClientPlatform
    | MalformedDropped
    | DaveJson
    | DaveBinary
    | HeartbeatAck
    | Closed
    | Failed
)


# --------------------------------------------------------------------------- config, queries


@attrs.frozen
class VoiceGatewayConfig:
    role: vg.Role
    server_id: str
    """Guild id (DM: channel id) on the voice leg; ``rtc_server_id`` on stream legs."""
    channel_id: str | None
    user_id: str
    session_id: str
    token: str = attrs.field(repr=False)
    max_dave_protocol_version: int = 1
    video: bool = True
    streams: tuple[vg.StreamRequest, ...] = (vg.SCREEN_STREAM,)
    mode_preference: tuple[str, ...] = vg.SUPPORTED_MODES
    codecs: tuple[vg.Codec, ...] | None = None
    """``None``: the role's default list (``wire.voice_gateway.codecs_for_role``)."""
    experiments: tuple[str, ...] | None = None
    """``None``: echo the experiments from Ready."""
    sink_wants_format: vg.SinkWantsFormat = vg.SinkWantsFormat.NESTED
    heartbeat_cap: float | None = None
    """Seconds. The Hello interval is the longest allowed gap; a cap sends more often (web: 5 s)."""
    handshake_timeout: float = 10.0
    discovery_timeout: float = 5.0

    @property
    def effective_codecs(self) -> tuple[vg.Codec, ...]:
        return vg.codecs_for_role(self.role) if self.codecs is None else self.codecs


@attrs.frozen
class SsrcBinding:
    """Who sends on an SSRC. ``primary_ssrc`` is the media SSRC an RTX SSRC repairs."""

    user_id: str
    kind: Literal["audio", "video", "rtx"]
    rid: str | None = None
    primary_ssrc: int | None = None
    rtx_ssrc: int | None = None


@attrs.frozen
class VoiceGatewayStatistics:
    heartbeats_sent: int
    heartbeat_acks: int
    last_latency: float | None
    replayed: int
    unknown_ops: int
    ignored: int
    dropped_sends: int
    last_seq: int | None
    malformed: Mapping[int, int] = attrs.field(factory=dict)
    """Messages dropped after the handshake because their shape was unexpected, per opcode."""
