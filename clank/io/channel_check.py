"""Before joining: is the configured voice channel real, a voice channel, in our guild, visible?

A wrong ``discord.voice_channel_id`` otherwise shows up 10 s later as "no voice server" — a
connection failure (exit 4) that sends people looking at their network. ``GET /channels/{id}``
answers precisely; its answer becomes :class:`~clank.errors.ChannelUnavailable` (exit 6). When the
REST API cannot be asked (network, odd server), the check steps aside and the join reports.
"""

from __future__ import annotations

from typing import Final

import httpx

from clank.errors import AuthenticationFailed, ChannelUnavailable
from clank.logging import get_logger

log = get_logger("clank.io.channel_check")

#: Channel types one can join for voice: GUILD_VOICE, GUILD_STAGE_VOICE.
VOICE_TYPES: Final = frozenset({2, 13})
CHECK_TIMEOUT: Final = 10.0
_HINT: Final = (
    "set discord.voice_channel_id (CLANK_CHANNEL_ID); ids: Discord developer mode, right-click > Copy ID"
)


async def check_voice_channel(api_url: str, token: str, guild_id: str, channel_id: str) -> None:
    """Raise :class:`ChannelUnavailable` when ``channel_id`` cannot be joined from ``guild_id``."""
    url = f"{api_url.rstrip('/')}/v10/channels/{channel_id}"
    try:
        async with httpx.AsyncClient(timeout=CHECK_TIMEOUT) as client:
            response = await client.get(url, headers={"Authorization": token})
    except httpx.HTTPError as exc:
        log.info("voice channel check skipped", error=type(exc).__name__)
        return
    if response.status_code == 401:
        raise AuthenticationFailed("the Discord token was refused (HTTP 401)")
    if response.status_code == 404:
        raise ChannelUnavailable(f"channel {channel_id} does not exist (Unknown Channel); {_HINT}")
    if response.status_code == 403:
        raise ChannelUnavailable(
            f"channel {channel_id} is not visible to this account (Missing Access): join the server "
            f"and check the channel's permissions, or {_HINT}"
        )
    if response.status_code != 200:
        log.info("voice channel check skipped", status=response.status_code)
        return
    try:
        channel = response.json()
        kind, owner = channel.get("type"), channel.get("guild_id")
    except (ValueError, AttributeError):
        log.info("voice channel check skipped", error="unreadable channel object")
        return
    if isinstance(kind, int) and kind not in VOICE_TYPES:
        name = channel.get("name")
        raise ChannelUnavailable(
            f"channel {channel_id} ({name!r}) is not a voice channel (type {kind}); {_HINT}"
        )
    if isinstance(owner, str) and owner != guild_id:
        raise ChannelUnavailable(
            f"channel {channel_id} belongs to guild {owner}, not {guild_id} "
            "(set discord.guild_id / CLANK_GUILD_ID to the channel's server)"
        )
