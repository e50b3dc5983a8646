"""Benchmark: the media receive path over real loopback UDP.

A sender *process* (so it does not share our GIL) blasts AES-256-GCM rtpsize RTP packets of
1,100 bytes at a trio receiver that drains the socket inline (``UdpEndpoint.drain_loop``, the
endpoint connected to the sender as a media leg's is to its server) and runs
``TransportCipher.open_rtp`` on every packet.

1. Throughput: the sender sends as fast as it can; we report opened packets per second of wall
   time and per CPU-second of the receiver (the latter is steadier on a shared machine), as the
   median and min-max of ``RUNS`` lock-step rounds (one run alone spread 51k-167k pkt/s here).
   Goal >= 150k packets/s on one core.
2. Loss at a paced 50k packets/s (50 packets every millisecond for 2 s), the worst of
   ``PACED_RUNS``. Goal: 0 lost.
3. The whole receive path per packet, offline, on realistic H264 content (``bench/content.py``,
   720p30 and 1080p30, DAVE-encrypted and sealed like a Go Live stream): ``open_rtp`` alone;
   plus ``VideoReceiver`` (RTP, reorder, depacketize, SPS/PPS, RTCP feedback) with DAVE
   skipped; plus DAVE (davey). CPU microseconds per packet, median (min-max) of
   ``OFFLINE_RUNS`` rounds, each the best of 3 passes (DAVE: one pass, nonces only move forward).

A bare drain (no decrypt) runs first as the machine's own floor: syscall costs vary a lot
between hosts and with load, so compare the ratio of the two figures, not absolutes across runs.

Run: ``.venv/bin/python bench/bench_packet_path.py`` (about 30 s; always exits 0).
"""

from __future__ import annotations

import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import trio

from clank.crypto.transport import AES256_GCM_RTPSIZE, TransportCipher
from clank.io.udp import Address, open_udp_endpoint
from clank.wire.rtp import VIDEO_EXTENSION, RtpHeader

KEY = bytes(range(32))
PACKET_SIZE = 1100
SSRC = 11
BLAST_PACKETS = 150_000
BLAST_MAX_SECONDS = 1.0
RUNS = 5
PACED_RUNS = 2
PACED_RATE = 50_000
PACED_SECONDS = 2.0
IDLE_END = 0.4  # the receiver stops this long after the sender has finished and nothing arrives
THROUGHPUT_GOAL = 150_000
OFFLINE_RUNS = 5
OFFLINE_SECONDS = 2.0


def build_packets(count: int) -> list[bytes]:
    cipher = TransportCipher.create(AES256_GCM_RTPSIZE, KEY)
    body_len = PACKET_SIZE - 16 - 20 - len(VIDEO_EXTENSION.body)
    packets = []
    for seq in range(count):
        header = RtpHeader(
            103,
            seq & 0xFFFF,
            seq // 10 * 3000,
            SSRC,
            marker=seq % 10 == 9,
            extension_profile=VIDEO_EXTENSION.profile,
            extension_words=VIDEO_EXTENSION.words,
        )
        packets.append(cipher.seal_rtp(header.serialize(), VIDEO_EXTENSION.body + bytes(body_len)))
    assert len(packets[0]) == PACKET_SIZE
    return packets


def run_sender(port: int, mode: str, source_port: int) -> None:
    """Child process: send packets from 127.0.0.1:source_port to 127.0.0.1:port; prints how many
    were sent."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
    sock.bind(("127.0.0.1", source_port))
    sock.connect(("127.0.0.1", port))
    send = sock.send
    sent = 0
    if mode == "blast":
        packets = build_packets(1000)
        deadline = time.perf_counter() + BLAST_MAX_SECONDS
        while sent < BLAST_PACKETS and time.perf_counter() < deadline:
            for packet in packets:
                send(packet)
            sent += len(packets)
    else:
        total = int(PACED_RATE * PACED_SECONDS)
        packets = build_packets(1000)
        per_tick = PACED_RATE // 1000
        start = time.perf_counter()
        for tick in range(total // per_tick):
            target = start + tick / 1000
            while time.perf_counter() < target:
                pass  # spin: sleep() granularity would turn the pacing into bigger bursts
            first = tick * per_tick % len(packets)
            for packet in packets[first : first + per_tick]:
                send(packet)
            sent += per_tick
    print(sent, flush=True)


class Receiver:
    """The per-packet handler; ``decrypt=False`` measures the bare socket drain for comparison."""

    def __init__(self, decrypt: bool) -> None:
        self.cipher = TransportCipher.create(AES256_GCM_RTPSIZE, KEY)
        self.decrypt = decrypt
        self.opened = 0
        self.failed = 0
        self.first_at = 0.0
        self.last_at = 0.0
        self.cpu_first = 0.0
        self.cpu_last = 0.0
        self.payload_bytes = 0

    def handle(self, data: bytes, address: Address) -> None:
        if not self.opened:
            self.first_at = time.perf_counter()
            self.cpu_first = time.process_time()
        if self.decrypt:
            try:
                _header, payload = self.cipher.open_rtp(data)
            except Exception:
                self.failed += 1
                return
            self.payload_bytes += len(payload)
        self.opened += 1
        if not self.opened & 63:  # reading the clock per packet would cost as much as the work
            self.last_at = time.perf_counter()
            self.cpu_last = time.process_time()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def measure(mode: str, decrypt: bool) -> tuple[Receiver, int, int]:
    """One run; the receiving endpoint is connected to the sender, as a media leg's is."""
    receiver = Receiver(decrypt)
    source_port = _free_port()
    async with open_udp_endpoint(("127.0.0.1", source_port)) as endpoint, trio.open_nursery() as nursery:
        nursery.start_soon(endpoint.drain_loop, receiver.handle)
        port = endpoint.local_address[1]
        command = [sys.executable, __file__, "--sender", str(port), mode, str(source_port)]
        result = await trio.run_process(command, capture_stdout=True, check=True)
        sent = int(result.stdout.decode().strip())
        while True:  # wait until the socket has been quiet for IDLE_END
            before = endpoint.statistics().packets_received
            await trio.sleep(IDLE_END)
            if endpoint.statistics().packets_received == before:
                break
        stats = endpoint.statistics()
        nursery.cancel_scope.cancel()
    return receiver, sent, stats.drain_batches


def _rates(receiver: Receiver) -> tuple[float, float]:
    wall = max(receiver.last_at - receiver.first_at, 1e-9)
    cpu = max(receiver.cpu_last - receiver.cpu_first, 1e-9)
    return receiver.opened / wall, receiver.opened / cpu


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):>10,.0f} ({min(values):,.0f}-{max(values):,.0f})"


async def main() -> None:
    print("receive path over loopback: UDP drain (wait_readable + non-blocking recv), 1,100 B packets")
    print(f"  {RUNS} lock-step rounds (bare drain, then drain + open_rtp); median (min-max):")
    bare_wall, bare_cpu, wall, cpu, ratio = [], [], [], [], []
    failed = not_received = 0
    for _ in range(RUNS):
        with trio.fail_after(30):
            bare, _sent, _batches = await measure("blast", decrypt=False)
            receiver, sent, _batches = await measure("blast", decrypt=True)
        bw, bc = _rates(bare)
        rate, cpu_rate = _rates(receiver)
        bare_wall.append(bw)
        bare_cpu.append(bc)
        wall.append(rate)
        cpu.append(cpu_rate)
        ratio.append(cpu_rate / bc)
        failed += receiver.failed
        not_received += sent - receiver.opened - receiver.failed
    print(f"  bare drain (no decrypt)   {_spread(bare_wall)} pkt/s wall  {_spread(bare_cpu)} pkt/s per CPU-s")
    print(f"  drain + open_rtp (AES)    {_spread(wall)} pkt/s wall  {_spread(cpu)} pkt/s per CPU-s")
    verdict = "OK" if statistics.median(wall) >= THROUGHPUT_GOAL else "MISS"
    print(f"    goal >= {THROUGHPUT_GOAL:,} pkt/s (median wall): {verdict}"
          f"  ({1e6 / statistics.median(wall):.2f} us/packet wall)")  # fmt: skip
    print(f"    open_rtp path / bare drain, per CPU-s: {statistics.median(ratio):.2f}"
          f" ({min(ratio):.2f}-{max(ratio):.2f})")  # fmt: skip
    print(f"    failed {failed}, not received (blast, sender outruns on purpose) {not_received}")

    worst = 0
    for _ in range(PACED_RUNS):
        with trio.fail_after(30):
            receiver, sent, _batches = await measure("paced", decrypt=True)
        worst = max(worst, sent - receiver.opened)
    print(
        f"  paced {PACED_RATE:,} pkt/s for {PACED_SECONDS:.0f} s, {PACED_RUNS} runs: worst loss {worst}"
        f"   goal 0: {'OK' if worst == 0 else 'MISS'}"
    )


# ---------------------------------------------------------------------- 3. offline, per packet


def offline_path() -> None:
    """Section 3 (see the module docstring); imports the bench content helpers lazily."""
    from bench_watch import STREAMER, dave_pair
    from benchkit import FPS, sealed_datagrams
    from content import PROFILES, bitrate_mbps, encode_content

    from clank.crypto.dave import DaveSessionCore
    from clank.protocol.video_receive import EncodedVideoFrame, VideoReceiveConfig, VideoReceiver

    def receive_all(frames: list[list[bytes]], watcher: DaveSessionCore | None) -> float:
        cipher = TransportCipher.create(AES256_GCM_RTPSIZE, KEY)
        if watcher is None:
            receiver = VideoReceiver(VideoReceiveConfig(local_ssrc=1), lambda user, frame: frame)
        else:
            receiver = VideoReceiver(
                VideoReceiveConfig(local_ssrc=1), lambda user, frame: watcher.decrypt(user, "video", frame)
            )
        receiver.bind(SSRC, str(STREAMER), 0.0)
        emitted = 0
        started = time.process_time()
        for index, batch in enumerate(frames):
            now = index / FPS
            for data in batch:
                header, payload = cipher.open_rtp(data)
                for event in receiver.receive(header, payload, now):
                    emitted += isinstance(event, EncodedVideoFrame)
            receiver.poll(now)
        cpu = time.process_time() - started
        assert emitted == len(frames), (emitted, len(frames))
        return cpu

    def open_all(frames: list[list[bytes]]) -> float:
        cipher = TransportCipher.create(AES256_GCM_RTPSIZE, KEY)
        started = time.process_time()
        for batch in frames:
            for data in batch:
                cipher.open_rtp(data)
        return time.process_time() - started

    print(f"  whole receive path per packet, offline, realistic H264, {OFFLINE_RUNS} rounds (CPU us/packet,"
          " median (min-max)):")  # fmt: skip
    for group, profile in enumerate(PROFILES):
        aus = encode_content("h264", profile, OFFLINE_SECONDS)
        sender, watcher = dave_pair(8000 + group)
        opened, received, dave = [], [], []
        packets = 0
        for _ in range(OFFLINE_RUNS):
            frames = sealed_datagrams(aus, sender, SSRC)
            packets = sum(len(batch) for batch in frames)
            opened.append(min(open_all(frames) for _ in range(3)) / packets * 1e6)
            received.append(min(receive_all(frames, None) for _ in range(3)) / packets * 1e6)
            dave.append(receive_all(frames, watcher) / packets * 1e6)
        print(f"   {profile.name} {bitrate_mbps(aus):.1f} Mbit/s, {packets / len(aus):.1f} packets/frame:")
        print(f"    open_rtp (AES-GCM, header)                       {_us(opened)}")
        print(f"    + VideoReceiver (RTP, reorder, depacketize, RTCP) {_us(received)}")
        print(f"    + DAVE decrypt (davey)                            {_us(dave)}")
        share = [r - o for r, o in zip(received, opened, strict=True)]
        print(f"    of which VideoReceiver alone                      {_us(share)}")


def _us(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} us ({min(values):.2f}-{max(values):.2f})"


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--sender":
        run_sender(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    else:
        trio.run(main)
        offline_path()
