"""A stopped watch stays listed as ended, with its reason, and no longer claims a frame context."""

from __future__ import annotations

import attrs
import trio

import clank

LIMIT = 60


async def test_an_ended_watch_reports_frame_ready_false_and_its_reason() -> None:
    settings = clank.load_settings(environ={})
    settings = attrs.evolve(settings, notes=attrs.evolve(settings.notes, enabled=False))
    with trio.fail_after(LIMIT):
        async with clank.open_session(settings, scenario="streamer") as service:
            assert (await service.start_screen_watch()).ok
            while not (look := service.look_at_screen()).ok:  # noqa: ASYNC110
                await trio.sleep(0.05)
            live = service.status()["watches"][0]
            assert live["frameReady"] and live["frameSequence"] is not None
            assert (await service.stop_screen_watch()).ok
            ended = service.status()["watches"][0]
    assert look.frame is not None
    assert ended["state"] == "ended" and ended["endedReason"]
    assert ended["frameReady"] is False  # not "ready" next to an ended watch
    assert ended["frameSequence"] is not None  # the last picture stays for reference
