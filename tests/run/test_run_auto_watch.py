"""``watch.auto_watch``: a live sharer is watched without any agent call; off, nothing starts."""

from __future__ import annotations

import attrs
import pytest
import trio

import clank
from clank.config import Settings

LIMIT = 60
#: Long enough for several auto-watch polls after the sandbox streamer is discovered.
PATIENCE = 6.0


def _settings(auto_watch: bool) -> Settings:
    settings = clank.load_settings(environ={})
    return attrs.evolve(
        settings,
        watch=attrs.evolve(settings.watch, auto_watch=auto_watch),
        notes=attrs.evolve(settings.notes, enabled=False),
    )


@pytest.mark.parametrize("auto_watch", [True, False])
async def test_auto_watch_starts_a_watch_on_the_live_sharer(auto_watch: bool) -> None:
    with trio.fail_after(LIMIT):
        async with clank.open_session(_settings(auto_watch), scenario="streamer") as service:
            watched: list[dict[str, object]] = []
            with trio.move_on_after(PATIENCE):
                while not watched:
                    watched = [w for w in service.status()["watches"] if w["state"] != "ended"]
                    await trio.sleep(0.2)
            if not auto_watch:
                assert watched == []
                return
            assert len(watched) == 1 and watched[0]["kind"] == "go_live"
            alice = next(s for s in service.list_sharers() if s["label"] == "Alice")
            assert watched[0]["targetUserId"] == alice["userId"]
            # Stopped by hand, it stays stopped while Alice keeps sharing.
            assert (await service.stop_screen_watch()).ok
            await trio.sleep(2.5)
            assert [w for w in service.status()["watches"] if w["state"] != "ended"] == []
