"""Voice states to a guild's sessions: VOICE_STATE_UPDATE, or PASSIVE_UPDATE_V2 where Discord sends it.

A user session that announces capability bit 14 (``PASSIVE_GUILD_UPDATE_V2``) gets the voice
states of a large guild as ``PASSIVE_UPDATE_V2`` batches (``updated_voice_states`` /
``removed_voice_states``) instead of one VOICE_STATE_UPDATE per change; a session without the bit
gets VOICE_STATE_UPDATE as before. Its own voice state always comes as VOICE_STATE_UPDATE (the
voice join waits for it). clank does not announce bit 14 (it reads no PASSIVE_UPDATE_V2), so it
must still see sharers in a large guild: tests/fidelity/test_fidelity_passive_updates.py.
"""

from __future__ import annotations

from typing import Any, Final

from clank.sandbox.hub import DispatchHub
from clank.sandbox.model import Guild

__all__ = ["PASSIVE_GUILD_UPDATE_V2", "dispatch_voice_state"]

PASSIVE_GUILD_UPDATE_V2: Final = 1 << 14


def dispatch_voice_state(hub: DispatchHub, guild: Guild, subject_id: str, state: dict[str, Any]) -> None:
    """``state`` is the VOICE_STATE_UPDATE body for ``subject_id`` (``channel_id`` null: left)."""
    sessions = [s for user_id in guild.member_ids for s in hub.sessions_of(user_id)]
    passive = [
        s.session_id
        for s in sessions
        if guild.large and s.capabilities & PASSIVE_GUILD_UPDATE_V2 and s.user.id != subject_id
    ]
    direct = [s.session_id for s in sessions if s.session_id not in passive]
    if direct:
        hub.dispatch("VOICE_STATE_UPDATE", state, session_ids=direct)
    if passive:
        left = state.get("channel_id") is None
        hub.dispatch(
            "PASSIVE_UPDATE_V2",
            {
                "guild_id": guild.id,
                "updated_voice_states": [] if left else [{k: v for k, v in state.items() if k != "member"}],
                "removed_voice_states": [subject_id] if left else [],
                "updated_members": [state["member"]] if "member" in state else [],
                "updated_channels": [],
            },
            session_ids=passive,
        )
