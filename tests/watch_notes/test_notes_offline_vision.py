"""The offline vision provider on real JPEGs of synthetic screens (clank.media.synth + jpeg); the
measured notes (no OCR) here, the OCR notes in test_notes_ocr.py."""

from __future__ import annotations

import functools

import pytest
import trio
from notes_fakes import make_frame

from clank.errors import VisionError
from clank.media.jpeg import encode_jpeg
from clank.media.synth import ScreenSynth, WebcamSynth
from clank.watch.frames import ScreenFrame
from clank.watch.notes import NotePolicy, open_screen_notes
from clank.watch.vision import NoteContext, OfflineVisionProvider, measure_jpeg, open_vision_provider

WIDTH, HEIGHT, FPS = 480, 270, 10


@functools.cache
def screen_jpegs() -> tuple[bytes, ...]:
    """One JPEG per synthetic scene (dark editor, light page, terminal)."""
    synth = ScreenSynth(WIDTH, HEIGHT, fps=FPS, scene_seconds=1.0)
    indices = [scene * synth.frames_per_scene + 2 for scene in range(3)]
    assert [synth.scene_index(i) for i in indices] == [0, 1, 2]
    return tuple(encode_jpeg(synth.frame(i), max_pixels=None).data for i in indices)


CONTEXT = NoteContext(trigger="first_frame", user_id="1001", user_name="alice")


async def test_different_scenes_get_different_descriptions() -> None:
    provider = OfflineVisionProvider(ocr=False)
    with trio.fail_after(30):
        texts = [await provider.describe(jpeg, context=CONTEXT) for jpeg in screen_jpegs()]
    assert len(set(texts)) == 3
    for text in texts:
        assert text.startswith(f"alice is sharing a {WIDTH}x{HEIGHT} screen.")
        assert "First look" in text
    assert "is dark" in texts[0] and "is bright" in texts[1] and "is dark" in texts[2]
    assert "text-heavy" in texts[0]


async def test_same_frame_and_context_give_the_same_text() -> None:
    provider = OfflineVisionProvider(ocr=False)
    jpeg = screen_jpegs()[1]
    with trio.fail_after(30):
        first = await provider.describe(jpeg, context=CONTEXT)
        again = await OfflineVisionProvider(ocr=False).describe(jpeg, context=CONTEXT)
    assert first == again


def test_measures_follow_the_picture() -> None:
    dark, light, _ = (measure_jpeg(jpeg) for jpeg in screen_jpegs())
    assert (dark.width, dark.height) == (WIDTH, HEIGHT)
    assert light.mean_luma > dark.mean_luma + 100
    assert light.colours[0][0] == "white"
    assert sum(share for _, share in dark.colours) <= 1.0
    webcam = measure_jpeg(encode_jpeg(WebcamSynth(320, 180).frame(0), max_pixels=None).data)
    assert webcam.edge_density < dark.edge_density  # soft gradients vs text


@pytest.mark.parametrize(
    ("context", "phrase"),
    [
        (
            NoteContext(trigger="scene_cut", scene_cut=True, change_score=0.8, previous_notes=("x",)),
            "new window",
        ),
        (
            NoteContext(
                trigger="periodic", change_ema=0.05, previous_notes=("x",), seconds_since_last_note=30
            ),
            "Periodic look 30 s after the previous note: the screen is changing steadily",
        ),
        (
            NoteContext(trigger="on_demand", previous_notes=("x",)),
            "Asked for a look: the screen is mostly still",
        ),
    ],
)
async def test_change_sentence_follows_the_context(context: NoteContext, phrase: str) -> None:
    with trio.fail_after(30):
        text = await OfflineVisionProvider(ocr=False).describe(screen_jpegs()[0], context=context)
    assert phrase in text
    assert text.startswith("Someone is sharing")


@pytest.mark.parametrize("kind", ["empty", "text", "truncated"])
async def test_unreadable_pictures_raise_vision_error(kind: str) -> None:
    data = {"empty": b"", "text": b"not a jpeg", "truncated": screen_jpegs()[0][:200]}[kind]
    with trio.fail_after(30), pytest.raises(VisionError) as caught:
        await OfflineVisionProvider(ocr=False).describe(data, context=CONTEXT)
    assert caught.value.reason == "bad_image"


async def test_screen_notes_with_the_offline_provider() -> None:
    send, receive = trio.open_memory_channel[ScreenFrame](0)
    policy = NotePolicy(min_interval_s=0.0)
    with trio.fail_after(30):
        async with (
            open_vision_provider("offline") as provider,
            open_screen_notes(provider, receive, policy=policy, user_name="alice") as notes,
        ):
            await send.send(make_frame(1, jpeg=screen_jpegs()[0]))
            first = await notes.wait_note()
            await send.send(make_frame(2, jpeg=screen_jpegs()[1], scene_cut=True, change_ema=0.4))
            second = await notes.wait_note(after_number=first.number)
    assert first.provider == "offline" and first.trigger == "first_frame"
    assert second.trigger == "scene_cut" and "new window" in second.text
    assert first.text != second.text
