"""Typed main-gateway dispatch payloads for voice and Go Live, plus the stream-key format.

Sans-io. Every value is frozen and built by ``X.parse(d)`` from the decoded ``d`` of a dispatch
(``VOICE_STATE_UPDATE``, ``VOICE_SERVER_UPDATE``, ``STREAM_CREATE``, ``STREAM_SERVER_UPDATE``,
``STREAM_UPDATE``, ``STREAM_DELETE``, ``GUILD_CREATE``, ``READY_SUPPLEMENTAL``). Unknown fields are
tolerated; a known field of the wrong type raises :class:`MalformedMessage` (and nothing else).
The payload classes declare their fields once; the family converter :data:`GATEWAY_EVENTS`
(``wire/convert.py``) reads them.
Snowflakes are kept as decimal strings (Discord sends strings; integers are accepted and converted).

Stream keys (discord-protocol.md §2.7)::

    guild:<guild_id>:<channel_id>:<owner_user_id>     Go Live in a guild voice channel
    call:<channel_id>:<owner_user_id>                 Go Live in a DM / group call

``test:<user_id>`` (speed-test streams) is deliberately rejected: it names no channel, cannot be
watched and never belongs to a sharer, so accepting it would only let garbage into the registry.
Keys with extra or empty parts are rejected too (clanky ignored trailing parts; we do not).

DAVE group ids: a voice leg's group is its channel id; a Go Live leg's group is
``rtc_server_id - 1`` (discord-protocol.md §2.5). :func:`dave_group_id_for_voice` and
:func:`dave_group_id_for_stream` are the only place that rule lives.

Outgoing Go Live opcodes (18-22, §2.6) are built by the ``*_frame`` functions at the bottom.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final, Literal

import attrs

from clank.errors import MalformedMessage
from clank.wire.convert import REQUIRED, Fail, Family, FieldHook, Message, Shape, wire
from clank.wire.gateway import GatewayFrame, Op

STREAM_KEY_KIND: Final = "stream_key"
"""``MalformedMessage.kind`` for an unusable stream key (the registry reports these separately)."""

MAX_SNOWFLAKE_DIGITS: Final = 20
"""A snowflake is an unsigned 64-bit integer: at most 20 decimal digits."""

StreamKind = Literal["guild", "call"]


# --- the family: every type check of untrusted input goes through its converter ---------------


def _fail(payload: str, key: str | None, problem: str) -> MalformedMessage:
    return MalformedMessage(payload, problem if key is None else f"{key!r} {problem}")


def _is_snowflake_text(value: str) -> bool:
    return 0 < len(value) <= MAX_SNOWFLAKE_DIGITS and value.isascii() and value.isdigit()


def _snowflake_text(value: object) -> str | None:
    if isinstance(value, str):
        return value if _is_snowflake_text(value) else None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64:
        return str(value)
    return None


GATEWAY_EVENTS: Final = Family(_fail, _snowflake_text)
"""The dispatch payload family: errors are ``MalformedMessage(<payload>, "'<key>' <problem>")``."""


def _to_snowflake(value: object, kind: str, field: str) -> str:
    text = _snowflake_text(value)
    if text is None:
        raise MalformedMessage(kind, f"{field!r} is not a snowflake")
    return text


def _object(d: object, kind: str) -> Mapping[str, Any]:
    if not isinstance(d, dict):
        raise MalformedMessage(kind, "payload is not an object")
    return d


def _parse_stream_key(value: object) -> StreamKey:
    if not isinstance(value, str):
        raise MalformedMessage(STREAM_KEY_KIND, "missing or non-string 'stream_key'")
    return StreamKey.parse(value)


def _key_first(d: dict[str, Any]) -> dict[str, Any]:
    """A bad stream key is reported before any other field, under its own kind (the registry
    counts those apart)."""
    return d | {"stream_key": _parse_stream_key(d.get("stream_key"))}


def _stream_key(fail: Fail) -> FieldHook:
    def read(value: object, _t: Any = None) -> StreamKey:
        return value if isinstance(value, StreamKey) else _parse_stream_key(value)

    return read


_SNOWFLAKE: Final = wire(snowflake=True)
_OPTIONAL_SNOWFLAKE: Final = wire(snowflake=True, missing=None)
_NONEMPTY: Final = wire(empty_is_missing=True, missing=None)
"""``""`` reads as absent (Discord sends both for "none")."""
_STREAM_KEY: Final = wire(read=_stream_key, write=str)


# --- stream keys ------------------------------------------------------------------------------


@attrs.frozen
class StreamKey:
    """A parsed Go Live stream key. ``str(key)`` (or ``serialize()``) gives the wire form back."""

    kind: StreamKind
    guild_id: str | None
    channel_id: str
    owner_id: str

    @classmethod
    def parse(cls, text: str) -> StreamKey:
        parts = text.split(":")
        if parts[0] == "guild" and len(parts) == 4:
            guild_id, channel_id, owner_id = parts[1:]
            if all(_is_snowflake_text(p) for p in (guild_id, channel_id, owner_id)):
                return cls(kind="guild", guild_id=guild_id, channel_id=channel_id, owner_id=owner_id)
        elif parts[0] == "call" and len(parts) == 3:
            channel_id, owner_id = parts[1:]
            if all(_is_snowflake_text(p) for p in (channel_id, owner_id)):
                return cls(kind="call", guild_id=None, channel_id=channel_id, owner_id=owner_id)
        raise MalformedMessage(STREAM_KEY_KIND, f"unsupported stream key {text[:80]!r}")

    @classmethod
    def for_guild(cls, guild_id: str, channel_id: str, owner_id: str) -> StreamKey:
        """Synthesize a guild key (a watcher may do this before any STREAM_CREATE, §2.7)."""
        return cls.parse(f"guild:{guild_id}:{channel_id}:{owner_id}")

    @classmethod
    def for_call(cls, channel_id: str, owner_id: str) -> StreamKey:
        return cls.parse(f"call:{channel_id}:{owner_id}")

    @classmethod
    def for_voice_channel(cls, guild_id: str | None, channel_id: str, owner_id: str) -> StreamKey:
        """The key a user's Go Live has in this voice channel (guild channel or DM call)."""
        if guild_id is None:
            return cls.for_call(channel_id, owner_id)
        return cls.for_guild(guild_id, channel_id, owner_id)

    def serialize(self) -> str:
        if self.kind == "call":
            return f"call:{self.channel_id}:{self.owner_id}"
        return f"guild:{self.guild_id}:{self.channel_id}:{self.owner_id}"

    def __str__(self) -> str:
        return self.serialize()


# --- DAVE group ids ---------------------------------------------------------------------------


def dave_group_id_for_voice(channel_id: str) -> int:
    """DAVE/MLS group id of a voice leg: the voice channel id."""
    return int(_to_snowflake(channel_id, "dave_group_id", "channel_id"))


def dave_group_id_for_stream(rtc_server_id: str) -> int:
    """DAVE/MLS group id of a Go Live leg: ``rtc_server_id - 1`` (UDOC; clankvox live-validated)."""
    server_id = int(_to_snowflake(rtc_server_id, "dave_group_id", "rtc_server_id"))
    if server_id == 0:
        raise MalformedMessage("dave_group_id", "rtc_server_id 0 has no stream group id")
    return server_id - 1


# --- voice ------------------------------------------------------------------------------------


@GATEWAY_EVENTS.message
@attrs.frozen
class VoiceState(Message):
    """A user's voice state. ``channel_id is None`` means the user left voice.

    ``guild_id`` is ``None`` for DM calls. GUILD_CREATE / READY_SUPPLEMENTAL carry partial states
    without ``guild_id``; their parsers pass the guild in. Missing booleans read as ``False``
    (Discord omits e.g. ``self_stream`` when it is false).
    """

    WIRE: ClassVar[Shape] = Shape("voice_state")

    guild_id: str | None = attrs.field(metadata=_OPTIONAL_SNOWFLAKE)
    channel_id: str | None = attrs.field(metadata=_OPTIONAL_SNOWFLAKE)
    user_id: str = attrs.field(metadata=_SNOWFLAKE)
    session_id: str | None = attrs.field(default=None, metadata=_NONEMPTY)
    self_mute: bool = False
    self_deaf: bool = False
    self_video: bool = False
    self_stream: bool = False
    mute: bool = False
    deaf: bool = False
    suppress: bool = False

    @classmethod
    def parse(cls, d: object, guild_id: str | None = None) -> VoiceState:
        if guild_id is not None and isinstance(d, dict) and d.get("guild_id") is None:
            d = d | {"guild_id": guild_id}
        state: VoiceState = _VOICE_STATE(d, cls)
        return state


_VOICE_STATE: Final = GATEWAY_EVENTS.converter.get_structure_hook(VoiceState)
"""VoiceState's converter hook (its own ``parse`` adds the guild, so it is not bound as ``parse``)."""


@GATEWAY_EVENTS.message
@attrs.frozen
class VoiceServerUpdate(Message):
    """Credentials for the voice server. ``endpoint is None`` = server being reallocated."""

    WIRE: ClassVar[Shape] = Shape("voice_server_update")

    token: str = attrs.field(repr=False, metadata=wire(empty_is_missing=True, missing=REQUIRED))
    guild_id: str | None = attrs.field(metadata=_OPTIONAL_SNOWFLAKE)
    channel_id: str | None = attrs.field(metadata=_OPTIONAL_SNOWFLAKE)
    endpoint: str | None = attrs.field(metadata=_NONEMPTY)


@attrs.frozen
class GuildVoiceStates:
    """The voice states of one guild: a GUILD_CREATE, or one guild of READY_SUPPLEMENTAL.

    The entries have no ``guild_id`` on the wire; it is filled in from the guild's ``id``. One bad
    entry does not lose the rest of the scan: it is skipped and counted in ``invalid_voice_states``.
    ``complete`` is true when the payload carried a ``voice_states`` list at all (then the list is
    the full set of users in voice in that guild).
    """

    guild_id: str
    voice_states: tuple[VoiceState, ...] = ()
    invalid_voice_states: int = 0
    complete: bool = False

    @classmethod
    def parse(cls, d: object) -> GuildVoiceStates:
        kind = "guild_voice_states"
        obj = _object(d, kind)
        guild_id = _to_snowflake(obj.get("id"), kind, "id")
        raw = obj.get("voice_states")
        if raw is None:
            return cls(guild_id=guild_id)
        if not isinstance(raw, list):
            raise MalformedMessage(kind, "'voice_states' is not a list")
        states: list[VoiceState] = []
        invalid = 0
        for entry in raw:
            try:
                states.append(VoiceState.parse(entry, guild_id=guild_id))
            except MalformedMessage:
                invalid += 1
        return cls(guild_id=guild_id, voice_states=tuple(states), invalid_voice_states=invalid, complete=True)


@attrs.frozen
class ReadySupplemental:
    """The voice-state part of READY_SUPPLEMENTAL (``guilds[].voice_states``); bad guilds are counted."""

    guilds: tuple[GuildVoiceStates, ...] = ()
    invalid_guilds: int = 0

    @classmethod
    def parse(cls, d: object) -> ReadySupplemental:
        kind = "ready_supplemental"
        obj = _object(d, kind)
        raw = obj.get("guilds")
        if raw is None:
            return cls()
        if not isinstance(raw, list):
            raise MalformedMessage(kind, "'guilds' is not a list")
        guilds: list[GuildVoiceStates] = []
        invalid = 0
        for entry in raw:
            try:
                guilds.append(GuildVoiceStates.parse(entry))
            except MalformedMessage:
                invalid += 1
        return cls(guilds=tuple(guilds), invalid_guilds=invalid)


# --- Go Live ----------------------------------------------------------------------------------


@GATEWAY_EVENTS.message
@attrs.frozen
class StreamCreate(Message):
    """STREAM_CREATE. ``rtc_server_id`` is the stream leg's voice ``server_id`` (clanky tolerates its
    absence, so do we: such a stream can never have full credentials)."""

    WIRE: ClassVar[Shape] = Shape("stream_create", pre=_key_first)

    stream_key: StreamKey = attrs.field(metadata=_STREAM_KEY)
    rtc_server_id: str | None = attrs.field(metadata=_OPTIONAL_SNOWFLAKE)
    rtc_channel_id: str | None = attrs.field(default=None, metadata=_SNOWFLAKE)
    region: str | None = attrs.field(default=None, metadata=_NONEMPTY)
    viewer_ids: tuple[str, ...] = attrs.field(default=(), metadata=_SNOWFLAKE)
    paused: bool = False


@GATEWAY_EVENTS.message
@attrs.frozen
class StreamServerUpdate(Message):
    """STREAM_SERVER_UPDATE. ``endpoint is None`` = the stream server is being reallocated."""

    WIRE: ClassVar[Shape] = Shape("stream_server_update", pre=_key_first)

    stream_key: StreamKey = attrs.field(metadata=_STREAM_KEY)
    endpoint: str | None = attrs.field(metadata=_NONEMPTY)
    token: str | None = attrs.field(repr=False, metadata=_NONEMPTY)
    guild_id: str | None = attrs.field(default=None, metadata=_SNOWFLAKE)


@GATEWAY_EVENTS.message
@attrs.frozen
class StreamUpdate(Message):
    """STREAM_UPDATE. Fields absent from the payload are ``None`` (= unchanged)."""

    WIRE: ClassVar[Shape] = Shape("stream_update", pre=_key_first)

    stream_key: StreamKey = attrs.field(metadata=_STREAM_KEY)
    viewer_ids: tuple[str, ...] | None = attrs.field(default=None, metadata=_SNOWFLAKE)
    paused: bool | None = None
    region: str | None = attrs.field(default=None, metadata=_NONEMPTY)


@GATEWAY_EVENTS.message
@attrs.frozen
class StreamDelete(Message):
    """STREAM_DELETE. Also the answer to a failed watch request (``reason`` says why)."""

    WIRE: ClassVar[Shape] = Shape("stream_delete", pre=_key_first)

    stream_key: StreamKey = attrs.field(metadata=_STREAM_KEY)
    reason: str | None = attrs.field(default=None, metadata=_NONEMPTY)
    unavailable: bool = False


# --- outgoing Go Live opcodes (§2.6) ----------------------------------------------------------


def stream_create_frame(
    guild_id: str | None, channel_id: str, preferred_region: str | None = None
) -> GatewayFrame:
    """op18: start our own Go Live in a guild channel (``guild_id=None``: a DM call)."""
    return GatewayFrame(
        op=Op.STREAM_CREATE,
        d={
            "type": "call" if guild_id is None else "guild",
            "guild_id": guild_id,
            "channel_id": channel_id,
            "preferred_region": preferred_region or None,
        },
    )


def stream_delete_frame(key: StreamKey) -> GatewayFrame:
    """op19: stop our own stream, or (as a viewer) disconnect from a watched one."""
    return GatewayFrame(op=Op.STREAM_DELETE, d={"stream_key": str(key)})


def stream_watch_frame(key: StreamKey) -> GatewayFrame:
    """op20: ask to watch a stream; answered by STREAM_CREATE + STREAM_SERVER_UPDATE or STREAM_DELETE."""
    return GatewayFrame(op=Op.STREAM_WATCH, d={"stream_key": str(key)})


def stream_ping_frame(key: StreamKey) -> GatewayFrame:
    """op21: stream ping (optional keepalive while watching; single-source semantics, §9)."""
    return GatewayFrame(op=Op.STREAM_PING, d={"stream_key": str(key)})


def stream_set_paused_frame(key: StreamKey, paused: bool) -> GatewayFrame:
    """op22: pause / unpause our own stream."""
    return GatewayFrame(op=Op.STREAM_SET_PAUSED, d={"stream_key": str(key), "paused": paused})
