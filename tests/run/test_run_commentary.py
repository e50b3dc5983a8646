"""commentary_due end to end with the sandbox: a streamer who talks holds the cue back, silence
lets it through (as a Python callback and on the SSE stream), a static screen never triggers it.

The gates' timing policy (quiet window, interval, "static never" over a minute) is decided on a
fake clock in tests/watch_notes/test_commentary_gates.py; this real-clock smoke test runs with the
shortest settings the config allows and waits on events, not fixed sleeps, where one exists."""

from __future__ import annotations

import json
from typing import Any

import attrs
import httpx
import pytest
import trio

from clank.config import load_settings
from clank.control.service import ClankService
from clank.runner import open_clank
from clank.watch.commentary import CommentaryCue

LIMIT = 60
INTERVAL = 1.0  # notes.commentary_interval_s: the smallest the setting allows
QUIET = 0.8  # notes.quiet_window_s
#: Frames in flight (encode, RTP, decode, change score) when the streamer's picture freezes.
PIPELINE = 0.8


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
            await trio.sleep(0.02)


def _voice_speaking(service: ClankService) -> str | None:
    voice = next(r for r in service.status()["roles"] if r["name"] == "voice")
    speaking = (voice.get("qos") or {}).get("speaking")
    return speaking if isinstance(speaking, str) else None


async def _wait_status(seconds: float, predicate: Any) -> None:
    with trio.fail_after(seconds):
        while not predicate():  # noqa: ASYNC110 - the status is a cheap read; no event exists
            await trio.sleep(0.02)


@pytest.mark.serial  # real-clock windows (the interval while alice talks, the pipeline's tail)
async def test_speaking_holds_the_cue_silence_releases_it_static_never() -> None:
    settings = load_settings(environ={"CLANK_LINK_PORT": "0"})  # any free share-link port
    notes = attrs.evolve(settings.notes, enabled=True, commentary_interval_s=INTERVAL, quiet_window_s=QUIET)
    settings = attrs.evolve(settings, notes=notes)
    with trio.fail_after(LIMIT):
        async with open_clank(settings, scenario="streamer", api_port=0, demo_watch=False) as info:
            service, world = info.service, info.sandbox.world
            assert service is not None and info.commentary is not None
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
                    await _wait_status(10, lambda: _voice_speaking(service))  # her audio reached us
                    started = await service.start_screen_watch(target="alice")
                    assert started.ok
                    watching_at = trio.current_time()
                    await _wait_status(
                        10, lambda: any(w.get("frameSequence") for w in service.status()["watches"])
                    )
                    # The interval passes over a scrolling screen, but alice talks.
                    await trio.sleep_until(watching_at + INTERVAL + 0.5)
                    assert _voice_speaking(service) and cues == [], [c.reason for c in cues]

                    await world.set_speaking(alice, False)
                    silent_at = trio.current_time()
                    await _wait_for(cues, 1, 10.0)
                    cue = cues[0]
                    assert cue.target_user_id == alice and cue.reason in {"changed", "scene_cut"}
                    assert cue.at - silent_at >= QUIET  # the quiet window
                    await _wait_for(sse, 1, 5.0)
                    assert sse[0]["number"] == cue.number and "image" not in sse[0]
                    assert sse[0]["targetUserId"] == alice and sse[0]["frame"]["sequence"] >= 1

                    info.sandbox.media.streamer(alice).hold_picture = True
                    await trio.sleep(INTERVAL + PIPELINE)  # at most one cue for the last change
                    settled = len(cues)
                    assert settled <= 2
                    await trio.sleep(INTERVAL + 0.3)  # a static screen, a quiet channel: never
                    assert len(cues) == settled, [c.reason for c in cues[settled:]]
                nursery.cancel_scope.cancel()
