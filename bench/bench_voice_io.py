"""Voice I/O for agents over loopback against the sandbox: first audio out, pacing, listening cost.

1. First audio out: a 20 ms PCM chunk pushed over the speak WebSocket (idle voice role) until the
   sandbox listener receives our first audio packet; p50/p99 of 20 tries. Goal <= 60 ms.
2. Audio pacing: the voice role's own send lateness on the wire (``TimedSender.recent``) while we speak
   continuously, a 1080p30 Go Live watch decodes and a listener is subscribed to a speaker (the
   sandbox, with its 1080p encoder, runs in a separate process); p99 against the same loop without
   the watch and the listener. Goal p99 <= 2 ms.
3. Listening to 5 speakers: process CPU with five simulated speakers and one listener of everyone
   (16 kHz mono, drained) minus the same without the listener (medians of alternating rounds), as a
   share of one core. Goal <= 10 %.

Figures 1 and 3 run the sandbox in this process (its simulated users' Opus encoding counts in
both sides of 3). Figures are meaningless when the load average exceeds the core count.

Bounded: about 40 s. Run: ``.venv/bin/python bench/bench_voice_io.py``. Always exits 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import attrs
import numpy as np
import trio
from benchkit import read_json_line

from clank.config import DiscordSettings, Settings
from clank.io.gateway import open_gateway_client
from clank.logging import configure_logging
from clank.media.audio import tone
from clank.runner import GIL_SWITCH_INTERVAL
from clank.sandbox.app import open_sandbox
from clank.sandbox.rtc.backend import RtcSettings, open_rtc_backend
from clank.sandbox.rtc.streamer import VideoSettings
from clank.sandbox.rtc.users import open_simulated_member
from clank.session.stream_watch import start_stream_watch
from clank.session.voice_role import VoiceRole
from clank.session.voice_session import VoiceSession, open_voice_session

SETTINGS = Settings(discord=DiscordSettings(voice_url_scheme="ws"))
GOAL_FIRST_MS = 60.0
GOAL_PACING_P99_MS = 2.0
GOAL_LISTEN_CORE = 0.10
PACING_SECONDS = 6.0
CPU_SECONDS = 6.0
ROUNDS = 4


def line(name: str, value: str, goal: str) -> None:
    print(f"  {name:<58} {value:>18}   {goal}")


async def wait_until(predicate: Callable[[], bool], step: float = 0.001) -> None:
    while not predicate():  # noqa: ASYNC110 - the sandbox exposes state, not events
        await trio.sleep(step)


@asynccontextmanager
async def joined(screen: VideoSettings | None = None) -> AsyncIterator[tuple[Any, VoiceSession, VoiceRole]]:
    async with AsyncExitStack() as stack:
        backend = await stack.enter_async_context(
            open_rtc_backend(RtcSettings(screen=screen or VideoSettings(), signal="tone"))
        )
        sb = await stack.enter_async_context(open_sandbox(media_backend=backend))
        backend.bind_world(sb.world)  # a backend of our own (1080p screen): bind it like open_sandbox does
        sb = attrs.evolve(sb, media=backend)
        gateway = await stack.enter_async_context(open_gateway_client(url=sb.gateway_url, token=sb.token))
        session = await stack.enter_async_context(
            open_voice_session(
                gateway, guild_id=sb.guild_id, channel_id=sb.voice_channel_id, settings=SETTINGS
            )
        )
        await session.voice.wait_ready()
        role: VoiceRole = session.voice.api
        alice = user(sb, "alice")
        await sb.world.join_voice(alice, sb.voice_channel_id)
        await wait_until(lambda: role.ssrc is not None and role.connection.dave.ready, 0.01)
        yield sb, session, role


def user(sb: Any, name: str) -> str:
    return str(sb.world.user_by_name(name).id)


async def first_audio_out() -> list[float]:
    delays: list[float] = []
    async with joined() as (sb, _session, role):
        listener = sb.media.listener(user(sb, "alice"))
        await trio.sleep(0.5)
        ours = int(sb.our_user_id)
        chunk = tone(440.0, 0.02, rate=24_000, channels=1).tobytes()
        for _ in range(20):
            await wait_until(lambda: role.speech.state == "idle" and not role.mixer.active, 0.005)
            await trio.sleep(0.15)  # idle: the send loop sleeps until audio arrives
            before = listener.audio_packets[ours]
            stream = role.speech.open_stream(24_000, 1)
            start = trio.current_time()
            stream.push(chunk)
            stream.end()
            await wait_until(lambda n=before: listener.audio_packets[ours] > n)
            delays.append(trio.current_time() - start)
    return delays


SANDBOX_PROCESS = r"""
import json, sys, trio
from clank.logging import configure_logging
from clank.sandbox.app import open_sandbox
from clank.sandbox.rtc.backend import RtcSettings, open_rtc_backend
from clank.sandbox.rtc.streamer import VideoSettings

async def main():
    configure_logging(level="warning", stream=sys.stderr)
    screen = VideoSettings(width=1920, height=1080, bitrate=6_000_000)
    async with open_rtc_backend(RtcSettings(screen=screen, signal="tone")) as backend:
        async with open_sandbox(media_backend=backend) as sb:
            backend.bind_world(sb.world)
            ids = {n: str(sb.world.user_by_name(n).id) for n in ("alice", "bob")}
            for uid in ids.values():
                await sb.world.join_voice(uid, sb.voice_channel_id)
            info = {"gateway_url": sb.gateway_url, "token": sb.token, "guild_id": sb.guild_id,
                    "channel_id": sb.voice_channel_id, **ids}
            print(json.dumps(info), flush=True)
            await trio.to_thread.run_sync(sys.stdin.readline)
            await sb.world.go_live(ids["alice"])
            await sb.world.set_speaking(ids["bob"], True)
            await trio.sleep_forever()

trio.run(main)
"""


async def _speak_and_measure(role: VoiceRole) -> list[float]:
    stream = role.speech.open_stream(48_000, 2)
    stream.push(tone(300.0, PACING_SECONDS + 2.0))
    stream.end()
    await trio.sleep(1.0)
    assert role.sender is not None
    role.sender.recent.clear()  # the send lateness on the wire (io/timed_sender.py)
    await trio.sleep(PACING_SECONDS)
    return list(role.sender.recent)


async def pacing_alone() -> list[float]:
    async with joined() as (_sb, _session, role):
        return await _speak_and_measure(role)


async def pacing_loaded() -> tuple[list[float], dict[str, Any]]:
    """The sandbox (1080p30 streamer, a speaker) in another process; we watch, listen and speak."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", SANDBOX_PROCESS], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None and process.stdin is not None
        info = await read_json_line(process.stdout, "the sandbox process")
        async with (
            open_gateway_client(url=info["gateway_url"], token=info["token"]) as gateway,
            open_voice_session(
                gateway, guild_id=info["guild_id"], channel_id=info["channel_id"], settings=SETTINGS
            ) as session,
        ):
            await session.voice.wait_ready()
            role: VoiceRole = session.voice.api
            await wait_until(lambda: role.ssrc is not None and role.connection.dave.ready, 0.01)
            await process.stdin.send_all(b"go\n")
            await trio.sleep(1.0)
            watch = await start_stream_watch(session, info["alice"], settings=SETTINGS.watch)
            received = 0
            async with trio.open_nursery() as nursery:

                async def drain() -> None:
                    nonlocal received
                    with role.open_listener(frozenset({info["bob"]}), rate=16_000, channels=1) as listening:
                        async for _ in listening:
                            received += 1

                nursery.start_soon(drain)
                lateness = await _speak_and_measure(role)
                nursery.cancel_scope.cancel()
            stats = watch.statistics()
            decoded = sum(s.decode.decoded_frames for s in stats.streams.values() if s.decode is not None)
            sizes = {f"{s.width}x{s.height}" for s in stats.streams.values()}
            return lateness, {"decoded": decoded, "sizes": sizes, "listened": received}
    finally:
        process.kill()
        with trio.move_on_after(2.0):
            await process.wait()


async def listen_cost() -> tuple[float, float, int]:
    async with joined() as (sb, _session, role):
        server = sb.media.voice_server(sb.voice_channel_id)
        async with AsyncExitStack() as stack:
            for k in range(5):
                await stack.enter_async_context(
                    open_simulated_member(
                        server, 9_000 + k, signal="tone", frequency=200.0 + 60 * k, talking=True
                    )
                )
            await trio.sleep(1.5)
            idle_runs: list[float] = []
            busy_runs: list[float] = []
            received = 0
            for _ in range(ROUNDS):  # alternate, so load from elsewhere hits both sides alike
                idle_runs.append(await _cpu_share(CPU_SECONDS / ROUNDS))
                with role.open_listener(None, rate=16_000, channels=1, buffer=500) as listener:

                    async def drain(listening: Any = listener) -> None:
                        nonlocal received
                        async for _ in listening:
                            received += 1

                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(drain)
                        busy_runs.append(await _cpu_share(CPU_SECONDS / ROUNDS))
                        nursery.cancel_scope.cancel()
            idle, busy = float(np.median(idle_runs)), float(np.median(busy_runs))
    return idle, busy, received


async def _cpu_share(seconds: float) -> float:
    cpu, wall = time.process_time(), time.perf_counter()
    await trio.sleep(seconds)
    return (time.process_time() - cpu) / (time.perf_counter() - wall)


def ms(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values) * 1000, q))


def main() -> None:
    configure_logging(level="warning")
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    print(f"voice I/O over loopback; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    delays = trio.run(first_audio_out)
    p99 = ms(delays, 99)
    line(
        "1. first audio out after the first pushed chunk: p50 / p99",
        f"{ms(delays, 50):.1f} / {p99:.1f} ms",
        f"goal <= {GOAL_FIRST_MS:.0f} ms  {'ok' if p99 <= GOAL_FIRST_MS else 'MISS'}",
    )
    base = trio.run(pacing_alone)
    loaded, seen = trio.run(pacing_loaded)
    line("2. send pacing alone: p50 / p99", f"{ms(base, 50):.3f} / {ms(base, 99):.3f} ms", "(baseline)")
    p99 = ms(loaded, 99)
    line(
        "   + 1080p30 watch + listener: p50 / p99",
        f"{ms(loaded, 50):.3f} / {p99:.3f} ms",
        f"goal p99 <= {GOAL_PACING_P99_MS} ms  {'ok' if p99 <= GOAL_PACING_P99_MS else 'MISS'}"
        f"  (x{p99 / max(ms(base, 99), 1e-6):.1f} of baseline)",
    )
    line("   + 1080p30 watch + listener: p90 / max", f"{ms(loaded, 90):.3f} / {ms(loaded, 100):.3f} ms", "")
    line(
        "   (the watch decoded / the listener got, in the window)",
        f"{seen['decoded']} frames {'/'.join(sorted(seen['sizes']))} / {seen['listened']} items",
        "",
    )
    idle, busy, received = trio.run(listen_cost)
    share = busy - idle
    line("3. 5 speakers: process CPU without / with a listener", f"{idle:.1%} / {busy:.1%} of a core", "")
    line(
        "   listening to 5 speakers (difference)",
        f"{share:.1%} of a core",
        f"goal <= {GOAL_LISTEN_CORE:.0%}  {'ok' if share <= GOAL_LISTEN_CORE else 'MISS'}"
        f"  ({received} frames)",
    )


if __name__ == "__main__":
    main()
