"""Audio packets on the wire at their 20 ms slots: a send process, or a long-lived sender thread.

Why not the trio thread: the voice send loop runs there, so every trio step queued in front of
its wake-up (a UDP drain completing a 1080p frame with davey's decrypt, a publish keyframe, a
status) and the loop's own step (mix, Opus + FEC, DAVE, transport seal: ~0.8 ms) reached the
wire as pacing jitter: p99 2-4 ms beside a watch or dashboards (issues 14 and 16). Now the trio
loop prepares each packet :data:`SEND_LEAD_S` ahead of its slot (sealing it there, so sequence
numbers and timestamps are taken in order by the sans-io core, as before) and :meth:`submit`s
it; something that is not waiting for trio sends it at the deadline:

* ``"process"`` (what clank runs on Linux): :mod:`clank.io.send_process_child`, a tiny standard-
  library process with its own interpreter, so no GIL stands between its wake-up and the send;
  at realtime priority when the account may have it. A trio task reads its reports back.
* ``"thread"`` (the fallback if the process cannot start or dies): a thread sleeping on a
  blocking timerfd with the GIL released. After waking it still waits for the GIL: up to
  ``sys.getswitchinterval()`` (clank sets 0.5 ms, ``runner.GIL_SWITCH_INTERVAL``) while the trio
  thread runs pure Python, and as long as a C call holds it (a status's ``json.dumps``, davey
  decrypting a keyframe, ~1.2 ms at 1080p): p99 3-6 ms with three dashboards open.

bench/bench_voice_pacing.py and bench/bench_dashboard.py print every ``TimedSender.mode`` side
by side.

The process and the thread send on their own duplicate of the endpoint's connected socket
(``UdpEndpoint.thread_socket``; the process receives it over its control socket), so a reconnect
closing the endpoint cannot leave them writing to a reused descriptor; results come back to trio
to be counted where ``send_rtp`` counted them. A packet queued when the voice role stops is
dropped (at most the lead's worth of audio; the stop cuts the sleep short).

An endpoint without a real socket (the fake network on a real clock) gets the same lead from a
trio task sleeping on a timerfd. Under a virtual clock (tests, :mod:`clank.io.offload`) no thread
or process runs: :meth:`TimedSender.lead` is 0 and :meth:`submit` sends at once on the trio thread, the path
this replaced, so virtual-time tests keep their timing.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Literal, NoReturn

import attrs
import trio

from clank.errors import TransportError
from clank.io.send_process import SendProcess, SentReport, open_send_process
from clank.io.timer import PreciseTimer, ThreadTimer
from clank.io.udp import UdpEndpoint
from clank.io.worker_thread import WorkerThread
from clank.logging import get_logger

if TYPE_CHECKING:
    from clank.io.media_connection import MediaConnection

__all__ = [
    "MAX_PENDING",
    "SEND_HISTORY",
    "SEND_LEAD_S",
    "TimedSender",
    "open_timed_sender",
]

#: How far ahead of its slot the trio loop prepares a packet: the trio thread may wake this much
#: late before a packet misses its slot. bench_dashboard's loop lag is 2-4 ms at p99 but reaches
#: 10-21 ms at its max, and with 10 ms those stalls showed as one late packet in a thousand (send
#: process p99 2.7 ms in one round of three); with 20 ms none. It is added latency, one frame
#: (not for the first packet after silence, which goes at once).
SEND_LEAD_S: Final = 0.020
#: Packets queued for the thread beyond which new ones are dropped (counted): 100 ms of audio
#: means the thread is stuck, and queueing more would only make the audio later.
MAX_PENDING: Final = 5
SEND_HISTORY: Final = 3000  # 60 s of 20 ms packets
#: A packet sent later than this after its deadline counts as late (as FramePacer's threshold).
LATE_THRESHOLD_S: Final = 0.005


log = get_logger("clank.io.timed_sender")

_MSG_DONTWAIT: Final = 0x40
SendMode = Literal["process", "thread", "trio", "inline"]


def _held_send_function() -> Any:
    """libc ``send`` through ``ctypes.PyDLL``, a call that keeps the GIL: ``socket.send``
    releases it around the ~10 µs syscall, which hands it to a waiting trio thread, and this
    thread would then wait up to a switch interval to take it back before it reads the clock
    (the figure would include that wait). None off Linux: ``socket.send`` then."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.PyDLL(None).send
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]
    function.restype = ctypes.c_ssize_t
    return function


_held_send = _held_send_function()


def _send(sock: socket.socket, packet: bytes) -> bool:
    """One datagram on the connected ``sock``; False for a full buffer, an earlier ICMP error or
    a closed socket (dropped and counted: the media policy)."""
    if _held_send is not None:
        return bool(_held_send(sock.fileno(), packet, len(packet), _MSG_DONTWAIT) >= 0)
    try:
        sock.send(packet)
    except OSError:
        return False
    return True


@attrs.frozen
class _Job:
    deadline: float  # time.perf_counter() seconds
    packet: bytes
    sock: socket.socket
    endpoint: UdpEndpoint
    conn: MediaConnection


@attrs.frozen
class _Sent:
    job: _Job
    ok: bool


class TimedSender(WorkerThread[_Job, _Sent]):
    """Sends sealed packets at absolute deadlines (see the module docstring).

    ``recent`` holds the send lateness (seconds after the deadline, measured in the thread when
    the socket took the packet) of the last :data:`SEND_HISTORY` packets: the figure that reaches
    the wire, which the benches print.
    """

    def __init__(self) -> None:
        super().__init__()
        self.recent: collections.deque[float] = collections.deque(maxlen=SEND_HISTORY)
        self.sent = 0
        self.late = 0
        self.max_lateness = 0.0
        self.failures = 0  # socket full, refused or closed; or dropped with the thread stuck
        self.mode: SendMode = "process"
        """Who puts packets on the wire (benches compare them in one run): ``"process"`` (the
        send process, :mod:`clank.io.send_process_child`; the thread while it is unavailable),
        ``"thread"`` (this module's thread), ``"trio"`` (a trio task sleeping on a timerfd until
        the slot: the packet is prepared ahead too, but the wake-up waits behind other trio
        steps) or ``"inline"`` (sent at submit, with no lead: the path before this module)."""
        self.process: SendProcess | None = None  # running while open_timed_sender's block is
        self._process_endpoint: UdpEndpoint | None = None  # the endpoint the child sends for
        self._process_jobs: dict[int, tuple[UdpEndpoint, MediaConnection, bytes]] = {}
        self._next_job_id = 1
        self.process_ended = trio.Event()  # the child ended early: the thread sends from then on
        self._pending = 0  # submitted to the thread, not yet reported back (trio side)
        self._results: list[_Sent] = []  # guarded by _lock
        self._timer = ThreadTimer()
        self._endpoint: UdpEndpoint | None = None  # the endpoint self._sockets[-1] duplicates
        self._sockets: list[socket.socket] = []  # every duplicate made (closed at the end)
        self._thread_sock: socket.socket | None = None  # thread side: the one it sends on
        self._trio_jobs: collections.deque[tuple[float, bytes, MediaConnection]] = collections.deque()
        self._trio_wake = trio.Event()

    def lead(self, conn: MediaConnection) -> float:
        """Seconds before a slot to :meth:`submit` its packet on ``conn``: 0 when it is sent at once."""
        return 0.0 if self._mode(conn.endpoint) == "inline" else SEND_LEAD_S

    def _mode(self, endpoint: object) -> SendMode:
        if self._inline or self.mode == "inline":
            return "inline"
        connected = isinstance(endpoint, UdpEndpoint) and endpoint.remote_address is not None
        if self.mode == "process" and self.process is not None and self.process.alive and connected:
            return "process"
        if self.mode in ("process", "thread") and self._thread_started and connected:
            return "thread"
        return "trio" if endpoint is not None else "inline"

    def submit(self, deadline: float, packet: bytes, conn: MediaConnection) -> None:
        """Send ``packet`` (from ``conn.seal_rtp``) at ``deadline`` (trio clock), or at once if
        that has passed. Never blocks; a failure is counted in :attr:`failures`."""
        endpoint = conn.endpoint
        mode = self._mode(endpoint)
        if mode == "inline":
            self._send_now(deadline, packet, conn)
            return
        if self._pending >= MAX_PENDING:
            self.failures += 1
            return
        self._pending += 1
        if mode == "trio":
            self._trio_jobs.append((deadline, packet, conn))
            self._trio_wake.set()
            return
        assert isinstance(endpoint, UdpEndpoint)
        if mode == "process":
            self._submit_to_process(deadline, packet, conn, endpoint)
            return
        if endpoint is not self._endpoint:
            sock = endpoint.thread_socket()
            assert sock is not None  # connected: checked by _mode
            self._sockets.append(sock)
            self._endpoint = endpoint
        offset = trio.current_time() - time.perf_counter()
        self._queue.put(_Job(deadline - offset, packet, self._sockets[-1], endpoint, conn))

    @property
    def path(self) -> SendMode:
        """Who sends now (the status shows it): :attr:`mode`, or what it fell back to."""
        if self._inline or self.mode == "inline":
            return "inline"
        if self.mode == "process" and self.process is not None and self.process.alive:
            return "process"
        return "thread" if self.mode in ("process", "thread") and self._thread_started else "trio"

    def path_description(self) -> str:
        """:attr:`path`, and the send process's priority unless normal (the status):
        ``process (realtime)``, ``process (raised)``, ``process``, ``thread``, ..."""
        path = self.path
        if path == "process" and self.process is not None and self.process.priority != "normal":
            return f"process ({self.process.priority})"
        return path

    def _submit_to_process(
        self, deadline: float, packet: bytes, conn: MediaConnection, endpoint: UdpEndpoint
    ) -> None:
        process = self.process
        assert process is not None  # checked by _mode
        job_id = self._next_job_id
        self._next_job_id += 1
        udp = endpoint.thread_socket() if endpoint is not self._process_endpoint else None
        offset = trio.current_time() - time.perf_counter()
        try:
            ok = process.submit(job_id, deadline - offset, packet, udp)
        finally:
            if udp is not None:
                udp.close()  # the child received its own descriptor (or none was sent)
        if not ok:
            self._pending -= 1
            self.failures += 1
            return
        if udp is not None:
            self._process_endpoint = endpoint
        self._process_jobs[job_id] = (endpoint, conn, packet)

    def _on_process_report(self, report: SentReport) -> None:
        job = self._process_jobs.pop(report.job_id, None)
        if job is None:
            return
        self._pending -= 1
        endpoint, conn, packet = job
        if report.sent:
            self._record(report.lateness)
        else:
            self.failures += 1
        conn.count_sent(endpoint, packet, report.sent)

    async def _run_process(self, process: SendProcess) -> None:
        """Read the child's reports; if it dies, count what it held and go on from the thread."""
        await process.run(self._on_process_report)
        if self._closing:
            return
        lost = len(self._process_jobs)
        self._pending -= lost
        self.failures += lost
        self._process_jobs.clear()
        self.process_ended.set()
        log.warning("audio_send_process_ended", returncode=process.process.poll(), lost_packets=lost)

    def _send_now(self, deadline: float, packet: bytes, conn: MediaConnection) -> None:
        ok = conn.send_sealed(packet)
        self._record(max(0.0, trio.current_time() - deadline))
        if not ok:
            self.failures += 1

    async def _trio_sends(self) -> NoReturn:
        """The ``"trio"`` mode's task: each packet at its slot, on a timerfd (io/timer.py)."""
        timer = PreciseTimer.create()
        while True:
            while not self._trio_jobs:
                self._trio_wake = trio.Event()
                await self._trio_wake.wait()
            deadline, packet, conn = self._trio_jobs.popleft()
            await timer.sleep_until(deadline)
            self._pending -= 1
            self._send_now(deadline, packet, conn)

    def _record(self, lateness: float) -> None:
        with self._lock:  # the thread records its sends, trio the ones it made itself
            self.recent.append(lateness)
            self.sent += 1
            if lateness > LATE_THRESHOLD_S:
                self.late += 1
            self.max_lateness = max(self.max_lateness, lateness)

    # ---- thread side -----------------------------------------------------------------------

    def _process(self, job: _Job) -> None:
        if job.sock is not self._thread_sock:
            if self._thread_sock is not None:
                self._thread_sock.close()  # the endpoint changed: nothing queued uses it any more
            self._thread_sock = job.sock
        self._timer.sleep_until(job.deadline)  # the GIL released
        if self._closing:
            return  # stopping: dropped with the thread (see the module docstring)
        ok = _send(job.sock, job.packet)
        self._record(max(0.0, time.perf_counter() - job.deadline))
        with self._lock:
            self._results.append(_Sent(job, ok))
        self._wake_trio_soon()

    # ---- trio side -------------------------------------------------------------------------

    def _take(self) -> list[_Sent]:
        with self._lock:
            results, self._results = self._results, []
        return results

    def _on_sent(self, sent: _Sent) -> None:
        self._pending -= 1
        if not sent.ok:
            self.failures += 1
        sent.job.conn.count_sent(sent.job.endpoint, sent.job.packet, sent.ok)

    async def _stop(self) -> None:
        self._closing = True
        self._timer.cancel()  # a packet waiting for its slot is dropped now, not at the slot
        await super()._stop()

    def _close(self) -> None:
        if self._thread_started and not self._thread_done.is_set():
            return  # a stop that timed out: the thread may still use them (the process ends soon)
        for sock in self._sockets:
            sock.close()
        self._timer.close()


@asynccontextmanager
async def open_timed_sender(name: str = "clank-audio-send") -> AsyncIterator[TimedSender]:
    """A :class:`TimedSender` whose thread lives for the block (none under a virtual clock)."""
    sender = TimedSender()
    try:
        async with (
            sender._running(sender._on_sent, name),
            trio.open_nursery() as nursery,
            contextlib.AsyncExitStack() as stack,
        ):
            nursery.start_soon(sender._trio_sends)
            if not sender._inline and sys.platform.startswith("linux"):
                try:
                    sender.process = await stack.enter_async_context(open_send_process())
                except TransportError as exc:
                    log.warning("audio_send_process_unavailable", error=str(exc), fallback="thread")
                else:
                    nursery.start_soon(sender._run_process, sender.process)
            try:
                yield sender
            finally:
                sender._closing = True  # the child's end is expected now, not a failure
                nursery.cancel_scope.cancel()
    finally:
        sender._close()
