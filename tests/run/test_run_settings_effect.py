"""Settings audit: each of these keys changes what clank does (a test per key that had none).

Through ``clank.open_session`` against the sandbox: the voice state the sandbox sees
(``voice.self_mute`` / ``voice.self_deaf``), how many Go Live watches may run
(``watch.max_concurrent_watches``).
``watch.auto_watch``, ``sandbox.dave_protocol_version`` and ``discord.connect_attempts`` have their
own tests (test_run_auto_watch, test_run_sandbox_dave_setting, test_run_e2e).
"""

from __future__ import annotations

import attrs
import pytest
import trio

import clank
from clank.config import Settings
from clank.runner import open_clank

LIMIT = 60


def _settings(**sections: dict[str, object]) -> Settings:
    settings = clank.load_settings(environ={})
    settings = attrs.evolve(settings, notes=attrs.evolve(settings.notes, enabled=False))
    for name, values in sections.items():
        settings = attrs.evolve(settings, **{name: attrs.evolve(getattr(settings, name), **values)})
    return settings


@pytest.mark.parametrize(("mute", "deaf"), [(True, False), (False, True), (False, False)])
async def test_self_mute_and_deaf_reach_the_voice_state(mute: bool, deaf: bool) -> None:
    settings = _settings(voice={"self_mute": mute, "self_deaf": deaf})
    with trio.fail_after(LIMIT):
        async with open_clank(settings, scenario="empty", api_port=0, demo_watch=False) as info:
            state = info.sandbox.world.voice_state(info.user_id)  # what every other member sees
            assert state is not None
            assert (state.self_mute, state.self_deaf) == (mute, deaf)


@pytest.mark.parametrize(("cap", "second_ok"), [(1, False), (2, True)])
async def test_max_concurrent_watches_caps_the_go_live_watches(cap: int, second_ok: bool) -> None:
    settings = _settings(watch={"max_concurrent_watches": cap})
    with trio.fail_after(LIMIT):
        async with open_clank(settings, scenario="streamer", api_port=0, demo_watch=False) as info:
            assert info.service is not None
            world = info.sandbox.world
            bob = world.user_by_name("bob").id
            await world.join_voice(bob, info.channel_id)
            await world.go_live(bob)
            first = await info.service.start_screen_watch(target="alice")
            assert first.ok, first
            with trio.move_on_after(10):  # until bob's stream is discovered
                while bob not in {s["userId"] for s in info.service.list_sharers() if s["live"]}:  # noqa: ASYNC110
                    await trio.sleep(0.05)
            second = await info.service.start_screen_watch(target=bob)
            native = second.ok and second.transport == "native"
            assert native is second_ok, second  # over the cap: refused, or the share-link fallback
            native_watches = [w for w in info.service.status()["watches"] if w["transport"] == "native"]
            assert len(native_watches) == cap
