"""UDP keep-alive against the strict sandbox: a listen-only leg keeps receiving for 10 minutes.

Virtual time (autojump clock) on the fake network (no sockets): the sandbox's voice server stops
sending to a client whose UDP socket has been silent for 60 s (trio time), as Discord stops
delivering voice to a listen-only client that sends no datagrams. A simulated speaker talks for
2 s at the start of every minute; each burst must reach us.
"""

from __future__ import annotations

import attrs
import pytest
import trio
from fake_session import fake_session, media, user_id

from clank.config import DiscordSettings, Settings, VoiceSettings

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")

MINUTES = 10
BURST = 2.0


def settings(keepalive_s: float) -> Settings:
    return Settings(
        discord=DiscordSettings(voice_url_scheme="ws"),
        voice=attrs.evolve(VoiceSettings(), udp_keepalive_s=keepalive_s),
    )


async def listen_for_ten_minutes(keepalive_s: float) -> tuple[list[int], int, int]:
    """Frames of alice heard per minute-burst; our keep-alives sent; the server's silent drops."""
    heard: list[float] = []
    starts: list[float] = []
    async with fake_session(settings=settings(keepalive_s)) as (_net, sb, session):
        alice = user_id(sb, "alice")

        async def collect() -> None:
            with session.voice.api.subscribe_audio(alice, buffer=4096) as audio:
                async for _item in audio:
                    heard.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect)
            await sb.world.join_voice(alice, sb.voice_channel_id)
            for _minute in range(MINUTES):
                starts.append(trio.current_time())
                await sb.world.set_speaking(alice, True)
                await trio.sleep(BURST)
                await sb.world.set_speaking(alice, False)
                await trio.sleep(60.0 - BURST)
            nursery.cancel_scope.cancel()
        server = media(sb).voice_server(sb.voice_channel_id)
        silent = server.statistics().silent_dropped
        sent = session.voice.api.connection.statistics().keepalives_sent
    per_burst = [sum(1 for t in heard if s <= t < s + BURST + 1.0) for s in starts]
    return per_burst, sent, silent


async def test_ten_minute_listen_only_session_keeps_receiving(autojump_clock: trio.abc.Clock) -> None:
    with trio.fail_after(MINUTES * 60 + 120):
        per_burst, sent, silent = await listen_for_ten_minutes(5.0)
    # A 2 s burst is 100 frames of 20 ms; allow for the speaker's start-up and DAVE at minute 0.
    assert all(n >= 60 for n in per_burst[1:]), per_burst
    assert per_burst[0] > 0, per_burst
    assert sent >= MINUTES * 60 / 5 - 2
    assert silent == 0


async def test_without_keepalives_the_strict_sandbox_stops_sending(autojump_clock: trio.abc.Clock) -> None:
    """The same session with keep-alives off: the server stops sending after 60 s of silence."""
    with trio.fail_after(MINUTES * 60 + 120):
        per_burst, sent, silent = await listen_for_ten_minutes(0.0)
    assert sent == 0
    assert per_burst[0] > 0, per_burst  # within a minute of IP discovery we still hear alice
    assert all(n == 0 for n in per_burst[2:]), per_burst
    assert silent > 0
