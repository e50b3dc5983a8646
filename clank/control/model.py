"""Values the agent surface reads from a voice session, and the results it hands back.

The session side (voice session, roles, frame store) fills the *input* values; the service
returns the *result* values. Each result has ``to_json()``: the one place where Python names
become the camelCase JSON the HTTP API and the tool schemas use.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from clank.control.resolve import WatchKind
from clank.watch.frames import ScreenFrame

Transport = Literal["native", "link"]
JsonScalar = str | int | float | bool | None


# --- inputs (filled by the session) -------------------------------------------------------------


@attrs.frozen
class FrameView:
    """The latest decoded picture of one watch. ``captured_at`` is on the trio clock (seconds)."""

    jpeg: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    width: int
    height: int
    sequence: int
    captured_at: float
    source_width: int = 0
    source_height: int = 0
    keyframe: bool = False
    change_score: float = 0.0
    mean_abs_diff: float = 0.0
    change_smoothed: float = 0.0
    scene_cut: bool = False
    rtp_timestamp: int | None = None
    concealed: bool = False

    @classmethod
    def from_screen_frame(cls, frame: ScreenFrame) -> FrameView:
        """From the watch roles' :class:`~clank.watch.frames.ScreenFrame` (LatestFrameStore)."""
        return cls(
            jpeg=frame.jpeg,
            width=frame.width,
            height=frame.height,
            sequence=frame.sequence,
            captured_at=frame.wall_time,
            source_width=frame.source_width,
            source_height=frame.source_height,
            keyframe=frame.keyframe,
            change_score=frame.change_score,
            mean_abs_diff=frame.change_mean_abs_diff,
            change_smoothed=frame.change_ema,
            scene_cut=frame.scene_cut,
            rtp_timestamp=frame.rtp_timestamp,
            concealed=frame.concealed,
        )

    def metadata(self, now: float) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "width": self.width,
            "height": self.height,
            "sourceWidth": self.source_width,
            "sourceHeight": self.source_height,
            "keyframe": self.keyframe,
            "concealed": self.concealed,
            "rtpTimestamp": self.rtp_timestamp,
            "bytes": len(self.jpeg),
            "ageMs": max(0, round((now - self.captured_at) * 1000)),
            "change": {
                "score": self.change_score,
                "meanAbsDiff": self.mean_abs_diff,
                "smoothed": self.change_smoothed,
                "sceneCut": self.scene_cut,
            },
        }


@attrs.frozen
class WatchView:
    """One watch as the session runs it. ``state``: starting, connecting, watching, ended."""

    user_id: str
    kind: WatchKind
    state: str
    started_at: float
    frames: int = 0
    ended_reason: str | None = None
    transport: Transport = "native"  # "link": the share-link fallback (clank.control.link_port)

    @property
    def active(self) -> bool:
        return self.state != "ended"


@attrs.frozen
class DaveStatus:
    """DAVE state of one role. ``privacy_code`` is the voice privacy code shown in Discord's UI;
    ``verification_codes`` maps user id → pairwise verification code, for the codes computed so
    far (on request: :mod:`clank.control.dave_codes`); ``members`` names the other group members
    (user id → display name)."""

    protocol_version: int
    state: str
    epoch: int | None = None
    privacy_code: str | None = None
    verification_codes: Mapping[str, str] = attrs.field(factory=dict)
    members: Mapping[str, str] = attrs.field(factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "protocolVersion": self.protocol_version,
            "state": self.state,
            "epoch": self.epoch,
            "privacyCode": self.privacy_code,
            "verificationCodes": dict(self.verification_codes),
            "members": [{"userId": u, "name": n} for u, n in self.members.items()],
        }


@attrs.frozen
class RoleStatus:
    """One transport role (``voice``, ``stream_watch``, ``webcam_watch``, ``stream_publish``).

    ``transport`` holds connection states (``ws``, ``udp``, ``encryption`` ...); ``qos`` holds
    figures (packets, lost, nacks, fps, kbps, decode delay ...). Both are free-form so the roles
    can grow without touching this module; values must be JSON scalars.
    """

    name: str
    kind: str
    state: str
    target_user_id: str | None = None
    transport: Mapping[str, JsonScalar] = attrs.field(factory=dict)
    qos: Mapping[str, JsonScalar] = attrs.field(factory=dict)
    dave: DaveStatus | None = None
    ended_reason: str | None = None
    close_code: int | None = None
    also_failed: tuple[str, ...] = ()
    """Errors beside the one in ``ended_reason`` when several ended the role at once."""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "state": self.state,
            "targetUserId": self.target_user_id,
            "transport": dict(self.transport),
            "qos": dict(self.qos),
            "dave": None if self.dave is None else self.dave.to_json(),
            "endedReason": self.ended_reason,
            "closeCode": self.close_code,
            "alsoFailed": list(self.also_failed),
        }


@attrs.frozen
class SessionStatus:
    in_voice: bool
    our_user_id: str
    guild_id: str | None = None
    channel_id: str | None = None
    roles: tuple[RoleStatus, ...] = ()
    mode: str = "discord"  # or "sandbox"
    #: Display names (when known) of the guild, the voice channel and our account.
    guild_name: str | None = None
    channel_name: str | None = None
    our_user_name: str | None = None

    def to_json(self) -> dict[str, Any]:
        voice = next((r for r in self.roles if r.kind == "voice"), None)
        return {
            "inVoice": self.in_voice,
            "mode": self.mode,
            "ourUserId": self.our_user_id,
            "guildId": self.guild_id,
            "channelId": self.channel_id,
            "guildName": self.guild_name,
            "channelName": self.channel_name,
            "ourUserName": self.our_user_name,
            "roles": [r.to_json() for r in self.roles],
            "privacyCode": None if voice is None or voice.dave is None else voice.dave.privacy_code,
        }


# --- results ----------------------------------------------------------------------------------


@attrs.frozen
class WatchResult:
    """What ``start_screen_watch`` answers (the seed's shape, plus ``kind`` and ``candidates``)."""

    ok: bool
    reason: str
    started: bool = False
    reused: bool = False
    frame_ready: bool = False
    transport: Transport | None = None
    target_user_id: str | None = None
    kind: WatchKind | None = None
    link_url: str | None = None
    expires_in_minutes: int | None = None
    candidates: tuple[str, ...] = ()
    detail: str | None = None
    spoken_hint: str | None = None
    """For a voice agent: what to say (never the link itself), e.g. "open the link I sent"."""
    candidate_names: tuple[tuple[str, str], ...] = ()
    """``(user id, display name)`` of each candidate, so a model can ask "Alice or Bob?" at once."""

    def to_json(self) -> dict[str, Any]:
        out = self._fields()
        if self.candidates:
            names = dict(self.candidate_names)
            out["candidateNames"] = [{"userId": u, "name": names.get(u, u)} for u in self.candidates]
        return out

    def _fields(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "started": self.started,
            "reused": self.reused,
            "reason": self.reason,
            "frameReady": self.frame_ready,
            "transport": self.transport,
            "targetUserId": self.target_user_id,
            "kind": self.kind,
            "linkUrl": self.link_url,
            "expiresInMinutes": self.expires_in_minutes,
            "candidates": list(self.candidates),
            "detail": self.detail,
            "spokenHint": self.spoken_hint,
        }


@attrs.frozen
class StopResult:
    ok: bool
    reason: str
    stopped: tuple[tuple[str, WatchKind], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "reason": self.reason,
            "stopped": [{"targetUserId": user, "kind": kind} for user, kind in self.stopped],
        }


@attrs.frozen
class LookResult:
    """``look_at_screen``: the latest JPEG of a watch with its metadata and change scores."""

    ok: bool
    reason: str
    target_user_id: str | None = None
    kind: WatchKind | None = None
    frame: FrameView | None = None
    now: float = 0.0
    notes: tuple[Mapping[str, Any], ...] = ()
    """Recent screen notes of that watch (oldest first), when the session keeps notes."""

    def to_json(self, *, include_image: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ok": self.ok,
            "reason": self.reason,
            "targetUserId": self.target_user_id,
            "kind": self.kind,
            "frameReady": self.frame is not None,
            "frame": None if self.frame is None else self.frame.metadata(self.now),
            "notes": [dict(n) for n in self.notes],
        }
        if include_image:
            out["image"] = (
                None
                if self.frame is None
                else {"mimeType": "image/jpeg", "dataBase64": base64.b64encode(self.frame.jpeg).decode()}
            )
        return out
