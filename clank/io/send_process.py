"""The trio side of the audio send process (:mod:`clank.io.send_process_child`, which explains why
a process): start it, hand it jobs and sockets, read its results, and notice if it dies.

One process per :class:`~clank.io.timed_sender.TimedSender` (a voice role's lifetime), spawned as
``python -I -S`` on the child's file, so it imports nothing of ours and starts in ~20 ms. It is
owned by the ``async with`` block: leaving the block closes the control socket, which ends the
child at once (it is reaped within :data:`EXIT_WAIT_S`, or killed).
"""

from __future__ import annotations

import array
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final, Literal

import attrs
import trio

from clank.errors import TransportError
from clank.io import send_process_child as child

__all__ = ["CHILD_PATH", "PRIORITIES", "Priority", "SendProcess", "SentReport", "open_send_process"]

CHILD_PATH: Final = Path(child.__file__)
START_TIMEOUT_S: Final = 5.0  # the greeting; a cold start on a busy machine takes ~0.1 s
EXIT_WAIT_S: Final = 1.0
_CONTROL_BUFFER: Final = 256 * 1024  # ~100 queued audio packets either way; MAX_PENDING is 5
Priority = Literal["realtime", "raised", "normal"]
PRIORITIES: Final[tuple[Priority, ...]] = ("realtime", "raised", "normal")


@attrs.frozen
class SentReport:
    job_id: int
    sent: bool
    lateness: float  # seconds after the deadline, measured in the child after the send


class SendProcess:
    """A running child: :meth:`submit` jobs; :meth:`run` reports what it did."""

    def __init__(self, control: socket.socket, process: trio.Process, priority: Priority) -> None:
        self._control = control
        self.process = process
        self.priority = priority
        """The child's scheduling priority: ``realtime`` (``SCHED_FIFO``: root, CAP_SYS_NICE or
        RLIMIT_RTPRIO), ``raised`` (negative nice: RLIMIT_NICE) or ``normal``."""
        self.alive = True

    def submit(self, job_id: int, deadline: float, packet: bytes, udp: socket.socket | None) -> bool:
        """Queue ``packet`` for ``deadline`` (``time.perf_counter()`` seconds); ``udp``, when
        given, is the socket to send on from this job on (the child gets its own descriptor, so
        the caller may close ``udp`` afterwards). False if the child is gone or not keeping up."""
        if not self.alive:
            return False
        message = child.JOB.pack(job_id, deadline) + packet
        try:
            if udp is None:
                self._control.send(message, socket.MSG_DONTWAIT)
            else:
                rights = (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [udp.fileno()]).tobytes())
                self._control.sendmsg([message], [rights], socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:  # the child died: run() ends
            return False
        return True

    async def run(self, on_report: Callable[[SentReport], None]) -> None:
        """Hand every result to ``on_report`` as the child reports it; return when the child
        ends (it died, or the block closed the socket)."""
        while self.alive:
            try:
                await trio.lowlevel.wait_readable(self._control)
            except (trio.ClosedResourceError, OSError):
                break
            for report in self._drain():
                on_report(report)
        self.alive = False

    def _drain(self) -> Iterator[SentReport]:
        while True:
            try:
                message = self._control.recv(child.RESULT.size, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                message = b""
            if len(message) != child.RESULT.size:
                self.alive = False  # end of file: the child is gone
                return
            yield SentReport(*child.RESULT.unpack(message))

    def close(self) -> None:
        self.alive = False
        if self._control.fileno() >= 0:
            trio.lowlevel.notify_closing(self._control)  # wakes run() with ClosedResourceError
            self._control.close()


async def _greeting(control: socket.socket) -> Priority:
    """The priority the child reports once it is ready (its first message)."""
    with trio.move_on_after(START_TIMEOUT_S):
        await trio.lowlevel.wait_readable(control)
    try:
        message = control.recv(64, socket.MSG_DONTWAIT)
    except OSError:
        message = b""
    priority = message.removeprefix(child.GREETING).decode("ascii", "replace")
    if not message.startswith(child.GREETING) or priority not in PRIORITIES:
        raise TransportError("the audio send process did not start (no greeting)")
    return priority


@asynccontextmanager
async def open_send_process() -> AsyncIterator[SendProcess]:
    """Start the child and wait for its greeting; raise :class:`TransportError` if it cannot
    start (the caller falls back to a sending thread)."""
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for end in (parent_end, child_end):
        end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _CONTROL_BUFFER)
    try:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-I", "-S", str(CHILD_PATH), str(child_end.fileno())],
            pass_fds=(child_end.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
    except OSError as exc:
        parent_end.close()
        raise TransportError(f"the audio send process could not start: {exc}") from exc
    finally:
        child_end.close()
    parent_end.setblocking(False)
    sender = SendProcess(parent_end, process, priority="normal")
    try:
        sender.priority = await _greeting(parent_end)
        yield sender
    finally:
        sender.close()
        with trio.CancelScope(shield=True):
            with trio.move_on_after(EXIT_WAIT_S):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
