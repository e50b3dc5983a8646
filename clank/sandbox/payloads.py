"""Discord JSON shapes built from sandbox values (the serialization edge of the world).

Shapes follow the Discord API closely enough for a standard client library (discord.py builds
``Guild``/``Member``/``VoiceState``/``Message`` objects from them) and for clank's own client.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from clank.sandbox.model import Channel, ChannelType, Guild, Message, Stream, User, VoiceState

JOINED_AT = "2024-06-01T00:00:00.000000+00:00"
EVERYONE_PERMISSIONS = "2248473465835073"  # view, send, connect, speak, stream, video ...


def user_json(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.name,
        "global_name": user.name.capitalize(),
        "discriminator": "0",
        "avatar": None,
        "bot": user.is_bot,
        "system": False,
        "public_flags": 0,
    }


def me_json(user: User) -> dict[str, Any]:
    """``/users/@me`` and READY ``user``: the public user plus account fields."""
    return {**user_json(user), "verified": True, "mfa_enabled": False, "flags": 0, "locale": "en-US"}


def member_json(user: User) -> dict[str, Any]:
    return {
        "user": user_json(user),
        "nick": None,
        "avatar": None,
        "roles": [],
        "joined_at": JOINED_AT,
        "premium_since": None,
        "deaf": False,
        "mute": False,
        "pending": False,
        "flags": 0,
    }


def channel_json(channel: Channel) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": channel.id,
        "guild_id": channel.guild_id,
        "type": int(channel.type),
        "name": channel.name,
        "position": channel.position,
        "permission_overwrites": [],
        "parent_id": None,
        "nsfw": False,
        "flags": 0,
        "last_message_id": None,
    }
    if channel.type is ChannelType.GUILD_VOICE:
        data.update(bitrate=64000, user_limit=0, rtc_region=None, video_quality_mode=1, rate_limit_per_user=0)
    else:
        data.update(topic=None, rate_limit_per_user=0, default_auto_archive_duration=1440)
    return data


def voice_state_json(
    state: VoiceState, *, member: User | None = None, with_guild: bool = True
) -> dict[str, Any]:
    """A voice state; GUILD_CREATE's ``voice_states`` carry no ``guild_id`` (``with_guild=False``)."""
    data: dict[str, Any] = {
        "channel_id": state.channel_id,
        "user_id": state.user_id,
        "session_id": state.session_id,
        "deaf": False,
        "mute": False,
        "self_deaf": state.self_deaf,
        "self_mute": state.self_mute,
        "self_video": state.self_video,
        "self_stream": state.self_stream,
        "suppress": False,
        "request_to_speak_timestamp": None,
    }
    if with_guild:
        data["guild_id"] = state.guild_id
    if member is not None:
        data["member"] = member_json(member)
    return data


def left_voice_state_json(guild_id: str, user: User, session_id: str) -> dict[str, Any]:
    """VOICE_STATE_UPDATE for a user who left: ``channel_id`` null."""
    return {
        "guild_id": guild_id,
        "channel_id": None,
        "user_id": user.id,
        "session_id": session_id,
        "deaf": False,
        "mute": False,
        "self_deaf": False,
        "self_mute": False,
        "self_video": False,
        "self_stream": False,
        "suppress": False,
        "request_to_speak_timestamp": None,
        "member": member_json(user),
    }


def role_everyone_json(guild_id: str) -> dict[str, Any]:
    return {
        "id": guild_id,
        "name": "@everyone",
        "permissions": EVERYONE_PERMISSIONS,
        "position": 0,
        "color": 0,
        "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
        "hoist": False,
        "managed": False,
        "mentionable": False,
        "icon": None,
        "unicode_emoji": None,
        "flags": 0,
    }


def guild_json(guild: Guild, channels: Iterable[Channel]) -> dict[str, Any]:
    """The REST guild object (no members, channels or voice states)."""
    text_ids = [c.id for c in channels if c.type is ChannelType.GUILD_TEXT]
    return {
        "id": guild.id,
        "name": guild.name,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "banner": None,
        "description": None,
        "owner_id": guild.owner_id,
        "region": "local",
        "afk_channel_id": None,
        "afk_timeout": 300,
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "nsfw_level": 0,
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "premium_progress_bar_enabled": False,
        "preferred_locale": "en-US",
        "system_channel_id": text_ids[0] if text_ids else None,
        "system_channel_flags": 0,
        "rules_channel_id": None,
        "public_updates_channel_id": None,
        "safety_alerts_channel_id": None,
        "max_video_channel_users": 25,
        "max_stage_video_channel_users": 50,
        "vanity_url_code": None,
        "application_id": None,
        "features": [],
        "roles": [role_everyone_json(guild.id)],
        "emojis": [],
        "stickers": [],
    }


def guild_create_json(
    guild: Guild,
    channels: Iterable[Channel],
    members: Iterable[User],
    voice_states: Iterable[VoiceState],
) -> dict[str, Any]:
    """GUILD_CREATE: the guild plus channels, members and partial voice states (with ``self_stream``)."""
    channel_list = list(channels)
    member_list = list(members)
    return {
        **guild_json(guild, channel_list),
        "unavailable": False,
        "large": guild.large,
        "lazy": False,
        "joined_at": JOINED_AT,
        "member_count": len(member_list),
        "channels": [channel_json(c) for c in channel_list],
        "members": [member_json(u) for u in member_list],
        "voice_states": [voice_state_json(s, with_guild=False) for s in voice_states],
        "presences": [],
        "threads": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
    }


def stream_json(stream: Stream) -> dict[str, Any]:
    """STREAM_CREATE / STREAM_UPDATE body."""
    return {
        "stream_key": stream.key,
        "rtc_server_id": stream.rtc_server_id,
        "rtc_channel_id": stream.rtc_channel_id,
        "region": stream.region,
        "viewer_ids": list(stream.viewer_ids),
        "paused": stream.paused,
    }


def message_json(message: Message, author: User) -> dict[str, Any]:
    return {
        "id": message.id,
        "type": 0,
        "channel_id": message.channel_id,
        "guild_id": message.guild_id,
        "author": user_json(author),
        "member": {k: v for k, v in member_json(author).items() if k != "user"},
        "content": message.content,
        "timestamp": message.timestamp,
        "edited_timestamp": None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "attachments": [],
        "embeds": [],
        "components": [],
        "pinned": False,
        "flags": 0,
        "nonce": None,
    }
