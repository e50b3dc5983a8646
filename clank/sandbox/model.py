"""Values of the sandbox world: users, guilds, channels, voice states, streams, messages.

Voice states and messages are frozen (replaced on change, so a dispatch never sees a value
mutate under it); streams keep a mutable viewer list owned by the world.
"""

from __future__ import annotations

import enum

import attrs


class ChannelType(enum.IntEnum):
    """Discord channel types used here (values from the Discord API)."""

    GUILD_TEXT = 0
    GUILD_VOICE = 2


class UserKind(enum.Enum):
    OURS = "ours"  # the user account clank logs in as (raw token)
    SIMULATED = "simulated"  # alice, bob, ... driven by scenarios; may also log in for tests
    BOT = "bot"  # a bot account (``Bot <token>`` on REST, bare token in Identify)


@attrs.frozen
class User:
    id: str
    name: str
    kind: UserKind
    token: str = attrs.field(repr=False)

    @property
    def is_bot(self) -> bool:
        return self.kind is UserKind.BOT


@attrs.frozen
class Channel:
    id: str
    guild_id: str
    name: str
    type: ChannelType
    position: int


@attrs.frozen
class Guild:
    id: str
    name: str
    owner_id: str
    channel_ids: tuple[str, ...]
    member_ids: tuple[str, ...]
    large: bool = False
    """Discord's "large" guild (GUILD_CREATE ``large``): bit-14 sessions get PASSIVE_UPDATE_V2."""


@attrs.frozen
class VoiceState:
    guild_id: str
    channel_id: str
    user_id: str
    session_id: str
    self_mute: bool = False
    self_deaf: bool = False
    self_video: bool = False
    self_stream: bool = False
    # The gateway session that asked for this state (None for simulated users and world actions).
    # It alone receives VOICE_SERVER_UPDATE; never serialized.
    gateway_session_id: str | None = None


class StreamDeleteReason(enum.StrEnum):
    """STREAM_DELETE reasons (discord-protocol.md §2.5)."""

    USER_REQUESTED = "user_requested"
    STREAM_ENDED = "stream_ended"
    STREAM_FULL = "stream_full"
    UNAUTHORIZED = "unauthorized"
    PARSE_FAILED = "parse_failed"
    INVALID_CHANNEL = "invalid_channel"


@attrs.define
class Stream:
    """A Go Live stream. ``rtc_channel_id = rtc_server_id + 1``; the DAVE group is ``rtc_server_id - 1``."""

    key: str
    guild_id: str
    channel_id: str
    owner_id: str
    rtc_server_id: str
    region: str = "local"
    paused: bool = False
    viewer_ids: list[str] = attrs.Factory(list)

    @property
    def rtc_channel_id(self) -> str:
        return str(int(self.rtc_server_id) + 1)


@attrs.frozen
class Message:
    id: str
    channel_id: str
    guild_id: str
    author_id: str
    content: str
    timestamp: str


def guild_stream_key(guild_id: str, channel_id: str, owner_id: str) -> str:
    return f"guild:{guild_id}:{channel_id}:{owner_id}"


@attrs.frozen
class StreamKey:
    """A parsed stream key; only the ``guild:`` form can exist in the sandbox."""

    guild_id: str
    channel_id: str
    owner_id: str

    @classmethod
    def parse(cls, key: object) -> StreamKey | None:
        """``None`` for anything that is not ``guild:<g>:<c>:<u>`` (answered with ``parse_failed``)."""
        if not isinstance(key, str):
            return None
        parts = key.split(":")
        if len(parts) != 4 or parts[0] != "guild" or not all(p.isdigit() for p in parts[1:]):
            return None
        return cls(guild_id=parts[1], channel_id=parts[2], owner_id=parts[3])

    def serialize(self) -> str:
        return guild_stream_key(self.guild_id, self.channel_id, self.owner_id)
