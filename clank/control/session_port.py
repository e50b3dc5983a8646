"""The live implementation of :class:`~clank.control.service.SessionPort` over a real voice session.

It joins three things the agent surface reads — the Go Live registry (who shares), the member
directory (how people are named) and the voice session's roles (what we watch, with QoS and
DAVE state) — and maps the session's watch kinds (``screen``/``camera``) to the agent's
(``go_live``/``webcam``). Every field the dashboard shows is a JSON scalar built here.

The registry and the directory are fed by :func:`feed_directory`, a task of the runner's nursery
that reads main-gateway dispatches; nothing here owns a task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs
import trio

from clank.control.dave_codes import VerificationCodes, group_code
from clank.control.model import DaveStatus, FrameView, RoleStatus, SessionStatus, WatchView
from clank.control.publish import publish_role_status
from clank.control.resolve import Member, SharerState, WatchKind, sharers_from_registry
from clank.crypto.dave import DaveSessionCore
from clank.crypto.dave_stats import DaveStatistics
from clank.errors import ClankError, InvalidArgument, WatchError
from clank.io.gateway import Dispatch
from clank.io.media_connection_statistics import MediaConnectionStatistics
from clank.io.user_names import UserNames
from clank.logging import get_logger
from clank.protocol.streams import StreamRegistry
from clank.session.roles import RoleState
from clank.session.stream_watch import start_stream_watch
from clank.session.voice_session import VoiceSession
from clank.session.watch_handle import WatchHandle
from clank.session.webcam_watch import start_webcam_watch
from clank.watch.notes import ScreenNotes

log = get_logger("clank.control")

_SESSION_KIND: Final[Mapping[WatchKind, str]] = {"go_live": "screen", "webcam": "camera"}
_STATE_NAMES: Final[Mapping[RoleState, str]] = {
    RoleState.CONNECTING: "connecting",
    RoleState.READY: "watching",
    RoleState.RECONNECTING: "connecting",
    RoleState.FAILED: "ended",
    RoleState.DISCONNECTED: "ended",
}
LOOKED_UP_LIMIT: Final = 4096
"""Ids the directory remembers having looked up through REST (for ``members()``)."""
DIRECTORY_EVENTS: Final = frozenset(
    {
        "READY",
        "GUILD_CREATE",
        "READY_SUPPLEMENTAL",
        "GUILD_MEMBER_ADD",
        "GUILD_MEMBER_UPDATE",
        "GUILD_MEMBERS_CHUNK",
        "VOICE_STATE_UPDATE",
        "STREAM_CREATE",
        "STREAM_SERVER_UPDATE",
        "STREAM_UPDATE",
        "STREAM_DELETE",
    }
)


class MemberDirectory:
    """Names of the guild members we have seen (GUILD_CREATE members, voice-state members).

    With ``names`` (:class:`~clank.io.user_names.UserNames`), ids the gateway never named (a voice
    state without its member, a user absent from READY) are looked up through ``GET /users/{id}``
    and listed in ``members()`` once known, so tool results and the status show names.
    """

    def __init__(self, names: UserNames | None = None) -> None:
        self._members: dict[str, Member] = {}
        self._places: dict[str, str] = {}  # guild and channel id -> name
        self.names = names
        self._looked_up: dict[str, None] = {}  # ids handed to ``names`` (ordered, bounded)

    def place_name(self, snowflake: str | None) -> str | None:
        """The name of a guild or channel we have seen (GUILD_CREATE), else None."""
        return None if snowflake is None else self._places.get(snowflake)

    def members(self) -> list[Member]:
        known = list(self._members.values())
        if self.names is not None:
            for user_id in self._looked_up:
                label = None if user_id in self._members else self.names.cached(user_id)
                if label is not None:
                    known.append(Member(user_id, display_name=label))
        return known

    def name_of(self, user_id: str) -> str:
        member = self._members.get(user_id)
        if member is not None:
            return member.label
        label = self._look_up(user_id)
        return user_id if label is None else label

    def _look_up(self, user_id: object) -> str | None:
        """The REST-resolved label of an id we have no member for (asking for it if needed)."""
        names = self.names
        if names is None or not isinstance(user_id, str) or user_id in self._members:
            return None
        label = names.cached(user_id)
        if label is None:
            names.request(user_id)
        if user_id not in self._looked_up:
            self._looked_up[user_id] = None
            while len(self._looked_up) > LOOKED_UP_LIMIT:
                del self._looked_up[next(iter(self._looked_up))]
        return label

    def observe(self, name: str, data: object) -> None:
        """Learn names from a dispatch; unknown shapes are ignored (names are best effort)."""
        if not isinstance(data, dict):
            return
        if name == "GUILD_CREATE":
            self._place(data)
            for channel in data.get("channels") or ():
                self._place(channel)
            for member in data.get("members") or ():
                self._member(member)
            for state in data.get("voice_states") or ():
                if isinstance(state, dict):
                    self._voice_state(state)
        elif name in {"GUILD_MEMBER_ADD", "GUILD_MEMBER_UPDATE"}:
            self._member(data)
        elif name == "GUILD_MEMBERS_CHUNK":
            for member in data.get("members") or ():
                self._member(member)
        elif name == "VOICE_STATE_UPDATE":
            self._voice_state(data)
        elif name == "READY":
            for user in data.get("users") or ():
                self._user(user, None)
            # A user session's guilds come inline in READY (no GUILD_CREATE follows): read them
            # the same way; bot READY has only {"id", "unavailable"} stubs, which add nothing.
            for guild in data.get("guilds") or ():
                if isinstance(guild, dict) and not guild.get("unavailable"):
                    props = guild.get("properties")  # Discord's user READY: name under properties
                    named = guild
                    if isinstance(props, dict) and "name" in props and "name" not in guild:
                        named = {**guild, "name": props["name"]}
                    self.observe("GUILD_CREATE", named)
        elif name == "READY_SUPPLEMENTAL":
            for members in data.get("merged_members") or ():
                for member in members if isinstance(members, list) else ():
                    self._merged_member(member)

    def _voice_state(self, state: dict[str, Any]) -> None:
        """A voice state names its user through ``member`` (guilds); without one, look it up."""
        if isinstance(state.get("member"), dict):
            self._member(state["member"])
        else:
            self._look_up(state.get("user_id"))

    def _merged_member(self, member: object) -> None:
        """READY_SUPPLEMENTAL member: ``user_id`` (the user object is in READY ``users``) + nick."""
        if not isinstance(member, dict) or not isinstance(member.get("user_id"), str):
            return
        nick = member.get("nick")
        known = self._members.get(member["user_id"])
        if isinstance(nick, str) and known is not None:
            self._members[known.user_id] = attrs.evolve(known, display_name=nick)
        elif known is None:
            self._look_up(member["user_id"])

    def _place(self, item: object) -> None:
        if isinstance(item, dict) and isinstance(item.get("id"), str) and isinstance(item.get("name"), str):
            self._places[item["id"]] = item["name"]

    def _member(self, member: object) -> None:
        if isinstance(member, dict):
            nick = member.get("nick")
            self._user(member.get("user"), nick if isinstance(nick, str) else None)

    def _user(self, user: object, nick: str | None) -> None:
        if not isinstance(user, dict) or not isinstance(user.get("id"), str):
            return
        username = user.get("username") if isinstance(user.get("username"), str) else None
        global_name = user.get("global_name") if isinstance(user.get("global_name"), str) else None
        self._members[user["id"]] = Member(user["id"], username=username, display_name=nick or global_name)


async def feed_directory(
    dispatches: trio.MemoryReceiveChannel[Dispatch], registry: StreamRegistry, directory: MemberDirectory
) -> None:
    """Feed the Go Live registry and the member directory until the gateway stops."""
    try:
        async for dispatch in dispatches:
            directory.observe(dispatch.name, dispatch.data)
            for event in registry.handle_dispatch(dispatch.name, dispatch.data, trio.current_time()):
                log.info(event.name, **event.log_fields())
    except trio.ClosedResourceError:
        return  # the subscription was closed on shutdown: end of input


def _dave_status(
    stats: DaveStatistics | None, codes: Mapping[str, str], members: Mapping[str, str] | None = None
) -> DaveStatus | None:
    if stats is None:
        return None
    return DaveStatus(
        protocol_version=stats.protocol_version,
        state=stats.state.value,
        epoch=stats.epoch,
        privacy_code=stats.voice_privacy_code,
        verification_codes=dict(codes),
        members=dict(members or {}),
    )


def _transport(conn: MediaConnectionStatistics | None) -> dict[str, str | int | float | bool | None]:
    if conn is None:
        return {"ws": "connecting"}
    return {
        "ws": conn.state,
        "mode": conn.mode,
        "ssrc": conn.ssrc,
        "heartbeatMs": None if conn.heartbeat_latency is None else round(conn.heartbeat_latency * 1000, 1),
        "resumes": conn.resumes,
        "reconnects": conn.reconnects,
        "packetsIn": conn.packets_in,
        "packetsOut": conn.packets_out,
        "keepalivesSent": conn.keepalives_sent,
    }


class LiveSessionPort:
    """:class:`~clank.control.service.SessionPort` over a :class:`VoiceSession`."""

    def __init__(
        self,
        session: VoiceSession,
        registry: StreamRegistry,
        directory: MemberDirectory,
        *,
        mode: str = "discord",
        notes_factory: Any = None,
    ) -> None:
        self._session = session
        self._registry = registry
        self._directory = directory
        self._mode = mode
        self._handles: dict[tuple[str, WatchKind], WatchHandle] = {}
        self._started: dict[tuple[str, WatchKind], float] = {}
        self._notes: dict[tuple[str, WatchKind], ScreenNotes] = {}
        self._notes_factory = notes_factory
        self._codes = VerificationCodes()

    # --- SessionPort ---------------------------------------------------------------------------

    @property
    def our_user_id(self) -> str:
        return self._session.user_id

    @property
    def voice_session(self) -> VoiceSession:
        """The session itself (the publish surface, control/publish.py, drives it directly)."""
        return self._session

    def in_voice(self) -> bool:
        try:
            voice = self._session.voice
        except ClankError:
            return False
        return not voice.state.final and self._session.session_id is not None

    def sharers(self) -> Sequence[SharerState]:
        return sharers_from_registry(self._registry)

    def members(self) -> Sequence[Member]:
        for sharer in self.sharers():
            self._directory.name_of(sharer.user_id)  # a sharer we have no name for is looked up
        return self._directory.members()

    def watches(self) -> Sequence[WatchView]:
        views = []
        for (user_id, kind), handle in self._handles.items():
            stats = handle.frames.statistics()
            views.append(
                WatchView(
                    user_id=user_id,
                    kind=kind,
                    state="ended" if not handle.active else _STATE_NAMES.get(handle.state, "connecting"),
                    started_at=self._started[(user_id, kind)],
                    frames=stats.published,
                    ended_reason=handle.reason,
                )
            )
        return views

    async def start_watch(self, user_id: str, kind: WatchKind) -> None:
        settings = self._session.settings.watch
        if kind == "go_live":
            handle = await start_stream_watch(self._session, user_id, settings=settings)
        elif kind == "webcam":
            handle = await start_webcam_watch(self._session, user_id, settings)
        else:  # pragma: no cover - the service only passes the two kinds
            raise WatchError("unsupported_kind", kind)
        key = (user_id, kind)
        if self._handles.get(key) is not handle:
            self._handles[key] = handle
            self._started[key] = trio.current_time()
            if self._notes_factory is not None:
                self._notes[key] = self._notes_factory(handle, self._directory.name_of(user_id), kind)

    async def stop_watch(self, user_id: str, kind: WatchKind) -> None:
        handle = self._handles.get((user_id, kind))
        if handle is not None:
            await handle.stop()

    def latest_frame(self, user_id: str, kind: WatchKind) -> FrameView | None:
        handle = self._handles.get((user_id, kind))
        if handle is None:
            return None
        frame = handle.frames.latest
        return None if frame is None else FrameView.from_screen_frame(frame)

    def notes(self, user_id: str, kind: WatchKind) -> list[dict[str, Any]]:
        notes = self._notes.get((user_id, kind))
        if notes is None:
            return []
        return [
            {
                "number": n.number,
                "text": n.text,
                "trigger": n.trigger,
                "changeScore": n.change_score,
                "provider": n.provider,
                "frameSequence": n.frame_sequence,
            }
            for n in notes.notes()
        ]

    def status(self) -> SessionStatus:
        roles: list[RoleStatus] = []
        try:
            voice = self._session.voice
        except ClankError:
            voice = None
        if voice is not None:
            roles.append(self._voice_status(voice))
        for (user_id, kind), handle in self._handles.items():
            roles.append(self._watch_status(user_id, kind, handle))
        publish = publish_role_status(self._session)
        if publish is not None:
            roles.append(publish)
        return SessionStatus(
            in_voice=self.in_voice(),
            our_user_id=self.our_user_id,
            guild_id=self._session.guild_id,
            channel_id=self._session.channel_id,
            roles=tuple(roles),
            mode=self._mode,
            guild_name=self._directory.place_name(self._session.guild_id),
            channel_name=self._directory.place_name(self._session.channel_id),
            our_user_name=self._directory.name_of(self.our_user_id),
        )

    async def verification_code(self, user_id: str) -> dict[str, Any]:
        """``user_id``'s DAVE verification code in our voice group (computed once per group state
        on a worker thread, then cached): ``{userId, name, epoch, code, grouped}``."""
        if not user_id.isdigit():
            raise InvalidArgument("user", "must be a user id (a snowflake)")
        dave = self._voice_dave()
        if dave is None:
            raise InvalidArgument("user", "no DAVE session in voice")
        code = await self._codes.code(dave, int(user_id))
        return {
            "userId": user_id,
            "name": self._directory.name_of(user_id),
            "epoch": dave.epoch,
            "code": code,
            "grouped": None if code is None else group_code(code),
        }

    @property
    def verification_statistics(self) -> int:
        """How many verification codes were computed so far (each costs ~0.27 s of CPU)."""
        return self._codes.computed

    # --- status helpers ------------------------------------------------------------------------

    def _voice_dave(self) -> DaveSessionCore | None:
        try:
            dave = self._session.voice.api.connection.dave
        except (ClankError, AttributeError):
            return None
        return dave if isinstance(dave, DaveSessionCore) else None

    def _voice_status(self, voice: Any) -> RoleStatus:
        stats = voice.statistics()
        detail = stats.detail
        conn = None if detail is None else detail.connection
        # Cheap on purpose (the dashboard asks twice a second): cached codes only, never davey's
        # 0.27 s scrypt — codes are computed on request (verification_code).
        codes: dict[str, str] = {}
        members: dict[str, str] = {}
        dave = self._voice_dave()
        if dave is not None:
            codes = {str(uid): code for uid, code in self._codes.cached(dave).items()}
            for uid in sorted(dave.group_user_ids()):
                if str(uid) != self.our_user_id:
                    members[str(uid)] = self._directory.name_of(str(uid))
        qos: dict[str, str | int | float | bool | None] = {}
        if detail is not None:
            qos = {
                "framesSent": detail.frames_sent,
                "decodedFrames": detail.decoded_frames,
                "concealedFrames": detail.concealed_frames,
                "speaking": ", ".join(self._directory.name_of(u) for u in detail.speaking_users) or None,
                "videoPackets": detail.video_packets,
                "lateFrames": detail.late_frames,
                "encodeDropped": 0 if detail.encode is None else detail.encode.dropped,
                "encodeFallbacks": detail.encode_fallbacks,
                "sendPath": detail.send_path,
            }
        return RoleStatus(
            name="voice",
            kind="voice",
            state=stats.state.value,
            transport=_transport(conn),
            qos=qos,
            dave=_dave_status(None if conn is None else conn.dave, codes, members),
            ended_reason=stats.reason,
            close_code=stats.close_code,
            also_failed=stats.also_failed,
        )

    def _watch_status(self, user_id: str, kind: WatchKind, handle: WatchHandle) -> RoleStatus:
        stats = handle.statistics()
        qos: dict[str, str | int | float | bool | None] = {
            "framesPublished": stats.frames_published,
            "timeToFirstFrameMs": None
            if stats.time_to_first_frame is None
            else round(stats.time_to_first_frame * 1000),
        }
        remb = stats.remb
        if remb is not None:
            qos.update({"rembSent": remb.sent, "rembKbps": round(remb.estimate_bps / 1000)})
        for ssrc, stream in stats.streams.items():
            rx = stream.receive
            qos.update(
                {
                    "codec": rx.codec,
                    # The received layer: its SSRC, simulcast rid and resolution, and its bitrate.
                    "ssrc": ssrc,
                    "rid": stream.rid,
                    "bitrateKbps": round(stream.bitrate_bps / 1000),
                    "resolution": f"{stream.width}x{stream.height}" if stream.width else None,
                    "packets": rx.packets_received,
                    "lost": rx.packets_lost,
                    "recovered": rx.packets_recovered,
                    "rtx": rx.rtx_received,
                    "nacks": rx.nack_packets,
                    "keyframeRequests": rx.keyframe_requests,
                    "pliToKeyframeMs": None
                    if rx.pli_to_keyframe is None
                    else round(rx.pli_to_keyframe * 1000),
                    "framesConcealed": rx.frames_concealed,
                    "framesAssembled": rx.frames_assembled,
                    "daveOk": rx.dave_ok,
                    "daveFailed": rx.dave_failed,
                    "daveFailedBeforeReady": rx.dave_failed_before_ready,
                    # Access units per second over the last 2 s ending now (decays to 0 when frozen).
                    "fpsIn": round(stream.decode.fps_in if stream.decode is not None else rx.fps_in, 1),
                }
            )
            if stream.decode is not None:
                qos.update(
                    {
                        "decoded": stream.decode.decoded_frames,
                        "decodeErrors": stream.decode.decode_errors,
                        "fpsOut": round(stream.decode.fps_out, 2),
                        "lastFrameAgeMs": None
                        if stream.decode.last_output_age is None
                        else round(stream.decode.last_output_age * 1000),
                        "decodeP99Ms": None
                        if stream.decode.delay_p99 is None
                        else round(stream.decode.delay_p99 * 1000, 1),
                    }
                )
        conn = stats.connection
        name = "stream_watch" if kind == "go_live" else "webcam_watch"
        # Webcams ride on the voice leg: its transport is the voice role's.
        transport = _transport(conn) if kind == "go_live" else {"leg": "voice"}
        return RoleStatus(
            name=name,
            kind=name,
            state=handle.state.value if handle.active else "disconnected",
            target_user_id=user_id,
            transport=transport,
            qos=qos,
            dave=_dave_status(None if conn is None else conn.dave, {}),
            ended_reason=handle.reason,
            also_failed=stats.also_failed,
        )
