"""Scene cuts are worded by how much changed and by the kind of source (screen or camera)."""

from __future__ import annotations

import functools

import pytest

from clank.media.jpeg import encode_jpeg
from clank.media.synth import ScreenSynth
from clank.watch.vision import NoteContext, describe_measures, measure_jpeg


@functools.cache
def _measures() -> object:
    synth = ScreenSynth(320, 180, fps=10, scene_seconds=1.0)
    return measure_jpeg(encode_jpeg(synth.frame(2), max_pixels=None).data)


@pytest.mark.parametrize(
    ("score", "kind", "expected", "absent"),
    [
        (0.9, "screen", "changed almost completely, likely a new window or application", ""),
        (0.3, "screen", "A large part of the picture changed", "new window"),
        (0.12, "screen", "Part of the picture changed", "almost completely"),
        (0.9, "camera", "the camera moved or the scene in front of it changed", "window"),
        (0.15, "camera", "Part of the picture changed: the camera moved", "window"),
    ],
)
def test_a_scene_cut_is_worded_by_its_size_and_source(
    score: float, kind: str, expected: str, absent: str
) -> None:
    context = NoteContext(
        trigger="scene_cut",
        user_id="1001",
        user_name="Alice",
        stream_type=kind,
        change_score=score,
        scene_cut=True,
        previous_notes=("An earlier note.",),
    )
    text = describe_measures(_measures(), context)  # type: ignore[arg-type]
    assert expected in text
    if absent:
        assert absent not in text
