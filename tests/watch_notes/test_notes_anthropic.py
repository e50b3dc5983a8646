"""The ``anthropic`` provider against a loopback fake of the Messages API (real HTTP on 127.0.0.1)
that answers with the real response and error shapes."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from loopback_app import serve_on_loopback
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from clank.errors import UsageError, VisionError
from clank.logging import SECRETS
from clank.watch.anthropic_vision import (
    RetryPolicy,
    messages_url,
    open_anthropic_vision_provider,
    parse_retry_after,
    retry_delay,
)
from clank.watch.vision import NoteContext, open_vision_provider

API_KEY = "sk-ant-test-0123456789abcdef"
JPEG = b"\xff\xd8\xff\xe0 pretend jpeg bytes \xff\xd9"
CONTEXT = NoteContext(trigger="periodic", user_id="1001", user_name="alice", previous_notes=("An editor.",))
ANSWER = "A terminal running pytest; two tests failed."

ERRORS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def message(text: str) -> dict[str, Any]:
    return {
        "id": "msg_01XYZ",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 1200, "output_tokens": 20},
    }


def error(status: int) -> tuple[int, dict[str, str], Any]:
    body = {"type": "error", "error": {"type": ERRORS[status], "message": f"fake {ERRORS[status]}"}}
    return status, {}, body


@attrs.define
class FakeAnthropic:
    """Answers with ``script`` in order (then ``message(ANSWER)``); records every request."""

    url: str = ""
    script: list[tuple[int, dict[str, str], Any]] = attrs.field(factory=list)
    requests: list[tuple[str, dict[str, str], Any, float]] = attrs.field(factory=list)
    slow: bool = False


def _app(fake: FakeAnthropic) -> Starlette:
    async def messages(request: Request) -> Response:
        body = json.loads(await request.body())
        fake.requests.append((request.url.path, dict(request.headers), body, trio.current_time()))
        if fake.slow:
            await trio.sleep(3600)
        if not fake.script:
            return JSONResponse(message(ANSWER))
        status, headers, answer = fake.script.pop(0)
        if isinstance(answer, str):
            return PlainTextResponse(answer, status_code=status, headers=headers)
        return JSONResponse(answer, status_code=status, headers=headers)

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])


@asynccontextmanager
async def fake_anthropic() -> AsyncIterator[FakeAnthropic]:
    fake = FakeAnthropic()
    async with serve_on_loopback(_app(fake)) as base:
        fake.url = base
        yield fake


FAST = RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.05, max_retry_after_s=2.0)


async def test_request_shape_and_answer() -> None:
    with trio.fail_after(20):
        async with (
            fake_anthropic() as fake,
            open_anthropic_vision_provider(api_key=API_KEY, url=fake.url, model="claude-test") as provider,
        ):
            text = await provider.describe(JPEG, context=CONTEXT)
    assert text == ANSWER
    [(path, headers, body, _)] = fake.requests
    assert path == "/v1/messages"
    assert headers["x-api-key"] == API_KEY and "authorization" not in headers
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["content-type"] == "application/json"
    assert body["model"] == "claude-test" and body["stream"] is False and body["max_tokens"] > 0
    assert isinstance(body["system"], str) and body["system"]
    [turn] = body["messages"]
    assert turn["role"] == "user"
    image, prompt = turn["content"]
    assert image["type"] == "image"
    assert image["source"]["type"] == "base64" and image["source"]["media_type"] == "image/jpeg"
    assert base64.b64decode(image["source"]["data"]) == JPEG
    assert prompt["type"] == "text" and "alice" in prompt["text"] and "An editor." in prompt["text"]


async def test_text_blocks_are_joined_and_other_blocks_skipped() -> None:
    with trio.fail_after(20):
        async with (
            fake_anthropic() as fake,
            open_anthropic_vision_provider(api_key=API_KEY, url=fake.url + "/v1") as provider,
        ):
            answer = message("")
            answer["content"] = [
                {"type": "thinking", "thinking": "hmm", "signature": "x"},
                {"type": "text", "text": "Part one. "},
                {"type": "text", "text": "Part two."},
            ]
            fake.script.append((200, {}, answer))
            assert await provider.describe(JPEG, context=CONTEXT) == "Part one. Part two."
            assert fake.requests[0][2]["model"] == "claude-haiku-4-5"  # the default model


@pytest.mark.parametrize(
    ("status", "reason", "tries"),
    [
        (400, "bad_request", 1),
        (401, "auth", 1),
        (403, "auth", 1),
        (404, "bad_request", 1),
        (429, "rate_limited", 3),
        (500, "http_status", 3),
        (529, "overloaded", 3),
    ],
)
async def test_errors_map_to_reasons_and_only_429_5xx_retry(status: int, reason: str, tries: int) -> None:
    with trio.fail_after(20):
        async with (
            fake_anthropic() as fake,
            open_anthropic_vision_provider(api_key=API_KEY, url=fake.url, retry=FAST) as provider,
        ):
            fake.script.extend([error(status)] * 5)
            with pytest.raises(VisionError) as caught:
                await provider.describe(JPEG, context=CONTEXT)
    assert caught.value.reason == reason and caught.value.status == status
    assert ERRORS[status] in str(caught.value)  # the error body's type is kept for the log
    assert API_KEY not in str(caught.value)
    assert len(fake.requests) == tries


async def test_retry_after_is_honoured_then_the_answer_arrives(
    autojump_clock: trio.testing.MockClock,
) -> None:
    autojump_clock.autojump_threshold = 0.05
    with trio.fail_after(60):
        async with (
            fake_anthropic() as fake,
            open_anthropic_vision_provider(api_key=API_KEY, url=fake.url, retry=RetryPolicy()) as provider,
        ):
            fake.script.append((429, {"retry-after": "7"}, error(429)[2]))
            fake.script.append((529, {}, error(529)[2]))
            assert await provider.describe(JPEG, context=CONTEXT) == ANSWER
    times = [t for *_, t in fake.requests]
    assert len(times) == 3
    assert times[1] - times[0] == pytest.approx(7.0, abs=0.2)  # retry-after
    assert times[2] - times[1] == pytest.approx(1.0, abs=0.2)  # backoff: 0.5 s doubled once


async def test_a_retry_after_beyond_the_cap_gives_up_at_once() -> None:
    with trio.fail_after(20):
        async with (
            fake_anthropic() as fake,
            open_anthropic_vision_provider(api_key=API_KEY, url=fake.url, retry=FAST) as provider,
        ):
            fake.script.append((429, {"retry-after": "600"}, error(429)[2]))
            with pytest.raises(VisionError) as caught:
                await provider.describe(JPEG, context=CONTEXT)
    assert caught.value.reason == "rate_limited" and len(fake.requests) == 1


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        ({"type": "message", "content": []}, 200),
        ({"type": "message"}, 200),
        ("not json at all", 200),
        ("<html>bad gateway</html>", 502),
    ],
)
async def test_bad_bodies(answer: Any, status: int) -> None:
    with trio.fail_after(20):
        async with (
            fake_anthropic() as fake,
            open_anthropic_vision_provider(api_key=API_KEY, url=fake.url, retry=FAST) as provider,
        ):
            fake.script.extend([(status, {}, answer)] * 3)
            with pytest.raises(VisionError) as caught:
                await provider.describe(JPEG, context=CONTEXT)
    assert caught.value.reason == ("bad_response" if status == 200 else "http_status")


async def test_slow_endpoint_times_out(autojump_clock: trio.testing.MockClock) -> None:
    autojump_clock.autojump_threshold = 0.05
    with trio.fail_after(60):
        async with (
            fake_anthropic() as fake,
            open_anthropic_vision_provider(api_key=API_KEY, url=fake.url, timeout_s=5.0) as provider,
        ):
            fake.slow = True
            with pytest.raises(VisionError) as caught:
                await provider.describe(JPEG, context=CONTEXT)
    assert caught.value.reason == "timeout" and len(fake.requests) == 1


async def test_key_from_environment_and_redacted() -> None:
    with trio.fail_after(20):
        async with (
            fake_anthropic() as fake,
            open_vision_provider(
                "anthropic", url=fake.url, environ={"ANTHROPIC_API_KEY": API_KEY}
            ) as provider,
        ):
            assert provider.name == "anthropic" and API_KEY not in repr(provider)
            await provider.describe(JPEG, context=CONTEXT)
    assert fake.requests[0][1]["x-api-key"] == API_KEY
    assert SECRETS.scrub(f"x-api-key: {API_KEY}") == "x-api-key: [redacted]"
    with pytest.raises(UsageError, match="ANTHROPIC_API_KEY"):
        async with open_vision_provider("anthropic", environ={}):
            pass


def test_retry_policy_and_header_parsing() -> None:
    policy = RetryPolicy(attempts=4, base_delay_s=0.5, max_delay_s=1.5, max_retry_after_s=30)
    assert [retry_delay(policy, n, None) for n in (1, 2, 3, 4)] == [0.5, 1.0, 1.5, None]
    assert retry_delay(policy, 1, 12.0) == 12.0 and retry_delay(policy, 1, 31.0) is None
    assert parse_retry_after("3") == 3.0 and parse_retry_after(" 0.25 ") == 0.25
    assert parse_retry_after("-4") == 0.0 and parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Thu, 03 Dec 2026 12:00:10 GMT", now=1796299200.0) == pytest.approx(10.0)
    assert messages_url("") == "https://api.anthropic.com/v1/messages"
    assert messages_url("http://h:1/v1/") == "http://h:1/v1/messages"
    assert messages_url("http://h:1/v1/messages") == "http://h:1/v1/messages"
