"""PASSIVE_UPDATE_V2 in a large guild (strict sandbox): only to sessions that announce bit 14.

Fake network + autojump clock. The sandbox guild is made "large"; a raw gateway session of our
user announces 30717 (what clank announced before issue 15, bit 14 included) and gets alice's
voice states as PASSIVE_UPDATE_V2 and no VOICE_STATE_UPDATE for her, so a client that announced
bit 14 without reading PASSIVE_UPDATE_V2 would not see her share. clank (bit 14 masked off) gets
VOICE_STATE_UPDATE and sees alice as a sharer.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing
from fake_session import wait_until
from fakenet_kit import fake_session

from clank.io.websocket import WebSocket
from clank.sandbox.passive_updates import PASSIVE_GUILD_UPDATE_V2

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")

OLD_CAPABILITIES = 30717
assert OLD_CAPABILITIES & PASSIVE_GUILD_UPDATE_V2


async def _dispatches(ws: WebSocket, into: list[dict[str, Any]]) -> None:
    while True:
        frame = json.loads(await ws.receive())
        if frame.get("op") == 0:
            into.append(frame)


async def test_a_large_guild_sends_passive_updates_only_to_bit_14_sessions(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(600):
        async with fake_session() as (net, sb, session):
            sb.world.set_large(sb.guild_id)
            alice = sb.world.user_by_name("alice").id
            seen: list[dict[str, Any]] = []
            async with net.open_websocket(sb.gateway_url) as ws, trio.open_nursery() as nursery:
                hello = json.loads(await ws.receive())
                assert hello["op"] == 10
                identify = {
                    "token": sb.token,
                    "capabilities": OLD_CAPABILITIES,
                    "properties": {"os": "Linux"},
                }
                await ws.send(json.dumps({"op": 2, "d": identify}))
                nursery.start_soon(_dispatches, ws, seen)
                await wait_until(lambda: any(f["t"] == "READY" for f in seen))
                await sb.world.join_voice(alice, sb.voice_channel_id)
                await sb.world.go_live(alice)
                # clank (no bit 14) sees the share from VOICE_STATE_UPDATE ...
                await wait_until(
                    lambda: any(s.user_id == alice and s.go_live for s in session.registry.sharers())
                )

                def passive_streaming() -> bool:
                    return any(
                        f["t"] == "PASSIVE_UPDATE_V2"
                        and any(
                            v["user_id"] == alice and v["self_stream"] for v in f["d"]["updated_voice_states"]
                        )
                        for f in seen
                    )

                # ... the bit-14 session gets PASSIVE_UPDATE_V2 instead.
                await wait_until(passive_streaming)
                await sb.world.leave_voice(alice)
                await wait_until(
                    lambda: any(
                        f["t"] == "PASSIVE_UPDATE_V2" and f["d"]["removed_voice_states"] == [alice]
                        for f in seen
                    )
                )
                nursery.cancel_scope.cancel()
            states = [f["d"] for f in seen if f["t"] == "VOICE_STATE_UPDATE"]
            assert all(s["user_id"] != alice for s in states), states
            passive = next(f["d"] for f in seen if f["t"] == "PASSIVE_UPDATE_V2")
            assert passive["guild_id"] == sb.guild_id
            assert set(passive) >= {"updated_voice_states", "removed_voice_states", "updated_members"}
