"""The MCP server over the streamable HTTP transport on the API listener, driven by the SDK's own
client (over real loopback sockets, under trio)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import mcp_types as types
import pytest
import trio
from control_fakes import ALICE, BOB, RegistrySession, real_frame
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from clank.config import ApiSettings
from clank.control.http import HttpApi, open_http_api
from clank.control.mcp_server import tool_result
from clank.control.service import ClankService
from clank.control.tools import TOOLS, tool_schemas

# The SDK's HTTP client leaves its httpx2 SSE generators for trio's async-generator finalizer when
# its task group is cancelled (client side only; under asyncio the loop's shutdown hook hides it).
pytestmark = pytest.mark.filterwarnings("ignore:Async generator 'http:ResourceWarning")

LIMIT = 20
TOKEN = "test-token-mcp-0123456789abcdef"


@asynccontextmanager
async def mcp_over_http(
    token: str = TOKEN,
) -> AsyncIterator[tuple[HttpApi, RegistrySession, ClientSession]]:
    session = RegistrySession()
    session.join(ALICE, stream=True)
    session.join(BOB, video=True)
    async with open_http_api(ClankService(session), ApiSettings(port=0), token=TOKEN) as api:
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=10) as http,
            streamable_http_client(f"{api.url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as client,
        ):
            await client.initialize()
            yield api, session, client


def _json(result: types.CallToolResult) -> dict[str, Any]:
    first = result.content[0]
    assert isinstance(first, types.TextContent)
    body: dict[str, Any] = json.loads(first.text)
    assert body == result.structured_content
    return body


async def test_lists_the_same_tools_as_the_http_api() -> None:
    with trio.fail_after(LIMIT):
        async with mcp_over_http() as (api, _session, client):
            listed = await client.list_tools()
            async with httpx.AsyncClient(base_url=api.url) as plain:
                http_tools = (
                    await plain.get("/api/tools", headers={"Authorization": f"Bearer {TOKEN}"})
                ).json()["tools"]
    mcp_tools = [
        {"name": t.name, "description": t.description, "input_schema": t.input_schema} for t in listed.tools
    ]
    assert mcp_tools == http_tools == tool_schemas()
    assert [t["name"] for t in mcp_tools] == [t.name for t in TOOLS]


async def test_calls_every_tool_and_gets_the_frame_as_an_image_block() -> None:
    with trio.fail_after(LIMIT):
        async with mcp_over_http() as (_api, session, client):
            nothing = await client.call_tool("look_at_screen", {})
            assert nothing.is_error and _json(nothing)["reason"] == "not_watching"

            sharers = _json(await client.call_tool("list_sharers", {}))
            assert {s["userId"] for s in sharers["sharers"]} == {ALICE, BOB}

            started = await client.call_tool("start_screen_watch", {"target": "Alice"})
            assert not started.is_error
            assert _json(started)["targetUserId"] == ALICE

            waiting = await client.call_tool("look_at_screen", {})
            assert waiting.is_error and _json(waiting)["reason"] == "waiting_for_frame_context"

            frame = real_frame(7, trio.current_time())
            session.deliver_frame(ALICE, "go_live", frame)
            look = await client.call_tool("look_at_screen", {"target": "Alice"})
            assert not look.is_error
            images = [c for c in look.content if isinstance(c, types.ImageContent)]
            assert len(images) == 1 and images[0].mime_type == "image/jpeg"
            assert base64.b64decode(images[0].data) == frame.jpeg
            meta = _json(look)
            assert meta["frame"]["sequence"] == 7 and meta["image"] == {
                "mimeType": "image/jpeg",
                "inContent": True,
            }

            status = _json(await client.call_tool("status", {}))
            assert status["watches"][0]["frameSequence"] == 7

            stopped = await client.call_tool("stop_screen_watch", {})
            assert not stopped.is_error and _json(stopped)["reason"] == "stopped"
            again = await client.call_tool("stop_screen_watch", {})
            assert again.is_error and _json(again)["reason"] == "not_watching"


@pytest.mark.parametrize(
    ("name", "arguments", "field"),
    [
        ("start_screen_watch", {"target": 42}, "target"),
        ("start_screen_watch", {"preferredTransport": "carrier-pigeon"}, "preferredTransport"),
        ("look_at_screen", {"nope": "x"}, "nope"),
        ("no_such_tool", {}, "name"),
    ],
)
async def test_bad_arguments_are_tool_errors_naming_the_field(
    name: str, arguments: dict[str, Any], field: str
) -> None:
    with trio.fail_after(LIMIT):
        async with mcp_over_http() as (_api, _session, client):
            result = await client.call_tool(name, arguments)
    assert result.is_error
    body = _json(result)
    assert body["error"] == "invalid_request" and body["field"] == field


async def test_mcp_endpoint_needs_the_bearer_token() -> None:
    session = RegistrySession()
    with trio.fail_after(LIMIT):
        async with (
            open_http_api(ClankService(session), ApiSettings(port=0), token=TOKEN) as api,
            httpx.AsyncClient(base_url=api.url) as anon,
        ):
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
                response = await anon.post("/mcp", json=body, headers=headers)
                assert response.status_code == 401
                assert response.json()["error"] == "unauthorized"
                assert TOKEN not in response.text


def test_tool_result_moves_the_image_out_of_the_json() -> None:
    answer = {
        "ok": True,
        "image": {"mimeType": "image/jpeg", "dataBase64": "AAAA"},
        "notes": [{"text": "a note"}],
    }
    result = tool_result(answer)
    assert not result.is_error
    kinds = [c.type for c in result.content]
    assert kinds == ["text", "image", "text"]
    assert "AAAA" not in json.dumps(result.structured_content)
    failed = tool_result({"ok": False, "reason": "not_watching"})
    assert failed.is_error and failed.structured_content == {"ok": False, "reason": "not_watching"}


# resources/subscribe is the 2025-11-25 protocol's way (the SDK flags it as removed in 2026-07-28,
# whose subscriptions/listen clank does not serve yet); the SDK's client still speaks it.
@pytest.mark.filterwarnings("ignore:resources/subscribe:mcp.shared.exceptions.MCPDeprecationWarning")
async def test_commentary_cues_are_a_subscribable_resource() -> None:
    from clank.control.mcp_server import COMMENTARY_URI
    from clank.watch.commentary import CommentaryCue, CommentaryHub

    hub = CommentaryHub()
    updates: list[object] = []
    updated = trio.Event()

    async def on_message(message: object) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            updates.append(message.params.uri)
            updated.set()
        await trio.lowlevel.checkpoint()

    session = RegistrySession()
    with trio.fail_after(LIMIT):
        async with open_http_api(
            ClankService(session), ApiSettings(port=0), token=TOKEN, commentary=hub
        ) as api:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with (
                httpx2.AsyncClient(headers=headers, timeout=10) as http,
                streamable_http_client(f"{api.url}/mcp", http_client=http) as (read, write),
                ClientSession(read, write, message_handler=on_message) as client,
            ):
                init = await client.initialize()
                assert init.capabilities.resources is not None and init.capabilities.resources.subscribe
                listed = await client.list_resources()
                assert [str(r.uri) for r in listed.resources] == [COMMENTARY_URI]
                await client.subscribe_resource(COMMENTARY_URI)
                hub.publish(
                    CommentaryCue(
                        number=hub.next_number(),
                        target_user_id=ALICE,
                        kind="go_live",
                        reason="changed",
                        at=trio.current_time(),
                        seconds_since_previous=15.0,
                        max_change=0.2,
                        frame_sequence=7,
                        rtp_timestamp=90_000,
                        note={
                            "number": 1,
                            "text": "a code editor",
                            "trigger": "periodic",
                            "provider": "offline",
                        },
                        jpeg=b"\xff\xd8 not shown \xff\xd9",
                    )
                )
                await updated.wait()
                read_back = await client.read_resource(COMMENTARY_URI)
    assert [str(u) for u in updates] == [COMMENTARY_URI]
    [contents] = read_back.contents
    assert isinstance(contents, types.TextResourceContents)
    cue = json.loads(contents.text)
    assert (
        cue["type"] == "commentary_due"
        and cue["targetUserId"] == ALICE
        and cue["note"]["text"] == "a code editor"
    )
    assert "image" not in cue
