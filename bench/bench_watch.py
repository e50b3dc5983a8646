"""Watch benchmark, live: capacity over loopback UDP, frame latency, audio pacing jitter.

Run: ``.venv/bin/python bench/bench_watch.py`` (bounded: about 1-2 minutes on a 2-core machine;
always exits 0; ``CLANK_BENCH_QUICK=1`` caps the capacity searches at 8 streams). Realistic
content (``bench/content.py``: screen, scrolling text, moving window, grainy video region) encoded
with our H264 encoder at 720p30 ~3 Mbit/s and 1080p30 ~6 Mbit/s; real davey sessions (one
sender/receiver pair per stream: davey rejects replayed nonces, so streams cannot share
ciphertext); AES-256-GCM rtpsize transport. The offline CPU ratios (watch vs decode, decode +
JPEG and ffmpeg) are ``bench/bench_realistic.py``.

2. Live capacity: K concurrent 720p30 watches, each with its own loopback UDP socket fed by a
   sender *process* (pre-sealed datagrams, paced at 30 fps, streams staggered), each with the
   production ``VideoPipeline`` (receive inline in the drain loop, decoder thread per stream).
   A run is realtime when every stream decoded every frame (none dropped), lost no packet and
   its decoding stayed behind the live schedule (frames due since its first packet minus frames
   decoded, sampled every 0.2 s: socket buffer, trio thread and decode queue alike) by a p99
   under 200 ms. Decode-only capacity is measured the same way in the same run: K decoder
   threads fed the plain access units at 30 fps, realtime by the same rules. Each capacity is
   searched: K doubles from ``FIRST_STREAMS`` until a run fails, then bisects between the last
   pass and the first failure until they are within ``RESOLUTION``; the two searches run
   interleaved (a decode-only run, then a watch run, ...: both see the same machine load) within
   ``CAPACITY_BUDGET`` for both; capped at ``MAX_STREAMS`` (printed as ">= K"). Printed: each run
   and why it was not realtime, how the trio thread spent the run (on a CPU / runnable but waiting
   for one, from ``/proc/thread-self/schedstat``) and the watch's UDP drains (packets per drain,
   share cut by ``DRAIN_BUDGET``), the capacities with their brackets, the ratio with its bracket.
   The realtime checks poll bare counters (``VideoPipeline.decoded_frames``), not statistics
   snapshots: they run on the trio thread the watches need.
   Goal: watch / decode >= 0.8.
3. Last packet of a frame -> JPEG available at 720p (one live stream, 6 pictures/s): the decode
   worker's submit -> JPEG delay (submit happens inline when the frame's last packet arrives).
   Goal p99 <= 25 ms.
4. Audio pacing: a trio task sleeping to absolute 20 ms deadlines (the voice send loop's shape)
   while a 1080p30 watch runs live (one core busy decoding), against the same task alone; each
   repeated ``PACING_RUNS`` times, the median and the worst p99 printed. Goals: p99 <= 1 ms alone,
   <= 2 ms with the watch.
"""

from __future__ import annotations

import functools
import math
import os
import pickle
import sys
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import attrs
import trio
from benchkit import FPS, KEY, TICKS, sealed_datagrams
from content import PROFILES, encode_content

from clank.config import WatchSettings
from clank.crypto.dave import DaveBinary, DaveSessionCore
from clank.crypto.transport import AES256_GCM_RTPSIZE, TransportCipher
from clank.io.decode_worker import open_decode_worker
from clank.io.timer import open_precise_timer
from clank.io.udp import open_udp_endpoint
from clank.logging import configure_logging
from clank.media.encoder import EncodedFrame
from clank.protocol.video_receive import VideoReceiveConfig, VideoReceiver
from clank.runner import GIL_SWITCH_INTERVAL
from clank.sandbox.dave import DaveGroupServer
from clank.session.video_pipeline import FrameSink, VideoPipeline, open_video_pipeline
from clank.session.watch_frames import LatestFrameStore

STREAMER, WATCHER = 444, 333
OFFLINE_SECONDS = 6  # video prepared for the latency run
LIVE_SECONDS = 3
QUICK = bool(os.environ.get("CLANK_BENCH_QUICK"))
FIRST_STREAMS = 2 if QUICK else 8
MAX_STREAMS = 8 if QUICK else 160
RESOLUTION = 0.125  # bisect until failed - passed <= max(1, passed * RESOLUTION)
CAPACITY_BUDGET = 60.0  # seconds for both searches (a run that has started finishes)
GOAL_RATIO = 0.8
PACING_RUNS = 5
REALTIME_DELAY_P99 = 0.2
BACKLOG_SAMPLE = 0.2  # seconds between decode-backlog samples (both capacity searches)
LIVE_GRACE = 1.5  # seconds after the last frame for the decoders to catch up
RCVBUF = 2 * 1024 * 1024
LAST_FAILURE = [""]  # why the last live run was not realtime (printed by ``capacity``)
LAST_DIAGNOSIS = [""]  # the last live run's trio-thread time and UDP drains (printed likewise)
SENDER = r"""
import pickle, socket, sys, time
with open(sys.argv[1], "rb") as f:
    ports, schedule = pickle.load(f)
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
start = time.perf_counter() + 0.3
for tick, batch in enumerate(schedule):
    delay = start + tick / 30 - time.perf_counter()
    if delay > 0:
        time.sleep(delay)
    for stream, data in batch:
        while True:
            try:
                sock.sendto(data, ("127.0.0.1", ports[stream]))
                break
            except BlockingIOError:
                time.sleep(0.0005)
"""


def line(name: str, value: str, goal: str = "") -> None:
    print(f"  {name:<60} {value:>16}   {goal}")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


# ---------------------------------------------------------------------- media preparation


def dave_pair(group_id: int) -> tuple[DaveSessionCore, DaveSessionCore]:
    """(sender, receiver) DAVE sessions in one MLS group, settled with FIFO routing."""
    server = DaveGroupServer(group_id, protocol_version=1)
    members = {STREAMER: DaveSessionCore(STREAMER, group_id), WATCHER: DaveSessionCore(WATCHER, group_id)}
    to_client: dict[int, deque[Any]] = {user: deque() for user in members}
    to_server: deque[tuple[int, Any]] = deque()
    for user, member in members.items():
        member.clients_connected([u for u in members if u != user])
        to_server.extend((user, f) for f in member.on_session_description(1))
        for target, frame in server.connect(user, 0.0):
            to_client[target].append(frame)
    now = 0.0
    for _ in range(2000):
        if to_server:
            user, frame = to_server.popleft()
            if isinstance(frame, DaveBinary):
                out = server.receive_binary(user, frame.op, frame.payload, now)
            else:
                out = server.receive_json(user, frame.op, frame.data, now)
            for target, reply in out:
                to_client[target].append(reply)
            continue
        pending = [u for u, q in to_client.items() if q]
        if pending:
            frame = to_client[pending[0]].popleft()
            member = members[pending[0]]
            replies = (
                member.on_binary(frame.op, frame.payload)
                if isinstance(frame, DaveBinary)
                else member.on_json(frame.op, frame.data)
            )
            to_server.extend((pending[0], r) for r in replies)
            continue
        deadline = server.next_deadline()
        if deadline is None:
            break
        now = max(now, deadline)
        for target, reply in server.tick(now):
            to_client[target].append(reply)
    assert members[STREAMER].ready and members[WATCHER].ready
    return members[STREAMER], members[WATCHER]


def encode(width: int, height: int, seconds: int, bitrate: int) -> list[EncodedFrame]:
    """Realistic content (bench/content.py) at one of its profiles, H264."""
    (profile,) = [p for p in PROFILES if (p.width, p.height) == (width, height)]
    return encode_content("h264", profile, seconds)


def _receiver(watcher: DaveSessionCore, ssrc: int) -> VideoReceiver:
    receiver = VideoReceiver(
        VideoReceiveConfig(local_ssrc=1), lambda user, frame: watcher.decrypt(user, "video", frame)
    )
    receiver.bind(ssrc, str(STREAMER), 0.0)
    return receiver


# ---------------------------------------------------------------------- 2-4. live runs


async def live_watch(
    streams: list[list[list[bytes]]],
    watchers: list[DaveSessionCore],
    settings: WatchSettings,
    *,
    pace_audio: bool = False,
    precise_lateness: list[float] | None = None,
) -> tuple[bool, list[Any], list[float]]:
    """K live watches over loopback UDP; (realtime?, per-stream statistics, audio lateness)."""
    count = len(streams)
    frames = len(streams[0])
    lateness: list[float] = []
    trio_thread = TrioThreadTime()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "schedule.pickle"
        async with trio.open_nursery() as nursery:
            runs: list[_LiveStream] = []
            for k in range(count):
                runs.append(await nursery.start(_run_stream, streams[k], watchers[k], 1000 + k, settings))
            stagger = max(1, FPS // count) if count > 1 else 0
            schedule: list[list[tuple[int, bytes]]] = [[] for _ in range(frames + stagger * count + 1)]
            for k, stream in enumerate(streams):
                offset = (k * stagger) % FPS
                for index, batch in enumerate(stream):
                    schedule[index + offset] += [(k, d) for d in batch]
            with path.open("wb") as f:
                pickle.dump(([run.port for run in runs], schedule), f)
            sender = await trio.lowlevel.open_process([sys.executable, "-c", SENDER, str(path)])
            backlog: list[list[float]] = [[] for _ in runs]
            trio_thread.start()
            nursery.start_soon(_sample_backlog, runs, frames, backlog)
            if pace_audio:
                nursery.start_soon(_pace, lateness)
                if precise_lateness is not None:
                    nursery.start_soon(_pace_precise, precise_lateness)
            await sender.wait()
            deadline = trio.current_time() + LIVE_GRACE
            # Polling the bare counters (not the statistics snapshots): this loop runs on the
            # trio thread that the watches' receive path needs.
            while trio.current_time() < deadline and any(run.decoded() < frames for run in runs):  # noqa: ASYNC110
                await trio.sleep(0.05)
            drains = _drain_summary([run.endpoint.statistics() for run in runs])
            LAST_DIAGNOSIS[0] = trio_thread.describe() + drains
            stats = [run.pipeline.stream_statistics().get(run.ssrc) for run in runs]
            nursery.cancel_scope.cancel()
    failures = [why for s, b in zip(stats, backlog, strict=True) if (why := _watch_failure(s, frames, b))]
    if failures:
        LAST_FAILURE[0] = f"{len(failures)} of {count} streams; first: {failures[0]}"
    return not failures, stats, lateness


@attrs.define(eq=False)
class _LiveStream:
    """One live watch of the capacity run: its pipeline, socket and first-packet time."""

    pipeline: VideoPipeline
    endpoint: Any
    ssrc: int
    port: int
    first_packet_at: float | None = None

    def decoded(self) -> int:
        return self.pipeline.decoded_frames(self.ssrc)


class TrioThreadTime:
    """How the trio thread spent a run's wall time: on a CPU, or runnable but waiting for one
    (Linux ``/proc/thread-self/schedstat``; the run queue wait is the CPU share the scheduler
    gave the other runnable threads: the decoders, other processes)."""

    def __init__(self) -> None:
        self._start: tuple[float, int, int] | None = None

    @staticmethod
    def _read() -> tuple[int, int] | None:
        try:
            with open("/proc/thread-self/schedstat") as f:
                on_cpu, waiting, _ = (int(x) for x in f.read().split())
        except (OSError, ValueError):
            return None
        return on_cpu, waiting

    def start(self) -> None:
        now = self._read()
        self._start = None if now is None else (time.perf_counter(), *now)

    def describe(self) -> str:
        now = self._read()
        if self._start is None or now is None:
            return "trio thread: (no schedstat)"
        wall = max(1e-9, time.perf_counter() - self._start[0])
        on_cpu = (now[0] - self._start[1]) / 1e9 / wall
        waiting = (now[1] - self._start[2]) / 1e9 / wall
        return f"trio thread {on_cpu:.0%} on a CPU, {waiting:.0%} waiting for one"


def _drain_summary(stats: list[Any]) -> str:
    packets = sum(s.packets_received for s in stats)
    drains = sum(s.drain_batches for s in stats)
    cut = sum(s.budget_yields for s in stats)
    if not drains:
        return ""
    return f"; {packets / drains:.1f} packets/drain, {cut / drains:.0%} of drains cut by the budget"


async def _sample_backlog(runs: list[_LiveStream], frames: int, backlog: list[list[float]]) -> None:
    """Every ``BACKLOG_SAMPLE`` s: how far each stream's decoding is behind the live schedule, in
    seconds: frames due since its first packet (30 fps) minus frames decoded. Counts every place
    a frame can wait: the socket buffer, the trio thread, the decode queue."""
    while True:
        await trio.sleep(BACKLOG_SAMPLE)
        now = trio.current_time()
        for k, run in enumerate(runs):
            first = run.first_packet_at
            if first is not None:
                due = min(frames, int((now - first) * FPS) + 1)
                backlog[k].append(max(0, due - run.decoded()) / FPS)


def _watch_failure(s: Any, frames: int, backlog: list[float]) -> str:
    """Why one live watch was not realtime ("" when it was)."""
    if s is None or s.decode is None:
        return "no decoder"
    why = []
    if s.decode.decoded_frames < frames:
        why.append(f"decoded {s.decode.decoded_frames}/{frames}")
    if s.decode.dropped:
        why.append(f"decoder dropped {s.decode.dropped}")
    if s.receive.packets_lost:
        why.append(f"lost {s.receive.packets_lost} packets")
    delay = percentile(backlog, 0.99) if backlog else 0.0
    if delay >= REALTIME_DELAY_P99:
        why.append(f"behind schedule p99 {delay * 1e3:.0f} ms")
    return ", ".join(why)


async def _run_stream(
    stream: list[list[bytes]],
    watcher: DaveSessionCore,
    ssrc: int,
    settings: WatchSettings,
    *,
    task_status: trio.TaskStatus[_LiveStream] = trio.TASK_STATUS_IGNORED,
) -> None:
    cipher = TransportCipher.create(AES256_GCM_RTPSIZE, KEY)
    receiver = _receiver(watcher, ssrc)
    async with (
        open_udp_endpoint(None, local_host="127.0.0.1", rcvbuf=RCVBUF) as endpoint,
        open_video_pipeline(receiver, settings, lambda datagram: True) as pipeline,
    ):
        pipeline.add_sink((str(STREAMER), "screen"), FrameSink(LatestFrameStore()))
        run = _LiveStream(pipeline, endpoint, ssrc, endpoint.local_address[1])

        def on_datagram(data: bytes, address: object) -> None:
            header, payload = cipher.open_rtp(data)
            now = trio.current_time()
            if run.first_packet_at is None:
                run.first_packet_at = now
            pipeline.on_packet(header, payload, now)

        task_status.started(run)
        await endpoint.drain_loop(on_datagram)


async def _pace(lateness: list[float]) -> None:
    deadline = trio.current_time()
    while True:
        deadline += 0.02
        await trio.sleep_until(deadline)
        lateness.append(trio.current_time() - deadline)


async def _pace_precise(lateness: list[float]) -> None:
    """The same pacer sleeping on a timerfd (clank.io.timer) instead of trio's timers."""
    async with open_precise_timer() as timer:
        deadline = trio.current_time() + 0.01  # offset from the other pacer by half a period
        while True:
            deadline += 0.02
            await timer.sleep_until(deadline)
            lateness.append(trio.current_time() - deadline)


async def pacing_alone(seconds: float, precise_lateness: list[float]) -> list[float]:
    lateness: list[float] = []
    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_pace, lateness)
            nursery.start_soon(_pace_precise, precise_lateness)
    return lateness


async def live_decode_only(aus: list[EncodedFrame], count: int) -> bool:
    """K decoder threads fed the plain access units at 30 fps (no network, no DAVE, no JPEG).

    Realtime as for the watch: every frame decoded, none dropped, and how far decoding is behind
    the schedule (frames due minus frames decoded, in seconds at 30 fps), sampled every
    ``BACKLOG_SAMPLE`` s, with a p99 under ``REALTIME_DELAY_P99``.
    """
    frames = min(len(aus), LIVE_SECONDS * FPS)
    trio_thread = TrioThreadTime()
    async with trio.open_nursery() as nursery:
        workers = []
        for _ in range(count):
            cm = open_decode_worker("h264", on_output=lambda image: None, max_fps=0.1)
            workers.append(await nursery.start(_hold, cm))
        start = trio.current_time()
        trio_thread.start()
        stagger = max(1, FPS // count)
        backlog: list[list[float]] = [[] for _ in workers]
        every = max(1, round(BACKLOG_SAMPLE * FPS))
        for tick in range(frames + stagger * count):
            await trio.sleep_until(start + tick / FPS)
            for k, worker in enumerate(workers):
                index = tick - (k * stagger) % FPS
                if 0 <= index < frames:
                    worker.submit(aus[index].data, index * TICKS, keyframe=aus[index].keyframe)
                    if tick % every == 0:  # due = submitted (this loop keeps the schedule)
                        backlog[k].append((index + 1 - worker.decoded_frames) / FPS)
        deadline = trio.current_time() + LIVE_GRACE
        # Polling is deliberate: the decoders are threads with no trio event to wait on.
        while trio.current_time() < deadline and any(w.decoded_frames < frames for w in workers):  # noqa: ASYNC110
            await trio.sleep(0.05)
        LAST_DIAGNOSIS[0] = trio_thread.describe()
        stats = [w.statistics() for w in workers]
        nursery.cancel_scope.cancel()
    delays = [percentile(b, 0.99) if b else 0.0 for b in backlog]
    failures = [
        f"decoded {s.decoded_frames}/{frames}, dropped {s.dropped}, behind schedule p99 {delay * 1e3:.0f} ms"
        for s, delay in zip(stats, delays, strict=True)
        if s.decoded_frames < frames or s.dropped or delay >= REALTIME_DELAY_P99
    ]
    if failures:
        LAST_FAILURE[0] = f"{len(failures)} of {count} streams; first: {failures[0]}"
    return not failures


async def _hold(cm: Any, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
    async with cm as worker:
        task_status.started(worker)
        await trio.sleep_forever()


class CapacitySearch:
    """The largest K that runs in realtime: K doubles from ``start`` until a run fails, then
    bisects between the last pass and the first failure until they are within ``RESOLUTION``."""

    def __init__(self, label: str, start: int) -> None:
        self.label = label
        self.count = start
        self.start = start
        self.passed = 0
        self.failed: int | None = None
        self.done = False

    def record(self, ok: bool, seconds: float) -> None:
        why = "" if ok else f": {LAST_FAILURE[0]}"
        print(f"    {self.label}: {self.count:>3} streams -> {'realtime' if ok else 'NOT realtime'}"
              f" ({seconds:.1f} s){why}\n      {LAST_DIAGNOSIS[0]}")  # fmt: skip
        if ok:
            self.passed = self.count
        else:
            self.failed = self.count
        if self.failed is None:
            self.done = self.count >= MAX_STREAMS
            self.count = min(MAX_STREAMS, 2 * self.count)
        elif self.failed - self.passed <= max(1, int(self.passed * RESOLUTION)):
            self.done = True
        elif self.passed == 0 and self.failed == self.start:
            self.count = max(1, self.failed // 2)  # failed at the start: search below it
            self.start = self.count
        else:
            self.count = (self.passed + self.failed) // 2


def capacities(runs: list[tuple[CapacitySearch, Any]]) -> None:
    """Run the searches interleaved (one run of each in turn, so both see the same machine load)
    until all are done or ``CAPACITY_BUDGET`` is spent (a run that has started finishes)."""
    started = time.perf_counter()
    while not all(search.done for search, _ in runs):
        for search, passes in runs:
            if not search.done:
                run_started = time.perf_counter()
                search.record(passes(search.count), time.perf_counter() - run_started)
        if time.perf_counter() - started > CAPACITY_BUDGET and not all(s.done for s, _ in runs):
            brackets = ", ".join(f"{s.label} [{s.passed}, {s.failed})" for s, _ in runs if not s.done)
            print(f"    search budget ({CAPACITY_BUDGET:.0f} s) spent: {brackets}")
            return


def shown_capacity(passed: int, failed: int | None) -> str:
    if failed is None:
        return f">= {passed}"
    return f"{passed}" if failed == passed + 1 else f"{passed} (fails at {failed})"


def pacing_line(name: str, runs: list[list[float]], goal: str) -> None:
    p99s = [percentile(r, 0.99) * 1e3 for r in runs if r]
    p50s = [percentile(r, 0.5) * 1e3 for r in runs if r]
    if p99s:
        line(f"{name} ({len(p99s)} runs): p50 / p99 median / p99 worst",
             f"{sorted(p50s)[len(p50s) // 2]:.2f} / {sorted(p99s)[len(p99s) // 2]:.2f} / {max(p99s):.2f} ms",
             goal)  # fmt: skip


def main() -> None:
    # Measure the product as `clank run` runs it: GIL hand-off interval, warnings-only logs.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)
    configure_logging("console", "warning")
    bench_started = time.perf_counter()
    cores = os.cpu_count() or 1
    print(f"clank watch bench (live): realistic content, H264, DAVE + AES-GCM; {cores} cores")
    aus_720 = encode(1280, 720, OFFLINE_SECONDS, 3_000_000)
    mbps = sum(len(a.data) for a in aus_720) * 8 / (len(aus_720) / FPS) / 1e6

    print(
        f" 2. Live capacity, 720p30 {mbps:.1f} Mbit/s, {LIVE_SECONDS} s runs: doubling from {FIRST_STREAMS},"
        f" then bisecting, decode-only and watch runs interleaved (cap {MAX_STREAMS},"
        f" {CAPACITY_BUDGET:.0f} s budget):"
    )
    live_aus = aus_720[: LIVE_SECONDS * FPS]
    pairs: list[tuple[DaveSessionCore, DaveSessionCore]] = []
    settings = WatchSettings()

    def watch_passes(count: int) -> bool:
        while len(pairs) < count:  # made on first use: ~40 ms each
            pairs.append(dave_pair(1000 + len(pairs)))
        streams = [sealed_datagrams(live_aus, pairs[k][0], 1000 + k) for k in range(count)]
        # Fresh receiver sessions each run would need new pairs; nonces only move forward, so
        # reusing the pair with newly encrypted frames is fine.
        ok, _, _ = trio.run(live_watch, streams, [pairs[k][1] for k in range(count)], settings)
        return ok

    def decode_passes(count: int) -> bool:
        return trio.run(live_decode_only, live_aus, count)

    decode_search = CapacitySearch("decode only", FIRST_STREAMS)
    watch_search = CapacitySearch("watch", FIRST_STREAMS)
    capacities([(decode_search, decode_passes), (watch_search, watch_passes)])
    decode_passed, decode_failed = decode_search.passed, decode_search.failed
    watch_passed, watch_failed = watch_search.passed, watch_search.failed
    line("decode-only capacity (720p30 streams in realtime)", shown_capacity(decode_passed, decode_failed))
    line("watch capacity (720p30 streams in realtime)", shown_capacity(watch_passed, watch_failed))
    if decode_passed:
        ratio = watch_passed / decode_passed
        # The true capacities lie in [passed, failed - 1]: the ratio's bracket follows.
        low = watch_passed / (decode_failed - 1) if decode_failed is not None else None
        high = (watch_failed - 1) / decode_passed if watch_failed is not None else None
        bracket = f" ({'?' if low is None else f'{low:.2f}'}-{'?' if high is None else f'{high:.2f}'})"
        note = " (both capped: inconclusive)" if decode_failed is None and watch_failed is None else ""
        line("watch / decode-only capacity", f"{ratio:.2f}{bracket}{note}", f"goal >= {GOAL_RATIO}")

    print(" 3. Last packet of a frame -> JPEG available, 720p, one live stream at 6 JPEG/s:")
    sender, watcher = dave_pair(5000)
    ok, stats, _ = trio.run(
        live_watch, [sealed_datagrams(aus_720, sender, 1000)], [watcher], WatchSettings(max_fps=6.0)
    )
    decode = stats[0].decode if stats and stats[0] is not None else None
    if decode is not None and decode.delay_p50 is not None and decode.delay_p99 is not None:
        delays = f"{decode.delay_p50 * 1e3:.1f} / {decode.delay_p99 * 1e3:.1f} ms"
        line(f"p50 / p99 over {decode.emitted} JPEGs (realtime: {ok})", delays, "goal p99 <= 25 ms")

    print(
        f" 4. Audio 20 ms pacing lateness, alone and while a 1080p30 watch decodes, {PACING_RUNS} runs each:"
    )
    aus_1080 = encode(1920, 1080, LIVE_SECONDS, 6_000_000)
    alone_runs: list[list[float]] = []
    watch_runs: list[list[float]] = []
    alone_precise: list[list[float]] = []
    watch_precise: list[list[float]] = []
    realtime = 0
    for run in range(PACING_RUNS):  # interleaved: alone, with the watch, alone, ...
        alone_precise.append([])
        alone_runs.append(trio.run(pacing_alone, 2.0, alone_precise[-1]))
        sender, watcher = dave_pair(6000 + run)
        frames = sealed_datagrams(aus_1080, sender, 1000)
        watch_precise.append([])
        ok, _, lateness = trio.run(
            functools.partial(
                live_watch,
                [frames],
                [watcher],
                WatchSettings(),
                pace_audio=True,
                precise_lateness=watch_precise[-1],
            )
        )
        realtime += ok
        watch_runs.append(lateness)
    print("   trio.sleep_until (the send loop before clank.io.timer):")
    pacing_line("pacing alone", alone_runs, "goal p99 <= 1 ms")
    pacing_line(f"with the 1080p watch (realtime {realtime}/{PACING_RUNS})", watch_runs, "goal p99 <= 2 ms")
    print("   the same pacer on a timerfd (clank.io.timer, as FramePacer), beside it in the same runs:")
    pacing_line("pacing alone", alone_precise, "goal p99 <= 1 ms")
    pacing_line("with the 1080p watch", watch_precise, "goal p99 <= 2 ms")
    print(f" total bench time {time.perf_counter() - bench_started:.1f} s; noisy shared machine (+-25%)")


if __name__ == "__main__":
    main()
