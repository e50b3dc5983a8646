"""Settings audit, ``[notes]`` provider keys through ``clank.open_session`` (the runner's reader):
``notes.enabled`` off takes no notes; ``notes.provider = "openai"`` with ``notes.url``,
``notes.model``, ``notes.api_key`` and ``notes.timeout_s`` sends the watch's frames to that endpoint
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
from structlog.testing import capture_logs

import clank

ANSWER = "A terminal with a build log scrolling."


@asynccontextmanager
async def chat_server(seen: list[tuple[dict[str, str], Any]], delay: float = 0.0) -> AsyncIterator[str]:
    """An OpenAI-compatible ``/v1/chat/completions`` on loopback that answers :data:`ANSWER`
    after ``delay`` seconds."""

    async def completions(request: Request) -> Response:
        body = json.loads(await request.body())
        seen.append((dict(request.headers), body))
        await trio.sleep(delay)
        message = {"role": "assistant", "content": ANSWER}
        return JSONResponse(
            {"id": "c1", "object": "chat.completion", "choices": [{"index": 0, "message": message}]}
        )

    app = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])
    async with serve_on_loopback(app) as base:
        yield f"{base}/v1"


#: Frames the watch shows before "off" is judged: a note is asked for at the first frame.
FRAMES_WITHOUT_NOTES = 3


def _settled(case: str, service: clank.ClankService, logs: list[dict[str, Any]]) -> bool:
    """``answers``: a note came; ``too_slow``: the call gave up; ``off``: frames, and no call."""
    if case == "answers":
        return bool(service.look_at_screen().notes)
    if case == "too_slow":
        return any(e["event"] == "screen note failed" for e in logs)
    return any(w["frames"] >= FRAMES_WITHOUT_NOTES for w in service.status()["watches"])


@pytest.mark.parametrize("case", ["answers", "off", "too_slow"])
async def test_notes_enabled_provider_url_model_key_reach_the_endpoint(case: str) -> None:
    """``answers``: notes on, the endpoint answers in time; ``off``: notes.enabled = false;
    ``too_slow``: the endpoint takes 3 s, notes.timeout_s = 1 gives up (counted, no note)."""
    seen: list[tuple[dict[str, str], Any]] = []
    enabled = case != "off"
    with trio.fail_after(60), capture_logs() as logs:
        async with chat_server(seen, delay=3.0 if case == "too_slow" else 0.0) as url:
            settings = clank.load_settings(environ={})
            notes = attrs.evolve(
                settings.notes,
                enabled=enabled,
                provider="openai",
                url=url,
                model="vision-test-model",
                api_key="sk-notes-test-key",
                timeout_s=1.0 if case == "too_slow" else 5.0,
            )
            settings = attrs.evolve(settings, notes=notes, link=attrs.evolve(settings.link, enabled=False))
            async with clank.open_session(settings, scenario="streamer") as service:
                with trio.fail_after(20):
                    while not (await service.start_screen_watch()).ok:  # noqa: ASYNC110 - polled like an agent
                        await trio.sleep(0.2)
                with trio.fail_after(15):
                    while not _settled(case, service, logs):  # noqa: ASYNC110 - no event to wait on
                        await trio.sleep(0.05)
                got = service.look_at_screen().notes
    if case == "off":
        assert not got and not seen  # notes.enabled = false: no provider, no notes
        return
    headers, body = seen[0]
    assert body["model"] == "vision-test-model"  # notes.model
    assert headers["authorization"] == "Bearer sk-notes-test-key"  # notes.api_key
    if case == "too_slow":
        failed = [e for e in logs if e["event"] == "screen note failed"]
        assert not got and failed and failed[0]["reason"] == "timeout", failed
        assert "within 1.0 s" in failed[0]["detail"]  # notes.timeout_s
        return
    assert got and got[-1]["text"] == ANSWER, got
