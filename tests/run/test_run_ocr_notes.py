"""Must show: the offline notes of the sandbox demo read the streamer's synthetic screen — at least
80% of the large-font headline words the streamer really rendered (clank.media.synth.HEADLINES)."""

from __future__ import annotations

import re
from typing import Any

import attrs
import pytest
import trio

from clank.config import load_settings
from clank.media.synth import HEADLINES
from clank.runner import open_clank

pytest.importorskip("rapidocr_onnxruntime")

LIMIT = 120


def headline_recall(text: str) -> float:
    squashed = re.sub(r"\s+", "", text.lower())
    return max(sum(w in squashed for w in h.lower().split()) / len(h.split()) for h in HEADLINES)


async def test_demo_offline_notes_contain_the_words_on_the_streamers_screen() -> None:
    settings = load_settings(environ={"CLANK_LINK_PORT": "0"})  # any free share-link port
    settings = attrs.evolve(settings, notes=attrs.evolve(settings.notes, enabled=True, provider="offline"))
    with trio.fail_after(LIMIT):
        # The demo's streamer and demo agent; live from the start (the demo scenario's script
        # takes 4 s to go live).
        async with open_clank(settings, scenario="streamer", api_port=0, demo_watch=True) as info:
            assert info.service is not None
            alice = info.sandbox.world.user_by_name("alice").id
            notes: list[dict[str, Any]] = []
            while not notes:
                watches = [
                    w for w in info.service.status()["watches"] if w["targetUserId"] == alice and w["notes"]
                ]
                notes = watches[0]["notes"] if watches else []
                await trio.sleep(0.05)
    note = notes[0]
    assert note["provider"] == "offline"
    assert note["text"].startswith("alice's screen:") or "screen:" in note["text"]
    assert "visible text:" in note["text"]
    assert headline_recall(note["text"]) >= 0.8, note["text"]
