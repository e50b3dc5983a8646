"""The audio sender (io/timed_sender.py): its send process and its thread over a real loopback
UDP socket (in order, never before the slot, counted back in trio, bounded stops), the process
across a reconnect and a crash, the trio task for endpoints without a socket, inline sends; no
thread or process under a virtual clock."""

from __future__ import annotations

import os
import socket
import sys
from typing import cast

import attrs
import pytest
import trio
import trio.testing

from clank.io.lossy import open_memory_datagram_pair
from clank.io.media_connection import MediaConnection
from clank.io.send_process import open_send_process
from clank.io.timed_sender import MAX_PENDING, SEND_LEAD_S, SendMode, TimedSender, open_timed_sender
from clank.io.udp import DatagramEndpoint, UdpEndpoint, open_udp_endpoint

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux-only")


@attrs.define
class _Conn:
    """The three things the sender uses of a MediaConnection, over a real endpoint."""

    endpoint: DatagramEndpoint | None
    sent_now: list[bytes] = attrs.Factory(list)
    counted: list[tuple[bytes, bool]] = attrs.Factory(list)
    counted_changed: trio.Event = attrs.Factory(trio.Event)

    @property
    def as_connection(self) -> MediaConnection:
        return cast(MediaConnection, self)

    def send_sealed(self, packet: bytes | None) -> bool:
        assert packet is not None and self.endpoint is not None
        self.sent_now.append(packet)
        return self.endpoint.send_nowait(packet)

    def count_sent(self, endpoint: UdpEndpoint, packet: bytes, ok: bool) -> None:
        assert endpoint is self.endpoint
        endpoint.count_sent(len(packet), ok)
        self.counted.append((packet, ok))
        self.counted_changed.set()
        self.counted_changed = trio.Event()


async def _receive(sock: socket.socket, count: int) -> list[tuple[bytes, float]]:
    got: list[tuple[bytes, float]] = []
    tsock = trio.socket.from_stdlib_socket(sock)
    while len(got) < count:
        data = await tsock.recv(2048)
        got.append((data, trio.current_time()))
    return got


async def _wait_counted(conn: _Conn, count: int) -> None:
    with trio.fail_after(2):
        while len(conn.counted) < count:
            await conn.counted_changed.wait()


@pytest.mark.parametrize("mode", ["process", "thread"])
async def test_packets_go_out_in_order_never_before_their_slot_and_are_counted_in_trio(
    mode: SendMode,
) -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    with trio.fail_after(10), receiver:
        async with open_udp_endpoint(receiver.getsockname()) as endpoint, open_timed_sender() as sender:
            sender.mode = mode
            assert sender.path == mode
            conn = _Conn(endpoint)
            assert sender.lead(conn.as_connection) == SEND_LEAD_S
            start = trio.current_time() + 0.05
            deadlines = [start + n * 0.02 for n in range(MAX_PENDING)]
            for n, deadline in enumerate(deadlines):
                sender.submit(deadline, b"packet %d" % n, conn.as_connection)
            got = await _receive(receiver, MAX_PENDING)
            assert [data for data, _ in got] == [b"packet %d" % n for n in range(MAX_PENDING)]
            for (_, arrived), deadline in zip(got, deadlines, strict=True):
                assert arrived >= deadline, "a packet left before its slot"
            await _wait_counted(conn, MAX_PENDING)
            sent = [(b"packet %d" % n, True) for n in range(MAX_PENDING)]
            assert conn.counted == sent
            assert conn.sent_now == []  # all from the process or the thread
            assert endpoint.statistics().packets_sent == MAX_PENDING
            assert sender.sent == len(sender.recent) == MAX_PENDING and sender.failures == 0


@pytest.mark.parametrize("mode", ["process", "thread"])
async def test_a_stop_drops_queued_packets_at_once_and_a_full_queue_drops_new_ones(mode: SendMode) -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    with receiver:
        async with open_udp_endpoint(receiver.getsockname()) as endpoint:
            conn = _Conn(endpoint)
            started = trio.current_time()
            async with open_timed_sender() as sender:
                sender.mode = mode
                for n in range(MAX_PENDING + 1):  # slots a minute away: the thread waits on the first
                    sender.submit(trio.current_time() + 60.0 + n, b"late", conn.as_connection)
                assert sender.failures == 1  # the one beyond MAX_PENDING
            # Leaving did not wait for the slot (nor for THREAD_STOP_TIMEOUT): the sleep was cut.
            assert trio.current_time() - started < 1.5
            if mode == "process":
                assert sender.process is not None and sender.process.process.returncode == 0
            receiver.setblocking(False)
            with pytest.raises(BlockingIOError):
                receiver.recv(2048)  # nothing was sent early on the way out
            assert sender.sent == 0


async def test_the_process_follows_a_reconnect_and_drops_what_was_sealed_for_the_old_socket() -> None:
    old_receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    new_receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for sock in (old_receiver, new_receiver):
        sock.bind(("127.0.0.1", 0))
    with trio.fail_after(10), old_receiver, new_receiver:
        async with (
            open_udp_endpoint(old_receiver.getsockname()) as old,
            open_udp_endpoint(new_receiver.getsockname()) as new,
            open_timed_sender() as sender,
        ):
            old_conn, new_conn = _Conn(old), _Conn(new)
            sender.submit(trio.current_time(), b"old now", old_conn.as_connection)
            assert (await _receive(old_receiver, 1))[0][0] == b"old now"
            sender.submit(trio.current_time() + 30.0, b"old stale", old_conn.as_connection)
            sender.submit(trio.current_time() + 0.02, b"new", new_conn.as_connection)
            assert (await _receive(new_receiver, 1))[0][0] == b"new"
            await _wait_counted(old_conn, 2)
            await _wait_counted(new_conn, 1)
            assert old_conn.counted == [(b"old now", True), (b"old stale", False)]
            assert new_conn.counted == [(b"new", True)]
            assert sender.failures == 1 and sender.sent == 2
            assert old.statistics().send_dropped == 1 and new.statistics().packets_sent == 1


async def test_if_the_process_dies_its_packets_are_counted_lost_and_the_thread_takes_over() -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    with trio.fail_after(10), receiver:
        async with open_udp_endpoint(receiver.getsockname()) as endpoint, open_timed_sender() as sender:
            conn = _Conn(endpoint)
            assert sender.path == "process" and sender.process is not None
            assert sender.path_description() in ("process", "process (raised)", "process (realtime)")
            sender.submit(trio.current_time() + 30.0, b"held by the child", conn.as_connection)
            sender.process.process.kill()
            await sender.process.process.wait()
            with trio.fail_after(2):
                await sender.process_ended.wait()
            assert sender.path == "thread"
            assert sender.failures == 1 and conn.counted == []  # lost with the child, counted
            sender.submit(trio.current_time() + 0.02, b"from the thread", conn.as_connection)
            assert (await _receive(receiver, 1))[0][0] == b"from the thread"
            await _wait_counted(conn, 1)
            assert conn.counted == [(b"from the thread", True)] and sender.path_description() == "thread"


async def test_the_process_reports_the_priority_the_kernel_gave_it() -> None:
    with trio.fail_after(10):
        async with open_send_process() as process:
            pid = process.process.pid
            policy, nice = os.sched_getscheduler(pid), os.getpriority(os.PRIO_PROCESS, pid)
            expected = "realtime" if policy == os.SCHED_FIFO else "raised" if nice < 0 else "normal"
            assert process.priority == expected, (policy, nice)


async def test_without_a_real_socket_a_trio_task_sends_at_the_slot() -> None:
    with trio.fail_after(5):
        async with open_memory_datagram_pair() as (ours, theirs), open_timed_sender() as sender:
            conn = _Conn(ours)
            assert sender.lead(conn.as_connection) == SEND_LEAD_S
            deadline = trio.current_time() + 0.05
            sender.submit(deadline, b"at the slot", conn.as_connection)
            assert conn.sent_now == []
            assert (await theirs.receive())[0] == b"at the slot"
            assert trio.current_time() >= deadline
            assert conn.sent_now == [b"at the slot"] and sender.sent == 1


async def test_inline_mode_sends_at_once_with_no_lead() -> None:
    with trio.fail_after(5):
        async with open_memory_datagram_pair() as (ours, theirs), open_timed_sender() as sender:
            sender.mode = "inline"
            conn = _Conn(ours)
            assert sender.lead(conn.as_connection) == 0.0
            sender.submit(trio.current_time() + 5.0, b"now", conn.as_connection)
            assert conn.sent_now == [b"now"]
            assert (await theirs.receive())[0] == b"now"
            assert sender.late == 0 and sender.path == "inline"
            sender.submit(trio.current_time() - 0.02, b"20 ms late", conn.as_connection)
            assert sender.late == 1 and sender.max_lateness >= 0.02  # the status's lateFrames


async def test_under_a_virtual_clock_no_thread_runs_and_sends_are_inline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    with trio.fail_after(5), receiver:
        async with open_udp_endpoint(receiver.getsockname()) as endpoint, open_timed_sender() as sender:
            conn = _Conn(endpoint)
            assert sender.lead(conn.as_connection) == 0.0
            sender.submit(trio.current_time(), b"inline", conn.as_connection)
            assert conn.sent_now == [b"inline"]
            assert isinstance(sender, TimedSender) and sender.sent == 1
            assert sender.process is None and sender.path == "inline"
            assert receiver.recv(2048) == b"inline"
