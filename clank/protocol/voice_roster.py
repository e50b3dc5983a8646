"""Who is on a voice gateway leg (sans-io): audio and video SSRC bindings from op5/op11/op12/op13.

The voice gateway core (:mod:`clank.protocol.voice_gateway`) owns one :class:`VoiceRoster`
and hands it every message of an established connection (``on_message``/``on_binary``): the
roster keeps the participant state and turns each message into events; ``ssrc_map`` is what
the media receive path uses to name the sender of each packet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from clank.protocol.voice_gateway_events import (
    ClientDisconnected,
    ClientFlags,
    ClientPlatform,
    ClientsConnected,
    DaveBinary,
    DaveJson,
    Event,
    MediaSinkWants,
    SessionUpdate,
    Speaking,
    SsrcBinding,
    VideoState,
)
from clank.wire import voice_gateway as vg
from clank.wire.voice_gateway import VoiceOp

__all__ = ["VoiceRoster", "merge_video", "own_video_state"]


class VoiceRoster:
    """Audio SSRC, video state and presence of the other users on one leg. Not thread-safe."""

    def __init__(self, own_user_id: str) -> None:
        self._own_user_id = own_user_id
        self.unknown_ops = 0
        """Opcodes we do not handle (op16, op17, op19, future ones): tolerated and counted."""
        self.ignored = 0
        """Participant messages about ourselves or without a user id."""
        self._audio: dict[str, int] = {}
        self._video: dict[str, VideoState] = {}
        self._connected_users: set[str] = set()

    @property
    def connected_user_ids(self) -> frozenset[str]:
        return frozenset(self._connected_users)

    def video_state(self, user_id: str) -> VideoState | None:
        return self._video.get(user_id)

    def ssrc_map(self) -> Mapping[int, SsrcBinding]:
        """Audio SSRC -> user; video SSRC -> user/rid/rtx; RTX SSRC -> user/primary."""
        out: dict[int, SsrcBinding] = {}
        for user_id, ssrc in self._audio.items():
            out[ssrc] = SsrcBinding(user_id, "audio")
        for state in self._video.values():
            for stream in state.streams:
                out[stream.ssrc] = SsrcBinding(
                    state.user_id, "video", stream.rid, stream.ssrc, stream.rtx_ssrc
                )
                if stream.rtx_ssrc:
                    out[stream.rtx_ssrc] = SsrcBinding(
                        state.user_id, "rtx", stream.rid, stream.ssrc, stream.rtx_ssrc
                    )
            if state.video_ssrc and state.video_ssrc not in out:
                out[state.video_ssrc] = SsrcBinding(
                    state.user_id, "video", None, state.video_ssrc, state.rtx_ssrc or None
                )
                if state.rtx_ssrc and state.rtx_ssrc not in out:
                    out[state.rtx_ssrc] = SsrcBinding(
                        state.user_id, "rtx", None, state.video_ssrc, state.rtx_ssrc
                    )
        return MappingProxyType(out)

    # ------------------------------------------------------------------ messages

    def on_message(self, frame: vg.TextFrame) -> list[Event]:
        """Messages of an established connection (live or replayed from the handshake buffer)."""
        op, d = frame.op, frame.d
        if op == VoiceOp.SPEAKING:
            return self._on_speaking(vg.Speaking.parse(d))
        if op == VoiceOp.CLIENTS_CONNECT:
            ids = tuple(u for u in vg.ClientsConnect.parse(d).user_ids if u != self._own_user_id)
            self._connected_users.update(ids)
            return [ClientsConnected(ids)]
        if op == VoiceOp.VIDEO:
            return self._on_video(vg.Video.parse(d))
        if op == VoiceOp.CLIENT_DISCONNECT:
            user_id = vg.ClientDisconnect.parse(d).user_id
            self.disconnected(user_id)
            return [ClientDisconnected(user_id)]
        if op == VoiceOp.SESSION_UPDATE:
            return [SessionUpdate(vg.SessionUpdate.parse(d))]
        if op == VoiceOp.MEDIA_SINK_WANTS:
            return [MediaSinkWants(vg.MediaSinkWants.parse(d))]
        if op == VoiceOp.CLIENT_FLAGS:
            if isinstance(d, dict) and "flags" not in d and "user_id" in d:
                return self._on_video(vg.Video.parse(d))  # op18 carrying video state (clanky reads it so)
            flags = vg.ClientFlags.parse(d)
            return [ClientFlags(flags.user_id, flags.flags)]
        if op == VoiceOp.CLIENT_PLATFORM:
            platform = vg.ClientPlatform.parse(d)
            return [ClientPlatform(platform.user_id, platform.platform)]
        if op in vg.DAVE_JSON_OPS:
            return [DaveJson(op, vg.parse_dave_json(op, d))]
        self.unknown_ops += 1  # op16, op17, op19 and future ops are tolerated
        return []

    def on_binary(self, frame: vg.ServerBinaryFrame) -> list[Event]:
        if frame.op not in vg.SERVER_BINARY_OPS:
            self.unknown_ops += 1
            return []
        return [DaveBinary(frame.op, frame.payload)]

    def _on_speaking(self, speaking: vg.Speaking) -> list[Event]:
        user_id = speaking.user_id
        if user_id is None or user_id == self._own_user_id:
            self.ignored += 1
            return []
        self.speaking(user_id, speaking.ssrc)
        return [Speaking(user_id, speaking.ssrc, speaking.speaking)]

    def _on_video(self, video: vg.Video) -> list[Event]:
        user_id = video.user_id
        if user_id is None or user_id == self._own_user_id:
            self.ignored += 1
            return []
        return [self.video(user_id, video)]

    # ------------------------------------------------------------------ updates

    def connected(self, user_ids: Iterable[str]) -> None:
        """op11: these users joined the leg."""
        self._connected_users.update(user_ids)

    def disconnected(self, user_id: str) -> None:
        """op13: the user left; their SSRC bindings go with them."""
        self._connected_users.discard(user_id)
        self._audio.pop(user_id, None)
        self._video.pop(user_id, None)

    def speaking(self, user_id: str, ssrc: int) -> None:
        """op5: ``ssrc`` (when non-zero) is the user's audio SSRC."""
        if ssrc:
            self._audio[user_id] = ssrc

    def video(self, user_id: str, video: vg.Video) -> VideoState:
        """Merge an op12 (or op18 carrying video state) into what we knew; returns the new state."""
        state = merge_video(self._video.get(user_id), user_id, video)
        self._video[user_id] = state
        if state.audio_ssrc:
            self._audio[user_id] = state.audio_ssrc
        return state

    def clear(self) -> None:
        """A fresh identify: the server will resend everything."""
        self._audio.clear()
        self._video.clear()
        self._connected_users.clear()


def merge_video(prev: VideoState | None, user_id: str, video: vg.Video) -> VideoState:
    """Apply a possibly partial op12 (discord-protocol.md §3.8).

    No streams (absent or empty) and no ``video_ssrc`` clears the user's video; streams absent
    but ``video_ssrc`` kept preserves the prior stream bindings.
    """
    audio = video.audio_ssrc or (prev.audio_ssrc if prev else None)
    if video.streams is None:
        if not video.video_ssrc:
            return VideoState(user_id, audio, None, None, ())
        streams = prev.streams if prev else ()
        rtx = video.rtx_ssrc or (prev.rtx_ssrc if prev else None)
        return VideoState(user_id, audio, video.video_ssrc, rtx, streams)
    streams = tuple(s for s in video.streams if s.ssrc)
    if not streams and not video.video_ssrc:
        return VideoState(user_id, audio, None, None, ())
    video_ssrc = video.video_ssrc or streams[0].ssrc
    rtx = video.rtx_ssrc or (streams[0].rtx_ssrc if streams else None)
    return VideoState(user_id, audio, video_ssrc, rtx, streams)


def own_video_state(
    ready: vg.Ready,
    active: bool,
    *,
    max_bitrate: int | None = None,
    max_framerate: int | None = None,
    max_resolution: vg.MaxResolution | None = None,
) -> vg.Video:
    """Our op12: the Ready streams as active (publishing) or inactive (watch/voice)."""
    streams = tuple(
        vg.VideoStream(
            ssrc=s.ssrc,
            rtx_ssrc=s.rtx_ssrc,
            type=s.type,
            rid=s.rid,
            quality=s.quality,
            active=active,
            max_bitrate=max_bitrate,
            max_framerate=max_framerate,
            max_resolution=max_resolution,
        )
        for s in ready.streams
    )
    first = ready.streams[0] if ready.streams else None
    video = vg.Video(
        audio_ssrc=ready.ssrc,
        video_ssrc=first.ssrc if first else 0,
        rtx_ssrc=first.rtx_ssrc if first else 0,
        streams=streams,
    )
    return video
