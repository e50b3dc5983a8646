"""Publishing our Go Live: CPU of the whole send path, and audio pacing while it runs.

1. 720p30 music visualizer: one PyAV decode of a generated song -> showcqt -> libx264 (our
   VideoEncoder, ultrafast/zerolatency, VBV at 2.5 Mbit/s) -> DAVE encrypt with the retry rule
   (real davey, two members) -> VideoSendCore packetize + pace -> transport AEAD seal. CPU seconds
   per media second = share of one core (goal <= 12%), with x264 alone as the same-run baseline.
2. Pushed frames at 1080p30: a new PNG decoded + scaled every frame (worst case), and the
   steady case (the last image repeated), same send path.
3. Audio pacing p99 while publishing 720p30 in-process: the encode worker thread, the trio side
   (DAVE + packetize + AEAD + pacing), and the voice role's 20 ms loop (mix + Opus + FramePacer)
   on the same trio loop (goal <= 2 ms).

Bounded: about 3 x SECONDS plus set-up. Run: .venv/bin/python bench/bench_publish.py [seconds]
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import PIL.Image
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "dave"))

from benchkit import paced_tone
from dave_net import DaveNet

from clank.crypto.dave import DaveSessionCore
from clank.crypto.transport import AES256_GCM_RTPSIZE, TransportCipher
from clank.io.encode_worker import EncodedAccessUnit, open_encode_worker
from clank.media.encoder import VideoEncoder
from clank.media.publish_source import decode_image
from clank.media.visualizer import AvPipeline, write_demo_music
from clank.protocol.video_send import VideoSendConfig, VideoSendCore, encrypt_h264_checked
from clank.runner import GIL_SWITCH_INTERVAL

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 4.0
FPS = 30
BITRATE = 2_500_000
GOAL_SHARE_720P = 0.12
GOAL_AUDIO_P99_MS = 2.0


class SendPath:
    """What runs per encoded access unit on the trio side: DAVE, packetize, pace, AEAD."""

    def __init__(self) -> None:
        net = DaveNet(0)
        self.sender, receiver = DaveSessionCore(1, net.group_id), DaveSessionCore(2, net.group_id)
        net.join(self.sender)
        net.join(receiver)
        net.settle()
        self.core = VideoSendCore(VideoSendConfig(ssrc=31, rtx_ssrc=32, fps=FPS, max_bitrate=BITRATE))
        self.cipher = TransportCipher(AES256_GCM_RTPSIZE, os.urandom(32))
        self.bytes = 0
        self.retries = 0

    def send(self, access_unit: bytes, keyframe: bool, capture: float) -> None:
        frame, attempts = encrypt_h264_checked(lambda au: self.sender.encrypt_video("h264", au), access_unit)
        self.retries += attempts - 1
        assert frame is not None
        self.core.push_frame(frame, keyframe=keyframe, capture_time=capture, now=capture)
        for packet in self.core.poll(capture + 1.0):  # the pacer's budget refills: drain it all
            sealed = self.cipher.seal_rtp(packet.header.serialize(), packet.plaintext)
            self.bytes += len(sealed)


def _cpu(fn: Callable[[], None]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def visualizer_case(song: str) -> None:
    pipeline = AvPipeline(song, video="showcqt", width=1280, height=720, fps=FPS)
    frames: list[av.VideoFrame] = []
    render = _cpu(lambda: frames.extend(f for c in pipeline.chunks() for _, f in c.frames))
    render_share = render / (len(frames) / FPS)  # CPU per media second of the whole song
    frames = frames[: int(SECONDS * FPS)]
    media_s = len(frames) / FPS
    encoder = VideoEncoder("h264", 1280, 720, FPS, int(BITRATE * 0.85), cap_bitrate=True)
    encoded: list[tuple[bytes, bool]] = []
    x264 = _cpu(lambda: encoded.extend((e.data, e.keyframe) for f in frames for e in encoder.encode(f)))
    path = SendPath()
    send = _cpu(lambda: [path.send(d, k, i / FPS) for i, (d, k) in enumerate(encoded)])
    total = render_share + (x264 + send) / media_s
    print(
        f"720p30 visualizer publish: {total * 100:5.1f}% of a core (goal <= {GOAL_SHARE_720P * 100:.0f}%) "
        f"{'ok' if total <= GOAL_SHARE_720P else 'MISS'}"
    )
    print(
        f"   showcqt {render_share * 100:4.1f}% | x264 {x264 / media_s * 100:4.1f}% (baseline) | "
        f"DAVE+packetize+pace+AEAD {send / media_s * 100:4.1f}% = {send / x264:.2f}x of x264 | "
        f"{path.bytes * 8 / media_s / 1e6:.2f} Mbit/s on the wire, {path.retries} DAVE retries"
    )


def _png(index: int) -> bytes:
    y, x = np.mgrid[0:1080, 0:1920]
    rgb = np.stack([(x * 255 // 1920), (y * 255 // 1080), np.full_like(x, 90)], axis=-1).astype(np.uint8)
    left = (index * 37) % 1700
    rgb[300:700, left : left + 200] = (250, 250, 40)
    out = io.BytesIO()
    PIL.Image.fromarray(rgb).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def pushed_case() -> None:
    count = int(SECONDS * FPS)
    pngs = [_png(i) for i in range(8)]
    pictures: list[av.VideoFrame] = []
    decode = _cpu(
        lambda: pictures.extend(decode_image(pngs[i % 8], "image/png", 1920, 1080) for i in range(count))
    )
    for label, sequence in (
        ("new image every frame", pictures),
        ("last image repeated", [pictures[0]] * count),
    ):
        x264, send = _encode_and_send(sequence, 1920, 1080, 4_000_000)
        decode_share = decode / SECONDS if label.startswith("new") else 0.0
        if label.startswith("new"):
            print(
                f"   one pushed 1080p PNG: {decode / count * 1000:.1f} ms to decode + scale (worker thread)"
            )
        total = decode_share + (x264 + send) / SECONDS
        print(
            f"1080p30 pushed frames, {label}: {total * 100:5.1f}% of a core (PNG decode+scale "
            f"{decode_share * 100:4.1f}%, x264 {x264 / SECONDS * 100:4.1f}%, "
            f"send path {send / SECONDS * 100:4.1f}%)"
        )


def _encode_and_send(
    frames: list[av.VideoFrame], width: int, height: int, bitrate: int
) -> tuple[float, float]:
    """CPU seconds of x264 and of the send path for ``frames``."""
    encoder = VideoEncoder("h264", width, height, FPS, bitrate, cap_bitrate=True)
    encoded: list[tuple[bytes, bool]] = []
    x264 = _cpu(lambda: encoded.extend((e.data, e.keyframe) for f in frames for e in encoder.encode(f)))
    path = SendPath()
    send = _cpu(lambda: [path.send(d, k, i / FPS) for i, (d, k) in enumerate(encoded)])
    return x264, send


async def pacing_case(song: str, publishing: bool) -> float:
    pipeline = AvPipeline(song, video="showcqt", width=1280, height=720, fps=FPS, loop=True)
    chunks = pipeline.chunks()
    path = SendPath()

    def on_output(unit: EncodedAccessUnit) -> None:
        path.send(unit.data, unit.keyframe, trio.current_time())

    encoder = VideoEncoder("h264", 1280, 720, FPS, int(BITRATE * 0.85), cap_bitrate=True)
    async with open_encode_worker(encoder, on_output=on_output) as worker:

        async def frame_clock() -> None:
            queued: list[av.VideoFrame] = []
            deadline = trio.current_time()
            while True:
                deadline += 1 / FPS
                await trio.sleep_until(deadline)
                if not queued:  # the visualizer feeder's work (thread), as in AvSource.run
                    chunk = await trio.to_thread.run_sync(next, chunks)
                    queued = [f for _, f in chunk.frames]
                if queued:
                    worker.submit(queued.pop(0), deadline)

        async with trio.open_nursery() as nursery:
            if publishing:
                nursery.start_soon(frame_clock)
            lateness = await paced_tone(SECONDS)
            nursery.cancel_scope.cancel()
        stats = worker.statistics()
    ms = np.array(lateness) * 1000
    p99 = float(np.percentile(ms, 99))
    if not publishing:
        print(f"audio pacing, not publishing (baseline): p99 {p99:5.2f} ms max {ms.max():5.2f} ms")
        return p99
    print(
        f"audio pacing while publishing 720p30: p99 {p99:5.2f} ms max {ms.max():5.2f} ms "
        f"(goal p99 <= {GOAL_AUDIO_P99_MS} ms) {'ok' if p99 <= GOAL_AUDIO_P99_MS else 'MISS'}; "
        f"{stats.encoded} frames encoded, encode p99 {stats.encode_p99_ms or 0:.1f} ms, "
        f"{stats.dropped} dropped"
    )
    return p99


def main() -> None:
    print(
        f"{SECONDS:.0f} s of media per case; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores "
        "(figures are meaningless when load > cores)"
    )
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    with tempfile.TemporaryDirectory() as folder:
        song = write_demo_music(f"{folder}/song.wav", seconds=SECONDS + 0.5)
        visualizer_case(song)
        pushed_case()
        baseline = trio.run(pacing_case, song, False)
        loaded = trio.run(pacing_case, song, True)
        print(f"   publishing adds {loaded - baseline:+.2f} ms to the audio pacing p99 of this run")


if __name__ == "__main__":
    main()
