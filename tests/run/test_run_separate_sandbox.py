"""The separate-sandbox recipe: ``clank sandbox``'s JSON line has all clank needs (the voice URL
scheme included), and a voice leg that cannot connect is visible (banner, warning, status)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import attrs
import pytest
import trio
from clank_cli import clank_env
from structlog.testing import capture_logs

from clank import runner
from clank.config import load_settings
from clank.io import websocket
from clank.runner import RunInfo, open_clank, print_banner, wait_until_settled
from clank.sandbox.app import open_sandbox

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 60


def _recipe_env(info: dict[str, str]) -> dict[str, str]:
    """The env docs/sandbox.md and the README tell users to set from the JSON line."""
    return {
        "CLANK_DISCORD_TOKEN": info["token"],
        "CLANK_API_URL": info["api_url"],
        "CLANK_GATEWAY_URL": info["gateway_url"],
        "CLANK_GUILD_ID": info["guild_id"],
        "CLANK_CHANNEL_ID": info["voice_channel_id"],
        "CLANK_DISCORD_VOICE_URL_SCHEME": info["voice_url_scheme"],
    }


def _banner(info: RunInfo, problem: str | None) -> str:
    out = io.StringIO()
    print_banner(info, out, voice_problem=problem)
    return out.getvalue()


async def test_the_json_line_is_the_whole_recipe() -> None:
    env = clank_env()
    with trio.fail_after(LIMIT):
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
                assert chunk, "the sandbox exited before its JSON line"
                buffer += chunk
            line = json.loads(buffer.split(b"\n", 1)[0])
            assert line["voice_url_scheme"] == "ws"
            settings = load_settings(environ=_recipe_env(line))
            settings = attrs.evolve(settings, notes=attrs.evolve(settings.notes, enabled=False))
            async with open_clank(settings, api_port=0, demo_watch=False) as info:
                assert await wait_until_settled(info, demo_watch=False) is None
                assert "voice      joined channel" in _banner(info, None)
        finally:
            process.kill()
            await process.wait()


def _voice(info: RunInfo) -> dict[str, object]:
    assert info.service is not None
    return next(r for r in info.service.status()["roles"] if r["name"] == "voice")


async def test_a_voice_leg_that_cannot_connect_is_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    # A TLS hello to the plain-ws sandbox is never answered: the connect gives up after
    # CONNECT_TIMEOUT (10 s in production). The banner then waits out VOICE_READY_WAIT; here it
    # only has to report what the first, failed attempt left behind.
    monkeypatch.setattr(websocket, "CONNECT_TIMEOUT", 0.5)
    monkeypatch.setattr(runner, "VOICE_READY_WAIT", 0.1)
    with trio.fail_after(LIMIT):
        async with open_sandbox(scenario="empty") as sb:
            env = _recipe_env({**sb.info(), "voice_url_scheme": "wss"})  # the old recipe's mistake
            settings = load_settings(environ=env)
            settings = attrs.evolve(settings, notes=attrs.evolve(settings.notes, enabled=False))
            async with open_clank(settings, api_port=0, demo_watch=False) as info:
                with capture_logs() as logs:
                    while _voice(info)["state"] != "reconnecting":  # noqa: ASYNC110 - a cheap read
                        await trio.sleep(0.02)
                    problem = await wait_until_settled(info, demo_watch=False)
                assert problem is not None and "CLANK_DISCORD_VOICE_URL_SCHEME=ws" in problem
                banner = _banner(info, problem)
                assert "voice      NOT CONNECTED to channel" in banner
                warnings = [e for e in logs if e["log_level"] == "warning"]
                assert {"voice connection ended", "voice not connected"} <= {e["event"] for e in warnings}
                voice = _voice(info)
                assert voice["state"] == "reconnecting" and "no answer" in str(voice["endedReason"])
