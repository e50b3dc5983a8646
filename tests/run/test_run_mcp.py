"""MCP end to end with the sandbox: `clank mcp` over stdio (a subprocess, no token) and the
streamable HTTP transport at /mcp of `clank run`'s API, both driven by the SDK's own client."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import attrs
import httpx2
import mcp_types as types
import numpy as np
import pytest
import trio
from clank_cli import clank_env
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from PIL import Image
from test_run_e2e import _luma_psnr

from clank.config import load_settings
from clank.control.tool_formats import tools_in_format
from clank.control.tools import tool_schemas
from clank.media.quality import plane_array
from clank.media.synth import HEADLINES
from clank.runner import open_clank
from clank.watch.ocr import load_ocr_engine

pytestmark = pytest.mark.filterwarnings(
    "ignore:Async generator 'http:ResourceWarning"
)  # see test_control_mcp

ROOT = Path(__file__).resolve().parents[2]
WATCH_TOOLS = {"start_screen_watch", "stop_screen_watch", "look_at_screen", "list_sharers", "status"}
LIMIT = 90


def _json(result: types.CallToolResult) -> dict[str, Any]:
    first = result.content[0]
    assert isinstance(first, types.TextContent)
    body: dict[str, Any] = json.loads(first.text)
    return body


async def _look_until_ready(client: ClientSession) -> types.CallToolResult:
    while True:
        look = await client.call_tool("look_at_screen", {})
        if not look.is_error:
            return look
        assert _json(look)["reason"] == "waiting_for_frame_context"
        await trio.sleep(0.05)


def _image(result: types.CallToolResult) -> bytes:
    images = [c for c in result.content if isinstance(c, types.ImageContent)]
    assert len(images) == 1 and images[0].mime_type == "image/jpeg"
    return base64.b64decode(images[0].data)


def _headline_recall(text: str) -> float:
    squashed = re.sub(r"\s+", "", text.lower())
    return max(sum(w in squashed for w in h.lower().split()) / len(h.split()) for h in HEADLINES)


def _schemas(tools: list[types.Tool]) -> list[dict[str, Any]]:
    return [{"name": t.name, "description": t.description, "input_schema": t.input_schema} for t in tools]


async def test_clank_mcp_over_stdio_in_sandbox_mode(tmp_path: Path) -> None:
    # Any free share-link port (other clank processes may hold 8788). The MCP transport is under
    # test; screen notes (OCR) over MCP: the HTTP test below.
    env = clank_env(CLANK_LOG_FORMAT="json", CLANK_LINK_PORT="0", CLANK_NOTES_ENABLED="false")
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "clank", "mcp", "--scenario", "streamer"], env=env, cwd=ROOT
    )
    stderr_path = tmp_path / "stderr.log"
    with trio.fail_after(LIMIT), stderr_path.open("w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as client:
            init = await client.initialize()
            assert init.server_info.name == "clank"
            listed = await client.list_tools()
            assert _schemas(listed.tools) == tool_schemas()

            sharers = _json(await client.call_tool("list_sharers", {}))
            alice = next(s for s in sharers["sharers"] if s["live"])
            started = await client.call_tool("start_screen_watch", {})
            assert not started.is_error and _json(started)["targetUserId"] == alice["userId"]
            look = await _look_until_ready(client)
            picture = Image.open(io.BytesIO(_image(look)))
            meta = _json(look)
            assert picture.format == "JPEG"
            assert picture.size == (meta["frame"]["width"], meta["frame"]["height"]) == (1280, 720)
            # Checked against the source: the streamer renders a known large-font headline in its
            # title bar (clank.media.synth: the top two text lines, three fifths of the width).
            engine = load_ocr_engine()
            if engine is not None:
                width, height = picture.size
                bar = picture.crop((0, 0, width * 3 // 5 + 16, 2 * max(12, height // 36) + 8))
                seen = " ".join(line.text for line in engine.read(np.asarray(bar.convert("RGB"))).lines)
                assert _headline_recall(seen) >= 0.8, seen
            status = _json(await client.call_tool("status", {}))
            assert status["inVoice"] and status["mode"] == "sandbox"
            stopped = await client.call_tool("stop_screen_watch", {})
            assert not stopped.is_error
            # Every other tool (voice, music, channels, ...) answers over MCP with its JSON, an
            # ok answer or a tool error with a reason: never a protocol error.
            others = [t.name for t in listed.tools if t.name not in WATCH_TOOLS]
            for name in sorted(others, key=lambda n: n.startswith("leave")):  # leave voice last
                result = await client.call_tool(name, {})
                body = _json(result)
                assert isinstance(body, dict) and (not result.is_error or body.get("reason")), (name, body)
    log = stderr_path.read_text()
    events = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert "mcp serving on stdio" in [e.get("event") for e in events]
    assert "Traceback" not in log


async def test_clank_tools_lists_what_mcp_lists() -> None:
    proc = await trio.run_process(
        [sys.executable, "-m", "clank", "tools"], capture_stdout=True, cwd=ROOT, env={**os.environ}
    )
    printed = json.loads(proc.stdout)
    assert printed == tool_schemas() == tools_in_format("anthropic")  # the default --format


async def test_mcp_over_http_on_the_api_listener_sees_the_streamer() -> None:
    settings = load_settings(environ={"CLANK_LINK_PORT": "0"})  # any free share-link port
    settings = attrs.evolve(settings, notes=attrs.evolve(settings.notes, enabled=True))
    with trio.fail_after(LIMIT):
        async with open_clank(settings, scenario="streamer", api_port=0, demo_watch=False) as info:
            headers = {"Authorization": f"Bearer {info.api.token}"}
            async with (
                httpx2.AsyncClient(headers=headers, timeout=30) as http,
                streamable_http_client(f"{info.api.url}/mcp", http_client=http) as (read, write),
                ClientSession(read, write) as client,
            ):
                await client.initialize()
                assert _schemas((await client.list_tools()).tools) == tool_schemas()
                alice = info.sandbox.world.user_by_name("alice").id
                started = await client.call_tool("start_screen_watch", {"target": "alice"})
                assert _json(started)["targetUserId"] == alice
                look = await _look_until_ready(client)
                meta = _json(look)
                streamer = info.sandbox.media.streamer(alice)
                source = streamer.source_frame(meta["frame"]["rtpTimestamp"])
                assert source is not None, "the streamer no longer has that source frame"
                assert _luma_psnr(_image(look), plane_array(source, 0)) >= 28.0
                for name in ("list_sharers", "status", "stop_screen_watch"):
                    assert not (await client.call_tool(name, {})).is_error, name
