"""The audio send process: puts prepared packets on the wire at their deadlines, outside our GIL.

Run by :mod:`clank.io.send_process` as ``python -I -S <this file> <control fd>``: standard library
only (it never imports clank, so it starts in ~20 ms and holds nothing but this loop). Why a
process: a sending *thread* wakes on time but then waits for the GIL, which the trio thread holds
for whole C calls (a status's ``json.dumps``, davey decrypting a keyframe) and up to a switch
interval of pure Python: p99 3-6 ms with three dashboards open. This process has its own
interpreter and nothing else to run, so what is left is the kernel's wake-up, and with realtime
priority (``SCHED_FIFO``, when the account may) not even a busy core delays it.

The control socket is an ``AF_UNIX`` ``SOCK_SEQPACKET`` pair: one message per job, each way.

* parent → child: :data:`JOB` (job id, deadline in ``CLOCK_MONOTONIC`` seconds, i.e. the
  parent's ``time.perf_counter()``) followed by the packet. A job carrying a file descriptor
  (``SCM_RIGHTS``) switches to that UDP socket from then on: a reconnect. Jobs still queued for the
  previous socket are reported as not sent (stale: sealed for the old connection).
* child → parent: :data:`RESULT` (job id, sent, lateness in seconds after the deadline, measured
  after the socket took the packet). The first message is the greeting instead,
  :data:`GREETING` and the priority the child got: ``realtime`` (``SCHED_FIFO``), ``raised`` (a
  negative nice value: the account may not have realtime but may renice, RLIMIT_NICE) or
  ``normal``.
* End of file on the control socket (the parent closed it or died) ends the process at once;
  queued packets are dropped, as a stopping voice role drops them.
"""

from __future__ import annotations

import collections
import os
import resource
import select
import socket
import struct
import sys
import time

JOB = struct.Struct("<Qd")  # job id, deadline (CLOCK_MONOTONIC s); the packet follows
RESULT = struct.Struct("<Q?d")  # job id, sent, lateness (s)
GREETING = b"ready "  # + b"realtime" | b"raised" | b"normal"
MAX_MESSAGE = 2048  # an RTP audio packet is < 1,500 bytes
FD_SPACE = socket.CMSG_SPACE(4)  # room for one descriptor (a C int)
REALTIME_PRIORITY = 10  # SCHED_FIFO 1-99: above normal tasks, below the kernel's own threads
# A SCHED_FIFO task that never blocks would own a core; this loop blocks every 20 ms. If it ever
# ran 50 ms of CPU without blocking, the kernel sends SIGXCPU (which ends it), 100 ms SIGKILL.
RTTIME_LIMIT_US = (50_000, 100_000)
NICE_STEPS = (-10, -5, -1)  # the first the account may take (RLIMIT_NICE allows 20 - limit)


def _raise_priority() -> str:
    """The highest priority this account may have: realtime (root, CAP_SYS_NICE or
    RLIMIT_RTPRIO), else a negative nice value (RLIMIT_NICE), else none."""
    try:
        resource.setrlimit(resource.RLIMIT_RTTIME, RTTIME_LIMIT_US)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(REALTIME_PRIORITY))
    except (OSError, AttributeError, ValueError):
        pass
    else:
        return "realtime"
    for nice in NICE_STEPS:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        except (OSError, AttributeError):
            continue
        return "raised"
    return "normal"


def _take_messages(
    control: socket.socket, pending: collections.deque[tuple[int, float, bytes]], udp: socket.socket | None
) -> tuple[bool, socket.socket | None]:
    """Every queued control message into ``pending``: (False at end of file, the socket to send on)."""
    while True:
        try:
            # socket.recv_fds would be shorter, but Python 3.11's drops its flags (it would block).
            message, ancillary, _flags, _address = control.recvmsg(MAX_MESSAGE, FD_SPACE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return True, udp
        if not message:
            return False, udp  # the parent closed its end, or died
        fds = [
            int.from_bytes(data[:4], sys.byteorder)
            for level, kind, data in ancillary
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS and len(data) >= 4
        ]
        if fds:
            if udp is not None:
                udp.close()
            udp = socket.socket(fileno=fds[0])
            while pending:  # sealed for the previous connection
                control.send(RESULT.pack(pending.popleft()[0], False, 0.0))
        job_id, deadline = JOB.unpack_from(message)
        pending.append((job_id, deadline, message[JOB.size :]))


def main(control_fd: int) -> None:
    control = socket.socket(fileno=control_fd)
    control.send(GREETING + _raise_priority().encode())
    clock = time.perf_counter  # CLOCK_MONOTONIC on Linux: the parent's clock too
    pending: collections.deque[tuple[int, float, bytes]] = collections.deque()
    udp: socket.socket | None = None
    while True:
        wait = None if not pending else pending[0][1] - clock()
        if (wait is None or wait > 0) and select.select([control], [], [], wait)[0]:
            alive, udp = _take_messages(control, pending, udp)
            if not alive:
                return
            continue
        job_id, deadline, packet = pending.popleft()  # its deadline has come
        try:
            sent = udp is not None and udp.send(packet, socket.MSG_DONTWAIT) == len(packet)
        except OSError:  # buffer full, an earlier ICMP error: dropped, and counted by the parent
            sent = False
        control.send(RESULT.pack(job_id, sent, max(0.0, clock() - deadline)))


if __name__ == "__main__":
    try:
        main(int(sys.argv[1]))
    except (BrokenPipeError, ConnectionResetError, KeyboardInterrupt):
        pass  # the parent went away mid-send
