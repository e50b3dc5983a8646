"""Video receive values: config, the receiver's events and statistics, drop reasons, op15 helpers.

Sans-io. :class:`clank.protocol.video_receive.VideoReceiver` produces and consumes these;
``clank.protocol.video_receive`` re-exports every name here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final, Literal

import attrs

from clank.codecs.feedback import (
    KeyframePolicy,
    NackPolicy,
)
from clank.protocol.voice_gateway import VideoState
from clank.wire import voice_gateway as vg

VideoCodecName = Literal["h264", "vp8"]
StreamType = Literal["screen", "camera"]
DecryptFn = Callable[[int, bytes], bytes]
"""``decrypt(sender_user_id, frame) -> plaintext``; raises ``DecryptionFailed`` (counted)."""

# Drop reasons (keys of ``VideoStreamStatistics.dropped`` / ``VideoReceiverStatistics.dropped``).
DROP_UNKNOWN_SSRC: Final = "unknown_ssrc"
DROP_UNKNOWN_PT: Final = "unknown_payload_type"
DROP_RTX_PROBE: Final = "rtx_probe"
DROP_RTX_MALFORMED: Final = "rtx_malformed"
DROP_EMPTY: Final = "empty"
DROP_INACTIVE: Final = "inactive"
DROP_SUPPRESSED: Final = "suppressed"  # frames: a native watch of that user is active
DROP_AWAITING_KEYFRAME: Final = "awaiting_keyframe"  # frames before the first decodable keyframe
DROP_DAVE: Final = "dave"  # frames DAVE could not decrypt
DROP_INCOMPLETE: Final = "incomplete"  # frames damaged by unrepaired loss

# What the codec names of op4/op14 and our codec table mean here.
CODEC_NAMES: Final[Mapping[str, VideoCodecName]] = {"h264": "h264", "vp8": "vp8"}

RATE_WINDOW: Final = 2.0  # seconds over which fps_in is measured
DIAGNOSTICS_KEPT: Final = 32  # undrained decrypt diagnostics kept (oldest dropped)


@attrs.frozen
class VideoReceiveConfig:
    """Tunables of one receiver. ``local_ssrc`` is our SSRC on the leg (RTCP sender SSRC)."""

    local_ssrc: int = 0
    default_stream_type: StreamType = "screen"
    reorder_capacity: int = 512
    reorder_delay: float = 0.12
    nack: bool = True
    nack_policy: NackPolicy = attrs.field(factory=NackPolicy)
    keyframe_policy: KeyframePolicy = attrs.field(factory=KeyframePolicy)
    report_interval: float = 1.0
    diagnostics_interval: float = 5.0
    conceal_after: float | None = 3.0
    """Seconds without a keyframe after which H264 P frames are handed on anyway (None: never)."""
    codecs: tuple[vg.Codec, ...] = (vg.H264_DECODE, vg.VP8_DECODE)


@attrs.frozen
class EncodedVideoFrame:
    """One decrypted, decodable access unit (H264 Annex-B / one VP8 frame)."""

    ssrc: int
    user_id: str
    codec: VideoCodecName
    stream_type: StreamType
    timestamp: int
    keyframe: bool
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    first_seq: int
    last_seq: int
    assembled_at: float  # ``now`` of the packet that completed it
    conceal: bool = False
    """No keyframe for ``conceal_after`` since a join or an unrepaired loss: decode it anyway."""


@attrs.frozen
class DecryptDiagnostic:
    """Why a frame failed DAVE decrypt (rate-limited: first failure, then one per interval)."""

    ssrc: int
    user_id: str
    reason: str
    timestamp: int
    first_seq: int
    last_seq: int
    packet_count: int
    suppressed_since_last: int
    frame: Mapping[str, object]  # ``describe_frame`` output


@attrs.frozen
class CodecChanged:
    ssrc: int
    user_id: str
    previous: VideoCodecName | None
    codec: VideoCodecName


@attrs.frozen
class StreamBound:
    """An SSRC became (or stayed) bound to a user by op12."""

    ssrc: int
    user_id: str
    rtx_ssrc: int | None
    stream_type: StreamType
    active: bool


@attrs.frozen
class StreamUnbound:
    ssrc: int
    user_id: str


ReceiveEvent = EncodedVideoFrame | DecryptDiagnostic | CodecChanged | StreamBound | StreamUnbound


@attrs.frozen
class VideoStreamStatistics:
    """QoS of one remote video SSRC (packets counted on the primary stream after RTX unwrap)."""

    ssrc: int
    user_id: str
    rtx_ssrc: int | None
    stream_type: StreamType
    codec: VideoCodecName | None
    active: bool
    packets_received: int  # primary + unwrapped RTX packets that reached the reorder buffer
    rtx_received: int
    packets_lost: int  # sequence numbers given up on (released as gaps)
    packets_recovered: int  # reported missing, then arrived (NACK answered with RTX, or late)
    packets_reordered: int
    duplicates: int
    dropped: Mapping[str, int]
    frames_assembled: int
    frames_emitted: int
    frames_dropped: Mapping[str, int]
    keyframes: int
    dave_ok: int
    dave_failed: int
    dave_passthrough: int
    dave_failures: Mapping[str, int]
    dave_failed_before_ready: int  # of dave_failed: before our DAVE session was ready (expected)
    nack_packets: int
    nack_seqs: int
    keyframe_requests: int
    first_packet_at: float | None
    first_frame_at: float | None
    time_to_first_frame: float | None  # bound -> first emitted frame, seconds
    fps_in: float
    jitter: float  # seconds (RFC 3550 A.8 interarrival jitter)
    frames_concealed: int = 0  # handed on before any keyframe (conceal_after passed)
    pli_to_keyframe: float | None = None  # seconds from the first PLI/FIR to the keyframe after it


@attrs.frozen
class VideoReceiverStatistics:
    packets: int
    dropped: Mapping[str, int]
    rtcp_sent: int
    streams: Mapping[int, VideoStreamStatistics]


def codec_table(codecs: Iterable[vg.Codec]) -> tuple[dict[int, VideoCodecName], dict[int, int]]:
    """Our declared video PTs: ``{pt: codec}`` and ``{rtx_pt: primary_pt}`` (unknown names skipped)."""
    primary: dict[int, VideoCodecName] = {}
    rtx: dict[int, int] = {}
    for codec in codecs:
        name = CODEC_NAMES.get(codec.name.lower())
        if codec.type != "video" or name is None:
            continue
        primary[codec.payload_type] = name
        if codec.rtx_payload_type is not None:
            rtx[codec.rtx_payload_type] = codec.payload_type
    return primary, rtx


def stream_type_of(stream: vg.VideoStream | None, default: StreamType) -> StreamType:
    """op12 ``type: "screen"`` marks a Go Live layer; anything else is the leg's default kind."""
    if stream is not None and stream.type == "screen":
        return "screen"
    return default


def build_sink_wants(
    states: Iterable[VideoState],
    *,
    want: Callable[[str, StreamType], bool],
    quality: int,
    pixel_count: float | None,
    default_stream_type: StreamType,
    any_quality: int | None = None,
) -> vg.MediaSinkWants:
    """op15 for the SSRCs in ``states``: ``quality`` for wanted (user, kind) pairs, 0 for the rest.

    This is how sink wants are partitioned between legs: the stream leg wants the streamer's
    screen SSRC, the voice leg wants camera SSRCs and says 0 to screen SSRCs it also sees.
    """
    streams: dict[int, int] = {}
    pixels: dict[int, float] = {}
    for state in states:
        layers: list[tuple[int, vg.VideoStream | None]] = [(s.ssrc, s) for s in state.streams if s.ssrc]
        if not layers and state.video_ssrc:
            layers = [(state.video_ssrc, None)]
        for ssrc, stream in layers:
            kind = stream_type_of(stream, default_stream_type)
            wanted = want(state.user_id, kind) and (stream is None or stream.active)
            streams[ssrc] = quality if wanted else 0
            if wanted and pixel_count:
                pixels[ssrc] = float(pixel_count)
    return vg.MediaSinkWants(any=any_quality, streams=streams, pixel_counts=pixels)
