"""Watch cost on realistic content, as ratios measured side by side in one run.

Run: ``.venv/bin/python bench/bench_realistic.py`` (bounded: ~30-60 s on a 2-core machine; exits 0).
Content: ``bench/content.py`` (screen + scrolling text + moving window + grainy video region),
encoded with the project's encoders at 720p30 ~3 Mbit/s and 1080p30 ~6 Mbit/s, H264 and VP8.

For each stream, ``ROUNDS`` lock-step rounds; in each round, one after the other on the same
bitstream (CPU time, ``time.process_time``; ffmpeg: the child's rusage):

* decode only: ``VideoDecoder`` over every access unit (the floor of any viewer);
* decode + JPEG: decode every access unit and encode the pictures a watch emits (2 per second)
  straight from the decoded planes (scaled to 720p at 1080p): what a watch cannot avoid;
* watch: the decode worker as production runs it (decode, then at 2 fps the range/scale pass,
  JPEG, change metrics), access units in;
* full path: sealed datagrams in: AES-GCM transport + RTP + reorder + depacketize + DAVE + the
  watch; its DAVE share is timed inside the same run;
* ffmpeg: ``ffmpeg -threads 1 -i <stream> -vf fps=2[,scale=1280:720] -f image2 %d.jpg``, its
  start-up cost (a 1-frame run of the same input, measured each round) subtracted.

Each ratio is computed within a round, then the median (and min-max spread) over the rounds.
When ffmpeg is missing the bench says so and prints the rest. Last, how long each decode-worker
call (decode, range/scale pass, JPEG, metrics) holds the GIL, at 1080p (``gil_hold``).
Arguments select streams: ``h264``, ``vp8``, ``h264-720p30`` ...
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import simplejpeg
import trio
from av.video.reformatter import VideoReformatter
from bench_watch import STREAMER, dave_pair
from benchkit import KEY, TICKS, sealed_datagrams
from content import FPS, PROFILES, Profile, bitrate_mbps, encode_content

from clank.crypto.dave import DaveSessionCore
from clank.crypto.transport import AES256_GCM_RTPSIZE, TransportCipher
from clank.io.decode_worker import open_decode_worker
from clank.media.decoder import VideoCodec, VideoDecoder
from clank.media.encoder import EncodedFrame
from clank.media.jpeg import DEFAULT_JPEG_QUALITY, FrameScaler, fit_size
from clank.media.metrics import ChangeTracker
from clank.media.quality import yuv420p_planes
from clank.protocol.video_receive import EncodedVideoFrame, VideoReceiveConfig, VideoReceiver

SECONDS = 3.0
ROUNDS = 3
MAX_PIXELS = 1280 * 720
EMIT_EVERY = FPS // 2  # the watch's 2 fps cap on a 30 fps stream
FFMPEG = shutil.which("ffmpeg")


def line(name: str, value: str, goal: str = "") -> None:
    print(f"  {name:<52} {value:>22}   {goal}")


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"


# ---------------------------------------------------------------------- the measured paths


def decode_only(codec: VideoCodec, aus: list[EncodedFrame]) -> float:
    decoder = VideoDecoder(codec)
    started = time.process_time()
    for index, au in enumerate(aus):
        decoder.decode(au.data, index * TICKS)
    return time.process_time() - started


def decode_and_jpeg(codec: VideoCodec, aus: list[EncodedFrame]) -> float:
    """Decode everything; JPEG the emitted pictures from the decoded planes (no range pass)."""
    decoder = VideoDecoder(codec)
    scaler = VideoReformatter()
    started = time.process_time()
    for index, au in enumerate(aus):
        for frame in decoder.decode(au.data, index * TICKS):
            if index % EMIT_EVERY:
                continue
            image = frame.image
            width, height = fit_size(image.width, image.height, MAX_PIXELS)
            if (width, height) != (image.width, image.height):
                image = scaler.reformat(
                    image, width=width, height=height, interpolation="BILINEAR", threads=1
                )
            y, u, v = yuv420p_planes(image)
            simplejpeg.encode_jpeg_yuv_planes(y, u, v, quality=DEFAULT_JPEG_QUALITY)
    return time.process_time() - started


async def watch(codec: VideoCodec, aus: list[EncodedFrame]) -> tuple[float, int]:
    """The decode worker (synchronous mode: same code, inline, so CPU is this thread's)."""
    async with open_decode_worker(
        codec, on_output=lambda image: None, max_fps=2.0, synchronous=True
    ) as worker:
        started = time.process_time()
        for index, au in enumerate(aus):
            worker.submit(au.data, index * TICKS, keyframe=au.keyframe)
        cpu = time.process_time() - started
        stats = worker.statistics()
    assert stats.decoded_frames == len(aus), (stats.decoded_frames, len(aus))
    return cpu, stats.emitted


async def full_path(
    codec: VideoCodec, frames: list[list[bytes]], watcher: DaveSessionCore
) -> tuple[float, float]:
    """(CPU of datagrams -> JPEG, CPU inside DAVE decrypt) over prepared datagrams."""
    cipher = TransportCipher.create(AES256_GCM_RTPSIZE, KEY)
    dave_cpu = 0.0

    def decrypt(user: int, frame: bytes) -> bytes:
        nonlocal dave_cpu
        started = time.process_time()
        out = watcher.decrypt(user, "video", frame)
        dave_cpu += time.process_time() - started
        return out

    receiver = VideoReceiver(VideoReceiveConfig(local_ssrc=1), lambda user, frame: decrypt(user, frame))
    receiver.bind(11, str(STREAMER), 0.0)
    decoded = 0
    async with open_decode_worker(
        codec, on_output=lambda image: None, max_fps=2.0, synchronous=True
    ) as worker:
        started = time.process_time()
        for index, batch in enumerate(frames):
            now = index / FPS
            for data in batch:
                header, payload = cipher.open_rtp(data)
                for event in receiver.receive(header, payload, now):
                    if isinstance(event, EncodedVideoFrame):
                        worker.submit(event.data, event.timestamp, keyframe=event.keyframe)
            receiver.poll(now)
        cpu = time.process_time() - started
        decoded = worker.statistics().decoded_frames
    assert decoded == len(frames), (decoded, len(frames))
    return cpu, dave_cpu


def write_stream(codec: VideoCodec, profile: Profile, aus: list[EncodedFrame], path: Path) -> None:
    with path.open("wb") as f:
        if codec == "h264":
            for au in aus:
                f.write(au.data)
            return
        header = struct.pack(
            "<4sHH4sHHIIII", b"DKIF", 0, 32, b"VP80", profile.width, profile.height, FPS, 1, len(aus), 0
        )
        f.write(header)
        for index, au in enumerate(aus):
            f.write(struct.pack("<IQ", len(au.data), index))
            f.write(au.data)


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ffmpeg_cpu(codec: VideoCodec, profile: Profile, path: Path, out: Path, frames: int | None) -> float:
    assert FFMPEG is not None
    vf = "fps=2" + (",scale=1280:720" if profile.width * profile.height > MAX_PIXELS else "")
    source = ["-f", "h264", "-framerate", str(FPS)] if codec == "h264" else ["-f", "ivf"]
    limit = ["-frames:v", str(frames)] if frames is not None else []
    command = [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-threads", "1", *source,
               "-i", str(path), "-threads", "1", "-filter_threads", "1", "-vf", vf, *limit,
               "-q:v", "4", "-y", "-f", "image2", str(out / "%04d.jpg")]  # fmt: skip
    before = _child_cpu()
    subprocess.run(command, check=True)
    return _child_cpu() - before


# ---------------------------------------------------------------------- one stream


def bench_stream(codec: VideoCodec, profile: Profile, group: int, workdir: Path) -> dict[str, list[float]]:
    aus = encode_content(codec, profile, SECONDS)
    seconds = len(aus) / FPS
    size = f"{profile.width}x{profile.height}"
    print(f" {codec.upper()} {profile.name} ({size}), {bitrate_mbps(aus):.2f} Mbit/s,"
          f" {seconds:.0f} s, {ROUNDS} lock-step rounds:")  # fmt: skip
    sender, watcher = dave_pair(group)
    stream_path = workdir / f"{codec}-{profile.name}.bin"
    write_stream(codec, profile, aus, stream_path)
    keys = ("decode", "floor", "watch", "full", "dave", "ffmpeg", "ffmpeg_whole")
    runs: dict[str, list[float]] = {k: [] for k in keys}
    emitted = 0
    decode_only(codec, aus[:FPS])  # warm-up
    for _ in range(ROUNDS):
        frames = sealed_datagrams(aus, sender, 11, codec)  # preparation, not timed (nonces only move forward)
        runs["decode"].append(decode_only(codec, aus))
        runs["floor"].append(decode_and_jpeg(codec, aus))
        cpu, emitted = trio.run(watch, codec, aus)
        runs["watch"].append(cpu)
        full, dave = trio.run(full_path, codec, frames, watcher)
        runs["full"].append(full)
        runs["dave"].append(dave)
        if FFMPEG is not None:
            out = workdir / "jpeg"
            out.mkdir(exist_ok=True)
            whole = ffmpeg_cpu(codec, profile, stream_path, out, None)
            startup = ffmpeg_cpu(codec, profile, stream_path, out, 1)
            runs["ffmpeg"].append(max(1e-6, whole - startup))
            runs["ffmpeg_whole"].append(whole)

    def per_s(key: str) -> str:
        return f"{statistics.median(runs[key]) / seconds * 1e3:.1f} ms/s"

    def ratio(a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(runs[a], runs[b], strict=False)]

    line("decode only, CPU per second of video", per_s("decode"))
    line(f"decode + {emitted} JPEGs (the floor)", per_s("floor"))
    line("watch (decode worker), CPU per second of video", per_s("watch"))
    line("full path (datagrams in), CPU per second of video", per_s("full"))
    line("  of which DAVE decrypt (davey)", per_s("dave"), f"{spread(ratio('dave', 'decode'))} of decode")
    line("watch / decode only", spread(ratio("watch", "decode")))
    line("watch / (decode + JPEG)", spread(ratio("watch", "floor")), "goal <= 1.10x")
    line("full path / decode only", spread(ratio("full", "decode")), "goal <= 1.30x")
    line("full path / (decode + JPEG)", spread(ratio("full", "floor")))
    receive = [(f - w) / d for f, w, d in zip(runs["full"], runs["watch"], runs["decode"], strict=True)]
    line("receive path alone ((full path - watch) / decode only)", spread(receive), "incl. DAVE")
    if FFMPEG is None:
        line("ffmpeg", "not installed", "(watch / ffmpeg not measured)")
    else:
        line("ffmpeg -threads 1 -vf fps=2 to JPEG (start-up subtracted)", per_s("ffmpeg"))
        line("watch / ffmpeg", spread(ratio("watch", "ffmpeg")), "goal <= 0.55x")
        line("full path / ffmpeg", spread(ratio("full", "ffmpeg")))
        line("(decode + JPEG) / ffmpeg: the lowest watch / ffmpeg possible", spread(ratio("floor", "ffmpeg")))
        line(f"ffmpeg whole process for this {seconds:.0f} s clip (start-up included)", per_s("ffmpeg_whole"))
        line("watch / ffmpeg whole process", spread(ratio("watch", "ffmpeg_whole")))
    return runs


# ---------------------------------------------------------------------- GIL hold per call


def gil_hold(profile: Profile) -> None:
    """How much of each decode-worker call holds the GIL, measured from a second Python thread.

    A spinner thread counts loop turns; the worker's operation runs in this thread in 10 ms
    slices alternating with 10 ms idle slices. The spinner's rate during the operation over
    its rate while idle is the share of the operation that let Python run; one minus it is the
    share that held the GIL. The machine adds noise (the two threads also compete for cores), so
    two calibration operations are printed with it: a pure-Python loop (holds it) and sha256
    over 1 MB (releases it): read each figure between those two.
    """
    aus = encode_content("h264", profile, 1.0)
    decoder = VideoDecoder("h264")
    images = [f.image for i, au in enumerate(aus) for f in decoder.decode(au.data, i * TICKS)]
    scaler, tracker = FrameScaler(), ChangeTracker()
    scaled = [scaler.scale(im, max_pixels=MAX_PIXELS) for im in images[:10]]
    decoders = [VideoDecoder("h264")]
    turn = [0]
    blob = bytes(range(256)) * 4096

    def decode() -> None:
        i = turn[0] % len(aus)
        if i == 0:
            decoders[0] = VideoDecoder("h264")  # restart at the IDR: every access unit decodes
        decoders[0].decode(aus[i].data, i * TICKS)
        turn[0] += 1

    def scale() -> None:
        scaler.scale(images[turn[0] % len(images)], max_pixels=MAX_PIXELS)
        turn[0] += 1

    def jpeg() -> None:
        y, u, v = yuv420p_planes(scaled[turn[0] % len(scaled)])
        simplejpeg.encode_jpeg_yuv_planes(y, u, v, quality=DEFAULT_JPEG_QUALITY)
        turn[0] += 1

    def metrics() -> None:
        tracker.update(scaled[turn[0] % len(scaled)])
        turn[0] += 1

    def python_loop() -> None:
        total = 0
        for i in range(20_000):
            total += i

    def sha256() -> None:
        hashlib.sha256(blob).digest()

    counter = [0]
    running = [True]

    def spin() -> None:
        while running[0]:
            counter[0] += 1

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    print(f" GIL held per decode-worker call ({profile.name} H264; spinner-thread method, see docstring):")
    try:
        operations: list[tuple[str, Callable[[], None]]] = [
            ("calibration: pure-Python loop (holds)", python_loop),
            ("calibration: sha256 1 MB (releases)", sha256),
            ("decode one access unit", decode),
            ("range/scale pass", scale),
            ("JPEG from planes", jpeg),
            ("change metrics", metrics),
        ]
        for name, op in operations:
            held, cpu = [], []
            for _ in range(15):
                c0, t0 = counter[0], time.perf_counter()
                time.sleep(0.01)
                idle_rate = (counter[0] - c0) / (time.perf_counter() - t0)
                c0, t0, k0, n = counter[0], time.perf_counter(), time.thread_time(), 0
                while time.perf_counter() - t0 < 0.01:
                    op()
                    n += 1
                wall = time.perf_counter() - t0
                share = 1.0 - min(1.0, (counter[0] - c0) / wall / idle_rate) if idle_rate else 1.0
                per_call = (time.thread_time() - k0) / n
                held.append(share * per_call)
                cpu.append(per_call)
            h, c = statistics.median(held), statistics.median(cpu)
            line(name, f"{h * 1e3:.2f} of {c * 1e3:.2f} ms", f"{h / c:.0%} held")
    finally:
        running[0] = False
        spinner.join()


def main(selected: Callable[[VideoCodec, Profile], bool] = lambda codec, profile: True) -> None:
    started = time.perf_counter()
    print(f"clank realistic watch bench: {os.cpu_count()} cores; CPU time; ratios within each round,"
          " median (min-max) over rounds; noisy shared machine")  # fmt: skip
    if FFMPEG is None:
        print(" ffmpeg not found on PATH: the ffmpeg comparison is skipped (this bench installs nothing)")
    codecs: tuple[VideoCodec, ...] = ("h264", "vp8")
    with tempfile.TemporaryDirectory() as directory:
        group = 7000
        for codec in codecs:
            for profile in PROFILES:
                if selected(codec, profile):
                    bench_stream(codec, profile, group, Path(directory))
                    group += 1
    if selected("h264", PROFILES[1]):
        gil_hold(PROFILES[1])
    print(f" total bench time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    only = sys.argv[1:]
    main(lambda codec, profile: not only or f"{codec}-{profile.name}" in only or codec in only)
