"""The voice tools through the tool API (the same table the MCP server lists)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from test_voice_speak import _wav
from voice_io_kit import Running, running, wait_until

from clank.control.tools import tool_schemas
from clank.control.voice_tools import VOICE_TOOL_NAMES

pytestmark = pytest.mark.filterwarnings("ignore::trio.TrioDeprecationWarning")
LIMIT = 60


async def _tool(r: Running, name: str, body: object, status: int = 200) -> dict[str, Any]:
    response = await r.client.post(f"/api/tools/{name}", json=body)
    assert response.status_code == status, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_voice_tools_have_typed_schemas() -> None:
    schemas = {s["name"]: s for s in tool_schemas()}
    assert set(schemas) >= VOICE_TOOL_NAMES
    gain = schemas["music_set_gain"]["input_schema"]["properties"]
    assert gain["target"] == {
        "type": "number",
        "description": gain["target"]["description"],
        "minimum": 0,
        "maximum": 4,
    }
    assert schemas["join_voice_channel"]["input_schema"]["properties"]["selfMute"]["type"] == "boolean"
    assert "speak" not in schemas  # TTS is the agent's


async def test_music_and_channel_tools(tmp_path: Path, autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(LIMIT):
        async with running() as r:
            alice = await r.join("alice")
            await r.dave_ready()
            failed = await _tool(r, "music_play", {"source": "http://127.0.0.1:9/x.mp3"})
            assert failed == {"ok": False, "reason": "source_failed", "detail": failed["detail"]}
            song = _wav(tmp_path / "s.wav", 440.0, 5.0)
            played = await _tool(r, "music_play", {"source": song, "name": "tune", "gain": 0.5})
            assert played["ok"] and played["name"] == "tune"
            await wait_until(lambda: r.listener(alice).heard_frequency(r.ours, 0.3) > 400)
            assert (await _tool(r, "music_set_gain", {"target": 0.2, "fadeMs": 100}))["ok"]
            bad = await _tool(r, "music_set_gain", {"target": 7}, status=400)
            assert bad["field"] == "target"
            assert (await _tool(r, "music_set_gain", {"target": True}, status=400))["field"] == "target"
            await trio.sleep(0.3)
            status = await _tool(r, "music_status", {})
            assert status["track"]["name"] == "tune" and status["track"]["gain"] == pytest.approx(0.2)
            assert (await _tool(r, "music_pause", {"fadeMs": 50}))["ok"]
            assert (await _tool(r, "music_resume", {}))["ok"]
            assert (await _tool(r, "stop_audio", {"what": "all"}))["ok"]
            assert (await _tool(r, "music_status", {}))["state"] == "idle"
            assert (await _tool(r, "stop_audio", {"what": "loud"}, status=400))["field"] == "what"

            listing = await _tool(r, "list_voice_channels", {})
            names = {c["name"]: c for c in listing["channels"]}
            assert names["General"]["connected"] and {m["userId"] for m in names["General"]["members"]} >= {
                alice
            }
            lounge = names["Lounge"]["channelId"]
            assert (await _tool(r, "join_voice_channel", {"channelId": lounge, "selfMute": 1}, status=400))[
                "field"
            ] == "selfMute"
            moved = await _tool(r, "join_voice_channel", {"channelId": lounge, "selfMute": True})
            assert moved["ok"] and moved["reason"] == "moved"
            assert r.sandbox.world.voice_state(str(r.ours)).self_mute
            assert (await _tool(r, "leave_voice_channel", {}))["reason"] == "left"
            assert (await _tool(r, "music_status", {})) == {"ok": False, "reason": "not_in_voice"}
