"""Test helpers: real bitstreams from PyAV encoders, RTP packet streams, a lossy seeded channel."""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence
from fractions import Fraction

import av
import numpy as np

from clank.codecs.packet import AssembledFrame, Gap, MediaPacket
from clank.codecs.reorder import ReorderBuffer

WIDTH, HEIGHT = 320, 240
VIDEO_CLOCK_STEP = 3000  # 90 kHz / 30 fps


def _synthetic_frames(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1234)
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    frames = []
    for index in range(count):
        image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        image[..., 0] = (xs + index * 4) % 256
        image[..., 1] = (ys * 2) % 256
        x0 = (index * 9) % (WIDTH - 60)
        image[60:120, x0 : x0 + 60, 2] = 255
        # Some noise so keyframes are big enough to need FU-A at the default MTU.
        image[::4, ::4, :] = rng.integers(0, 255, image[::4, ::4, :].shape, dtype=np.uint8)
        frames.append(image)
    return frames


def _encode(codec: str, options: dict[str, str], count: int) -> list[bytes]:
    context = av.CodecContext.create(codec, "w")
    context.width, context.height = WIDTH, HEIGHT
    context.pix_fmt = "yuv420p"
    context.time_base = Fraction(1, 30)
    context.framerate = Fraction(30, 1)
    context.options = options
    out: list[bytes] = []
    for index, image in enumerate(_synthetic_frames(count)):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = index
        out += [bytes(packet) for packet in context.encode(frame)]
    out += [bytes(packet) for packet in context.encode(None)]
    return out


@functools.cache
def h264_access_units(count: int = 30) -> tuple[bytes, ...]:
    """Annex-B access units from libx264 (baseline, keyframe every 10 frames)."""
    options = {"profile": "baseline", "preset": "ultrafast", "tune": "zerolatency", "g": "10", "threads": "1"}
    return tuple(_encode("libx264", options, count))


@functools.cache
def vp8_frames(count: int = 30) -> tuple[bytes, ...]:
    """VP8 frames from libvpx (keyframe every 10 frames)."""
    return tuple(
        _encode("libvpx", {"g": "10", "deadline": "realtime", "cpu-used": "-4", "threads": "1"}, count)
    )


def rtp_packets(
    frame_payloads: Sequence[Sequence[bytes]], start_seq: int = 1000, start_ts: int = 90000
) -> list[MediaPacket]:
    """One MediaPacket per payload, one timestamp per frame, marker on each frame's last packet."""
    packets = []
    seq = start_seq
    for index, payloads in enumerate(frame_payloads):
        for position, payload in enumerate(payloads):
            packets.append(
                MediaPacket(
                    seq=seq % 65536,
                    timestamp=(start_ts + index * VIDEO_CLOCK_STEP) % 2**32,
                    marker=position == len(payloads) - 1,
                    payload=payload,
                    ssrc=0x1234,
                )
            )
            seq += 1
    return packets


def lossy_channel(
    packets: Sequence[MediaPacket],
    rng: random.Random,
    *,
    drop: float = 0.0,
    duplicate: float = 0.0,
    reorder_window: int = 1,
) -> list[MediaPacket]:
    """Seeded drop / duplicate / local shuffle (a packet moves at most ``reorder_window`` places)."""
    keyed: list[tuple[float, MediaPacket]] = []
    for index, packet in enumerate(packets):
        if rng.random() < drop:
            continue
        keyed.append((index + rng.uniform(0, reorder_window), packet))
        if rng.random() < duplicate:
            keyed.append((index + rng.uniform(0, reorder_window * 2), packet))
    keyed.sort(key=lambda item: item[0])
    return [packet for _, packet in keyed]


def run_through(
    packets: Sequence[MediaPacket],
    push: Callable[[MediaPacket | Gap], list[AssembledFrame]],
    reorder: ReorderBuffer | None = None,
    interval: float = 0.001,
    inject: Callable[[float], list[MediaPacket]] | None = None,
) -> list[AssembledFrame]:
    """Feed packets (one per ``interval`` seconds) through a reorder buffer into ``push``."""
    buffer = reorder or ReorderBuffer()
    frames: list[AssembledFrame] = []
    now = 0.0
    for packet in packets:
        now += interval
        buffer.insert(packet, now)
        for extra in inject(now) if inject else []:
            buffer.insert(extra, now)
        for item in buffer.pop_ready(now):
            frames += push(item)
    # Let every deadline pass, then drain.
    now += 10.0
    for item in buffer.pop_ready(now):
        frames += push(item)
    return frames
