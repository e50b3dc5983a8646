"""Share-link sessions: tokens, lifetimes and frame ingest for the browser capture transport.

A :class:`LinkSession` binds a target user (the person who will share), the requester and the text
channel the link went to, a random URL-safe token of :data:`TOKEN_BYTES` bytes (192 bits), an
expiry (``link.ttl_minutes``), a frame-rate cap and a size cap. :class:`LinkTransport` keeps the
live sessions and is what the share listener (:mod:`clank.control.share_http`) and the agent
surface (:mod:`clank.control.link_flow`) talk to.

* Tokens are compared in constant time against every live session (:meth:`LinkTransport.lookup`);
  an unknown, expired or stopped token looks the same to the caller. Every token is registered with
  :func:`clank.logging.register_secret` before it leaves this module, and never logged.
* A session ends on expiry, on :meth:`LinkTransport.end` (stop, a native watch of the same target
  became ready, the target left voice) and when the transport closes. Ending closes its
  :class:`~clank.watch.frames.LatestFrameStore`, so screen notes and waiters finish with the reason.
* Frames are checked in order — content type, byte size, rate (a token bucket of
  :data:`RATE_BURST` frames refilled at ``link.max_fps``), then, on a worker thread, that they
  decode as baseline/progressive JPEG within the dimension limits. Only decodable frames cost a
  decode; everything refused is counted by reason (:data:`REJECT_REASONS`). Accepted frames get the
  same change metrics as native frames and are published as :class:`ScreenFrame` with
  ``codec="jpeg"``.
"""

from __future__ import annotations

import collections
import hmac
import math
import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Literal

import attrs
import av
import numpy as np
import simplejpeg
import trio

from clank.config import LinkSettings
from clank.logging import get_logger, register_secret
from clank.media.metrics import ChangeTracker, luma_grid
from clank.watch.frames import LatestFrameStore, ScreenFrame

log = get_logger("clank.link")

TOKEN_BYTES: Final = 24
"""192 random bits; ``secrets.token_urlsafe`` makes 32 URL-safe characters of them."""
RATE_BURST: Final = 3.0
"""Frames a page may send back to back before the ``max_fps`` rate applies (network jitter)."""
MIN_SIDE: Final = 16
MAX_SIDE: Final = 7680
PIXEL_SLACK: Final = 1.25
"""Frames may exceed ``link.max_pixels`` by this factor (the page rounds sizes) before refusal."""
DECODE_QUEUE: Final = 4
"""Frames waiting for the decode worker across all sessions before further ones are refused."""
ENDED_KEPT: Final = 8
"""Ended sessions kept (without their tokens' power) for status and the dashboard."""

RejectReason = Literal[
    "content_type", "too_large", "rate_limited", "busy", "not_jpeg", "dimensions", "corrupt"
]
REJECT_REASONS: Final[Mapping[RejectReason, tuple[int, str]]] = {
    "content_type": (415, "frames must be sent as Content-Type: image/jpeg"),
    "too_large": (413, "the frame is larger than link.max_frame_bytes"),
    "rate_limited": (429, "frames arrive faster than link.max_fps"),
    "busy": (429, "too many frames are waiting to be checked"),
    "not_jpeg": (422, "the body is not a JPEG image"),
    "dimensions": (422, "the picture is too small or larger than link.max_pixels"),
    "corrupt": (422, "the JPEG does not decode"),
}
"""Why a frame was refused: HTTP status and a plain explanation (a table the tests iterate)."""

SessionState = Literal["offered", "watching", "ended"]


@attrs.frozen
class LinkAvailability:
    """Whether links can be offered now; ``reason`` is a stable code when not."""

    available: bool
    reason: str | None = None
    detail: str = ""


AVAILABLE = LinkAvailability(True)
DISABLED = LinkAvailability(
    False, "link_disabled", "the share-link transport is turned off (link.enabled = false)"
)
NO_PUBLIC_URL = LinkAvailability(
    False,
    "link_not_exposed",
    "in Discord mode the share-link transport needs link.public_url (see docs/link.md)",
)
LISTENER_DOWN = LinkAvailability(False, "link_listener_down", "the share-link listener is not running")


def link_availability(settings: LinkSettings, *, sandbox_mode: bool) -> LinkAvailability:
    """The configured policy: off when disabled; in Discord mode only with a public URL."""
    if not settings.enabled:
        return DISABLED
    if not sandbox_mode and not settings.public_url:
        return NO_PUBLIC_URL
    return LinkAvailability(True)


class FrameRejected(Exception):
    """A frame post was refused; ``reason`` is a key of :data:`REJECT_REASONS`."""

    def __init__(self, reason: RejectReason) -> None:
        super().__init__(reason)
        self.reason: RejectReason = reason

    @property
    def status(self) -> int:
        return REJECT_REASONS[self.reason][0]

    @property
    def message(self) -> str:
        return REJECT_REASONS[self.reason][1]


@attrs.frozen
class DecodedFrame:
    width: int
    height: int
    grid: Any  # the luma grid (numpy uint8), for change metrics


def decode_link_frame(data: bytes, max_pixels: int, grid: tuple[int, int]) -> DecodedFrame:
    """Check that ``data`` is a JPEG within the limits and compute its luma grid. CPU work: runs on
    the decode worker thread. Raises :class:`FrameRejected` only."""
    if not data.startswith(b"\xff\xd8\xff"):
        raise FrameRejected("not_jpeg")
    try:
        height, width, _colorspace, _subsampling = simplejpeg.decode_jpeg_header(data)
    except (ValueError, TypeError):
        raise FrameRejected("not_jpeg") from None
    if (
        min(width, height) < MIN_SIDE
        or max(width, height) > MAX_SIDE
        or width * height > max_pixels * PIXEL_SLACK
    ):
        raise FrameRejected("dimensions")
    try:
        gray = simplejpeg.decode_jpeg(data, colorspace="GRAY", strict=True)
    except (ValueError, TypeError, RuntimeError):
        raise FrameRejected("corrupt") from None
    plane = np.ascontiguousarray(gray.reshape(gray.shape[0], gray.shape[1]))
    frame = av.VideoFrame.from_ndarray(plane, format="gray")
    return DecodedFrame(width=width, height=height, grid=luma_grid(frame, grid))


class LinkSession:
    """One share link: who shares, where the link went, when it dies, and its frames."""

    def __init__(
        self,
        *,
        token: str,
        url: str,
        target_user_id: str,
        requester_id: str | None,
        channel_id: str | None,
        created_at: float,
        ttl_s: float,
        max_fps: float,
    ) -> None:
        self._token = token
        self.url = url
        self.target_user_id = target_user_id
        self.requester_id = requester_id
        self.channel_id = channel_id
        self.created_at = created_at
        self.expires_at = created_at + ttl_s
        self.max_fps = max_fps
        self.frames = LatestFrameStore()
        self.end_reason: str | None = None
        self.ended_at: float | None = None
        self.accepted = 0
        self.rejected: collections.Counter[str] = collections.Counter()
        self.last_frame_at: float | None = None
        self._tracker = ChangeTracker()
        self._bucket = RATE_BURST
        self._bucket_at = created_at

    def __repr__(self) -> str:
        return f"LinkSession(target={self.target_user_id!r}, state={self.state!r})"

    def matches(self, token: str) -> bool:
        return hmac.compare_digest(self._token.encode(), token.encode())

    @property
    def state(self) -> SessionState:
        if self.end_reason is not None:
            return "ended"
        return "watching" if self.accepted else "offered"

    @property
    def active(self) -> bool:
        return self.end_reason is None

    def time_left(self, now: float) -> float:
        return max(0.0, self.expires_at - now)

    def expires_in_minutes(self, now: float) -> int:
        """Whole minutes left, rounded up (0 once expired)."""
        left = self.time_left(now)
        return 0 if left <= 0 else max(1, math.ceil(left / 60.0))

    def take_rate_token(self, now: float) -> bool:
        self._bucket = min(RATE_BURST, self._bucket + (now - self._bucket_at) * self.max_fps)
        self._bucket_at = now
        if self._bucket < 1.0:
            return False
        self._bucket -= 1.0
        return True

    def publish(self, jpeg: bytes, decoded: DecodedFrame, now: float) -> ScreenFrame:
        change = self._tracker.update_grid(decoded.grid)
        self.accepted += 1
        self.last_frame_at = now
        frame = ScreenFrame(
            jpeg=jpeg,
            width=decoded.width,
            height=decoded.height,
            rtp_timestamp=0,
            user_id=self.target_user_id,
            ssrc=0,
            codec="jpeg",
            stream_type="screen",
            change_score=change.score,
            change_ema=change.smoothed,
            scene_cut=change.scene_cut,
            wall_time=now,
            sequence=self.accepted,
            source_width=decoded.width,
            source_height=decoded.height,
            keyframe=True,
        )
        self.frames.publish(frame)
        return frame

    def end(self, reason: str, now: float) -> bool:
        if self.end_reason is not None:
            return False
        self.end_reason = reason
        self.ended_at = now
        self.frames.close(reason)
        return True

    def to_json(self, now: float) -> dict[str, Any]:
        """For status and the dashboard: never the token or the URL."""
        return {
            "targetUserId": self.target_user_id,
            "requesterId": self.requester_id,
            "channelId": self.channel_id,
            "state": self.state,
            "framesAccepted": self.accepted,
            "framesRejected": dict(self.rejected),
            "expiresInS": round(self.time_left(now)) if self.active else None,
            "lastFrameAgeMs": None
            if self.last_frame_at is None
            else round((now - self.last_frame_at) * 1000),
            "endedReason": self.end_reason,
        }


@attrs.frozen
class LinkStatistics:
    live: int
    created: int
    accepted: int
    rejected: Mapping[str, int]
    unknown_token: int
    ended: Mapping[str, int]


SessionStarted = Callable[[LinkSession], None]


class LinkTransport:
    """The live link sessions and frame ingest. ``base_url`` is set once the listener is bound."""

    def __init__(
        self,
        settings: LinkSettings,
        *,
        availability: LinkAvailability = AVAILABLE,
        base_url: str | None = None,
        grid: tuple[int, int] = (64, 36),
    ) -> None:
        self.settings = settings
        self._policy = availability
        self._base_url = base_url.rstrip("/") if base_url else None
        self._grid = grid
        self._live: list[LinkSession] = []
        self._ended: collections.deque[LinkSession] = collections.deque(maxlen=ENDED_KEPT)
        self._limiter = trio.CapacityLimiter(1)
        self._queued = 0
        self._created = 0
        self._rejected: collections.Counter[str] = collections.Counter()
        self._ended_reasons: collections.Counter[str] = collections.Counter()
        self._unknown = 0
        self._accepted = 0
        self._started: list[SessionStarted] = []

    # --- availability -----------------------------------------------------------------------

    def availability(self) -> LinkAvailability:
        if not self._policy.available:
            return self._policy
        if self._base_url is None:
            return LISTENER_DOWN
        return self._policy

    def set_base_url(self, url: str | None) -> None:
        self._base_url = None if url is None else url.rstrip("/")

    @property
    def base_url(self) -> str | None:
        return self._base_url

    def on_session_started(self, callback: SessionStarted) -> None:
        """``callback(session)`` for every new session (the runner attaches screen notes)."""
        self._started.append(callback)

    # --- sessions ----------------------------------------------------------------------------

    def create(
        self, target_user_id: str, *, requester_id: str | None, channel_id: str | None, now: float
    ) -> LinkSession:
        if self._base_url is None:
            raise RuntimeError("create() before the share listener is bound")
        token = secrets.token_urlsafe(TOKEN_BYTES)
        register_secret(token)
        session = LinkSession(
            token=token,
            url=f"{self._base_url}/share/{token}",
            target_user_id=target_user_id,
            requester_id=requester_id,
            channel_id=channel_id,
            created_at=now,
            ttl_s=self.settings.ttl_minutes * 60.0,
            max_fps=self.settings.max_fps,
        )
        self._live.append(session)
        self._created += 1
        log.info("share link created", target_user_id=target_user_id, ttl_minutes=self.settings.ttl_minutes)
        for callback in self._started:
            callback(session)
        return session

    def live(self) -> list[LinkSession]:
        return list(self._live)

    def sessions(self) -> list[LinkSession]:
        """Live sessions, then the last few ended ones (newest last)."""
        return [*self._ended, *self._live]

    def live_for(self, user_id: str) -> LinkSession | None:
        return next((s for s in self._live if s.target_user_id == user_id), None)

    def lookup(self, token: str, now: float) -> LinkSession | None:
        """The live session of ``token`` (compared in constant time with every live one), else
        None — unknown, expired and ended tokens are indistinguishable."""
        self.expire(now)
        found: LinkSession | None = None
        for session in self._live:
            if session.matches(token) and found is None:
                found = session
        if found is None:
            self._unknown += 1
        return found

    def end(self, session: LinkSession, reason: str, now: float) -> bool:
        if not session.end(reason, now):
            return False
        self._live = [s for s in self._live if s is not session]
        self._ended.append(session)
        self._ended_reasons[reason] += 1
        log.info(
            "share link ended",
            target_user_id=session.target_user_id,
            reason=reason,
            frames=session.accepted,
            rejected=sum(session.rejected.values()),
            lifetime_s=round(now - session.created_at, 1),
        )
        return True

    def end_for(self, user_id: str, reason: str, now: float) -> list[LinkSession]:
        ended = [s for s in self._live if s.target_user_id == user_id]
        for session in ended:
            self.end(session, reason, now)
        return ended

    def expire(self, now: float) -> list[LinkSession]:
        expired = [s for s in self._live if now >= s.expires_at]
        for session in expired:
            self.end(session, "expired", now)
        return expired

    def close(self, now: float) -> None:
        for session in list(self._live):
            self.end(session, "shutdown", now)

    # --- frames ------------------------------------------------------------------------------

    def reject(self, session: LinkSession | None, reason: RejectReason) -> FrameRejected:
        self._rejected[reason] += 1
        if session is not None:
            session.rejected[reason] += 1
        return FrameRejected(reason)

    def precheck(self, session: LinkSession, content_type: str | None, length: int | None) -> None:
        """The cheap checks, before the body is read: raises :class:`FrameRejected`."""
        media = (content_type or "").split(";", 1)[0].strip().lower()
        if media != "image/jpeg":
            raise self.reject(session, "content_type")
        if length is not None and length > self.settings.max_frame_bytes:
            raise self.reject(session, "too_large")

    async def ingest(self, session: LinkSession, body: bytes) -> ScreenFrame:
        """Check and publish one frame (``precheck`` already passed). Raises :class:`FrameRejected`."""
        if len(body) > self.settings.max_frame_bytes:
            raise self.reject(session, "too_large")
        if not session.take_rate_token(trio.current_time()):
            raise self.reject(session, "rate_limited")
        if self._queued >= DECODE_QUEUE:
            raise self.reject(session, "busy")
        self._queued += 1
        try:
            decoded = await trio.to_thread.run_sync(
                decode_link_frame, body, self.settings.max_pixels, self._grid, limiter=self._limiter
            )
        except FrameRejected as exc:
            raise self.reject(session, exc.reason) from None
        finally:
            self._queued -= 1
        if not session.active:  # ended while the frame was being checked
            raise self.reject(session, "busy")
        self._accepted += 1
        return session.publish(body, decoded, trio.current_time())

    def statistics(self) -> LinkStatistics:
        return LinkStatistics(
            live=len(self._live),
            created=self._created,
            accepted=self._accepted,
            rejected=dict(self._rejected),
            unknown_token=self._unknown,
            ended=dict(self._ended_reasons),
        )


def sessions_json(sessions: Iterable[LinkSession], now: float) -> list[dict[str, Any]]:
    return [s.to_json(now) for s in sessions]
