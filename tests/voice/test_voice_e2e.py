"""Our gateway client + voice session against the sandbox voice server.

Real websocket framing, AEAD, DAVE (davey) and libopus on both sides; the sandbox's simulated
users speak (Opus tones) and listen (decode, dominant frequency). The first two tests run over
real sockets on 127.0.0.1 (marked ``e2e``); the others on the fake network under
``autojump_clock``, where "within two seconds" is virtual time, decided by the code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import numpy as np
import pytest
import trio
import trio.testing
from fake_session import fake_session

from clank.config import DiscordSettings, Settings
from clank.errors import ConnectionClosed
from clank.io.fakenet import open_fake_net
from clank.io.gateway import GatewayClient, open_gateway_client
from clank.media.audio import dominant_frequency, tone
from clank.protocol.voice_gateway import SsrcBinding
from clank.sandbox.app import Sandbox, open_sandbox
from clank.sandbox.rtc.backend import RtcMediaBackend
from clank.session.roles import RoleState
from clank.session.voice_session import VoiceSession, open_voice_session
from clank.wire.rtp import RtpHeader

SETTINGS = Settings(discord=DiscordSettings(voice_url_scheme="ws"))
pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")


async def wait_until(predicate: Callable[[], bool], step: float = 0.02) -> None:
    """Poll ``predicate`` (the sandbox exposes state, not events); callers bound it with fail_after."""
    while True:
        if predicate():
            return
        await trio.sleep(step)


def media(sb: Sandbox) -> RtcMediaBackend:
    assert sb.media is not None
    return sb.media


def user_id(sb: Sandbox, name: str) -> str:
    return next(u.id for u in sb.world.users.values() if u.name == name)


@asynccontextmanager
async def joined(seed: int = 0) -> AsyncIterator[tuple[Sandbox, GatewayClient, VoiceSession]]:
    async with (
        open_sandbox(seed=seed) as sb,
        open_gateway_client(url=sb.gateway_url, token=sb.token) as gateway,
        open_voice_session(
            gateway, guild_id=sb.guild_id, channel_id=sb.voice_channel_id, settings=SETTINGS
        ) as session,
    ):
        await session.voice.wait_ready()
        yield sb, gateway, session


@pytest.mark.e2e
async def test_we_send_a_tone_and_a_simulated_user_hears_it() -> None:
    with trio.fail_after(30):
        async with joined() as (sb, _gateway, session):
            alice = user_id(sb, "alice")
            await sb.world.join_voice(alice, sb.voice_channel_id)
            listener = media(sb).listener(alice)
            await wait_until(lambda: session.voice.api.connection.dave.ready)
            session.voice.api.play_pcm(tone(440.0, 3.0))
            ours = int(sb.our_user_id)
            await wait_until(lambda: len(listener.received_pcm(ours)) >= 48000)
            assert abs(listener.heard_frequency(ours) - 440.0) < 10.0
            stats = session.voice.api.statistics()
            assert stats.frames_sent >= 50 and stats.dave_not_ready_drops == 0
            # Real sockets, real clock: the frames went out from the send process at their slots
            # (io/timed_sender.py), and each was counted back in trio.
            sender = session.voice.api.sender
            assert sender is not None and sender._mode(session.voice.api.connection.endpoint) == "process"
            assert stats.send_path.startswith("process")
            sent = sender.sent
            assert sent >= 50 and stats.send_failures == 0
            connection = session.voice.api.connection
            await wait_until(lambda: connection.statistics().packets_out >= sent)
            udp = connection.statistics().udp
            assert udp is not None and udp.packets_sent >= sent


@pytest.mark.e2e
async def test_a_simulated_user_speaks_and_we_receive_pcm_with_their_user_id() -> None:
    with trio.fail_after(30):
        async with joined() as (sb, _gateway, session):
            alice = user_id(sb, "alice")
            with session.voice.api.subscribe_audio(None, rate=24000, channels=1) as audio:
                await sb.world.join_voice(alice, sb.voice_channel_id)
                await sb.world.set_speaking(alice, True)
                frames = []
                async for item in audio:
                    assert item.user_id == alice
                    assert item.rate == 24000 and item.channels == 1
                    frames.append(item.pcm)
                    if len(frames) >= 75:
                        break
            pcm = np.concatenate(frames[25:])
            assert np.abs(pcm).max() > 500
            expected = media(sb).speaker(alice).frequency
            assert abs(dominant_frequency(pcm, 24000) - expected) < 15.0
            assert alice in session.voice.api.speaking_users()


async def test_ten_percent_loss_is_concealed_and_audio_continues(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(400):  # virtual
        async with fake_session(seed=7) as (_net, sb, session):
            alice = user_id(sb, "alice")
            await media(sb).faults.link(sb.our_user_id, "downlink", loss=0.10, seed=7)
            with session.voice.api.subscribe_audio(alice, buffer=500) as audio:
                await sb.world.join_voice(alice, sb.voice_channel_id)
                await sb.world.set_speaking(alice, True)
                items = []
                async for item in audio:
                    items.append(item)
                    if len(items) >= 150:
                        break
            concealed = sum(1 for i in items if i.concealed)
            assert 5 <= concealed <= 40
            stats = session.voice.api.statistics()
            assert stats.audio_receive.users[0].lost >= concealed
            # Concealed frames are not silence: the signal continues through the gaps.
            loud = [i for i in items[25:] if i.concealed]
            assert any(np.abs(i.pcm).max() > 300 for i in loud)


async def test_4014_ends_the_session(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(300):  # virtual
        async with (
            open_fake_net() as net,
            open_sandbox(net=net) as sb,
            open_gateway_client(url=sb.gateway_url, token=sb.token, connect=net.open_websocket) as gateway,
        ):
            with pytest.raises(ConnectionClosed) as info:
                async with open_voice_session(
                    gateway,
                    guild_id=sb.guild_id,
                    channel_id=sb.voice_channel_id,
                    settings=SETTINGS,
                    transports=net.media_transports(),
                ) as session:
                    await session.voice.wait_ready()
                    media(sb).faults.close(sb.our_user_id, 4014)
                    await trio.sleep_forever()
            assert info.value.code == 4014
            assert session.statistics().rejoins == 0


async def test_leaving_sends_op4_null_within_two_seconds(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(300):  # virtual
        async with (
            open_fake_net() as net,
            open_sandbox(net=net) as sb,
            open_gateway_client(url=sb.gateway_url, token=sb.token, connect=net.open_websocket) as gateway,
        ):
            left_at: list[float] = []

            async def watch_world() -> None:
                await wait_until(
                    lambda: bool(started) and sb.world.voice_state(sb.our_user_id) is None, 0.005
                )
                left_at.append(trio.current_time())

            started: list[float] = []
            async with trio.open_nursery() as nursery:
                async with open_voice_session(
                    gateway,
                    guild_id=sb.guild_id,
                    channel_id=sb.voice_channel_id,
                    settings=SETTINGS,
                    transports=net.media_transports(),
                ) as session:
                    await session.voice.wait_ready()
                    voice = session.voice
                    assert sb.world.voice_state(sb.our_user_id) is not None
                    nursery.start_soon(watch_world)
                    started.append(trio.current_time())
                exited = trio.current_time()
            assert left_at[0] - started[0] < 2.0  # op4 null reached the gateway
            assert exited - started[0] < 4.5  # roles closed (bounded websocket close handshakes)
            assert voice.state is RoleState.DISCONNECTED


async def test_webcam_packets_reach_an_attached_video_receiver_with_their_binding(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(300):  # virtual
        async with fake_session() as (_net, sb, session):
            bob = user_id(sb, "bob")
            seen: list[tuple[int, str | None, str | None]] = []

            def receiver(header: RtpHeader, payload: bytes, now: float, binding: SsrcBinding | None) -> None:
                seen.append(
                    (
                        header.payload_type,
                        binding.user_id if binding else None,
                        binding.kind if binding else None,
                    )
                )

            session.voice.api.set_video_receiver(receiver)
            await sb.world.join_voice(bob, sb.voice_channel_id)
            await sb.world.set_webcam(bob, True)
            await wait_until(lambda: len(seen) >= 20)
            assert any(user == bob and kind == "video" for _pt, user, kind in seen)
            assert session.voice.api.statistics().video_packets >= 20
