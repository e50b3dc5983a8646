"""The sandbox media servers' fault hooks, each observed from the receiving side.

Seeded links (loss, duplication, reordering, delay) per direction act on exact packet counts
between simulated members (autojump clock: members are in-process, no sockets carry media);
close codes, stopped heartbeat ACKs and dropped UDP are observed by a raw client built from
our own cores, on the fake network (``clank.io.fakenet``) under the autojump clock as well.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from rtc_helpers import (
    open_raw_client,
    open_world_voice,
    open_world_watch,
    user_named,
    voice_config,
    wait_until,
)

from clank.crypto.dave import OPUS_SILENCE
from clank.errors import TransportError
from clank.io.fakenet import FakeNet, open_fake_net
from clank.io.gateway import open_gateway_client
from clank.io.lossy import LossyLink
from clank.protocol import voice_gateway as client
from clank.sandbox.app import Sandbox, open_sandbox
from clank.sandbox.rtc.server import KEEPS_SESSION, MediaServer, MediaServerConfig, open_media_server
from clank.sandbox.rtc.streamer import VideoSettings
from clank.sandbox.rtc.udp_plane import Direction
from clank.sandbox.rtc.users import SimulatedMember, open_simulated_member

GUILD = "111"
CHANNEL = 222000000000000001
ME = "333"
SESSION = "f00dfeed"
SENDER, RECEIVER, BYSTANDER = 1001, 1002, 1003
PACKETS = 300
PACKET_GAP = 0.005
"""Seconds between the test's packets: a packet held back 20 ms (reorder) is overtaken by ~4."""

# What each seeded link does, and the share of packets it must touch (± SHARE_TOLERANCE).
LINKS: dict[str, dict[str, Any]] = {
    "loss": {"loss": 0.2},
    "dup": {"dup": 0.2},
    "reorder": {"reorder": 0.2},
}
SHARE = 0.2
SHARE_TOLERANCE = 0.07


def _sequences(member: SimulatedMember, sender: SimulatedMember) -> list[int]:
    """RTP sequence numbers of ``sender``'s packets as ``member`` received them, in arrival order."""
    return [p.header.sequence for p in member.receiver.raw if p.header.ssrc == sender.audio_ssrc]


async def _send_burst(sender: SimulatedMember, count: int, gap: float) -> None:
    """``count`` packets with consecutive sequence numbers (a member starts at 0)."""
    for _ in range(count):
        sender.send_opus(OPUS_SILENCE)  # passthrough: the link test needs no DAVE group
        if gap:
            await trio.sleep(gap)


def _late(arrivals: list[int]) -> int:
    """Packets that arrived after a packet with a higher sequence number."""
    late, highest = 0, -1
    for seq in arrivals:
        if seq < highest:
            late += 1
        highest = max(highest, seq)
    return late


@pytest.mark.parametrize("direction", ["uplink", "downlink"])
@pytest.mark.parametrize("kind", sorted(LINKS))
async def test_seeded_link_changes_what_the_receiver_gets(
    kind: str, direction: Direction, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(30):
        async with open_media_server("voice", GUILD, CHANNEL) as server:
            async with (
                open_simulated_member(server, SENDER) as (sender, _),
                open_simulated_member(server, RECEIVER) as (receiver, _),
                open_simulated_member(server, BYSTANDER) as (bystander, _),
            ):
                link = LossyLink(seed=11, **LINKS[kind])
                impaired = sender if direction == "uplink" else receiver
                await server.set_link(impaired.user_id, direction, link)
                await _send_burst(sender, PACKETS, PACKET_GAP)
                await trio.sleep(1.0)  # every delayed copy is out
                got = _sequences(receiver, sender)
                clean = _sequences(bystander, sender)
                stats = link.statistics()
                assert sender.joined and receiver.joined  # a lossy link disconnects nobody

            assert stats.decided == PACKETS
            touched = {"loss": stats.dropped, "dup": stats.duplicated, "reorder": stats.reordered}[kind]
            assert abs(touched / PACKETS - SHARE) <= SHARE_TOLERANCE, stats
            # Exact accounting: every decision is visible at the receiver.
            assert len(got) == PACKETS - stats.dropped + stats.duplicated
            if kind == "loss":
                assert len(set(got)) == len(got) and got == sorted(got)
            elif kind == "dup":
                assert set(got) == set(range(PACKETS)) and len(got) - len(set(got)) == stats.duplicated
            else:
                assert sorted(got) == list(range(PACKETS))
                assert 0 < _late(got) <= stats.reordered
            # Uplink faults hit every receiver alike; a downlink fault hits only its receiver.
            if direction == "uplink":
                assert clean == got
            else:
                assert clean == list(range(PACKETS))


async def test_delayed_link_holds_packets_for_the_delay(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(30):
        async with open_media_server("voice", GUILD, CHANNEL) as server:
            async with (
                open_simulated_member(server, SENDER) as (sender, _),
                open_simulated_member(server, RECEIVER) as (receiver, _),
            ):
                await server.set_link(RECEIVER, "downlink", LossyLink(seed=3, delay=0.1))
                await _send_burst(sender, 20, 0.0)
                await trio.sleep(0.099)
                assert _sequences(receiver, sender) == []
                await trio.sleep(0.002)
                assert _sequences(receiver, sender) == list(range(20))
                # A clean link again: delivered at once (inline, no task hop).
                await server.set_link(RECEIVER, "downlink", None)
                await _send_burst(sender, 5, 0.0)
                assert _sequences(receiver, sender) == list(range(25))


def _me(server: MediaServer, **kwargs: Any) -> client.VoiceGatewayConfig:
    return voice_config(server, ME, SESSION, server_id=GUILD, channel_id=str(CHANNEL), **kwargs)


def _voice_server(net: FakeNet) -> AbstractAsyncContextManager[MediaServer]:
    return open_media_server("voice", GUILD, CHANNEL, MediaServerConfig(net=net))


@pytest.mark.parametrize("code", [4006, 4009, 4014, 4015, 4022])
async def test_close_with_a_chosen_code_reaches_the_client(
    code: int, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(10):
        async with open_fake_net() as net, _voice_server(net) as server:
            async with open_raw_client(_me(server), server.endpoint, CHANNEL, run=False, net=net) as raw:
                async with trio.open_nursery() as nursery:
                    ended: list[client.Closed | client.Failed] = []

                    async def connect() -> None:
                        ended.append(await raw.connect())

                    nursery.start_soon(connect)
                    await raw.connected.wait()
                    assert server.participant(int(ME)) is not None
                    server.close_connection(int(ME), code)
                    await wait_until(lambda: bool(ended))
                (end,) = ended
                assert isinstance(end, client.Closed) and end.code == code
                assert end.action is client.CLOSE_POLICY[code].action
                # The server keeps a resumable participant only for "voice server crashed".
                await wait_until(lambda: (server.participant(int(ME)) is not None) == (code in KEEPS_SESSION))


async def test_stopped_heartbeat_acks_make_the_client_detect_a_zombie(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(10):
        async with open_fake_net() as net, _voice_server(net) as server:
            config = _me(server, heartbeat_cap=0.1)
            async with open_raw_client(config, server.endpoint, CHANNEL, run=False, net=net) as raw:
                async with trio.open_nursery() as nursery:
                    ended: list[client.Closed | client.Failed] = []

                    async def connect() -> None:
                        ended.append(await raw.connect())

                    nursery.start_soon(connect)
                    await raw.connected.wait()
                    await wait_until(lambda: raw.core.statistics().heartbeat_acks >= 2)
                    server.stop_acking(int(ME))
                    await wait_until(lambda: bool(ended))
                (end,) = ended
                assert isinstance(end, client.Failed) and end.action is client.CloseAction.RESUME
                assert isinstance(end.error, TransportError) and "zombie" in str(end.error)
                assert end.close_code == client.CLIENT_CLOSE_RESUMABLE
                acks = raw.core.statistics().heartbeat_acks
                # Acks back on: the client resumes (op7 -> op9) and heartbeats are answered again.
                server.stop_acking(int(ME), on=False)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(connect)
                    await wait_until(lambda: raw.resumes() == 1)
                    await wait_until(lambda: raw.core.statistics().heartbeat_acks >= acks + 2)
                    # The zombie's close (4000) and the resume kept the participant and its SSRC.
                    participant = server.participant(int(ME))
                    assert participant is not None and raw.session is not None
                    assert participant.audio_ssrc == raw.session.ssrc
                    nursery.cancel_scope.cancel()


async def test_dropped_udp_stops_media_until_it_is_restored(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(15):
        async with open_fake_net() as net, _voice_server(net) as server:
            async with (
                open_simulated_member(server, SENDER, signal="tone", talking=True) as (alice, _),
                open_raw_client(_me(server), server.endpoint, CHANNEL, net=net) as raw,
            ):
                await wait_until(lambda: len(raw.audio_from(SENDER)) >= 10)
                server.drop_udp(int(ME))
                await trio.sleep(0.1)  # packets already on the wire
                heard = len(raw.audio)
                dropped = server.statistics().udp_dropped
                await trio.sleep(0.4)
                assert len(raw.audio) == heard
                assert server.statistics().udp_dropped >= dropped + 10  # alice kept talking
                server.drop_udp(int(ME), on=False)
                await wait_until(lambda: len(raw.audio) >= heard + 10)
                assert alice.joined and server.participant(int(ME)) is not None
                assert raw.dave.statistics().decrypt_counters(SENDER, "audio").ok > 0


# ---------------------------------------------------- through the world (sb.media.faults)

SMALL_SCREEN = VideoSettings(width=160, height=120, bitrate=150_000, keyframe_interval=0.5)


async def _live_alice(sb: Sandbox) -> tuple[str, str]:
    """alice joins voice, talks and goes live (small video); returns (alice's id, stream key)."""
    assert sb.media is not None
    sb.media.settings = attrs.evolve(sb.media.settings, screen=SMALL_SCREEN)
    alice = user_named(sb, "alice")
    await sb.world.join_voice(alice, sb.voice_channel_id)
    await sb.world.set_speaking(alice, True)
    stream = await sb.world.go_live(alice)
    return alice, stream.key


@pytest.mark.parametrize("code", [4015, 4022])
async def test_stream_server_crash_closes_its_connections_while_voice_relays_audio(
    code: int, autojump_clock: trio.testing.MockClock
) -> None:
    with trio.fail_after(120):  # virtual
        async with open_fake_net() as net, open_sandbox(net=net) as sb:
            assert sb.media is not None
            alice, key = await _live_alice(sb)
            async with (
                open_gateway_client(
                    url=sb.gateway_url, token=sb.token, connect=net.open_websocket
                ) as gateway,
                open_world_voice(sb, gateway, net) as voice,
                open_world_watch(gateway, key, voice, net) as watch,
            ):
                await wait_until(lambda: len(watch.frames) >= 3 and len(voice.audio_from(int(alice))) >= 10)
                stream_server = sb.media.stream_server(key)
                # (A frame may fail before our DAVE group formed: count only from here.)
                failed = voice.dave.statistics().decrypt_counters(int(alice), "audio").fail
                sb.media.faults.crash_stream(key, code)
                await wait_until(lambda: bool(watch.ends))
                end = watch.ends[0]
                assert isinstance(end, client.Closed) and end.code == code
                assert end.action is client.CLOSE_POLICY[code].action
                heard = len(voice.audio_from(int(alice)))
                await wait_until(lambda: len(voice.audio_from(int(alice))) >= heard + 25)  # ~0.5 s more
                assert (
                    voice.ends == []
                    and voice.dave.statistics().decrypt_counters(int(alice), "audio").fail == failed
                )
                if code in KEEPS_SESSION:
                    # Resumable: the watch resumes (op7 -> op9) and frames flow again.
                    await wait_until(lambda: watch.resumes() == 1)
                    frames = len(watch.frames)
                    await wait_until(lambda: len(watch.frames) >= frames + 5)
                    assert set(stream_server.statistics().participants) == {int(alice), int(sb.our_user_id)}
                else:
                    # Call terminated: everyone is dropped and the watch does not come back.
                    assert stream_server.statistics().participants == ()
                    assert watch.resumes() == 0 and len(watch.ends) == 1


async def test_link_fault_with_a_stream_key_impairs_only_that_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(120):  # virtual
        async with open_fake_net() as net, open_sandbox(net=net) as sb:
            assert sb.media is not None
            alice, key = await _live_alice(sb)
            bob = user_named(sb, "bob")
            await sb.world.join_voice(bob, sb.voice_channel_id)
            assert await sb.world.watch_stream(bob, key)
            on_stream = sb.media.stream_server(key).participant(int(bob))
            on_voice = sb.media.voice_server(sb.voice_channel_id).participant(int(bob))
            assert on_stream is not None and on_voice is not None
            watcher = on_stream.sink
            assert isinstance(watcher, SimulatedMember)
            await wait_until(lambda: len(watcher.frames) >= 3)

            await sb.media.faults.link(bob, "downlink", loss=0.3, seed=4, stream_key=key)
            assert on_stream.downlink is not None and on_voice.downlink is None
            link = on_stream.downlink.link
            out_before, voice_before = on_stream.packets_out, on_voice.packets_out
            await wait_until(lambda: link.statistics().decided >= 150)
            stats = link.statistics()
            assert abs(stats.dropped / stats.decided - 0.3) <= 0.1
            assert on_stream.packets_out - out_before == stats.decided - stats.dropped
            # bob's voice leg is untouched: he keeps hearing alice, nothing dropped there.
            listener = sb.media.listener(bob)
            heard = listener.audio_packets[int(alice)]
            await wait_until(lambda: listener.audio_packets[int(alice)] >= heard + 10)
            assert on_voice.packets_out > voice_before
            # All zero restores a clean link.
            await sb.media.faults.link(bob, "downlink", stream_key=key)
            assert on_stream.downlink is None
