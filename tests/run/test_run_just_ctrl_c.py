"""``just run`` on a terminal, interrupted with Ctrl-C: clank leaves voice and just exits with
clank's own code (0), without "error: interrupted by SIGINT" / 130."""

from __future__ import annotations

import os
import pty
import select
import shutil
import time
from pathlib import Path

import pytest
from clank_cli import clank_env

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 60.0


def _read(fd: int, timeout: float) -> bytes:
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return b""
    try:
        return os.read(fd, 65536)
    except OSError:  # the child side closed
        return b""


@pytest.mark.skipif(shutil.which("just") is None, reason="needs just")
def test_ctrl_c_on_just_run_exits_quietly_with_clanks_code() -> None:
    env = clank_env(CLANK_LOG_FORMAT="json")
    pid, fd = pty.fork()
    if pid == 0:  # the child: just on a fresh terminal
        os.chdir(ROOT)
        os.execvpe("just", ["just", "run", "--port", "0", "--scenario", "empty", "--no-watch"], env)
    output = b""
    status: int | None = None
    try:
        deadline = time.monotonic() + LIMIT
        while b"Ctrl-C leaves voice" not in output:
            assert time.monotonic() < deadline, output.decode(errors="replace")[-2000:]
            output += _read(fd, 0.5)
        os.write(fd, b"\x03")  # the terminal turns it into SIGINT for its foreground job
        deadline = time.monotonic() + 20
        while status is None and time.monotonic() < deadline:
            output += _read(fd, 0.2)
            done, raw = os.waitpid(pid, os.WNOHANG)
            if done:
                status = os.waitstatus_to_exitcode(raw)
    finally:
        if status is None:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)
    text = output.decode(errors="replace")
    assert status == 0, text[-2000:]
    assert "interrupted by SIGINT" not in text
    assert '"event": "clank stopped"' in text
