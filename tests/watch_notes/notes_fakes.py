"""Helpers for screen-notes tests: frame values, a scripted provider, a loopback fake of a
chat-completions endpoint (starlette served by hypercorn on 127.0.0.1)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
from loopback_app import serve_on_loopback
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from clank.errors import VisionError
from clank.watch.frames import ScreenFrame
from clank.watch.vision import NoteContext


def make_frame(
    sequence: int,
    *,
    scene_cut: bool = False,
    change_ema: float = 0.0,
    change_score: float | None = None,
    jpeg: bytes | None = None,
    user_id: str = "1001",
) -> ScreenFrame:
    return ScreenFrame(
        jpeg=jpeg if jpeg is not None else f"jpeg-{sequence}".encode(),
        width=1280,
        height=720,
        rtp_timestamp=90_000 * sequence,
        user_id=user_id,
        ssrc=4242,
        codec="H264",
        stream_type="screen",
        change_score=change_score if change_score is not None else (0.9 if scene_cut else change_ema),
        change_ema=change_ema,
        scene_cut=scene_cut,
        wall_time=trio.current_time(),
        sequence=sequence,
    )


@attrs.define
class Call:
    jpeg: bytes
    context: NoteContext
    started: float


class ScriptedProvider:
    """A real VisionProvider for policy tests: takes ``delay`` seconds, fails the listed calls."""

    name = "scripted"

    def __init__(self, delay: float = 0.0, fail_calls: frozenset[int] = frozenset()) -> None:
        self.delay = delay
        self.fail_calls = fail_calls
        self.calls: list[Call] = []

    async def describe(self, frame_jpeg: bytes, *, context: NoteContext) -> str:
        self.calls.append(Call(frame_jpeg, context, trio.current_time()))
        number = len(self.calls)
        await trio.sleep(self.delay)
        if number in self.fail_calls:
            raise VisionError("http_status", "HTTP 500: scripted failure", status=500)
        return f"note {number}: {context.trigger} of {frame_jpeg.decode()}"


@attrs.define
class FakeChatServer:
    """What the fake endpoint saw and how it answers (``mode``: ok, parts, error, error_once,
    slow, garbage)."""

    url: str = ""
    mode: str = "ok"
    answer: str = "  A code editor with a Python file open.  "
    requests: list[tuple[str, dict[str, str], Any]] = attrs.field(factory=list)


def _chat_app(server: FakeChatServer) -> Starlette:
    async def completions(request: Request) -> Response:
        body = json.loads(await request.body())
        server.requests.append((request.url.path, dict(request.headers), body))
        if server.mode == "error_once":
            server.mode = "ok"
            return PlainTextResponse("upstream exploded once", status_code=500)
        if server.mode == "error":
            return PlainTextResponse("upstream exploded", status_code=500)
        if server.mode == "slow":
            await trio.sleep(3600)
        if server.mode == "garbage":
            return JSONResponse({"id": "x", "choices": []})
        content: Any = server.answer
        if server.mode == "parts":
            content = [{"type": "text", "text": "Part one. "}, {"type": "text", "text": "Part two."}]
        return JSONResponse(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": body.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
            }
        )

    return Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])


@asynccontextmanager
async def open_fake_chat_server() -> AsyncIterator[FakeChatServer]:
    server = FakeChatServer()
    async with serve_on_loopback(_chat_app(server)) as base:
        server.url = f"{base}/v1"
        yield server
