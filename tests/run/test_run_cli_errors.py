"""Expected failures of the CLI end with one line on stderr and a documented exit code."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trio
from clank_cli import clank_env, run_clank_once

from clank.cli import EXIT_CHANNEL, EXIT_LISTEN
from clank.sandbox.app import open_sandbox

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 120


def _env(**extra: str) -> dict[str, str]:
    return clank_env(CLANK_LOG_FORMAT="json", **extra)


@contextmanager
def _taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


PORT_CASES = [
    (["sandbox", "--port", "{port}"], "sandbox.port"),
    (["run", "--port", "{port}", "--no-watch", "--scenario", "empty"], "api.port"),
]


def test_a_port_in_use_is_one_line_naming_the_address_and_the_setting() -> None:
    # Both commands at once (each mostly starts Python): the assertions are per command.
    with _taken_port() as sandbox_port, _taken_port() as api_port:
        ports = [sandbox_port, api_port]
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "clank", *(a.format(port=port) for a in args)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                cwd=ROOT,
                env=_env(),
            )
            for (args, _), port in zip(PORT_CASES, ports, strict=True)
        ]
        try:
            outcomes = [(p.communicate(timeout=LIMIT)[1].decode(), p.returncode) for p in processes]
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
    for (stderr, code), port, (_, change) in zip(outcomes, ports, PORT_CASES, strict=True):
        assert code == EXIT_LISTEN, (change, stderr[-2000:])
        assert "Traceback" not in stderr
        last = stderr.strip().splitlines()[-1]
        assert last.startswith(f"clank: cannot listen on 127.0.0.1:{port}: address already in use"), last
        assert change in last and "--port" in last


CHANNEL_CASES = [
    ("123456789012345678", "does not exist (Unknown Channel)"),
    ("text", "is not a voice channel (type 0)"),
]


async def test_a_wrong_channel_id_has_its_own_reason_and_exit_code() -> None:
    outcomes: dict[str, tuple[int, str]] = {}
    with trio.fail_after(LIMIT):
        async with open_sandbox(scenario="empty") as sb:

            async def run(channel: str) -> None:
                env = _env(
                    CLANK_DISCORD_TOKEN=sb.token,
                    CLANK_API_URL=sb.api_url,
                    CLANK_GUILD_ID=sb.guild_id,
                    CLANK_CHANNEL_ID=sb.text_channel_id if channel == "text" else channel,
                )
                outcomes[channel] = await run_clank_once(["run", "--port", "0"], env)

            async with trio.open_nursery() as nursery:  # both at once: each mostly starts Python
                for channel, _ in CHANNEL_CASES:
                    nursery.start_soon(run, channel)
    for channel, message in CHANNEL_CASES:
        code, stderr = outcomes[channel]
        assert code == EXIT_CHANNEL, (channel, stderr[-2000:])
        last = stderr.strip().splitlines()[-1]
        assert last.startswith("clank: voice channel unavailable: channel") and message in last, last
        assert "CLANK_CHANNEL_ID" in last
