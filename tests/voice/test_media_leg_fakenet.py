"""A media leg on the fake network under ``autojump_clock``: resumes, fresh identifies, rejoins,
DAVE recovery, server crashes, hours of heartbeats and capped backoff — deterministic, no sockets.

The sandbox's real media server (voice gateway core, SFU, DAVE external sender, real davey) listens
on :class:`clank.io.fakenet.FakeNet`; our real driver dials it through injected transports.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from clank.config import DiscordSettings, Settings
from clank.errors import ConnectionClosed, SessionInvalidated, TransportError
from clank.io.fakenet import FakeNet, open_fake_net
from clank.io.lossy import LossyLink
from clank.io.media_connection import (
    MediaConnection,
    MediaEvent,
    TransportStateChanged,
    open_media_connection,
)
from clank.io.media_leg_params import MediaConnectionParams
from clank.protocol.backoff import MEDIA_LEG_RECONNECT
from clank.sandbox.rtc.server import MediaServer, MediaServerConfig, open_media_server
from clank.sandbox.rtc.users import open_simulated_member
from clank.wire.gateway_events import dave_group_id_for_voice

GUILD = "111"
CHANNEL = "222000000000000001"
USER = "333000000000000001"
ALICE = 1001
SESSION = "f" * 32
SETTINGS = Settings(discord=DiscordSettings(voice_url_scheme="ws"))


async def wait_until(predicate: Callable[[], bool], step: float = 0.05) -> None:
    while True:
        if predicate():
            return
        await trio.sleep(step)


class Leg:
    """Our leg plus what it reported."""

    def __init__(self) -> None:
        self.states: list[str] = []
        self.ends: list[TransportStateChanged] = []

    def on_event(self, event: MediaEvent) -> None:
        if isinstance(event, TransportStateChanged):
            self.states.append(event.state)
            if event.state == "reconnecting":
                self.ends.append(event)


def _params(net: FakeNet, server: MediaServer, token: str) -> MediaConnectionParams:
    return MediaConnectionParams(
        role="voice",
        endpoint=server.endpoint,
        server_id=GUILD,
        channel_id=CHANNEL,
        user_id=USER,
        session_id=SESSION,
        token=token,
        dave_group_id=dave_group_id_for_voice(CHANNEL),
        settings=SETTINGS,
        transports=net.media_transports(),
    )


@asynccontextmanager
async def voice_server(heartbeat_interval_ms: float = 41250.0) -> AsyncIterator[tuple[FakeNet, MediaServer]]:
    async with open_fake_net() as net:
        config = MediaServerConfig(net=net, heartbeat_interval_ms=heartbeat_interval_ms)
        async with open_media_server("voice", GUILD, int(CHANNEL), config) as server:
            yield net, server


@asynccontextmanager
async def leg_on(net: FakeNet, server: MediaServer) -> AsyncIterator[tuple[MediaConnection, Leg]]:
    seen = Leg()
    params = _params(net, server, server.grant(USER, SESSION))
    async with open_media_connection(params, event_handler=seen.on_event) as conn:
        yield conn, seen


@pytest.mark.parametrize("how", ["4015", "ws_drop"])
async def test_resume_keeps_udp_ssrc_keys_and_dave(how: str, autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with voice_server() as (net, server), leg_on(net, server) as (conn, seen):
            ssrc, udp = conn.ssrc, conn.udp_local_address
            mode = conn.statistics().mode
            if how == "4015":
                server.close_connection(int(USER), 4015)
            else:
                assert net.cut_websockets(server.endpoint) == 1
            await wait_until(lambda: conn.statistics().resumes == 1 and conn.state == "ready")
            assert seen.states == ["ready", "reconnecting", "ready"]
            assert conn.ssrc == ssrc and conn.udp_local_address == udp
            stats = conn.statistics()
            assert stats.reconnects == 0 and stats.mode == mode
            assert stats.dave.protocol_version == 1 and stats.dave.recoveries == 0
            assert server.participant(int(USER)) is not None


async def test_4009_is_a_fresh_identify_on_the_same_endpoint(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(60):
        async with voice_server() as (net, server), leg_on(net, server) as (conn, seen):
            first = conn.session
            server.close_connection(int(USER), 4009)
            await wait_until(lambda: conn.statistics().reconnects == 1 and conn.state == "ready")
            assert seen.ends[0].close_code == 4009
            assert conn.session is not None and conn.session is not first
            assert conn.statistics().resumes == 0
            assert conn.dave.ready or conn.statistics().dave.protocol_version == 1


@pytest.mark.parametrize(("code", "error"), [(4006, SessionInvalidated), (4022, ConnectionClosed)])
async def test_codes_the_session_must_handle_leave_the_block(
    code: int, error: type[Exception], autojump_clock: trio.testing.MockClock
) -> None:
    """4006 -> the session rejoins through the main gateway; 4022 -> the call is over."""
    with trio.fail_after(60):
        async with voice_server() as (net, server):
            with pytest.raises(error):
                async with leg_on(net, server) as (_conn, _seen):
                    server.close_connection(int(USER), code)
                    await trio.sleep_forever()


async def test_hours_of_heartbeats_keep_one_session(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(4 * 3600):
        async with voice_server() as (net, server), leg_on(net, server) as (conn, seen):
            await trio.sleep(3 * 3600)
            stats = conn.statistics()
            # 41.25 s cadence: about 262 heartbeats in three hours, every one acknowledged.
            assert stats.gateway.heartbeats_sent >= 3 * 3600 // 42
            assert stats.gateway.heartbeat_acks >= stats.gateway.heartbeats_sent - 1
            assert stats.resumes == 0 and stats.reconnects == 0 and seen.states == ["ready"]
            assert stats.keepalives_sent >= 3 * 3600 // 5  # UDP keep-alive every 5 s


async def test_missed_acks_resume_after_a_zombie_detection(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(600):
        async with voice_server() as (net, server), leg_on(net, server) as (conn, seen):
            server.stop_acking(int(USER))
            await wait_until(lambda: "reconnecting" in seen.states)
            server.stop_acking(int(USER), on=False)
            await wait_until(lambda: conn.statistics().resumes >= 1 and conn.state == "ready")
            assert "heartbeat ACK missed" in str(seen.ends[0].reason)


async def test_a_vanished_server_is_given_up_after_capped_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The server crashes and its host stays down: five refused reconnects, waits within the caps."""
    policy = MEDIA_LEG_RECONNECT
    budget = sum(policy.backoff.ceiling(n) for n in range(1, policy.max_failures + 1))
    seen = Leg()
    with trio.fail_after(600):
        async with voice_server() as (net, server):
            params = _params(net, server, server.grant(USER, SESSION))
            with pytest.raises(TransportError, match="refused"):
                async with open_media_connection(params, event_handler=seen.on_event):
                    net.refuse(server.endpoint)
                    server.crash(4015)
                    started = trio.current_time()
                    await trio.sleep_forever()
            elapsed = trio.current_time() - started
    assert net.refused_websockets == policy.max_failures
    assert 0 < elapsed <= budget
    assert seen.states[-2:] == ["failed", "disconnected"]  # gave up, then the block left
    assert seen.states.count("reconnecting") == policy.max_failures


async def test_dave_recovers_with_op31_after_a_corrupted_welcome(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(120):
        async with voice_server() as (net, server):
            async with open_simulated_member(server, ALICE, signal="tone", frequency=300.0, talking=True) as (
                alice,
                _,
            ):
                await wait_until(lambda: alice.joined)
                server.corrupt_next_welcome(int(USER))
                async with leg_on(net, server) as (conn, _seen):
                    await wait_until(lambda: conn.dave.statistics().recoveries == 1 and conn.dave.ready)
                    await wait_until(lambda: server.statistics().dave.open_transitions == 0)
                    stats = server.statistics()
                    assert stats.dave.invalid_commit_reports == 1
                    assert set(stats.dave.roster) == {ALICE, int(USER)}
                    assert conn.statistics().resumes == 0 and conn.statistics().reconnects == 0
                    assert conn.dave.epoch == alice.dave_session.epoch


@pytest.mark.parametrize("seed", [1, 2])
async def test_lossy_udp_does_not_disturb_the_control_path(
    seed: int, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(1200):
        async with voice_server() as (net, server), leg_on(net, server) as (conn, seen):
            ours = conn.udp_local_address
            assert ours is not None
            net.set_link(server.udp_address, ours, LossyLink(seed, loss=0.3, reorder=0.1, delay=0.02))
            net.set_link(ours, server.udp_address, LossyLink(seed + 100, loss=0.3))
            await trio.sleep(600)
            assert seen.states == ["ready"] and conn.statistics().resumes == 0
