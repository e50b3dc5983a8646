"""``watch.auto_watch`` against the sandbox: a live sharer is watched without any agent call; off,
nothing starts. Its policy (once per sharing session, several sharers) is decided on a fake clock
in tests/control/test_control_auto_watch.py."""

from __future__ import annotations

import attrs
import pytest
import trio

import clank
from clank.config import Settings
from clank.control.auto_watch import POLL_INTERVAL
from clank.control.service import ClankService

LIMIT = 60
#: After the sharer is discovered: the next auto-watch poll, with a margin for a loaded machine.
AFTER_DISCOVERY = POLL_INTERVAL + 0.5


def _settings(auto_watch: bool) -> Settings:
    settings = clank.load_settings(environ={})
    return attrs.evolve(
        settings,
        watch=attrs.evolve(settings.watch, auto_watch=auto_watch),
        notes=attrs.evolve(settings.notes, enabled=False),
    )


def _running(service: ClankService) -> list[dict[str, object]]:
    return [w for w in service.status()["watches"] if w["state"] != "ended"]


@pytest.mark.parametrize("auto_watch", [True, False])
async def test_auto_watch_starts_a_watch_on_the_live_sharer(auto_watch: bool) -> None:
    with trio.fail_after(LIMIT):
        async with clank.open_session(_settings(auto_watch), scenario="streamer") as service:
            while not [s for s in service.list_sharers() if s["label"] == "Alice" and s["live"]]:  # noqa: ASYNC110
                await trio.sleep(0.02)
            alice = next(s for s in service.list_sharers() if s["label"] == "Alice")
            watched: list[dict[str, object]] = []
            # On, the watch comes at the next poll: waited for without a deadline of its own (the
            # poll's timing is decided on the fake clock). Off, nothing may start within it.
            with trio.move_on_after(LIMIT if auto_watch else AFTER_DISCOVERY):
                while not watched:
                    watched = _running(service)
                    await trio.sleep(0.02)
            if not auto_watch:
                assert watched == []
                return
            assert len(watched) == 1 and watched[0]["kind"] == "go_live"
            assert watched[0]["targetUserId"] == alice["userId"]
            # Stopped by hand, it stays stopped while Alice keeps sharing (the next poll).
            assert (await service.stop_screen_watch()).ok
            await trio.sleep(AFTER_DISCOVERY)
            assert _running(service) == []
