"""commentary_due end to end with the sandbox: a streamer who talks holds the cue back, silence
lets it through (as a Python callback and on the SSE stream), a static screen never triggers it."""

from __future__ import annotations

import json
from typing import Any

import attrs
import httpx
import trio

from clank.config import load_settings
from clank.runner import open_clank
from clank.watch.commentary import CommentaryCue

LIMIT = 120
INTERVAL = 3.0


async def _read_sse(client: httpx.AsyncClient, into: list[dict[str, Any]]) -> None:
    async with client.stream("GET", "/api/events") as response:
        event = ""
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event == "commentary_due":
                into.append(json.loads(line.removeprefix("data: ")))


async def _wait_for(cues: list[Any], count: int, seconds: float) -> None:
    with trio.fail_after(seconds):
        while len(cues) < count:  # noqa: ASYNC110 - polls lists filled by a callback and a reader
            await trio.sleep(0.1)


async def test_speaking_holds_the_cue_silence_releases_it_static_never() -> None:
    settings = load_settings(environ={"CLANK_LINK_PORT": "0"})  # any free share-link port
    notes = attrs.evolve(settings.notes, enabled=True, commentary_interval_s=INTERVAL, quiet_window_s=2.2)
    settings = attrs.evolve(settings, notes=notes)
    with trio.fail_after(LIMIT):
        async with open_clank(settings, scenario="streamer", api_port=0, demo_watch=False) as info:
            assert info.service is not None and info.commentary is not None
            world = info.sandbox.world
            alice = world.user_by_name("alice").id
            cues: list[CommentaryCue] = []
            sse: list[dict[str, Any]] = []
            headers = {"Authorization": f"Bearer {info.api.token}"}
            async with (
                httpx.AsyncClient(base_url=info.api.url, headers=headers, timeout=None) as client,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(_read_sse, client, sse)
                with info.commentary.on_cue(cues.append):
                    await world.set_speaking(alice, True)
                    await trio.sleep(1.0)  # her audio reaches our voice role
                    started = await info.service.start_screen_watch(target="alice")
                    assert started.ok
                    await trio.sleep(3 * INTERVAL)  # the screen scrolls, but alice talks
                    assert cues == [], [c.reason for c in cues]

                    await world.set_speaking(alice, False)
                    silent_at = trio.current_time()
                    await _wait_for(cues, 1, 10.0)
                    cue = cues[0]
                    assert cue.target_user_id == alice and cue.reason in {"changed", "scene_cut"}
                    assert cue.at - silent_at >= 2.2  # the quiet window
                    await _wait_for(sse, 1, 5.0)
                    assert sse[0]["number"] == cue.number and "image" not in sse[0]
                    assert sse[0]["targetUserId"] == alice and sse[0]["frame"]["sequence"] >= 1

                    info.sandbox.media.streamer(alice).hold_picture = True
                    await trio.sleep(INTERVAL + 1.0)  # at most one cue for the last change
                    settled = len(cues)
                    assert settled <= 2
                    await trio.sleep(3 * INTERVAL)  # a static screen, a quiet channel: never
                    assert len(cues) == settled, [c.reason for c in cues[settled:]]
                nursery.cancel_scope.cancel()
