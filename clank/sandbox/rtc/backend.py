"""The sandbox's ``MediaBackend``: voice servers per channel, stream servers per Go Live, simulated media.

``open_sandbox`` enables it by default; tests reach it as ``sb.media``::

    sb.media.voice_server(channel_id)          # MediaServer (endpoint, statistics(), faults)
    sb.media.stream_server(stream_key)
    sb.media.listener(user_id)                 # SimulatedMember: received PCM, heard_frequency()
    sb.media.speaker(user_id)                  # Speaker: talking, frames_sent
    sb.media.streamer(user_id)                 # VideoSender of the user's Go Live: sources, sent, stats
    sb.media.webcam(user_id)                   # VideoSender of the user's webcam (voice leg)
    await sb.media.faults.link(user_id, "downlink", loss=0.05, seed=1)

World actions drive the simulated users: a simulated user who joins voice becomes a member
(listening; talking on ``set_speaking``), ``go_live`` starts a screen share on a fresh stream
server (server_id = rtc_server_id, DAVE group rtc_server_id - 1), ``set_webcam`` a webcam on the
voice leg, ``stop_stream``/leaving stop them. Real clients (ours) get endpoints and tokens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

import attrs
import trio

from clank.errors import SandboxError
from clank.io.lossy import LossyLink
from clank.logging import get_logger
from clank.sandbox.model import StreamKey, UserKind, VoiceState
from clank.sandbox.rtc.server import (
    CLOSE_CALL_TERMINATED,
    CLOSE_DISCONNECTED,
    Kind,
    MediaServer,
    MediaServerConfig,
    MediaServerStatistics,
    open_media_server,
)
from clank.sandbox.rtc.streamer import VideoSender, VideoSettings
from clank.sandbox.rtc.udp_plane import Direction
from clank.sandbox.rtc.users import Signal, SimulatedMember, Speaker, open_simulated_member
from clank.sandbox.rtc.viewer import Reference, StreamViewer
from clank.sandbox.world import World

log = get_logger("clank.sandbox.rtc.backend")

# Simulated voices are told apart by pitch: user n speaks at BASE + STEP * (n mod 8).
VOICE_BASE_HZ = 180.0
VOICE_STEP_HZ = 40.0


WEBCAM = VideoSettings(width=640, height=360, bitrate=800_000, content="webcam")
# Close frames of a ended stream get this long to go out before the server is torn down.
STREAM_CLOSE_GRACE = 0.1


@attrs.frozen
class RtcSettings:
    server: MediaServerConfig = attrs.field(factory=MediaServerConfig)
    screen: VideoSettings = attrs.field(factory=VideoSettings)
    """Go Live of simulated users: 1280x720 H264 screen content at 30 fps."""
    webcam: VideoSettings = attrs.field(factory=lambda: WEBCAM)
    signal: Signal = "speech"


@attrs.define(eq=False)
class _Running:
    scope: trio.CancelScope
    member: SimulatedMember | None = None
    speaker: Speaker | None = None
    video: VideoSender | None = None


class RtcMediaBackend:
    """See the module docstring. Create with :func:`open_rtc_backend`."""

    def __init__(self, nursery: trio.Nursery, settings: RtcSettings) -> None:
        self._nursery = nursery
        self.settings = settings
        self._world: World | None = None
        self._voice: dict[str, tuple[MediaServer, trio.CancelScope]] = {}  # channel id -> server
        self._streams: dict[str, tuple[MediaServer, trio.CancelScope]] = {}  # stream key -> server
        self._members: dict[tuple[str, int], _Running] = {}  # (server id, user) -> member task
        self._videos: dict[tuple[str, int], _Running] = {}  # (server id, user) -> video task
        self.faults = MediaFaults(self)
        self.viewers: dict[str, StreamViewer] = {}  # user id -> the latest viewer it ran

    def bind_world(self, world: World) -> None:
        self._world = world

    # ------------------------------------------------------------------ lookups

    def voice_server(self, channel_id: str) -> MediaServer:
        try:
            return self._voice[channel_id][0]
        except KeyError:
            raise SandboxError(f"no voice server for channel {channel_id}") from None

    def stream_server(self, stream_key: str) -> MediaServer:
        try:
            return self._streams[stream_key][0]
        except KeyError:
            raise SandboxError(f"no stream server for {stream_key}") from None

    def servers(self) -> list[MediaServer]:
        return [s for s, _ in self._voice.values()] + [s for s, _ in self._streams.values()]

    def statistics(self) -> list[MediaServerStatistics]:
        return [server.statistics() for server in self.servers()]

    def listener(self, user_id: str) -> SimulatedMember:
        """The simulated user's member on its voice server (what it hears)."""
        member = self._voice_running(user_id).member
        assert member is not None
        return member

    def speaker(self, user_id: str) -> Speaker:
        speaker = self._voice_running(user_id).speaker
        assert speaker is not None
        return speaker

    def streamer(self, user_id: str) -> VideoSender:
        for (server_id, uid), running in self._videos.items():
            if uid == int(user_id) and any(_call_id(s) == server_id for s, _ in self._streams.values()):
                assert running.video is not None
                return running.video
        raise SandboxError(f"user {user_id} is not streaming")

    def webcam(self, user_id: str) -> VideoSender:
        for (server_id, uid), running in self._videos.items():
            if uid == int(user_id) and any(_call_id(s) == server_id for s, _ in self._voice.values()):
                assert running.video is not None
                return running.video
        raise SandboxError(f"user {user_id} has no webcam on")

    def _voice_running(self, user_id: str) -> _Running:
        for server, _ in self._voice.values():
            running = self._members.get((_call_id(server), int(user_id)))
            if running is not None:
                return running
        raise SandboxError(f"simulated user {user_id} is not in voice")

    def _simulated(self, user_id: str) -> bool:
        if self._world is None:
            return False
        return self._world.user(user_id).kind is UserKind.SIMULATED

    async def start_viewer(
        self, user_id: str, stream_key: str, *, reference: Reference | None = None
    ) -> StreamViewer:
        """A simulated user watches ``stream_key`` (op20 through the world) and decodes it."""
        if self._world is None or not await self._world.watch_stream(user_id, stream_key):
            raise SandboxError(f"user {user_id} may not watch {stream_key}")
        server = self.stream_server(stream_key)
        running = self._members.get((_call_id(server), int(user_id)))
        if running is None or running.member is None:
            raise SandboxError(f"user {user_id} is not a simulated member of {stream_key}")
        viewer = StreamViewer(running.member, reference=reference)
        self.viewers[user_id] = viewer
        self._nursery.start_soon(viewer.run)
        return viewer

    def share_stream_audio(
        self,
        stream_key: str,
        on: bool = True,
        *,
        frequency: float | None = None,
        signal: Signal | None = None,
    ) -> Speaker:
        """The streamer shares audio with its Go Live: its member *on the stream server* talks
        (Opus on that leg's own SSRC, encrypted with that leg's DAVE group, op5 on that leg)."""
        key = StreamKey.parse(stream_key)
        server = self.stream_server(stream_key)
        running = None if key is None else self._members.get((_call_id(server), int(key.owner_id)))
        if running is None or running.speaker is None:
            raise SandboxError(f"{stream_key} has no simulated streamer")
        if frequency is not None:
            running.speaker.frequency = frequency
        if signal is not None:
            running.speaker.signal = signal
        running.speaker.set_talking(on)
        return running.speaker

    # ------------------------------------------------------------------ MediaBackend

    async def allocate_voice(
        self, guild_id: str, channel_id: str, user_id: str, session_id: str
    ) -> tuple[str, str]:
        await self._leave_voice_servers(user_id, keep=channel_id)
        server = await self._server(self._voice, channel_id, "voice", guild_id, int(channel_id))
        token = server.grant(user_id, session_id)
        if self._simulated(user_id):
            await self._start_member(server, user_id)
        return server.endpoint, token

    async def allocate_stream(
        self, stream_key: str, user_id: str, session_id: str, rtc_server_id: str
    ) -> tuple[str, str]:
        server = await self._server(
            self._streams, stream_key, "stream", rtc_server_id, int(rtc_server_id) - 1
        )
        token = server.grant(user_id, session_id)
        if self._simulated(user_id):
            running = await self._start_member(server, user_id)
            key = StreamKey.parse(stream_key)
            if key is not None and key.owner_id == user_id and running.member is not None:
                await self._start_video(server, running.member, self.settings.screen)
        return server.endpoint, token

    async def voice_left(self, user_id: str) -> None:
        await self._leave_voice_servers(user_id, keep=None)

    async def stream_ended(self, stream_key: str) -> None:
        entry = self._streams.pop(stream_key, None)
        if entry is None:
            return
        server, scope = entry
        for key in [k for k in (*self._members, *self._videos) if k[0] == _call_id(server)]:
            self._stop(key)
        server.crash(CLOSE_CALL_TERMINATED)
        await trio.sleep(STREAM_CLOSE_GRACE)
        scope.cancel()

    async def viewer_left(self, stream_key: str, user_id: str) -> None:
        entry = self._streams.get(stream_key)
        if entry is None:
            return
        server = entry[0]
        server.revoke(user_id)
        self._stop((_call_id(server), int(user_id)))
        server.remove(int(user_id), CLOSE_DISCONNECTED, "stopped watching")

    async def voice_state_changed(self, state: VoiceState) -> None:
        if not self._simulated(state.user_id):
            return
        entry = self._voice.get(state.channel_id)
        if entry is None:
            return
        server = entry[0]
        key = (_call_id(server), int(state.user_id))
        running = self._members.get(key)
        if (
            state.self_video
            and key not in self._videos
            and running is not None
            and running.member is not None
        ):
            await self._start_video(server, running.member, self.settings.webcam)
        elif not state.self_video and key in self._videos:
            self._stop_video(key)

    async def speaking_changed(self, user_id: str, speaking: bool) -> None:
        try:
            speaker = self.speaker(user_id)
        except SandboxError:
            return
        speaker.set_talking(speaking)

    # ------------------------------------------------------------------ internals

    async def _server(
        self,
        table: dict[str, tuple[MediaServer, trio.CancelScope]],
        key: str,
        kind: Kind,
        server_id: str,
        group_id: int,
    ) -> MediaServer:
        entry = table.get(key)
        if entry is None:
            entry = await self._nursery.start(self._serve, kind, server_id, group_id)
            table[key] = entry
        return entry[0]

    async def _serve(
        self,
        kind: Kind,
        server_id: str,
        group_id: int,
        task_status: trio.TaskStatus[tuple[MediaServer, trio.CancelScope]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with trio.CancelScope() as scope:
            async with open_media_server(kind, server_id, group_id, self.settings.server) as server:
                task_status.started((server, scope))
                await trio.sleep_forever()

    async def _leave_voice_servers(self, user_id: str, keep: str | None) -> None:
        for channel_id, (server, _) in self._voice.items():
            if channel_id == keep:
                continue
            server.revoke(user_id)
            for key in [k for k in (*self._members, *self._videos) if k == (_call_id(server), int(user_id))]:
                self._stop(key)
            if server.participant(int(user_id)) is not None:
                server.remove(int(user_id), CLOSE_DISCONNECTED, "left the voice channel")

    async def _start_member(self, server: MediaServer, user_id: str) -> _Running:
        key = (_call_id(server), int(user_id))
        running = self._members.get(key)
        if running is None:
            frequency = VOICE_BASE_HZ + VOICE_STEP_HZ * (int(user_id) % 8)
            running = await self._nursery.start(self._run_member, server, int(user_id), frequency)
            self._members[key] = running
        return running

    async def _run_member(
        self,
        server: MediaServer,
        user_id: int,
        frequency: float,
        task_status: trio.TaskStatus[_Running] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with trio.CancelScope() as scope:
            signal = self.settings.signal
            async with open_simulated_member(server, user_id, signal=signal, frequency=frequency) as (
                member,
                speaker,
            ):
                task_status.started(_Running(scope, member, speaker))
                await trio.sleep_forever()

    async def _start_video(
        self, server: MediaServer, member: SimulatedMember, settings: VideoSettings
    ) -> None:
        key = (_call_id(server), member.user_id)
        if key not in self._videos:
            self._videos[key] = await self._nursery.start(self._run_video, member, settings)

    async def _run_video(
        self,
        member: SimulatedMember,
        settings: VideoSettings,
        task_status: trio.TaskStatus[_Running] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with trio.CancelScope() as scope:
            sender = VideoSender(member, settings)
            task_status.started(_Running(scope, member, None, sender))
            try:
                await sender.run()
            finally:
                if member.joined:
                    sender.announce(False)

    def _stop_video(self, key: tuple[str, int]) -> None:
        running = self._videos.pop(key, None)
        if running is not None:
            running.scope.cancel()

    def _stop(self, key: tuple[str, int]) -> None:
        self._stop_video(key)
        running = self._members.pop(key, None)
        if running is not None:
            running.scope.cancel()

    def _server_of(self, user_id: str, stream_key: str | None) -> MediaServer:
        if stream_key is not None:
            return self.stream_server(stream_key)
        for server, _ in self._voice.values():
            if server.participant(int(user_id)) is not None:
                return server
        raise SandboxError(f"user {user_id} is not on any voice server")


def _call_id(server: MediaServer) -> str:
    return f"{server.server_id}:{server.group_id}"


class MediaFaults:
    """Seeded media faults; ``stream_key=None`` means the user's voice server."""

    def __init__(self, backend: RtcMediaBackend) -> None:
        self._backend = backend

    async def link(
        self,
        user_id: str,
        direction: Direction,
        *,
        loss: float = 0.0,
        dup: float = 0.0,
        reorder: float = 0.0,
        delay: float = 0.0,
        jitter: float = 0.0,
        seed: int = 0,
        stream_key: str | None = None,
    ) -> None:
        """Impair one direction of the user's media; all zero restores a clean link."""
        server = self._backend._server_of(user_id, stream_key)
        clean = not (loss or dup or reorder or delay or jitter)
        link = (
            None
            if clean
            else LossyLink(seed, loss=loss, dup=dup, reorder=reorder, delay=delay, jitter=jitter)
        )
        log.info("media fault: link", user_id=user_id, direction=direction, link=repr(link))
        await server.set_link(int(user_id), direction, link)

    def close(self, user_id: str, code: int, *, stream_key: str | None = None) -> None:
        self._backend._server_of(user_id, stream_key).close_connection(int(user_id), code)

    def stop_acking(self, user_id: str, on: bool = True, *, stream_key: str | None = None) -> None:
        self._backend._server_of(user_id, stream_key).stop_acking(int(user_id), on)

    def drop_udp(self, user_id: str, on: bool = True, *, stream_key: str | None = None) -> None:
        self._backend._server_of(user_id, stream_key).drop_udp(int(user_id), on)

    def send_message(
        self, user_id: str, op: int, d: dict[str, object] | None, *, stream_key: str | None = None
    ) -> None:
        """Send the user's client any voice-gateway JSON message (shapes Discord sends: op18 with
        video state, op12 with integral floats or streams without ``ssrc``, op16 ...)."""
        self._backend._server_of(user_id, stream_key).send_message(int(user_id), op, d)

    def omit_speaking(self, user_id: str, on: bool = True, *, stream_key: str | None = None) -> None:
        """No op5 is ever sent for this user's audio SSRC: clients must find the sender otherwise."""
        self._backend._server_of(user_id, stream_key).omit_speaking(int(user_id), on)

    def corrupt_next_welcome(self, user_id: str, *, stream_key: str | None = None) -> None:
        """The user's next DAVE Welcome (op30) arrives corrupted: it must recover with op31."""
        self._backend._server_of(user_id, stream_key).corrupt_next_welcome(int(user_id))

    def crash_stream(self, stream_key: str, code: int = 4015) -> None:
        self._backend.stream_server(stream_key).crash(code)

    def crash_voice(self, channel_id: str, code: int = 4015) -> None:
        self._backend.voice_server(channel_id).crash(code)

    def set_dave_protocol_version(
        self, protocol_version: Literal[0, 1], *, channel_id: str | None = None, stream_key: str | None = None
    ) -> None:
        server = (
            self._backend.stream_server(stream_key)
            if stream_key
            else self._backend.voice_server(channel_id or "")
        )
        server.set_dave_protocol_version(protocol_version)


@asynccontextmanager
async def open_rtc_backend(settings: RtcSettings | None = None) -> AsyncIterator[RtcMediaBackend]:
    async with trio.open_nursery() as nursery:
        backend = RtcMediaBackend(nursery, settings or RtcSettings())
        try:
            yield backend
        finally:
            nursery.cancel_scope.cancel()
