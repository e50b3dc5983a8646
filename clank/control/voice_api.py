"""``VoiceApi``: the agent's voice surface in Python — speak, listen, music, channels.

    voice = service.voice                       # made by the runner
    stream = voice.open_speech(sample_rate=24000, channels=1)
    for chunk in tts(...):                      # realtime TTS: playback starts at once
        stream.push(chunk)                      # s16le bytes (or an int16 numpy array)
        await stream.wait_writable()            # back-pressure above 10 s queued
    stream.end()
    voice.stop()                                # silence speech within one 20 ms frame

    async with voice.listen(users=["123"], sample_rate=16000, channels=1) as listener:
        async for item in listener:             # UserAudio | SpeakingEvent
            ...

    await voice.music_play("https://.../song.mp3", name="song", queue=True)
    voice.music_set_gain(0.2, fade_ms=500)

Every call resolves the *current* voice role (the session rebuilds it on reconnects), so a
handle such as a :class:`SpeechStream` or a listener lives as long as that role: after a
rebuild a listener's iteration ends and speech already queued is gone. The HTTP routes
(:mod:`clank.control.voice_http`) and tools (:mod:`clank.control.voice_tools`) are thin layers
over this class. Channel control (list/join/move/leave) is delegated to a
:class:`ChannelControl` when the runner provides one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Protocol

from clank.errors import ClankError, InvalidArgument
from clank.session.voice_listen import (
    DEFAULT_LISTEN_BUFFER,
    DEFAULT_SILENCE_S,
    Listener,
    check_listen_format,
)
from clank.session.voice_playback import PlaybackEvent, SpeechStream, check_pcm_format
from clank.session.voice_role import VoiceRole

__all__ = ["ChannelControl", "PlaybackEvent", "VoiceApi", "VoiceUnavailable", "session_voice_role"]


class VoiceUnavailable(ClankError):
    """Not in a voice channel (or the voice role is reconnecting): ``reason`` says which."""

    def __init__(self, reason: str = "not_in_voice") -> None:
        self.reason = reason
        super().__init__(reason)


class ChannelControl(Protocol):
    """Join/move/leave and the channel directory (implemented by the runner's session manager)."""

    def voice_channels(self) -> list[dict[str, Any]]: ...

    async def join(
        self, channel_id: str, *, guild_id: str | None, self_mute: bool, self_deaf: bool
    ) -> dict[str, Any]: ...

    async def leave(self) -> dict[str, Any]: ...

    def connection_status(self) -> dict[str, Any]: ...


RoleGetter = Callable[[], VoiceRole | None]


def session_voice_role(session: Any) -> VoiceRole | None:
    """The running voice role of a :class:`~clank.session.voice_session.VoiceSession` (or None)."""
    if session is None:
        return None
    try:
        handle = session.voice
        if handle.stopped or handle.state.final:
            return None
        role = handle.api
    except ClankError:
        return None
    return role if isinstance(role, VoiceRole) else None


class VoiceApi:
    """See the module docstring."""

    def __init__(
        self,
        role: RoleGetter,
        *,
        known_users: Callable[[], Iterable[str]] | None = None,
        channels: ChannelControl | None = None,
    ) -> None:
        self._role = role
        self._known_users = known_users
        self.channels = channels

    # ------------------------------------------------------------------ role

    def role(self) -> VoiceRole:
        """The current voice role; raises :class:`VoiceUnavailable` when there is none."""
        role = self._role()
        if role is None:
            raise VoiceUnavailable()
        return role

    def available(self) -> bool:
        return self._role() is not None

    # ------------------------------------------------------------------ speak

    def open_speech(self, *, sample_rate: int = 24_000, channels: int = 1) -> SpeechStream:
        """A new utterance; push PCM into it as it is synthesized, then ``end()``."""
        check_pcm_format(sample_rate, channels)
        return self.role().speech.open_stream(sample_rate, channels)

    def cancel_speech(self, stream: SpeechStream) -> None:
        role = self._role()
        if role is not None:
            role.speech.cancel(stream)

    async def speak_file(self, source: str) -> dict[str, Any]:
        """Speak a whole audio file or URL (anything PyAV decodes)."""
        _check_source(source)
        return await self.role().speech.play_file(source)

    def stop(self, what: str = "speech") -> dict[str, Any]:
        """``speech`` (default): silence speech now; ``music``: stop music now; ``all``: both."""
        if what not in ("speech", "music", "all"):
            raise InvalidArgument("what", "must be speech, music or all")
        role = self.role()
        if what in ("speech", "all"):
            role.speech.stop()
        if what in ("music", "all"):
            role.music.stop(fade_s=0)
        return {"ok": True, "reason": "stopped", "stopped": what}

    def playback(self) -> dict[str, Any]:
        """Speech state (``idle``/``buffered``/``playing``) and buffer depth."""
        return self.role().speech.status()

    @contextmanager
    def playback_events(self) -> Iterator[Any]:
        """Bounded channel of :class:`PlaybackEvent` (playback_state, buffer_depth, music_*)."""
        with self.role().playback_events.subscribe() as events:
            yield events

    # ------------------------------------------------------------------ listen

    def resolve_users(self, users: Sequence[str] | None) -> frozenset[str] | None:
        """``None``/empty: everyone; else the given ids, each of which must be a known user."""
        if not users:
            return None
        known = None if self._known_users is None else set(self._known_users())
        out: set[str] = set()
        for user in users:
            if not isinstance(user, str) or not user.isdigit() or len(user) > 20:
                raise InvalidArgument("users", f"{user!r} is not a user id")
            if known is not None and user not in known:
                raise InvalidArgument("users", f"unknown user {user}")
            out.add(user)
        return frozenset(out)

    def resolve_sources(self, sources: Sequence[str] | None) -> frozenset[str] | None:
        """Extra sources such as ``stream:<user id>`` (Go Live stream audio)."""
        if not sources:
            return None
        out: set[str] = set()
        for source in sources:
            kind, _, user = source.partition(":")
            if kind != "stream" or not user.isdigit():
                raise InvalidArgument("sources", f"{source!r} is not stream:<user id>")
            self.resolve_users([user])
            out.add(source)
        return frozenset(out)

    @asynccontextmanager
    async def listen(
        self,
        users: Sequence[str] | None = None,
        *,
        sample_rate: int = 48_000,
        channels: int = 2,
        silence_ms: int = round(DEFAULT_SILENCE_S * 1000),
        buffer: int = DEFAULT_LISTEN_BUFFER,
        sources: Sequence[str] | None = None,
    ) -> AsyncIterator[Listener]:
        """Listen to ``users`` (everyone when None); iterate the listener with ``async for``."""
        check_listen_format(sample_rate, channels, silence_ms / 1000, buffer)
        wanted = self.resolve_users(users)
        extra = self.resolve_sources(sources)
        with self.role().open_listener(
            wanted,
            rate=sample_rate,
            channels=channels,
            silence_s=silence_ms / 1000,
            buffer=buffer,
            sources=extra,
        ) as listener:
            yield listener

    # ------------------------------------------------------------------ music

    async def music_play(
        self,
        source: str,
        *,
        name: str | None = None,
        queue: bool = False,
        gain: float | None = None,
        fade_in_ms: int = 0,
    ) -> dict[str, Any]:
        _check_source(source)
        if name is not None and not 1 <= len(name) <= 100:
            raise InvalidArgument("name", "must be 1..100 characters")
        _check_fade(fade_in_ms, "fadeInMs")
        return await self.role().music.play(
            source, name=name, queue=queue, gain=gain, fade_in_s=fade_in_ms / 1000
        )

    def music_pause(self, *, fade_ms: int = 250) -> dict[str, Any]:
        _check_fade(fade_ms, "fadeMs")
        return _done(self.role().music.pause(fade_s=fade_ms / 1000), "paused")

    def music_resume(self, *, fade_ms: int = 250) -> dict[str, Any]:
        _check_fade(fade_ms, "fadeMs")
        return _done(self.role().music.resume(fade_s=fade_ms / 1000), "resumed")

    def music_stop(self, *, fade_ms: int = 250) -> dict[str, Any]:
        _check_fade(fade_ms, "fadeMs")
        return _done(self.role().music.stop(fade_s=fade_ms / 1000), "stopped")

    def music_set_gain(self, target: float, *, fade_ms: int = 0) -> dict[str, Any]:
        """The seed's ``music_set_gain{target, fadeMs}`` (also applies to tracks played later)."""
        _check_fade(fade_ms, "fadeMs")
        applied = self.role().music.set_gain(target, fade_s=fade_ms / 1000)
        return {"ok": True, "reason": "gain_fading" if applied else "gain_saved", "target": target}

    def music_status(self) -> dict[str, Any]:
        return self.role().music.status()

    def music_add_tap(self, callback: Callable[[Any, int], None]) -> Callable[[], None]:
        """See :meth:`clank.session.voice_playback.MusicPlayer.add_tap`."""
        return self.role().music.add_tap(callback)

    # ------------------------------------------------------------------ status

    def stream_audio_status(self, user_id: str) -> dict[str, Any] | None:
        """The Go Live stream audio figures of the watch of ``user_id`` (None: no audio side)."""
        role = self._role()
        audio = None if role is None else role.listening.stream_audio.get(user_id)
        return None if audio is None else dict(audio.statistics())

    def status(self) -> dict[str, Any]:
        """The ``voiceIo`` part of ``/api/status``."""
        out: dict[str, Any] = {}
        if self.channels is not None:
            out["connection"] = self.channels.connection_status()
        role = self._role()
        if role is None:
            out.update({"available": False})
            return out
        out.update(
            {
                "available": True,
                "speech": role.speech.status(),
                "music": role.music.status(),
                "listeners": [x.statistics() for x in role.listeners()],
                "streamAudio": [a.statistics() for a in role.listening.stream_audio.values() if a.active],
                "eventsDropped": role.playback_events.dropped,
            }
        )
        return out


def _check_source(source: object) -> None:
    if not isinstance(source, str) or not 1 <= len(source) <= 4096:
        raise InvalidArgument("source", "must be a file path or URL of 1..4096 characters")


def _check_fade(fade_ms: object, field: str) -> None:
    if not isinstance(fade_ms, int) or isinstance(fade_ms, bool) or not 0 <= fade_ms <= 60_000:
        raise InvalidArgument(field, "must be an integer 0..60000 (milliseconds)")


def _done(applied: bool, reason: str) -> dict[str, Any]:
    return {"ok": applied, "reason": reason if applied else "no_music"}
