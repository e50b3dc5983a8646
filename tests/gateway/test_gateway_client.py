"""The trio gateway driver over real loopback websockets against the sandbox gateway."""

from __future__ import annotations

import random
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from clank.errors import AuthenticationFailed, TransportError, UsageError
from clank.io.gateway import Dispatch, GatewayClient, GatewayStatistics, open_gateway_client
from clank.protocol.backoff import BackoffPolicy
from clank.protocol.gateway_policy import Phase
from clank.sandbox.app import Sandbox, open_sandbox

INTERVAL = 41.25
HOUR = 3600.0


@pytest.fixture
def loopback_clock() -> trio.testing.MockClock:
    # pytest-trio runs the test with any Clock among its fixtures. A small threshold lets
    # bytes in flight on loopback arrive before virtual time jumps.
    return trio.testing.MockClock(autojump_threshold=0.005)


@asynccontextmanager
async def sandbox_and_client(
    *, compress: bool = False, seed: int = 0
) -> AsyncIterator[tuple[Sandbox, GatewayClient]]:
    async with (
        open_sandbox(
            host="127.0.0.1", port=0, scenario="empty", heartbeat_interval_ms=41250, seed=seed, media=False
        ) as sb,
        open_gateway_client(
            url=sb.gateway_url, token=sb.token, compress=compress, rng=random.Random(seed)
        ) as gw,
    ):
        yield sb, gw


def simulated_user(sb: Sandbox, name: str = "alice") -> str:
    return sb.world.user_by_name(name).id


async def next_named(channel: trio.MemoryReceiveChannel[Dispatch], name: str) -> Dispatch:
    async for dispatch in channel:
        if dispatch.name == name:
            return dispatch
    raise AssertionError(f"channel ended before {name}")


def assert_contiguous(seqs: list[int]) -> None:
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs


async def wait_for_stat(
    gw: GatewayClient, predicate: Callable[[GatewayStatistics], bool]
) -> GatewayStatistics:
    """Poll the client's statistics (virtual time, so cheap) until ``predicate`` holds."""
    for _ in range(100_000):
        stats = gw.statistics()
        if predicate(stats):
            return stats
        await trio.sleep(0.5)
    raise AssertionError("statistics never matched")


async def test_identify_ready_and_guild_create(loopback_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with sandbox_and_client() as (sb, gw):
            with gw.subscribe() as dispatches:
                info = await gw.wait_ready()
                assert info.user_id == sb.our_user_id
                assert sb.guild_id in info.guild_ids
                ready = await next_named(dispatches, "READY")  # a user READY: guilds inline
                assert [g["id"] for g in ready.data["guilds"]] == [sb.guild_id]
            stats = gw.statistics()
            assert stats.state is Phase.CONNECTED
            assert (stats.connects, stats.identifies, stats.reconnects) == (1, 1, 0)


async def test_zlib_stream_compression(loopback_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with sandbox_and_client(compress=True) as (sb, gw):
            with gw.subscribe() as dispatches:
                assert (await gw.wait_ready()).user_id == sb.our_user_id
                await next_named(dispatches, "READY")


async def test_heartbeats_for_an_hour_without_reconnects(loopback_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(HOUR + 120):
        async with sandbox_and_client() as (_sb, gw):
            await gw.wait_ready()
            await trio.sleep(HOUR)
            stats = gw.statistics()
    assert stats.heartbeats_sent >= HOUR // INTERVAL
    assert stats.heartbeat_acks >= stats.heartbeats_sent - 1
    assert (stats.reconnects, stats.zombies, stats.resumes) == (0, 0, 0)
    assert stats.last_latency is not None
    assert 0 <= stats.last_latency < 1.0


async def test_server_heartbeat_request_is_answered(loopback_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with sandbox_and_client() as (sb, gw):
            await gw.wait_ready()
            before = gw.statistics().heartbeats_sent
            sb.faults.request_heartbeat(sb.our_user_id)
            await wait_for_stat(gw, lambda s: s.heartbeats_sent > before)


async def test_zombie_connection_resumes_without_losing_dispatches(
    loopback_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(600):
        async with sandbox_and_client() as (sb, gw):
            with gw.subscribe(buffer=1024) as dispatches:
                await gw.wait_ready()
                alice, bob = simulated_user(sb, "alice"), simulated_user(sb, "bob")
                sb.faults.stop_acking(sb.our_user_id)
                # World events during the outage (before and after the zombie is noticed).
                await sb.world.join_voice(alice, sb.voice_channel_id)
                await wait_for_stat(gw, lambda s: s.zombies >= 1)
                await sb.world.join_voice(bob, sb.voice_channel_id)
                await sb.world.leave_voice(alice)
                sb.faults.stop_acking(sb.our_user_id, on=False)
                await wait_for_stat(gw, lambda s: s.resumes >= 1 and s.state is Phase.CONNECTED)
                await sb.world.set_webcam(bob, True)
                seen: list[Dispatch] = []
                async for dispatch in dispatches:
                    seen.append(dispatch)
                    if dispatch.name == "VOICE_STATE_UPDATE" and dispatch.data.get("self_video"):
                        break
            stats = gw.statistics()
    assert stats.identifies == 1
    assert stats.zombies >= 1
    assert_contiguous([d.seq for d in seen if d.seq is not None])
    voice = [(d.data["user_id"], d.data["channel_id"]) for d in seen if d.name == "VOICE_STATE_UPDATE"]
    assert (alice, sb.voice_channel_id) in voice
    assert (bob, sb.voice_channel_id) in voice
    assert (alice, None) in voice
    assert "RESUMED" in [d.name for d in seen]


async def test_op7_reconnects_and_resumes(loopback_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with sandbox_and_client() as (sb, gw):
            with gw.subscribe() as dispatches:
                await gw.wait_ready()
                sb.faults.send_reconnect(sb.our_user_id)
                await next_named(dispatches, "RESUMED")
            stats = gw.statistics()
            assert (stats.reconnects, stats.resumes, stats.identifies) == (1, 1, 1)


@pytest.mark.parametrize("resumable", [True, False])
async def test_op9_invalid_session(loopback_clock: trio.testing.MockClock, resumable: bool) -> None:
    with trio.fail_after(60):
        async with sandbox_and_client() as (sb, gw):
            with gw.subscribe() as dispatches:
                first = await gw.wait_ready()
                await next_named(dispatches, "READY")  # the first session's burst is done
                start = trio.current_time()
                sb.faults.invalidate_session(sb.our_user_id, resumable)
                await next_named(dispatches, "RESUMED" if resumable else "READY")
                elapsed = trio.current_time() - start
            info = await gw.wait_ready()
            stats = gw.statistics()
    assert 1.0 <= elapsed <= 6.0  # the randomized 1-5 s wait, plus loopback round trips
    if resumable:
        assert (stats.resumes, stats.identifies) == (1, 1)
        assert info.session_id == first.session_id
    else:
        assert (stats.resumes, stats.identifies) == (0, 2)
        assert info.session_id != first.session_id


async def test_session_timeout_close_starts_a_new_session(loopback_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with sandbox_and_client() as (sb, gw):
            with gw.subscribe() as dispatches:
                await gw.wait_ready()
                await next_named(dispatches, "READY")
                sb.faults.close_client(sb.our_user_id, 4009)
                await next_named(dispatches, "READY")
            assert gw.statistics().identifies == 2


async def test_bad_token_stops_with_authentication_failed(loopback_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with open_sandbox(media=False, host="127.0.0.1", port=0, scenario="empty", seed=0) as sb:
            with pytest.raises(AuthenticationFailed, match="4004"):
                async with open_gateway_client(url=sb.gateway_url, token="not-a-real-token") as gw:
                    await gw.wait_ready()
            assert gw.statistics().state is Phase.STOPPED


async def test_4004_mid_session_ends_the_context(loopback_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with open_sandbox(media=False, host="127.0.0.1", port=0, scenario="empty", seed=0) as sb:
            with pytest.raises(AuthenticationFailed):
                async with open_gateway_client(url=sb.gateway_url, token=sb.token) as gw:
                    with gw.subscribe() as dispatches:
                        await gw.wait_ready()
                        sb.faults.close_client(sb.our_user_id, 4004)
                        async for _ in dispatches:
                            pass  # ends when the client stops
                    await trio.sleep_forever()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_unreachable_gateway_fails_after_bounded_backoff(
    loopback_clock: trio.testing.MockClock,
) -> None:
    backoff = BackoffPolicy(initial=1.0, cap=4.0, multiplier=2.0, jitter=0.5)
    with trio.fail_after(120):
        start = trio.current_time()
        with pytest.raises(TransportError, match="unreachable after 4 attempts"):
            async with open_gateway_client(
                url=f"ws://127.0.0.1:{closed_port()}/",
                token="tok-unreachable",
                max_initial_attempts=4,
                backoff=backoff,
                rng=random.Random(1),
            ) as gw:
                await gw.wait_ready()
        elapsed = trio.current_time() - start
    # Waits before attempts 2..4: 1, [1, 2], [2, 4] seconds (the ceiling doubles, capped at 4).
    assert 4.0 <= elapsed <= 7.0 + 0.5


async def test_slow_subscriber_drops_while_others_get_everything(
    loopback_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(60):
        async with sandbox_and_client() as (sb, gw):
            with gw.subscribe(buffer=1) as _slow, gw.subscribe(events={"VOICE_STATE_UPDATE"}) as fast:
                await gw.wait_ready()
                for name in ("alice", "bob", "carol"):
                    await sb.world.join_voice(simulated_user(sb, name), sb.voice_channel_id)
                got = [await fast.receive() for _ in range(3)]
                assert {d.data["user_id"] for d in got} == {
                    simulated_user(sb, n) for n in ("alice", "bob", "carol")
                }
                stats = gw.statistics()
                assert stats.subscriber_drops[0] >= 2
                assert stats.subscriber_drops[1] == 0
            assert gw.statistics().dropped_dispatches == stats.subscriber_drops[0]


async def test_voice_and_stream_senders_reach_the_world(loopback_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with sandbox_and_client() as (sb, gw):
            with gw.subscribe(events={"VOICE_STATE_UPDATE", "STREAM_CREATE", "STREAM_DELETE"}) as dispatches:
                await gw.wait_ready()
                await gw.update_voice_state(sb.guild_id, sb.voice_channel_id, self_mute=True)
                state = await next_named(dispatches, "VOICE_STATE_UPDATE")
                assert state.data["user_id"] == sb.our_user_id
                assert state.data["self_mute"] is True
                await gw.stream_create(sb.guild_id, sb.voice_channel_id)
                created = await next_named(dispatches, "STREAM_CREATE")
                key = created.data["stream_key"]
                assert key == f"guild:{sb.guild_id}:{sb.voice_channel_id}:{sb.our_user_id}"
                await gw.stream_set_paused(key, True)
                await gw.stream_ping(key)
                await gw.stream_delete(key)
                await next_named(dispatches, "STREAM_DELETE")
                await gw.update_voice_state(sb.guild_id, None)
                left = await next_named(dispatches, "VOICE_STATE_UPDATE")
                while left.data["channel_id"] is not None:
                    left = await next_named(dispatches, "VOICE_STATE_UPDATE")
            assert sb.world.voice_state(sb.our_user_id) is None


async def test_control_sends_wait_out_a_reconnect(loopback_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with sandbox_and_client() as (sb, gw):
            with gw.subscribe(events={"VOICE_STATE_UPDATE", "RESUMED"}) as dispatches:
                await gw.wait_ready()
                sb.faults.invalidate_session(sb.our_user_id, True)  # 1-5 s without a usable socket
                await trio.sleep(0.5)
                assert gw.statistics().state is not Phase.CONNECTED
                await gw.update_voice_state(sb.guild_id, sb.voice_channel_id)
                names = [(await dispatches.receive()).name for _ in range(2)]
            assert names == ["RESUMED", "VOICE_STATE_UPDATE"]
            state = sb.world.voice_state(sb.our_user_id)
            assert state is not None
            assert state.channel_id == sb.voice_channel_id


async def test_errors_of_the_block_pass_through_unwrapped(loopback_clock: trio.testing.MockClock) -> None:
    class Boom(Exception):
        pass

    with trio.fail_after(60):
        async with open_sandbox(media=False, host="127.0.0.1", port=0, scenario="empty", seed=0) as sb:
            with pytest.raises(Boom):
                async with open_gateway_client(url=sb.gateway_url, token=sb.token) as gw:
                    await gw.wait_ready()
                    raise Boom
            with pytest.raises(UsageError):
                await gw.wait_ready()  # the client is closed once its block has ended
