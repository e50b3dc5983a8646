"""The hook between the sandbox world (main gateway) and the voice/stream servers.

The world calls a :class:`MediaBackend` whenever somebody joins voice or a stream starts or is
watched, and uses the returned ``(endpoint, token)`` in VOICE_SERVER_UPDATE /
STREAM_SERVER_UPDATE. It is called for simulated users too (their endpoint is unused), so the
media servers know who is in which channel and who streams.

:class:`NullMediaBackend` is the default: it hands out a closed loopback port and random
tokens, enough for gateway-only tests. Real backends may subclass it and override what they need.
"""

from __future__ import annotations

import secrets
from typing import Protocol

from clank.sandbox.model import VoiceState

# Nothing listens here on loopback: a client that tries to connect fails fast.
CLOSED_ENDPOINT = "127.0.0.1:9"


class MediaBackend(Protocol):
    async def allocate_voice(
        self, guild_id: str, channel_id: str, user_id: str, session_id: str
    ) -> tuple[str, str]:
        """A user joined (or moved to) ``channel_id``: return ``("host:port", token)``."""
        ...

    async def allocate_stream(
        self, stream_key: str, user_id: str, session_id: str, rtc_server_id: str
    ) -> tuple[str, str]:
        """The owner (when it goes live) or a viewer (on op20) needs a stream connection."""
        ...

    async def voice_left(self, user_id: str) -> None:
        """The user left voice (its voice token is no longer valid)."""
        ...

    async def stream_ended(self, stream_key: str) -> None:
        """The stream is gone (owner stopped, left, or was forced off)."""
        ...

    async def viewer_left(self, stream_key: str, user_id: str) -> None:
        """A viewer stopped watching (op19 as viewer, or left voice)."""
        ...

    async def voice_state_changed(self, state: VoiceState) -> None:
        """Mute/video/stream flags changed for someone already in voice (e.g. webcam on)."""
        ...

    async def speaking_changed(self, user_id: str, speaking: bool) -> None:
        """A simulated user starts/stops talking (scenario ``talk`` steps)."""
        ...


class NullMediaBackend:
    """Hands out a closed port and fresh random tokens; ignores notifications."""

    async def allocate_voice(
        self, guild_id: str, channel_id: str, user_id: str, session_id: str
    ) -> tuple[str, str]:
        return CLOSED_ENDPOINT, secrets.token_hex(8)

    async def allocate_stream(
        self, stream_key: str, user_id: str, session_id: str, rtc_server_id: str
    ) -> tuple[str, str]:
        return CLOSED_ENDPOINT, secrets.token_hex(8)

    async def voice_left(self, user_id: str) -> None:
        return None

    async def stream_ended(self, stream_key: str) -> None:
        return None

    async def viewer_left(self, stream_key: str, user_id: str) -> None:
        return None

    async def voice_state_changed(self, state: VoiceState) -> None:
        return None

    async def speaking_changed(self, user_id: str, speaking: bool) -> None:
        return None
