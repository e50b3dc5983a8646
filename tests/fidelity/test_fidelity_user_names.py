"""Names for ids the gateway never named: GET /users/{id} through clank.io.user_names (issue 15, item 14).

Real sandbox REST over loopback. A user session's READY names only some members, and voice states
of others come without ``member``; before, such users showed up in tool results and the status as
bare ids. Now the member directory looks them up (cached, bounded, 429-aware).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from fidelity_kit import SETTINGS, wait_until

from clank.control.service import ClankService
from clank.control.session_port import LiveSessionPort, MemberDirectory
from clank.io import user_names
from clank.io.gateway import open_gateway_client
from clank.io.user_names import UserNames, label_of, open_user_names
from clank.protocol.streams import StreamRegistry
from clank.sandbox.app import Sandbox, open_sandbox
from clank.session.voice_session import VoiceSession, open_voice_session

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


async def test_sandbox_serves_users_by_id_shaped_like_discord() -> None:
    with trio.fail_after(10):
        async with open_sandbox(media=False) as sb, httpx.AsyncClient() as client:
            alice = sb.world.user_by_name("alice")
            url = f"{sb.api_url}/v10/users"
            ok = await client.get(f"{url}/{alice.id}", headers={"Authorization": sb.token})
            assert ok.status_code == 200
            body = ok.json()
            assert {"id", "username", "global_name", "discriminator", "avatar", "bot"} <= set(body)
            assert body["id"] == alice.id and label_of(body) == "Alice"
            missing = await client.get(f"{url}/1234", headers={"Authorization": sb.token})
            assert missing.status_code == 404 and missing.json() == {"message": "Unknown User", "code": 10013}
            assert (await client.get(f"{url}/{alice.id}")).status_code == 401
            assert sb.rest is not None
            sb.rest.rate_limit_user_lookups(1, 0.25)
            limited = await client.get(f"{url}/{alice.id}", headers={"Authorization": sb.token})
            assert limited.status_code == 429
            assert limited.json() == {
                "message": "You are being rate limited.",
                "retry_after": 0.25,
                "global": False,
            }
            assert "retry-after" in limited.headers


async def test_lookups_are_cached_negative_cached_and_wait_out_a_429() -> None:
    with trio.fail_after(20):
        async with open_sandbox(media=False) as sb, open_user_names(sb.api_url, sb.token) as names:
            assert sb.rest is not None
            bob = sb.world.user_by_name("bob")
            sb.rest.rate_limit_user_lookups(1, 0.5)
            started = trio.current_time()
            with trio.fail_after(5):
                await names.wait_resolved([bob.id])
            assert names.cached(bob.id) == "Bob"
            assert trio.current_time() - started >= 0.5  # waited retry_after, then asked again
            assert sb.rest.user_lookups == 2
            names.request(bob.id)  # cached: no second lookup
            with trio.fail_after(5):
                await names.wait_resolved(["999999"])  # Unknown User
            await names.wait_resolved(["999999"])  # remembered as unknown: not asked again
            assert sb.rest.user_lookups == 3
            stats = names.statistics()
            assert (stats.resolved, stats.unknown, stats.rate_limited) == (1, 1, 1)


async def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(user_names, "CACHE_SIZE", 8)
    async with httpx.AsyncClient() as client:
        names = UserNames("http://127.0.0.1:9/api", "token", client)
        for i in range(20):
            names.learn(str(1000 + i), f"user{i}")
        names.cached("1012")  # recently used: kept
        names.learn("2000", "newest")
        assert names.statistics().cached == 8
        assert names.cached("1000") is None and names.cached("1012") == "user12"
        assert names.cached("2000") == "newest"


@asynccontextmanager
async def joined_over_loopback() -> AsyncIterator[tuple[Sandbox, VoiceSession]]:
    """Real sockets: the fake net serves no REST, and this is about REST."""
    async with (
        open_sandbox() as sb,
        open_gateway_client(url=sb.gateway_url, token=sb.token) as gateway,
        open_voice_session(
            gateway, guild_id=sb.guild_id, channel_id=sb.voice_channel_id, settings=SETTINGS
        ) as session,
    ):
        await session.voice.wait_ready()
        yield sb, session


def _voice_state(user_id: str, guild_id: str, channel_id: str) -> dict[str, Any]:
    """A voice state as Discord sends it for a user absent from READY: no ``member`` object."""
    return {
        "guild_id": guild_id,
        "channel_id": channel_id,
        "user_id": user_id,
        "session_id": "f" * 32,
        "self_stream": True,
        "self_video": False,
        "self_mute": False,
        "self_deaf": False,
    }


async def test_a_user_absent_from_ready_is_named_in_tool_results_and_status() -> None:
    """Before: ``list_sharers`` labelled the sharer with its id and the status' DAVE members too."""
    with trio.fail_after(40):
        async with joined_over_loopback() as (sb, session), open_user_names(sb.api_url, sb.token) as names:
            alice = sb.world.user_by_name("alice").id
            await sb.world.join_voice(alice, sb.voice_channel_id)
            # Our directory learns nothing from the gateway here: only this member-less voice state.
            directory = MemberDirectory(names)
            registry = StreamRegistry(session.user_id)
            state = _voice_state(alice, sb.guild_id, sb.voice_channel_id)
            directory.observe("VOICE_STATE_UPDATE", state)
            registry.handle_dispatch("VOICE_STATE_UPDATE", state, trio.current_time())
            port = LiveSessionPort(session, registry, directory)
            service = ClankService(port)
            with trio.fail_after(5):
                await names.wait_resolved([alice])
            (sharer,) = [s for s in service.list_sharers() if s["userId"] == alice]
            assert sharer["label"] == "Alice" and sharer["displayName"] == "Alice"
            assert directory.name_of(alice) == "Alice"
            voice = session.voice.api.connection.dave
            await wait_until(lambda: int(alice) in voice.group_user_ids())
            (role,) = [r for r in port.status().roles if r.kind == "voice"]
            assert role.dave is not None and role.dave.members.get(alice) == "Alice"


async def test_the_directory_asks_for_every_id_the_gateway_left_unnamed() -> None:
    """User READY inlines guilds whose voice states carry no member; READY_SUPPLEMENTAL merges
    members by ``user_id``; a sharer may be known only from its stream. Each is looked up once."""
    async with httpx.AsyncClient() as client:
        names = UserNames("http://127.0.0.1:9/api", "token", client)
        directory = MemberDirectory(names)
        named = {"user": {"id": "11", "username": "ann"}, "nick": None}
        ready = {
            "users": [],
            "guilds": [
                {
                    "id": "1",
                    "properties": {"name": "g"},
                    "members": [named],
                    "voice_states": [
                        {"user_id": "11", "channel_id": "5"},
                        {"user_id": "12", "channel_id": "5"},
                    ],
                }
            ],
        }
        directory.observe("READY", ready)
        directory.observe("READY_SUPPLEMENTAL", {"merged_members": [[{"user_id": "13", "nick": "x"}]]})
        directory.observe("VOICE_STATE_UPDATE", {"user_id": "12", "channel_id": "5"})  # queued already
        assert directory.name_of("11") == "ann"
        assert directory.name_of("14") == "14"  # unknown for now: asked for, shown as the id
        assert names.statistics().requested == 3  # 12, 13, 14; never 11
        names.learn("12", "Bea")
        assert directory.name_of("12") == "Bea"
        assert {m.user_id: m.label for m in directory.members()} == {"11": "ann", "12": "Bea"}
