"""The sandbox voice server's values (sans-io): its config, the events its core emits, and the session.

:mod:`clank.sandbox.voice_gateway_core` runs one websocket; what it reports to its driver is a
list of :data:`ServerEvent` (frames to send, closes, and the ``Client*`` messages the sandbox
acts on). A :class:`VoiceServerSession` outlives a websocket: identity, SSRCs, transport
parameters, the seq counter and the replay buffer a resume draws on.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Final

import attrs

from clank.protocol.voice_gateway import SendBinary, SendText  # the same frame events as the client's
from clank.wire import voice_gateway as vg

REPLAY_BUFFER_LIMIT: Final = 512
"""Server frames kept per session for buffered resume; older ones are dropped (resume -> 4006)."""


@attrs.frozen
class VoiceServerConfig:
    heartbeat_interval_ms: float = 41250.0
    heartbeat_timeout_factor: float = 1.5
    """Close 4009 when no heartbeat arrived for interval x factor."""
    version: int = vg.GATEWAY_VERSION
    modes: tuple[str, ...] = vg.SUPPORTED_MODES
    """Offered in Ready; ``(MODE_XCHACHA20,)`` makes an XChaCha-only server."""
    dave_protocol_version: int = 1
    """The highest DAVE version the server runs (0: a non-DAVE server)."""
    require_dave: bool = False
    """Close 4017 when the client offers ``max_dave_protocol_version`` 0."""
    ip: str = "127.0.0.1"
    port: int = 0
    experiments: tuple[str, ...] = ("fixed_keyframe_interval",)
    audio_codec: str = "opus"
    video_codec: str = "H264"
    keyframe_interval: int | None = None
    heartbeat_ack_echo: bool = True
    """op6 ``t`` echoes the heartbeat's nonce; False sends another ``t`` (clients must not care)."""
    sink_wants_flat_only: bool = False
    """Only op15's flat SSRC keys and ``any`` count (the nested ``streams`` map is ignored)."""
    backend_version: Mapping[str, str] | None = None
    """op16 ``{voice, rtc_worker}`` sent after op4 and in answer to the client's op16 (None: never)."""

    @property
    def heartbeat_timeout(self) -> float:
        return self.heartbeat_interval_ms / 1000.0 * self.heartbeat_timeout_factor


# --------------------------------------------------------------------------- events


@attrs.frozen
class CloseConnection:
    code: int
    reason: str


@attrs.frozen(eq=False)
class Identified:
    """Identify accepted and Ready sent; the sandbox registers the session for resumes."""

    session: VoiceServerSession


@attrs.frozen(eq=False)
class SessionDescribed:
    """op4 sent: the client's UDP mode, key and PT map are known."""

    session: VoiceServerSession


@attrs.frozen(eq=False)
class SessionResumed:
    session: VoiceServerSession
    replayed: int


@attrs.frozen
class HeartbeatReceived:
    t: int
    seq_ack: int | None
    acked: bool
    """False while the ``stop_acking`` fault is on."""


@attrs.frozen
class ClientSpeaking:
    speaking: vg.Speaking


@attrs.frozen
class ClientVideo:
    video: vg.Video


@attrs.frozen(eq=False)
class ClientSinkWants:
    wants: vg.MediaSinkWants


@attrs.frozen
class ClientSessionUpdate:
    update: vg.SessionUpdate


@attrs.frozen
class ClientDaveJson:
    op: int
    payload: vg.DaveJsonPayload


@attrs.frozen
class ClientDaveBinary:
    op: int
    payload: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")


ServerEvent = (
    SendText
    | SendBinary
    | CloseConnection
    | Identified
    | SessionDescribed
    | SessionResumed
    | HeartbeatReceived
    | ClientSpeaking
    | ClientVideo
    | ClientSinkWants
    | ClientSessionUpdate
    | ClientDaveJson
    | ClientDaveBinary
)


# --------------------------------------------------------------------------- session


class VoiceServerSession:
    """What survives a websocket: identity, SSRCs, transport parameters, seq and replay buffer."""

    def __init__(self, identify: vg.Identify, audio_ssrc: int, streams: tuple[vg.ReadyStream, ...]) -> None:
        self.identify = identify
        self.audio_ssrc = audio_ssrc
        self.streams = streams
        self.select: vg.SelectProtocol | None = None
        self.mode: str | None = None
        self.secret_key: bytes | None = None
        self.media_session_id: str | None = None
        self.dave_protocol_version = 0
        self._seq = 0
        self.sent_ops: collections.Counter[int] = collections.Counter()
        """Messages sent per opcode (text and binary), replays not counted."""
        self._replay: collections.deque[tuple[int, SendText | SendBinary]] = collections.deque(
            maxlen=REPLAY_BUFFER_LIMIT
        )

    def __repr__(self) -> str:
        ident = self.identify
        return f"<VoiceServerSession user={ident.user_id} server={ident.server_id} seq={self._seq}>"

    @property
    def user_id(self) -> str:
        return self.identify.user_id

    @property
    def last_seq(self) -> int:
        return self._seq

    @property
    def described(self) -> bool:
        return self.secret_key is not None

    def codec_for_payload_type(self, payload_type: int) -> vg.Codec | None:
        """The client's own PT map from its op1 (RTX PTs map to their media codec)."""
        codecs = self.select.codecs if self.select is not None else (vg.OPUS_CODEC,)
        for codec in codecs:
            if payload_type in (codec.payload_type, codec.rtx_payload_type):
                return codec
        return None

    def payload_type_for(self, codec_name: str) -> vg.Codec | None:
        """The client's declared codec entry for ``codec_name`` (send media with its PTs)."""
        codecs = self.select.codecs if self.select is not None else (vg.OPUS_CODEC,)
        for codec in codecs:
            if codec.name.lower() == codec_name.lower():
                return codec
        return None

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def remember(self, seq: int, frame: SendText | SendBinary) -> None:
        self._replay.append((seq, frame))

    def frames_after(self, seq_ack: int) -> list[SendText | SendBinary] | None:
        """Frames the client missed, or None when the buffer no longer covers ``seq_ack``."""
        seq_ack = max(seq_ack, 0)  # -1: the client saw nothing yet
        if seq_ack > self._seq:
            return None
        oldest = self._replay[0][0] if self._replay else self._seq + 1
        if seq_ack < oldest - 1:
            return None
        return [frame for seq, frame in self._replay if seq > seq_ack]
