"""Settings audit, ``[notes]`` provider keys through ``clank.open_session`` (the runner's reader):
``notes.enabled`` off takes no notes; ``notes.provider = "openai"`` with ``notes.url``,
``notes.model`` and ``notes.api_key`` sends the watch's frames to that endpoint
(a fake OpenAI-compatible server on loopback) with that model and key, and its answer is the note.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
from loopback_app import serve_on_loopback
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import clank

ANSWER = "A terminal with a build log scrolling."


@asynccontextmanager
async def chat_server(seen: list[tuple[dict[str, str], Any]]) -> AsyncIterator[str]:
    """An OpenAI-compatible ``/v1/chat/completions`` on loopback that answers :data:`ANSWER`."""

    async def completions(request: Request) -> Response:
        body = json.loads(await request.body())
        seen.append((dict(request.headers), body))
        message = {"role": "assistant", "content": ANSWER}
        return JSONResponse(
            {"id": "c1", "object": "chat.completion", "choices": [{"index": 0, "message": message}]}
        )

    app = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])
    async with serve_on_loopback(app) as base:
        yield f"{base}/v1"


@pytest.mark.parametrize("enabled", [True, False])
async def test_notes_enabled_provider_url_model_key_reach_the_endpoint(enabled: bool) -> None:
    seen: list[tuple[dict[str, str], Any]] = []
    with trio.fail_after(60):
        async with chat_server(seen) as url:
            settings = clank.load_settings(environ={})
            notes = attrs.evolve(
                settings.notes,
                enabled=enabled,
                provider="openai",
                url=url,
                model="vision-test-model",
                api_key="sk-notes-test-key",
                timeout_s=5.0,
            )
            settings = attrs.evolve(settings, notes=notes, link=attrs.evolve(settings.link, enabled=False))
            async with clank.open_session(settings, scenario="streamer") as service:
                with trio.fail_after(20):
                    while not (await service.start_screen_watch()).ok:  # noqa: ASYNC110 - polled like an agent
                        await trio.sleep(0.2)
                with trio.move_on_after(15 if enabled else 4):
                    while not service.look_at_screen().notes:  # noqa: ASYNC110 - no event to wait on
                        await trio.sleep(0.2)
                got = service.look_at_screen().notes
    if not enabled:
        assert not got and not seen  # notes.enabled = false: no provider, no notes
        return
    assert got and got[-1]["text"] == ANSWER, got
    headers, body = seen[0]
    assert body["model"] == "vision-test-model"  # notes.model
    assert headers["authorization"] == "Bearer sk-notes-test-key"  # notes.api_key
