"""Scenarios, world invariants, the CLI entry point, and the hub's replay buffer."""

from __future__ import annotations

import functools
import io
import json
import random

import httpx
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from clank.errors import SandboxError
from clank.sandbox.app import open_sandbox, serve_sandbox_cli
from clank.sandbox.hub import REPLAY_BUFFER_SIZE, DispatchHub, GatewaySession, ReplayGap
from clank.sandbox.ids import IdFactory
from clank.sandbox.media import NullMediaBackend
from clank.sandbox.model import StreamKey, User, UserKind
from clank.sandbox.scenarios import SCENARIOS, churn_step, run_step
from clank.sandbox.world import World


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_every_scenario_opens(name: str, autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with open_sandbox(scenario=name) as sb:
            assert sb.info()["guild_id"] == sb.guild_id


async def test_unknown_scenario_is_refused() -> None:
    with pytest.raises(SandboxError):
        async with open_sandbox(scenario="nope"):
            pass


async def test_streamer_scenario_state() -> None:
    with trio.fail_after(10):
        async with open_sandbox(scenario="streamer") as sb:
            alice = sb.world.user_by_name("alice")
            state = sb.world.voice_state(alice.id)
            assert state is not None
            assert state.self_stream
            stream = sb.world.stream_of(alice.id)
            assert stream is not None
            assert stream.channel_id == sb.voice_channel_id


async def test_demo_scenario_plays_out(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(120):
        # The script only: media (real encoders on threads) doesn't mix with a jumping clock.
        async with open_sandbox(scenario="demo", media=False) as sb:
            await trio.sleep(30)
            alice = sb.world.user_by_name("alice").id
            bob = sb.world.user_by_name("bob").id
            assert sb.world.stream_of(alice) is not None
            bob_state = sb.world.voice_state(bob)
            assert bob_state is not None
            assert bob_state.self_video
            assert [m.content for m in sb.world.messages(sb.text_channel_id)] == [
                "hey, let me show you something"
            ]


def _world(seed: int) -> World:
    return World(DispatchHub(), NullMediaBackend(), IdFactory(seed))


async def test_churn_steps_are_always_valid_and_seeded() -> None:
    spec = SCENARIOS["churn"].churn
    assert spec is not None
    summaries = []
    for _ in range(2):
        world, rng = _world(3), random.Random(7)
        for _ in range(150):
            await run_step(world, churn_step(world, spec, rng))  # raises SandboxError if invalid
        summaries.append(
            sorted((s.user_id, s.channel_id, s.self_stream, s.self_video) for s in world.voice_states())
        )
        for stream in world.streams.values():
            state = world.voice_state(stream.owner_id)
            assert state is not None
            assert state.self_stream
    assert summaries[0] == summaries[1]


async def test_same_seed_same_ids() -> None:
    assert [u.id for u in _world(1).users.values()] == [u.id for u in _world(1).users.values()]
    assert [u.id for u in _world(1).users.values()] != [u.id for u in _world(2).users.values()]


class _FlushSignal(io.StringIO):
    """A stdout stand-in that tells the test when the CLI flushed."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed = trio.Event()

    def flush(self) -> None:
        super().flush()
        self.flushed.set()


async def test_serve_sandbox_cli_prints_one_json_line() -> None:
    out = _FlushSignal()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(serve_sandbox_cli, "127.0.0.1", 0, "streamer", out=out))
            await out.flushed.wait()
            info = json.loads(out.getvalue())
            assert out.getvalue().count("\n") == 1
            assert {"api_url", "gateway_url", "token", "bot_token", "guild_id", "voice_channel_id"} <= set(
                info
            )
            assert {"text_channel_id", "users"} <= set(info)
            assert {u["name"] for u in info["users"]} >= {"alice", "bob"}
            async with httpx.AsyncClient(verify=False) as client:
                me = await client.get(
                    f"{info['api_url']}/v10/users/@me", headers={"Authorization": info["token"]}
                )
            assert me.status_code == 200
            nursery.cancel_scope.cancel()
    assert out.getvalue().count("\n") == 1


# --- hub -----------------------------------------------------------------------------------------
def _session() -> GatewaySession:
    return GatewaySession("s1", User("1", "u", UserKind.OURS, "tok"), 0)


async def test_replay_buffer_resume_window() -> None:
    session = _session()
    for _ in range(REPLAY_BUFFER_SIZE + 10):
        session.push("E", {}, 0.0)
    assert session.can_resume_from(session.seq)
    assert session.can_resume_from(10)
    assert not session.can_resume_from(9)  # seq 10 was evicted
    assert not session.can_resume_from(session.seq + 1)
    entry = session.next_after(10)
    assert entry is not None
    assert entry.seq == 11
    assert json.loads(entry.text)["s"] == 11
    assert session.next_after(session.seq) is None
    with pytest.raises(ReplayGap):
        session.next_after(5)


async def test_hub_drop_rule_counts_events_not_sessions() -> None:
    hub = DispatchHub()
    a, b = _session(), GatewaySession("s2", User("2", "v", UserKind.BOT, "tok2"), 0)
    hub.add(a)
    hub.add(b)
    hub.drop_next("X", 1)
    hub.dispatch("X", {}, users=["1", "2"])
    assert (a.seq, b.seq) == (0, 0)
    hub.dispatch("X", {}, users=["1", "2"])
    assert (a.seq, b.seq) == (1, 1)
    assert hub.statistics().dropped == 1


@given(st.one_of(st.text(max_size=60), st.integers(), st.none()))
def test_stream_key_parse_never_raises(key: object) -> None:
    parsed = StreamKey.parse(key)
    if parsed is not None:
        assert parsed.serialize() == key


def test_stream_key_round_trip() -> None:
    key = StreamKey.parse("guild:1:2:3")
    assert key == StreamKey("1", "2", "3")
    assert StreamKey.parse("call:2:3") is None
