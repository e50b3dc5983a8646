"""Settings audit, ``[watch]`` and ``[voice]`` keys that had no test changing them.

``watch.preferred_quality`` (what op15 asks for, and 0 = no video at all), ``watch.jpeg_quality``
(the JPEG a watch hands out), ``watch.reorder_delay_ms`` (how long a late packet is waited for):
the whole voice session against the sandbox on the fake network (tests/fake_session.py) under
``autojump_clock``.
``voice.mode_preference`` and ``voice.max_dave_protocol_version``: what our voice leg negotiates.
``voice.receive_buffer_bytes`` is the SO_RCVBUF of the real media socket: over loopback.
"""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing
from fake_session import SETTINGS, fake_session, go_live, media, wait_until

from clank.config import TransportMode, VoiceSettings, WatchSettings
from clank.io.gateway import open_gateway_client
from clank.io.lossy import LossyLink
from clank.sandbox.app import open_sandbox
from clank.session.stream_watch import start_stream_watch
from clank.session.voice_session import open_voice_session

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")

WATCH = WatchSettings(max_fps=5.0, preferred_pixel_count=160 * 120, credentials_timeout_s=5.0)


@pytest.mark.parametrize("quality", [40, 0])
async def test_preferred_quality_is_what_op15_asks_and_0_asks_for_no_video(
    quality: int, autojump_clock: trio.testing.MockClock
) -> None:
    watch_settings = attrs.evolve(WATCH, preferred_quality=quality)
    with trio.fail_after(600):  # virtual
        async with fake_session() as (_net, sb, session):
            alice = await go_live(sb, "alice")
            handle = await start_stream_watch(session, alice, settings=watch_settings)
            assert handle.stream_key is not None
            server = media(sb).stream_server(str(handle.stream_key))
            await wait_until(
                lambda: (p := server.participant(int(sb.our_user_id))) is not None and p.wants is not None
            )
            ours = server.participant(int(sb.our_user_id))
            assert ours is not None and ours.wants is not None
            assert ours.wants.any == quality
            assert ours.wants.streams.get(media(sb).streamer(alice).stream.ssrc) == quality
            if quality:
                await handle.frames.wait_frame()
            else:
                with trio.move_on_after(10.0):  # two keyframe intervals: the server sends nothing
                    await handle.frames.wait_frame()
                    pytest.fail("a watch asking for quality 0 got a frame")
            await handle.stop()


async def test_jpeg_quality_sets_the_size_of_the_frames_handed_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sizes: dict[int, float] = {}
    with trio.fail_after(600):  # virtual
        for quality in (20, 95):
            async with fake_session() as (_net, sb, session):
                alice = await go_live(sb, "alice")
                handle = await start_stream_watch(
                    session, alice, settings=attrs.evolve(WATCH, jpeg_quality=quality)
                )
                jpegs = []
                for _ in range(4):
                    frame = await handle.frames.wait_frame()
                    jpegs.append(len(frame.jpeg))
                    await trio.sleep(0.5)
                sizes[quality] = sum(jpegs) / len(jpegs)
                await handle.stop()
    assert sizes[95] > 1.8 * sizes[20], sizes


@pytest.mark.parametrize(("delay_ms", "lost"), [(0, True), (400, False)])
async def test_reorder_delay_decides_whether_a_late_packet_is_waited_for(
    delay_ms: int, lost: bool, autojump_clock: trio.testing.MockClock
) -> None:
    # nack off: a late packet is either waited for (reorder_delay_ms) or given up at once.
    watch_settings = attrs.evolve(WATCH, reorder_delay_ms=delay_ms, nack=False)
    with trio.fail_after(600):  # virtual
        async with fake_session() as (_net, sb, session):
            alice = await go_live(sb, "alice")
            handle = await start_stream_watch(session, alice, settings=watch_settings)
            assert handle.stream_key is not None
            server = media(sb).stream_server(str(handle.stream_key))
            await handle.frames.wait_frame()
            link = LossyLink(5, reorder=0.3, reorder_delay=0.1)
            await server.set_link(int(sb.our_user_id), "downlink", link)
            await trio.sleep(12.0)
            await server.set_link(int(sb.our_user_id), "downlink", None)
            (stream,) = handle.statistics().streams.values()
            await handle.stop()
    assert link.statistics().reordered >= 3
    assert stream.receive.nack_packets == 0  # watch.nack off: nothing asked again (on: test_session_fakenet)
    if lost:
        assert stream.receive.packets_lost > 0, stream.receive
    else:
        assert stream.receive.packets_lost == 0 and stream.receive.packets_reordered > 0, stream.receive


@pytest.mark.parametrize("size", [65536, 1048576])
async def test_receive_buffer_bytes_is_the_media_socket_rcvbuf(size: int) -> None:
    settings = attrs.evolve(SETTINGS, voice=VoiceSettings(receive_buffer_bytes=size))
    with trio.fail_after(30):
        async with (
            open_sandbox(scenario="empty") as sb,
            open_gateway_client(url=sb.gateway_url, token=sb.token) as gateway,
            open_voice_session(
                gateway, guild_id=sb.guild_id, channel_id=sb.voice_channel_id, settings=settings
            ) as session,
        ):
            await session.voice.wait_ready()
            udp = session.voice.api.connection.statistics().udp
            assert udp is not None
    # Linux grants double the request (bookkeeping overhead); other kernels grant it as asked.
    assert udp.rcvbuf in (size, 2 * size), udp


@pytest.mark.parametrize("mode", ["aead_xchacha20_poly1305_rtpsize", "aead_aes256_gcm_rtpsize"])
async def test_mode_preference_picks_the_transport_encryption(
    mode: TransportMode, autojump_clock: trio.testing.MockClock
) -> None:
    other = next(m for m in VoiceSettings().mode_preference if m != mode)
    settings = attrs.evolve(SETTINGS, voice=VoiceSettings(mode_preference=(mode, other)))
    with trio.fail_after(600):  # virtual
        async with fake_session(settings=settings) as (_net, _sb, session):
            assert session.voice.api.connection.statistics().mode == mode


@pytest.mark.parametrize("version", [0, 1])
async def test_max_dave_protocol_version_turns_end_to_end_encryption_on_or_off(
    version: int, autojump_clock: trio.testing.MockClock
) -> None:
    settings = attrs.evolve(SETTINGS, voice=VoiceSettings(max_dave_protocol_version=version))
    with trio.fail_after(600):  # virtual
        async with fake_session(settings=settings) as (_net, _sb, session):
            await trio.sleep(2.0)  # the DAVE handshake (op21..op30) settles
            dave = session.voice.api.connection.statistics().dave
            assert dave.protocol_version == version, dave
