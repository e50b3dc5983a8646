"""The OpenAI-compatible provider against a loopback fake endpoint (real HTTP on 127.0.0.1)."""

from __future__ import annotations

import base64
import itertools
import socket

import pytest
import trio
import trio.testing
from notes_fakes import ScriptedProvider, make_frame, open_fake_chat_server

from clank.errors import UsageError, VisionError
from clank.logging import SECRETS
from clank.watch.frames import ScreenFrame
from clank.watch.notes import NotePolicy, open_screen_notes
from clank.watch.vision import (
    NoteContext,
    OpenAICompatibleVisionProvider,
    chat_completions_url,
    open_openai_vision_provider,
    open_vision_provider,
)

API_KEY = "sk-test-notes-secret-0123456789"
JPEG = b"\xff\xd8\xff\xe0 pretend jpeg bytes \xff\xd9"
CONTEXT = NoteContext(
    trigger="scene_cut", user_id="1001", user_name="alice", change_score=0.8, previous_notes=("An editor.",)
)


async def test_request_shape_and_answer() -> None:
    with trio.fail_after(20):
        async with (
            open_fake_chat_server() as server,
            open_openai_vision_provider(url=server.url, model="gpt-test-vision", api_key=API_KEY) as provider,
        ):
            text = await provider.describe(JPEG, context=CONTEXT)
    assert text == "A code editor with a Python file open."
    [(path, headers, body)] = server.requests
    assert path == "/v1/chat/completions"
    assert headers["authorization"] == f"Bearer {API_KEY}"
    assert headers["content-type"] == "application/json"
    assert body["model"] == "gpt-test-vision"
    system, user = body["messages"]
    assert system["role"] == "system"
    assert user["role"] == "user"
    prompt, image = user["content"]
    assert prompt["type"] == "text"
    assert "alice" in prompt["text"] and "scene cut" in prompt["text"] and "An editor." in prompt["text"]
    assert image["type"] == "image_url"
    prefix = "data:image/jpeg;base64,"
    assert image["image_url"]["url"].startswith(prefix)
    assert base64.b64decode(image["image_url"]["url"].removeprefix(prefix)) == JPEG


async def test_content_parts_answer_and_no_key_means_no_header() -> None:
    with trio.fail_after(20):
        async with (
            open_fake_chat_server() as server,
            open_openai_vision_provider(url=server.url + "/chat/completions", model="m") as provider,
        ):
            server.mode = "parts"
            text = await provider.describe(JPEG, context=CONTEXT)
    assert text == "Part one. Part two."
    [(_, headers, _)] = server.requests
    assert "authorization" not in headers


@pytest.mark.parametrize(
    ("mode", "reason", "status"), [("error", "http_status", 500), ("garbage", "bad_response", None)]
)
async def test_bad_answers_raise_vision_error(mode: str, reason: str, status: int | None) -> None:
    with trio.fail_after(20):
        async with (
            open_fake_chat_server() as server,
            open_openai_vision_provider(url=server.url, model="m", api_key=API_KEY) as provider,
        ):
            server.mode = mode
            with pytest.raises(VisionError) as caught:
                await provider.describe(JPEG, context=CONTEXT)
    assert caught.value.reason == reason
    assert caught.value.status == status
    assert API_KEY not in str(caught.value)


async def test_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with trio.fail_after(20):
        async with open_openai_vision_provider(url=f"http://127.0.0.1:{port}/v1", model="m") as provider:
            with pytest.raises(VisionError) as caught:
                await provider.describe(JPEG, context=CONTEXT)
    assert caught.value.reason == "connect"


async def test_slow_endpoint_times_out(autojump_clock: trio.testing.MockClock) -> None:
    # Real sockets under a mock clock: only jump once the loopback traffic has settled.
    autojump_clock.autojump_threshold = 0.05
    with trio.fail_after(60):
        async with (
            open_fake_chat_server() as server,
            open_openai_vision_provider(url=server.url, model="m", timeout_s=5.0) as provider,
        ):
            server.mode = "slow"
            started = trio.current_time()
            with pytest.raises(VisionError) as caught:
                await provider.describe(JPEG, context=CONTEXT)
            assert trio.current_time() - started == pytest.approx(5.0)
    assert caught.value.reason == "timeout"
    assert len(server.requests) == 1


async def test_http_500_is_counted_by_screen_notes() -> None:
    send, receive = trio.open_memory_channel[ScreenFrame](0)

    async def watch_at_20_fps() -> None:
        for sequence in itertools.count(1):
            await send.send(make_frame(sequence))
            await trio.sleep(0.05)

    with trio.fail_after(20):
        async with (
            open_fake_chat_server() as server,
            open_vision_provider("openai", url=server.url, model="m", api_key=API_KEY) as provider,
            open_screen_notes(provider, receive, policy=NotePolicy(min_interval_s=0.2)) as notes,
            trio.open_nursery() as nursery,
        ):
            server.mode = "error_once"
            nursery.start_soon(watch_at_20_fps)
            note = await notes.wait_note()
            nursery.cancel_scope.cancel()
    stats = notes.statistics()
    assert (stats.failed, stats.taken, stats.last_error) == (1, 1, "http_status")
    assert note.text == "A code editor with a Python file open." and note.provider == "openai"
    assert note.trigger == "first_frame" and note.frame_sequence > 1  # retried on a newer frame
    assert len(server.requests) == 2


async def test_api_key_stays_out_of_reprs_and_logs() -> None:
    with trio.fail_after(20):
        async with open_openai_vision_provider(
            url="http://127.0.0.1:9/v1", model="m", api_key=API_KEY
        ) as provider:
            assert API_KEY not in repr(provider)
    assert SECRETS.scrub(f"Authorization: Bearer {API_KEY}") == "Authorization: Bearer [redacted]"


def test_url_forms_and_settings_errors() -> None:
    assert (
        chat_completions_url("https://api.example.com/v1/") == "https://api.example.com/v1/chat/completions"
    )
    assert chat_completions_url("http://h/v1/chat/completions") == "http://h/v1/chat/completions"
    with pytest.raises(UsageError):
        OpenAICompatibleVisionProvider(client=None, url="http://h/v1", model="")  # type: ignore[arg-type]


async def test_open_vision_provider_checks_its_settings() -> None:
    with trio.fail_after(5):
        with pytest.raises(UsageError):
            async with open_vision_provider("openai", url="", model="m"):
                pass
        with pytest.raises(UsageError):
            async with open_vision_provider("nope"):  # type: ignore[arg-type]
                pass
        async with open_vision_provider() as provider:
            assert provider.name == "offline"


def test_scripted_provider_is_a_vision_provider() -> None:
    # Keeps the test double honest: it must satisfy the same protocol the product calls.
    from clank.watch.vision import VisionProvider

    provider: VisionProvider = ScriptedProvider()
    assert provider.name == "scripted"
