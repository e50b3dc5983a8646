"""``sandbox.dave_protocol_version``: 0 runs the sandbox's voice servers without DAVE."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio

import clank

LIMIT = 60


@pytest.mark.parametrize(("version", "state"), [(0, "disabled"), (1, "active")])
async def test_sandbox_dave_setting_reaches_the_voice_server(version: int, state: str) -> None:
    settings = clank.load_settings(environ={})
    settings = attrs.evolve(
        settings,
        sandbox=attrs.evolve(settings.sandbox, dave_protocol_version=version),
        notes=attrs.evolve(settings.notes, enabled=False),
    )
    with trio.fail_after(LIMIT):
        async with clank.open_session(settings, scenario="streamer") as service:
            dave: dict[str, Any] | None = None
            while dave is None or dave["state"] != state:
                voice = next((r for r in service.status()["roles"] if r["name"] == "voice"), None)
                dave = None if voice is None else voice["dave"]
                await trio.sleep(0.05)
            assert dave["protocolVersion"] == version
