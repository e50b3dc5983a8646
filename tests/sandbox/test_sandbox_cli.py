"""``clank sandbox`` as a process: one JSON line on stdout, and Ctrl-C stops it cleanly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import trio
from clank_cli import clank_env

ROOT = Path(__file__).resolve().parents[2]


async def _drain(stream: trio.abc.ReceiveStream, into: bytearray) -> None:
    """Read stderr to the end so the child never blocks on a full pipe; kept for the failure text."""
    while chunk := await stream.receive_some(65536):
        into += chunk


async def test_sandbox_prints_one_json_line_and_stops_on_ctrl_c() -> None:
    env = clank_env()
    stderr = bytearray()
    with trio.fail_after(60):
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "clank", "sandbox", "--scenario", "streamer"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env=env,
        )
        try:
            assert process.stdout is not None and process.stderr is not None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_drain, process.stderr, stderr)
                buffer = b""
                while b"\n" not in buffer:
                    chunk = await process.stdout.receive_some(65536)
                    assert chunk, f"the sandbox exited before printing its JSON line: {stderr.decode()}"
                    buffer += chunk
                info = json.loads(buffer.split(b"\n", 1)[0])
                assert info["api_url"].startswith("http://127.0.0.1:")
                assert info["gateway_url"].startswith("ws://127.0.0.1:")
                assert {u["name"] for u in info["users"]} >= {"alice", "bob"}
                # Signal the instant the line is read: the receiver must already be installed.
                process.send_signal(signal.SIGINT)
                with trio.fail_after(10):
                    code = await process.wait()
                rest = await process.stdout.receive_some(65536)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    text = stderr.decode(errors="replace")
    assert code == 0, f"exit {code}; stderr:\n{text}"
    assert rest == b"", "exactly one line goes to stdout"
    assert "Traceback" not in text, text
    assert "sandbox stopping" in text, text
