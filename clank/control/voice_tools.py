"""The voice tools an LLM calls: play/stop audio, music, list/join/leave voice channels.

Speaking text is not a tool: text-to-speech is the agent's, and its PCM goes through the speak
API (:mod:`clank.control.voice_http`). The table below is data; :mod:`clank.control.tools` turns
it into its ``Tool``/``Param`` values (so the schemas, validation and the MCP server are shared),
and :func:`call_voice_tool` runs a validated call.
"""

from __future__ import annotations

from typing import Any, Final

from clank.control.voice_api import VoiceApi, VoiceUnavailable
from clank.errors import InvalidArgument

__all__ = ["VOICE_TOOLS", "VOICE_TOOL_NAMES", "call_voice_tool"]

_SOURCE: Final = {
    "name": "source",
    "description": "An audio file path or an http(s) URL (anything FFmpeg decodes: mp3, ogg, wav, m4a, ...).",
    "max_length": 4096,
}
_FADE: Final = {
    "name": "fadeMs",
    "description": "Optional: fade duration in milliseconds (default 250).",
    "kind": "integer",
    "minimum": 0,
    "maximum": 60000,
}

VOICE_TOOLS: Final[tuple[tuple[str, str, tuple[dict[str, Any], ...]], ...]] = (
    (
        "play_audio",
        "Play an audio file or URL into the voice channel as speech (it ducks music). For the agent's "
        "own text-to-speech stream PCM to the speak API instead.",
        (_SOURCE,),
    ),
    (
        "stop_audio",
        "Stop what clank is saying at once (barge-in). what: 'speech' (default), 'music' or 'all'.",
        (
            {
                "name": "what",
                "description": "Optional: speech (default), music or all.",
                "enum": ("speech", "music", "all"),
                "max_length": None,
            },
        ),
    ),
    (
        "music_play",
        "Play music from a file or URL in the voice channel as a named track. With queue=true it plays "
        "after the current track; otherwise it replaces it (crossfade). A source that cannot be opened "
        "answers ok=false, reason source_failed.",
        (
            _SOURCE,
            {"name": "name", "description": "Optional: a name for the track."},
            {"name": "queue", "description": "Optional: queue after the current track.", "kind": "boolean"},
            {
                "name": "gain",
                "description": "Optional: volume 0..4 (1 = as is).",
                "kind": "number",
                "minimum": 0,
                "maximum": 4,
            },
        ),
    ),
    ("music_pause", "Pause the music (fades out).", (_FADE,)),
    ("music_resume", "Resume paused music (fades in).", (_FADE,)),
    ("music_stop", "Stop the music and clear the queue (fades out).", (_FADE,)),
    (
        "music_set_gain",
        "Change the music volume to target over fadeMs milliseconds (e.g. duck it while you talk).",
        (
            {
                "name": "target",
                "description": "Volume 0..4 (1 = as is, 0 = silent).",
                "kind": "number",
                "minimum": 0,
                "maximum": 4,
            },
            {**_FADE, "description": "Optional: ramp time in milliseconds (default 0: at once)."},
        ),
    ),
    (
        "music_status",
        "What music plays: state, track name, position and duration in seconds, gain, the queue, and "
        "otherAudio: other tracks in the mix, such as the song of our own Go Live.",
        (),
    ),
    (
        "list_voice_channels",
        "List the guilds' voice channels with who is in each (muted/deafened/streaming) and which one "
        "clank is in.",
        (),
    ),
    (
        "join_voice_channel",
        "Join (or move to) a voice channel by id (see list_voice_channels). Moving ends watches of users "
        "who are not in the new channel.",
        (
            {"name": "channelId", "description": "The voice channel id.", "max_length": 20},
            {"name": "guildId", "description": "Optional: the guild id.", "max_length": 20},
            {"name": "selfMute", "description": "Optional: join muted.", "kind": "boolean"},
            {"name": "selfDeaf", "description": "Optional: join deafened.", "kind": "boolean"},
        ),
    ),
    ("leave_voice_channel", "Leave the voice channel (watches end).", ()),
)

VOICE_TOOL_NAMES: Final = frozenset(name for name, _, _ in VOICE_TOOLS)


async def call_voice_tool(voice: VoiceApi | None, name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run a validated voice tool call; ``{ok: false, reason: not_in_voice}`` without a voice role."""
    if voice is None:
        return {"ok": False, "reason": "voice_unavailable"}
    try:
        return await _call(voice, name, args)
    except VoiceUnavailable as exc:
        return {"ok": False, "reason": exc.reason}


async def _call(voice: VoiceApi, name: str, args: dict[str, Any]) -> dict[str, Any]:
    fade = args.get("fadeMs")
    if name == "play_audio":
        return await voice.speak_file(args["source"] or "")
    if name == "stop_audio":
        return voice.stop(args["what"] or "speech")
    if name == "music_play":
        return await voice.music_play(
            args["source"] or "", name=args["name"], queue=bool(args["queue"]), gain=args["gain"]
        )
    if name == "music_pause":
        return voice.music_pause(fade_ms=250 if fade is None else fade)
    if name == "music_resume":
        return voice.music_resume(fade_ms=250 if fade is None else fade)
    if name == "music_stop":
        return voice.music_stop(fade_ms=250 if fade is None else fade)
    if name == "music_set_gain":
        if args["target"] is None:
            raise InvalidArgument("target", "is required")
        return voice.music_set_gain(args["target"], fade_ms=0 if fade is None else fade)
    if name == "music_status":
        return voice.music_status()
    if voice.channels is None:
        return {"ok": False, "reason": "channel_control_unavailable"}
    if name == "list_voice_channels":
        return {"channels": voice.channels.voice_channels(), "connection": voice.channels.connection_status()}
    if name == "join_voice_channel":
        if not args["channelId"]:
            raise InvalidArgument("channelId", "is required")
        return await voice.channels.join(
            args["channelId"],
            guild_id=args["guildId"],
            self_mute=bool(args["selfMute"]),
            self_deaf=bool(args["selfDeaf"]),
        )
    if name == "leave_voice_channel":
        return await voice.channels.leave()
    raise AssertionError(f"voice tool {name!r} has no handler")
