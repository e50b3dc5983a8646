"""What several benches share: the voice send loop's paced tone, and sealed video datagrams.

Not a bench itself (``just bench`` runs ``bench/bench_*.py``); imported by them from this folder.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from clank.codecs.h264 import packetize_h264
from clank.codecs.vp8 import packetize_vp8
from clank.config import load_settings
from clank.control.publish import demo_publish
from clank.control.service import ClankService
from clank.crypto.dave import DaveSessionCore
from clank.crypto.transport import AES256_GCM_RTPSIZE, TransportCipher
from clank.media.audio import OpusEncoder, PcmSource, tone
from clank.media.decoder import VideoCodec
from clank.media.encoder import EncodedFrame
from clank.media.mixer import Mixer
from clank.media.visualizer import write_demo_music
from clank.runner import RunInfo, open_clank
from clank.session.frame_pacer import FramePacer
from clank.wire.rtp import VIDEO_EXTENSION, RtpHeader
from clank.wire.voice_gateway import H264_PT, VP8_PT

KEY = bytes(range(32))

SANDBOX_NICE = 10
SANDBOX_CHILD = """
import json, os, sys, trio
from clank.logging import configure_logging
from clank.sandbox.app import open_sandbox

async def main():
    async with open_sandbox(host="127.0.0.1", port=0, scenario="demo") as sandbox:
        print(json.dumps(sandbox.info()), flush=True)
        bob = next(u.id for u in sandbox.world.users.values() if u.name == "bob")
        stdin, line = trio.lowlevel.FdStream(os.dup(0)), b""
        while chunk := await stdin.receive_some(4096):
            line += chunk
            while b"\\n" in line:
                key, line = line.split(b"\\n", 1)
                state = sandbox.world.voice_state(bob)
                if state is None or state.channel_id != sandbox.voice_channel_id:
                    await sandbox.world.join_voice(bob, sandbox.voice_channel_id)
                await sandbox.media.start_viewer(bob, key.decode())

configure_logging("json", "warning", stream=open(os.devnull, "w"))
os.nice(SANDBOX_NICE)
trio.run(main)
""".replace("SANDBOX_NICE", str(SANDBOX_NICE))
"""The sandbox demo in a child process; each stream key written to its stdin gets bob as a viewer
(as the in-process demo does for our Go Live). It stands for Discord's servers, which do not share
clank's cores, so it runs niced (``SANDBOX_NICE``): on a small machine it takes the CPU clank's
threads leave instead of competing with clank's trio thread as an equal."""
FPS = 30
TICKS = 90_000 // FPS
MTU = 1100


async def paced_tone(seconds: float) -> list[float]:
    """The voice role's send loop for ``seconds``: mix a 440 Hz tone, Opus-encode, wait on a
    :class:`FramePacer`. Returns each wake-up's lateness (seconds)."""
    mixer = Mixer()
    source = PcmSource()
    source.push(tone(440.0, seconds + 1.0))
    mixer.play("tone", source)
    encoder = OpusEncoder()
    pacer = FramePacer()
    pacer.restart()
    lateness: list[float] = []
    for _ in range(int(seconds / 0.02)):
        frame = mixer.mix()
        if frame is not None:
            encoder.encode(frame)
        lateness.append(await pacer.wait_next())
    return lateness


def sealed_datagrams(
    aus: list[EncodedFrame], sender: DaveSessionCore, ssrc: int, codec: VideoCodec = "h264"
) -> list[list[bytes]]:
    """Per frame: the sealed RTP datagrams of the DAVE-encrypted, packetized access unit."""
    cipher = TransportCipher.create(AES256_GCM_RTPSIZE, KEY)
    pt = H264_PT if codec == "h264" else VP8_PT
    seq = 0
    out: list[list[bytes]] = []
    for index, au in enumerate(aus):
        encrypted = sender.encrypt_video(codec, au.data)
        payloads = packetize_h264(encrypted, MTU) if codec == "h264" else packetize_vp8(encrypted, index, MTU)
        frame: list[bytes] = []
        for i, payload in enumerate(payloads):
            header = RtpHeader(
                pt,
                seq & 0xFFFF,
                index * TICKS,
                ssrc,
                marker=i == len(payloads) - 1,
                extension_profile=VIDEO_EXTENSION.profile,
                extension_words=VIDEO_EXTENSION.words,
            )
            seq += 1
            frame.append(cipher.seal_rtp(header.serialize(), VIDEO_EXTENSION.body + payload))
        out.append(frame)
    return out


async def read_json_line(stream: trio.abc.ReceiveStream, what: str) -> dict[str, Any]:
    """The first line a child process prints, as JSON (the sandbox's announcement of itself)."""
    raw = b""
    while b"\n" not in raw:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise RuntimeError(f"{what} exited before printing its JSON line")
        raw += chunk
    fields: dict[str, Any] = json.loads(raw.split(b"\n", 1)[0])
    return fields


@asynccontextmanager
async def open_demo(*, separate: bool, seconds_to_settle: float = 10.0) -> AsyncIterator[RunInfo]:
    """The sandbox demo as ``just run`` runs it, on free ports; yields once it has settled.

    ``separate=False``: the sandbox runs in this process (as ``just run``), so its streamers,
    SFU and speakers share our trio thread. ``separate=True``: the sandbox runs as a
    ``clank sandbox`` subprocess and this process is clank alone (as against real Discord): the
    same watches of the demo streamer and webcam, our Go Live music publish (no viewer).
    """
    if not separate:
        settings = load_settings(environ={"CLANK_LINK_PORT": "0"})
        async with open_clank(settings, scenario="demo", api_port=0) as info:
            await trio.sleep(seconds_to_settle)
            yield info
        return
    sandbox = await trio.lowlevel.open_process(
        [sys.executable, "-c", SANDBOX_CHILD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert sandbox.stdout is not None and sandbox.stdin is not None
        stdin = sandbox.stdin

        async def viewer(stream_key: str) -> None:
            await stdin.send_all(stream_key.encode() + b"\n")

        with trio.fail_after(30):
            fields = await read_json_line(sandbox.stdout, "clank sandbox")
        environ = {
            "CLANK_DISCORD_TOKEN": fields["token"],
            "CLANK_API_URL": fields["api_url"],
            "CLANK_GATEWAY_URL": fields["gateway_url"],
            "CLANK_GUILD_ID": fields["guild_id"],
            "CLANK_CHANNEL_ID": fields["voice_channel_id"],
            "CLANK_DISCORD_VOICE_URL_SCHEME": fields["voice_url_scheme"],
            "CLANK_LINK_PORT": "0",
        }
        settings = load_settings(environ=environ)
        with tempfile.TemporaryDirectory() as folder:
            async with (
                open_clank(settings, api_port=0, demo_watch=False) as info,
                trio.open_nursery() as nursery,
            ):
                assert info.service is not None
                nursery.start_soon(_watch_everyone, info.service, info.user_id)
                music = await trio.to_thread.run_sync(write_demo_music, f"{folder}/demo-song.wav")
                nursery.start_soon(demo_publish, info.service, music, viewer)
                await trio.sleep(seconds_to_settle)
                yield info
                nursery.cancel_scope.cancel()
    finally:
        sandbox.terminate()
        with trio.move_on_after(5):
            await sandbox.wait()
        sandbox.kill()


async def _watch_everyone(service: ClankService, own_user_id: str) -> None:
    """The demo agent's job: watch the screen sharer, then the webcam user."""
    with trio.move_on_after(30):
        while not (await service.start_screen_watch()).ok:  # noqa: ASYNC110 - polling, like the demo agent
            await trio.sleep(0.5)
    with trio.move_on_after(30):
        while True:
            webcams = [s for s in service.session.sharers() if s.webcam and s.user_id != own_user_id]
            if webcams and (await service.start_screen_watch(target=webcams[0].user_id)).ok:
                return
            await trio.sleep(0.5)
