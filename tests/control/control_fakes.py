"""A voice session for the agent-surface tests, built from real parts.

``RegistrySession`` implements :class:`clank.control.service.SessionPort` over a real
:class:`StreamRegistry` fed real gateway dispatch payloads; Go Live watches are requested from
the registry, per stream key, as the session's stream_watch role does (op20/op19 frames are
recorded), and frames are real JPEGs encoded from the synthetic screen source. It passes the same
conformance checks as the real ``LiveSessionPort`` (tests/control/test_session_port_conformance.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import av
import numpy as np
import trio

from clank.control.model import DaveStatus, FrameView, RoleStatus, SessionStatus, WatchView
from clank.control.resolve import Member, SharerState, WatchKind, sharers_from_registry
from clank.errors import WatchError
from clank.media.jpeg import encode_jpeg
from clank.media.synth import ScreenSynth
from clank.protocol.streams import StreamRegistry
from clank.wire.gateway import GatewayFrame

ME = "100000000000000001"
GUILD = "200000000000000001"
CHANNEL = "300000000000000001"
ALICE = "400000000000000001"
BOB = "400000000000000002"
CAROL = "400000000000000003"
DAVE_USER = "400000000000000004"

NAMES = {
    ME: Member(ME, "clank", "Clank"),
    ALICE: Member(ALICE, "alice_w", "Alice"),
    BOB: Member(BOB, "bobby", "Bob"),
    CAROL: Member(CAROL, "carol", "Carol"),
    DAVE_USER: Member(DAVE_USER, "dave99", None),
}


def voice_state(
    user: str, *, stream: bool = False, video: bool = False, channel: str | None = CHANNEL
) -> dict[str, object]:
    return {
        "guild_id": GUILD,
        "channel_id": channel,
        "user_id": user,
        "session_id": "sess",
        "self_stream": stream,
        "self_video": video,
    }


def stream_key(user: str) -> str:
    return f"guild:{GUILD}:{CHANNEL}:{user}"


def stream_create(user: str) -> dict[str, object]:
    return {
        "stream_key": stream_key(user),
        "rtc_server_id": "900000000000000123",
        "rtc_channel_id": "900000000000000124",
        "region": "local",
        "viewer_ids": [],
        "paused": False,
    }


def real_frame(sequence: int, captured_at: float, *, index: int = 0) -> FrameView:
    """A real JPEG of the synthetic screen (small, so tests stay fast)."""
    synth = ScreenSynth(320, 180, seed=sequence)
    frame = synth.frame(index)
    image = encode_jpeg(frame, max_pixels=None)
    return FrameView(
        jpeg=image.data,
        width=image.width,
        height=image.height,
        sequence=sequence,
        captured_at=captured_at,
        source_width=frame.width,
        source_height=frame.height,
        keyframe=sequence == 1,
        change_score=0.25,
        mean_abs_diff=3.5,
        change_smoothed=0.2,
        scene_cut=False,
    )


def source_frame(sequence: int, *, index: int = 0) -> av.VideoFrame:
    return ScreenSynth(320, 180, seed=sequence).frame(index)


class RegistrySession:
    """SessionPort over a real StreamRegistry. ``sent`` collects the gateway frames it would send."""

    def __init__(self, *, in_voice: bool = True) -> None:
        self.registry = StreamRegistry(ME, guild_ids=[GUILD])
        self._in_voice = in_voice
        self._watches: dict[tuple[str, WatchKind], WatchView] = {}
        self._frames: dict[tuple[str, WatchKind], FrameView] = {}
        self.sent: list[GatewayFrame] = []
        self.start_calls: list[tuple[str, WatchKind]] = []
        self.refuse_with: str | None = None
        self.privacy_code = "12345 67890 13579 24680 11223 34455"

    # --- feeding -------------------------------------------------------------------------------

    def dispatch(self, name: str, data: object) -> None:
        self.registry.handle_dispatch(name, data, trio.current_time() if _in_trio() else 0.0)

    def join(self, user: str, *, stream: bool = False, video: bool = False) -> None:
        self.dispatch("VOICE_STATE_UPDATE", voice_state(user, stream=stream, video=video))

    def deliver_frame(self, user: str, kind: WatchKind, frame: FrameView) -> None:
        watch = self._watches[(user, kind)]
        self._frames[(user, kind)] = frame
        self._watches[(user, kind)] = WatchView(
            user_id=watch.user_id,
            kind=watch.kind,
            state="watching",
            started_at=watch.started_at,
            frames=watch.frames + 1,
        )

    # --- SessionPort ---------------------------------------------------------------------------

    @property
    def our_user_id(self) -> str:
        return ME

    def in_voice(self) -> bool:
        return self._in_voice

    def sharers(self) -> Sequence[SharerState]:
        return sharers_from_registry(self.registry)

    def members(self) -> Sequence[Member]:
        in_voice = {vs.user_id for vs in self.registry.members()} | {ME}
        return [m for uid, m in NAMES.items() if uid in in_voice]

    def watches(self) -> Sequence[WatchView]:
        return list(self._watches.values())

    async def start_watch(self, user_id: str, kind: WatchKind) -> None:
        await trio.lowlevel.checkpoint()
        self.start_calls.append((user_id, kind))
        if self.refuse_with is not None:
            raise WatchError(self.refuse_with, "refused by the test")
        if kind == "go_live":
            request = self.registry.request_watch(user_id, trio.current_time())
            self.sent.extend(request.frames)
        self._watches[(user_id, kind)] = WatchView(
            user_id=user_id, kind=kind, state="connecting", started_at=trio.current_time()
        )

    async def stop_watch(self, user_id: str, kind: WatchKind) -> None:
        await trio.lowlevel.checkpoint()
        if kind == "go_live":
            stream = self.registry.stream_for_user(user_id)
            frame = None if stream is None else self.registry.stop_watch(stream.key)
            if frame is not None:
                self.sent.append(frame)
        self._watches.pop((user_id, kind), None)
        self._frames.pop((user_id, kind), None)

    def latest_frame(self, user_id: str, kind: WatchKind) -> FrameView | None:
        return self._frames.get((user_id, kind))

    def status(self) -> SessionStatus:
        voice_dave = DaveStatus(protocol_version=1, state="ready", epoch=3, privacy_code=self.privacy_code)
        roles = [
            RoleStatus(
                name="voice",
                kind="voice",
                state="ready",
                transport={"ws": "open", "udp": "ready", "encryption": "aead_aes256_gcm_rtpsize"},
                qos={"packets": 1500, "lost": 2, "jitter_ms": 4.5},
                dave=voice_dave,
            )
        ]
        for (user, kind), watch in self._watches.items():
            roles.append(
                RoleStatus(
                    name=f"{'stream_watch' if kind == 'go_live' else 'webcam_watch'}",
                    kind="stream_watch" if kind == "go_live" else "webcam_watch",
                    state="ready" if watch.state == "watching" else "connecting",
                    target_user_id=user,
                    transport={"ws": "open", "udp": "ready"},
                    qos={"fps": 2.0, "frames": watch.frames, "nacks": 0},
                    dave=DaveStatus(protocol_version=1, state="ready", epoch=1),
                )
            )
        return SessionStatus(
            in_voice=self._in_voice,
            our_user_id=ME,
            guild_id=GUILD,
            channel_id=CHANNEL,
            roles=tuple(roles),
            mode="sandbox",
        )


def _in_trio() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


def luma(image_jpeg: bytes) -> np.ndarray:
    """Decode a JPEG's luma plane (for content checks)."""
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(image_jpeg)).convert("L"), dtype=np.uint8)
