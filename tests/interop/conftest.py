"""Run ``clank sandbox`` as a separate process for the asyncio-based client libraries.

discord.py is asyncio and the sandbox is trio: the sandbox runs in its own process (exactly as a
developer would run it), and the test reads the one JSON line it prints when ready.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# discord.py imports the stdlib ``audioop`` (deprecated in 3.11, warnings are errors here): import it
# once, here, with that one warning silenced, before any test module imports it.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="'audioop' is deprecated", category=DeprecationWarning)
    import discord  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0


def _read_ready_line(proc: subprocess.Popen[bytes], deadline: float) -> dict[str, Any]:
    assert proc.stdout is not None
    buffered = b""
    while b"\n" not in buffered:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the sandbox printed no ready line in time")
        readable, _, _ = select.select([proc.stdout], [], [], remaining)
        if not readable:
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            raise RuntimeError(f"the sandbox exited before it was ready (code {proc.poll()})")
        buffered += chunk
    line, _, _ = buffered.partition(b"\n")
    info: dict[str, Any] = json.loads(line)
    return info


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)


class SandboxProcess:
    """Starts ``python -m clank sandbox`` with extra arguments; every process is stopped at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        log_path = self._log_dir / f"sandbox-{len(self._procs)}.log"
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "clank", "sandbox", "--host", "127.0.0.1", "--port", "0", *args],
                stdout=subprocess.PIPE,
                stderr=log_file,
                cwd=REPO_ROOT,
                env={**os.environ, **(env or {})},
            )
        self._procs.append(proc)
        try:
            return _read_ready_line(proc, time.monotonic() + READY_TIMEOUT)
        except BaseException:
            _stop(proc)
            sys.stderr.write(log_path.read_text(errors="replace")[-4000:])
            raise

    def stop_all(self) -> None:
        for proc in self._procs:
            _stop(proc)
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture(scope="module")
def sandbox_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    """Sandbox processes shared by one test module (each costs an interpreter start-up)."""
    runner = SandboxProcess(tmp_path_factory.mktemp("sandbox"))
    try:
        yield runner
    finally:
        runner.stop_all()
