"""``clank tools --format``: the three LLM API shapes, OpenAI's strict-mode rules, and the
image-less look_at_screen variant."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing
from control_fakes import ALICE, RegistrySession, real_frame

from clank import cli
from clank.config import load_settings
from clank.control.service import ClankService
from clank.control.tool_formats import FORMATS, tools_in_format
from clank.control.tools import TOOLS_BY_NAME, call_tool, tool_schemas, validate_arguments


def _walk(schema: Any) -> list[dict[str, Any]]:
    if isinstance(schema, dict):
        return [schema, *(s for v in schema.values() for s in _walk(v))]
    if isinstance(schema, list):
        return [s for v in schema for s in _walk(v)]
    return []


def _parameters(fmt: str, tool: dict[str, Any]) -> dict[str, Any]:
    if fmt == "anthropic":
        assert set(tool) == {"name", "description", "input_schema"}
        return dict(tool["input_schema"])
    assert tool["type"] == "function"
    flat = tool if fmt == "openai-responses" else tool["function"]
    assert set(flat) >= {"name", "description", "parameters", "strict"} and flat["strict"] is True
    if fmt == "openai-responses":
        assert "function" not in tool  # the Responses API wants the flat shape
    return dict(flat["parameters"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_lists_every_tool(fmt: str) -> None:
    tools = tools_in_format(fmt)
    names = [t.get("name") or t["function"]["name"] for t in tools]
    assert names == [s["name"] for s in tool_schemas()]
    for tool in tools:
        params = _parameters(fmt, tool)
        assert params["type"] == "object" and params["additionalProperties"] is False


@pytest.mark.parametrize("fmt", ["openai", "openai-responses"])
def test_openai_shapes_follow_strict_mode_rules(fmt: str) -> None:
    for tool in tools_in_format(fmt):
        params = _parameters(fmt, tool)
        assert params["required"] == list(params["properties"])  # strict: every property required
        for prop in params["properties"].values():
            assert "null" in prop["type"]  # optional = nullable
            if "enum" in prop:
                assert None in prop["enum"]
        for node in _walk(params):
            assert not {"maxLength", "minimum", "maximum"} & set(node)
        # what a strict model sends when it leaves every argument out is valid input
        name = tool.get("name") or tool["function"]["name"]
        assert validate_arguments(TOOLS_BY_NAME[name], dict.fromkeys(params["properties"])) is not None


def test_stop_screen_watch_says_what_it_does_without_a_target() -> None:
    stop = next(s for s in tool_schemas() if s["name"] == "stop_screen_watch")
    text = stop["input_schema"]["properties"]["target"]["description"]
    assert "stop every watch" in text and "most relevant" not in text


@pytest.mark.parametrize("fmt", FORMATS)
def test_cli_prints_each_format(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    cli._dispatch(cli._parser().parse_args(["tools", "--format", fmt]), load_settings(environ={}))
    assert json.loads(capsys.readouterr().out) == tools_in_format(fmt)
    # `clank tools` as a command (a subprocess, its default format): tests/run/test_run_mcp.py


async def test_look_at_screen_without_the_image_hands_out_an_image_url(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A fake clock: both calls see the same frame age (ageMs), however slow the machine.
    with trio.fail_after(30):
        session = RegistrySession()
        session.join(ALICE, stream=True)
        service = ClankService(session)
        assert (await service.start_screen_watch()).ok
        session.deliver_frame(ALICE, "go_live", real_frame(1, trio.current_time()))
        full = await call_tool(service, "look_at_screen", {})
        lean = await call_tool(service, "look_at_screen", {"includeImage": False})
    assert full["image"]["dataBase64"] and "imageUrl" not in full
    assert "image" not in lean and lean["frame"] == full["frame"]
    assert lean["imageUrl"] == f"/api/screen/latest.jpg?target={ALICE}"
