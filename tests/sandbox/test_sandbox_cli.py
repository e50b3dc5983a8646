"""``clank sandbox`` as a process: one JSON line on stdout, and Ctrl-C stops it cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[2]


async def test_sandbox_prints_one_json_line_and_stops_on_ctrl_c() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLANK_")}
    with trio.fail_after(60):
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "clank", "sandbox", "--scenario", "streamer"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
            env=env,
        )
        try:
            assert process.stdout is not None
            buffer = b""
            while b"\n" not in buffer:
                chunk = await process.stdout.receive_some(65536)
                assert chunk, "the sandbox exited before printing its JSON line"
                buffer += chunk
            info = json.loads(buffer.split(b"\n", 1)[0])
            assert info["api_url"].startswith("http://127.0.0.1:")
            assert info["gateway_url"].startswith("ws://127.0.0.1:")
            assert {u["name"] for u in info["users"]} >= {"alice", "bob"}
            process.send_signal(signal.SIGINT)
            with trio.fail_after(10):
                code = await process.wait()
            rest = await process.stdout.receive_some(65536)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert code == 0
    assert rest == b"", "exactly one line goes to stdout"
