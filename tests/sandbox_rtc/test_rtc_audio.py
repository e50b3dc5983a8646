"""SFU + DAVE with simulated members on both ends: relayed, re-encrypted, end-to-end encrypted audio."""

from __future__ import annotations

import trio
import trio.testing
from rtc_helpers import wait_until

from clank.sandbox.rtc.server import open_media_server
from clank.sandbox.rtc.users import open_simulated_member

GUILD = "111"
CHANNEL = 222000000000000001


async def test_sfu_relays_dave_audio_between_simulated_members(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(20):
        async with open_media_server("voice", GUILD, CHANNEL) as server:
            async with (
                open_simulated_member(server, 1001, signal="tone", frequency=440.0, talking=True) as (
                    alice,
                    speaker,
                ),
                open_simulated_member(server, 1002) as (bob, _),
            ):
                await wait_until(lambda: alice.dave_session.ready and bob.dave_session.ready)
                await wait_until(lambda: len(bob.received_pcm(1001)) >= 48000)
                assert abs(bob.heard_frequency(1001) - 440.0) < 10.0
                stats = server.statistics()
                assert stats.sfu.rtp_relayed > 0
                assert stats.dave.epoch >= 1
                dave = bob.dave_session.statistics().decrypt_counters(1001, "audio")
                assert dave.ok > 0
                assert speaker.frames_sent > 0


async def test_a_speaker_replays_its_repeating_second_instead_of_encoding(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An integer frequency repeats every second: after two seconds of encoding the speaker
    replays the second second's packets (libopus off the trio thread an in-process demo shares
    with clank), and a listener still hears the tone."""
    with trio.fail_after(30):
        async with open_media_server("voice", GUILD, CHANNEL) as server:
            async with (
                open_simulated_member(server, 1001, signal="speech", frequency=330.0) as (alice, speaker),
                open_simulated_member(server, 1002) as (bob, _),
            ):
                encodes = 0
                encode = speaker._encoder.encode

                def counting(mono):  # type: ignore[no-untyped-def]
                    nonlocal encodes
                    encodes += 1
                    return encode(mono)

                speaker._encoder.encode = counting  # type: ignore[method-assign]
                await wait_until(lambda: alice.dave_session.ready and bob.dave_session.ready)
                speaker.set_talking(True)
                await wait_until(lambda: speaker.frames_sent >= 200)  # 4 s
                assert encodes == 100  # the first two seconds only
                assert abs(bob.heard_frequency(1001, 1.0) - 330.0) < 15.0
                replay = [speaker._replay[("speech", 330.0, k)] for k in range(50)]
                assert len({tuple(packets) for packets in replay}) > 40  # a second, not one frame


async def test_a_speaker_with_a_fractional_frequency_always_encodes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    with trio.fail_after(30):
        async with open_media_server("voice", GUILD, CHANNEL) as server:
            async with (
                open_simulated_member(server, 1001, signal="tone", frequency=440.5) as (alice, speaker),
                open_simulated_member(server, 1002) as (bob, _),
            ):
                await wait_until(lambda: alice.dave_session.ready and bob.dave_session.ready)
                speaker.set_talking(True)
                await wait_until(lambda: speaker.frames_sent >= 150)
                assert speaker._replay == {}
